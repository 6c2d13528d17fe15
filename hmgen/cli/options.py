"""Options several commands share, declared once, and the checks that keep bad values at the edge: a wrong
value is a usage error (exit 2) naming the option, never a failure deep inside torch."""
from __future__ import annotations

import math
from typing import Optional

import typer

from hmgen.bundled import DEFAULT, TEXT


INT64 = (-(1 << 63), (1 << 63) - 1)
TEXT_PARAMETERS = ("prime", "text")       # text a command writes or reads (not a file name): must be UTF-8


def check_values(ctx) -> None:
    """The one validation of numbers at the CLI's edge, for every command after typer parsed its options: an
    integer must fit in 64 bits and a float must be finite (typer's min/max let 10**30 and inf through); a text
    argument must be UTF-8 (the shell may pass any bytes: Python holds those that are not as surrogate escapes).
    A failure is a usage error (exit 2) naming the option. Ranges of single options stay on the options."""
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            raise typer.BadParameter(f"{value} does not fit in a 64-bit integer", ctx=ctx, param=param)
        if isinstance(value, float) and not math.isfinite(value):
            raise typer.BadParameter(f"{value} is not a finite number", ctx=ctx, param=param)
        if param.name in TEXT_PARAMETERS and isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                byte = ord(value[e.start]) - 0xDC00 if 0xDC80 <= ord(value[e.start]) <= 0xDCFF else None
                shown = f"byte {byte:#04x}" if byte is not None else f"{value[e.start]!r}"
                raise typer.BadParameter(f"not UTF-8 text ({shown} at character {e.start + 1})", ctx=ctx,
                                         param=param) from None


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


def threads_option(help: str = "CPU threads for torch (default: all cores)."):
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
    if n:
        import torch
        torch.set_num_threads(n)
