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


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device` (None: not known)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


BYTES_PER_TRAINED_PARAMETER = 16   # float32 weight, its gradient and Adam's two moments


def build_trainable(make, device: torch.device) -> torch.nn.Module:
    """make() on `device`, after checking that it fits: it is first built on torch's meta device (no memory, no
    random numbers drawn) to count its parameters, and refused in one line when their weights, gradients and Adam
    state would not fit in the memory free there (`--embed-dim 100000000000` would otherwise die in the allocator
    or in the kernel's out-of-memory killer). A tensor too large for torch to describe at all (over 2**63 bytes:
    `--hidden 3000000000`) is refused the same way."""
    try:
        with torch.device("meta"):
            probe = make()
        count = sum(p.numel() for p in probe.parameters())
    except (RuntimeError, TypeError, OverflowError) as e:     # "Storage size calculation overflowed", ...
        if "overflow" not in str(e).lower():
            raise
        count = None                                          # more than 2**61 float32 parameters
    need, have = BYTES_PER_TRAINED_PARAMETER * (count or 1 << 61), available_memory(device)
    if count is None or (have is not None and need > have):
        size = f"{count:,} parameters needs about" if count else f"more than {1 << 61:,} parameters needs over"
        free = f"{device.type} has {have / 2**30:,.1f} GiB free" if have is not None else "too large for any machine"
        raise UsageError(f"a model of {size} {need / 2**30:,.1f} GiB to train (weights, gradients, Adam); {free}: "
                         f"choose smaller sizes")
    return make().to(device)
