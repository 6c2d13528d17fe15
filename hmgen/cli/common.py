"""Where command output goes wrong: a file that cannot be written, a standard output that is closed, full,
or whose reader left. One policy for every command (README "Exit status")."""
from __future__ import annotations

import errno
import io
import os
import sys
from contextlib import contextmanager

from hmgen.errors import HmgenError
from hmgen.fs import atomic_write

# `hmgen sample | head -c 10`: when the reader of stdout leaves, every command stops quietly with this status,
# 128 + SIGPIPE, what a shell reports for gzip, xz or cat (they die of SIGPIPE); hmgen's cleanup still runs,
# so no partial file is left behind.
READER_LEFT = 141


def debugging() -> bool:
    """HMGEN_DEBUG=1 (any value but empty or 0) lets tracebacks through."""
    return os.environ.get("HMGEN_DEBUG", "") not in ("", "0")


def say(message: str) -> None:
    """One line on stderr. A name that came in as bytes that are not UTF-8 (Python holds them as surrogate
    escapes, '\\udcff') is shown as those bytes, as gzip shows it, not as an escape."""
    stream = sys.stderr
    line = message + "\n"
    try:
        data = line.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = line.encode("utf-8", "backslashreplace")
    try:
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()
    except AttributeError:                 # a text-only stream (tests capture stderr so)
        stream.write(data.decode("utf-8", "replace"))
    except (OSError, ValueError):          # stderr unusable: nothing more can be said
        pass


@contextmanager
def writing(path):
    """Turn a failed write of `path` into one line naming it (not a temporary file's name)."""
    try:
        yield
    except OSError as e:
        raise HmgenError(f"{path}: cannot write ({e.strerror or e})") from None


def save_output(path: str, data: bytes | str) -> None:
    """Write a command's output file: a regular file (new or replaced) through a temporary file beside it, renamed
    into place only once complete, so a failure leaves no partial file; a device or pipe (/dev/null, a FIFO) is
    written as it is. The folder must exist (a mistyped one is an error, not created)."""
    from pathlib import Path

    data = data.encode("utf-8") if isinstance(data, str) else data
    p = Path(path)
    with writing(path):
        if p.exists() and not p.is_file():
            with open(p, "wb") as f:
                f.write(data)
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


class ClosedStdin(io.RawIOBase):
    """Standard input closed by the caller (`hmgen compress <&-`): reading it fails in one line, as in gzip."""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF), "standard input")


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def standard_streams() -> None:
    """One policy for the three standard streams, set up before any command runs. A closed one is held open on
    /dev/null, so that no file hmgen opens later takes its number (a temporary archive must never become
    "standard output"), and then: closed stdin reads fail in one line ("standard input: Bad file descriptor");
    closed stdout writes fail in one line ("standard output: ..."); closed stderr swallows messages and progress,
    and the command still does its work (its exit status still tells)."""
    closed = [fd for fd in (0, 1, 2) if not is_open(fd)]
    for fd in closed:
        null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if 0 in closed:
        sys.stdin = io.TextIOWrapper(io.BufferedReader(ClosedStdin()), encoding="utf-8")
    if 2 in closed:
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                      line_buffering=True)
    sys.stdout = named_stdout(closed=1 in closed)


def named_stdout(closed: bool = False):
    """sys.stdout rebuilt over `Stdout` (same encoding and buffering), or over ClosedStdout when fd 1 is closed."""
    old = sys.stdout
    raw = ClosedStdout() if closed else Stdout(1, "w", closefd=False)
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
