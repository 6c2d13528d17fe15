"""Options several commands share, declared once, and the checks that keep bad values at the edge: a wrong
value is a usage error (exit 2) naming the option, never a failure deep inside torch."""
from __future__ import annotations

import math
from typing import Optional

import typer

from hmgen.bundled import DEFAULT, TEXT


INT64 = (-(1 << 63), (1 << 63) - 1)
# click's UsageError: typer re-exports only its subclass BadParameter (and vendors click in recent versions)
ClickUsageError = typer.BadParameter.__bases__[0]
TEXT_PARAMETERS = ("prime", "text")       # text a command writes or reads (not a file name): must be UTF-8


def check_values(command, ctx, args: list[str]) -> None:
    """The one validation of values at the CLI's edge, for every command, on the words the user typed, before typer
    converts them (its conversion would report `-t nan` against the option's range, and a word that is not a
    number in its own terms): a number must parse, be finite, fit in 64 bits if an integer, and lie in the option's
    range; a choice must be one of its values; a text argument must be UTF-8 (the shell may pass any bytes: Python
    holds those that are not as surrogate escapes). A failure is a usage error (exit 2) naming the option and
    saying what it takes. What typer's parser itself refuses (an unknown option, a missing value) is left to it,
    and so is --help, and shell completion (it parses half-typed lines)."""
    if ctx.resilient_parsing:
        return
    try:
        given, _, _ = command.make_parser(ctx).parse_args(args=list(args))
    except ClickUsageError:                           # typer reports it in its own words
        return
    if given.get("help"):
        return
    for param in command.params:
        value = given.get(param.name)
        if not isinstance(value, str):
            continue
        described = getattr(param, "type_descriptor", None)
        kind = getattr(described, "annotation", None)
        choices = [str(c) for c in described.choices or ()] if getattr(described, "is_choice", False) else None
        problem = (number_problem(value, kind, param) if kind in (int, float) else
                   f"{value!r} is not one of {', '.join(choices)}" if choices and value not in choices else
                   text_problem(value) if param.name in TEXT_PARAMETERS else None)
        if problem:
            raise typer.BadParameter(problem, ctx=ctx, param=param)


def number_problem(word: str, kind: type, param) -> str | None:
    """Why `word` is not a value of a number option (int or float, with typer's min and max), or None."""
    info = param.type_descriptor.parameter_info
    low, high = info.min, info.max
    expected = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        expected += f" from {low:g} to {high:g}"
    elif low is not None:
        expected += f" of at least {low:g}"
    elif high is not None:
        expected += f" of at most {high:g}"
    try:
        value = kind(word)
    except ValueError:
        return f"{word!r} is not {expected}"
    if kind is float and not math.isfinite(value):
        return f"{word} is not a finite number" + (f" (expected {expected})" if low is not None or high is not None
                                                   else "")
    if kind is int and not INT64[0] <= value <= INT64[1]:
        return f"{word} does not fit in a 64-bit integer"
    if (low is not None and value < low) or (high is not None and value > high):
        return f"{word} is not {expected}"
    return None


def text_problem(text: str) -> str | None:
    """Why a text argument is refused (it is not UTF-8: the byte and where), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        byte = ord(text[e.start]) - 0xDC00 if 0xDC80 <= ord(text[e.start]) <= 0xDCFF else None
        shown = f"byte {byte:#04x}" if byte is not None else f"{text[e.start]!r}"
        return f"not UTF-8 text ({shown} at character {e.start + 1})"
    return None


def device_name(value: Optional[str]) -> Optional[str]:
    """Typer callback: every --device goes through hmgen.device.pick_device ("auto" becomes what it picks)."""
    if value is None:
        return None
    if value == "cpu":                        # needs no check, and no torch import (compress on a CPU runs without)
        return value
    from hmgen.device import pick_device
    return str(pick_device(value))


def device_option(default: Optional[str] = "cpu"):
    return typer.Option(default, "--device", callback=device_name, metavar="DEVICE",
                        help="cpu, cuda, cuda:N, or auto (CUDA when present).")


MAX_THREADS = 1024


def threads_option(help: str = "CPU threads for torch (default: 1, fastest for its small steps, the more so on "
                               "a busy machine)."):
    return typer.Option(None, "--threads", min=1, max=MAX_THREADS, help=help)


def seed_option(help: str = "Same seed, same output."):
    return typer.Option(None, "--seed", "-s", help=help)


def model_option(help: str = f"A bundled model's name or a model path (default: {DEFAULT[TEXT]})."):
    return typer.Option(None, "--model", "-m", help=help)


def quiet_option(help: str = "No progress bar."):
    return typer.Option(False, "--quiet", "-q", help=help)


def json_option(help: str = "Print the figures as JSON."):
    return typer.Option(False, "--json", help=help)


def set_threads(n: Optional[int]) -> None:
    """torch's CPU threads for a command that runs a model step by step (sample, eval, boundaries; compress on a
    torch device): n, or one by default. Each step is many small operations: torch's default of one thread per
    core gained nothing on a quiet machine and lost 4-7x beside a busy process (benchmarks/RESULTS.md)."""
    import torch
    torch.set_num_threads(n or 1)
