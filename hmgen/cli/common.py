"""Where command output goes wrong: a file that cannot be written, a standard output that is closed, full,
or whose reader left. One policy for every command (README "Exit status")."""
from __future__ import annotations

import errno
import io
import os
import sys
from contextlib import contextmanager

from hmgen.errors import HmgenError

# `hmgen sample | head -c 10`: when the reader of stdout leaves, every command stops quietly with this status,
# 128 + SIGPIPE, what a shell reports for gzip, xz or cat (they die of SIGPIPE); hmgen's cleanup still runs,
# so no partial file is left behind.
READER_LEFT = 141


def one_line(e: OSError) -> str:
    """An OSError as the one line a user reads: "PATH: reason" (PATH may be "standard output")."""
    reason = e.strerror or str(e)
    return f"{e.filename}: {reason}" if e.filename else reason


@contextmanager
def writing(path):
    """Turn a failed write of `path` into one line naming it (not a temporary file's name)."""
    try:
        yield
    except OSError as e:
        raise HmgenError(f"{path}: cannot write ({e.strerror or e})") from None


def save_output(path: str, data: bytes) -> None:
    """Write a command's output file: a regular file (new or replaced) through a temporary file beside it, renamed
    into place only once complete, so a failure leaves no partial file; a device or pipe (/dev/null, a FIFO) is
    written as it is. The folder must exist (a mistyped one is an error, not created)."""
    from pathlib import Path

    from hmgen.modelio import atomic_write
    p = Path(path)
    with writing(path):
        if p.exists() and not p.is_file():
            with open(p, "wb") as f:
                f.write(data)
        elif not p.parent.is_dir():
            raise FileNotFoundError(2, "No such file or directory")
        else:
            atomic_write(p, lambda tmp: Path(tmp).write_bytes(data))


class Stdout(io.FileIO):
    """File descriptor 1 with its name in its errors: "hmgen: standard output: No space left on device"."""

    def write(self, b) -> int:
        try:
            return super().write(b)
        except OSError as e:
            e.filename = "standard output"
            raise


class ClosedStdout(io.RawIOBase):
    """Standard output closed by the caller (`hmgen compress -c f >&-`): every write fails, as in gzip."""

    silenced = False

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.silenced:
            return len(b)
        raise OSError(errno.EBADF, os.strerror(errno.EBADF), "standard output")


def named_stdout():
    """sys.stdout rebuilt over `Stdout` (same encoding and buffering), or over ClosedStdout when fd 1 is closed."""
    old = sys.stdout
    try:
        raw = Stdout(1, "w", closefd=False)
    except OSError:
        raw = ClosedStdout()
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=getattr(old, "encoding", None) or "utf-8",
                            errors=getattr(old, "errors", None) or "strict",
                            line_buffering=bool(getattr(old, "line_buffering", False)))


def silence_stdout() -> None:
    """After a failed write to stdout, make the interpreter's final flush harmless (no "Exception ignored"
    lines): what stdout still holds goes nowhere."""
    try:
        sys.stdout.flush()
        return
    except (OSError, ValueError):
        pass
    raw = getattr(getattr(sys.stdout, "buffer", None), "raw", None)
    if isinstance(raw, ClosedStdout):
        raw.silenced = True
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
