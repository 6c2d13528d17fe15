"""Which torch device a command runs on: one rule for every command."""
import torch

from hmgen.errors import UsageError


def pick_device(name: str) -> torch.device:
    """"auto" means CUDA when present, else the CPU; "cpu", "cuda" and "cuda:N" are taken as they are,
    but a CUDA device that is not there is refused here, not deep inside torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("no CUDA device available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"no such CUDA device {name!r} ({torch.cuda.device_count()} present)")
    return device
