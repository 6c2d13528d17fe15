"""Options several commands share, declared once, and the checks that keep bad values at the edge: a wrong
value is a usage error (exit 2) naming the option, never a failure deep inside torch."""
from __future__ import annotations

import math
from typing import Optional

import typer

from hmgen.bundled import DEFAULT, TEXT


def finite(value: Optional[float]) -> Optional[float]:
    """Typer callback: refuse inf and nan (typer's min/max let inf through)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


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


def threads_option(help: str = "CPU threads for torch (default: all cores)."):
    return typer.Option(None, "--threads", min=1, help=help)


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
