"""Files and streams for `hmgen compress` / `hmgen decompress`, in the gzip / xz tradition.

Never lose data: output goes to a temporary file beside its destination, renamed into place only after
it was written completely; a compressed input's source file is removed only after the archive was decoded
again and compared byte for byte with it (read again through the same open file, never reopened); a
decompressed archive is removed only after every block matched its CRC32. On any failure the temporary file
is removed and the input left untouched.

Which named inputs are taken (open_input, one policy for both commands, as gzip and xz): a directory is
skipped; anything else that is not a regular file (a device, a FIFO) is read only where nothing is written beside
it or removed, with -c, -t or -l (then as a stream, once), and skipped otherwise; a socket is always skipped; a
symbolic link, or a file with other hard links, is skipped when it would
be removed, unless -f (with -k or -c it is read through). A skipped file is a warning (exit status 3).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager

from hmgen.archive.format import (DEFAULT_LEVEL, LEVELS, Engine, FormatError, Header, Level, Listing, Stats,
                                  code_cm, compress, decompress, list_archive, read_header)
from hmgen.fs import atomic_write
from hmgen.modelfile import ModelError, ModelNotFound, load_arrays

SUFFIX = ".hmz"
SPOOL = 64 << 20          # decoded bytes held in memory before stdout output spills to a temporary file


class Skipped(Exception):
    """A file left alone with a warning (gzip's exit status 2), e.g. an unknown suffix."""


def coder_compiled() -> bool:
    """Whether the compiled coder (engine and the file's models) is in numba's disk cache; if not, its first use
    compiles it."""
    from hmgen.archive.adaptive import predictor2
    from hmgen.archive.engine import cpu_engine
    from hmgen.jit import compiled
    return compiled(cpu_engine.layer_step, cpu_engine.output_embedding, cpu_engine.head_frequencies, predictor2.code)


def warm_up(q: Engine) -> None:
    """Load every compiled function the coder runs (or compile it, on a first run), by coding one byte both ways
    with the network and the file's models (method 11, what text takes; method 12 runs the same compiled code).
    Archives of versions 1-4 load their older models' code when they first need it."""
    payload = code_cm(q, 1, 1, True, data=b"\n")
    code_cm(q, 1, 1, False, payload=payload)


class Engines:
    """Integer models by name, built once per run: (engine, its name). On the CPU the compiled engine
    (hmgen.archive.engine.cpu_engine, no torch); on another device torch's (hmgen.archive.engine.torch_engine);
    the same integers.
    `guard` wraps the loading of compiled code (warm_up): the CLI defers signals there, because an exception
    raised inside numba's LLVM callbacks can crash the interpreter."""

    def __init__(self, device: str = "cpu", guard: Callable[[], ContextManager] = contextlib.nullcontext):
        self.device = device
        self.guard = guard
        self.cache: dict[str, tuple[Engine, str]] = {}

    def get(self, model: str | None) -> tuple[Engine, str]:
        key = model or ""
        if key not in self.cache:
            q, name = self.cpu_engine(model) if self.device == "cpu" else self.torch_engine(model)
            with self.guard():
                warm_up(q)
            self.cache[key] = (q, name)
        return self.cache[key]

    @staticmethod
    def cpu_engine(model: str | None) -> tuple[Engine, str]:
        from hmgen.archive.engine.cpu_engine import IntegerLM
        name, meta, arrays = load_arrays(model)
        if meta.get("vocab", {}).get("kind") != "bytes":
            raise ModelError(f"model {name!r} has a character vocabulary; compression needs a byte-level model")
        try:
            return IntegerLM(meta["model"], arrays), name
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"model {name!r}: its weights do not match its description ({type(e).__name__})") from None

    def torch_engine(self, model: str | None) -> tuple[Engine, str]:
        from hmgen.archive.engine.torch_engine import QuantLM
        name, meta, arrays = load_arrays(model)
        if meta.get("vocab", {}).get("kind") != "bytes":
            raise ModelError(f"model {name!r} has a character vocabulary; compression needs a byte-level model")
        return QuantLM(cfg=meta["model"], weights=arrays, device=self.device), name

    def for_archive(self, head: Header, model: str | None) -> tuple[Engine, str]:
        """The model an archive names (or the one given), refusing a model with other weights."""
        try:
            q, name = self.get(model or head.name)
        except ModelNotFound:                 # not one that is there but damaged: that error says so itself
            if model:
                raise
            raise FormatError(f"archive needs model {head.name!r} (weights sha256 {head.weights_hash.hex()[:16]}…), "
                              f"which is not installed: pass --model PATH") from None
        return q, name


class CompareSink(io.RawIOBase):
    """A writable stream that compares what it receives with a reference file."""

    def __init__(self, reference: BinaryIO):
        self.reference = reference
        self.equal = True

    def writable(self):
        return True

    def write(self, data) -> int:
        if self.reference.read(len(data)) != bytes(data):
            self.equal = False
        return len(data)


class NamedInput(io.RawIOBase):
    """An open input whose read errors name it ("notes.txt: Input/output error"), not a temporary output."""

    def __init__(self, f: BinaryIO, name: str):
        self.f, self.name_shown = f, name

    def readable(self):
        return True

    def seekable(self):
        return self.f.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def close(self):
        self.f.close()
        super().close()

    def readinto(self, b) -> int:
        try:
            return self.f.readinto(b)
        except OSError as e:
            raise type(e)(e.errno, e.strerror, self.name_shown) from None


class HeldHeader(io.RawIOBase):
    """Standard output that holds an archive's first write (its header) until a second one follows: an input
    that fails before its first block was read leaves nothing on stdout."""

    def __init__(self, out: BinaryIO):
        self.out, self.held = out, None

    def writable(self):
        return True

    def write(self, data) -> int:
        if self.held is None:
            self.held = bytes(data)
            return len(data)
        if self.held:
            self.out.write(self.held)
            self.held = b""
        return self.out.write(data)


@dataclass
class Result:
    stats: Stats
    output: str          # where the result went: a path, "stdout" or "(test)"


def open_input(path: str, *, to_stdout: bool, keep: bool, force: bool) -> BinaryIO:
    """A named input opened once, by the module's policy (see the docstring): raises Skipped for what is left
    alone. Opened without blocking (a FIFO with no writer, a serial line), then switched to blocking reads."""
    removing = not (keep or to_stdout)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path) from None
    if stat.S_ISLNK(st.st_mode) and removing and not force:
        raise Skipped(f"{path}: is a symbolic link -- unchanged (-k keeps it and reads what it points to; -f too)")
    if stat.S_ISSOCK(os.stat(path).st_mode):          # cannot be opened at all
        raise Skipped(f"{path}: is a socket, not a regular file -- ignored")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise Skipped(f"{path}: is a directory -- ignored")
        if not stat.S_ISREG(st.st_mode) and not to_stdout:
            raise Skipped(f"{path}: is not a regular file -- ignored (-c reads it as a stream)")
        if st.st_nlink > 1 and removing and not force:
            others = st.st_nlink - 1
            raise Skipped(f"{path}: has {others} other link{'s' if others > 1 else ''} -- unchanged (-k or -f)")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return io.BufferedReader(NamedInput(os.fdopen(fd, "rb", buffering=0, closefd=True), path), 1 << 20)
    except BaseException:
        os.close(fd)
        raise


def compress_path(path: str, engines: Engines, model: str | None, *, keep: bool, force: bool, to_stdout: bool,
                  level: Level | None = None, progress: Callable[[int], None] | None = None,
                  threads: int = 1) -> Result:
    """Compress one file (or "-" for stdin) to FILE.hmz or stdout, at `level` (default: LEVELS[DEFAULT_LEVEL])."""
    level = level or LEVELS[DEFAULT_LEVEL]
    q, name = engines.get(model)
    if path == "-":
        out = sys.stdout.buffer
        st = compress(NamedInput(sys.stdin.buffer, "standard input"), HeldHeader(out), q, name, progress=progress,
                      level=level, threads=threads)
        out.flush()
        return Result(st, "stdout")
    with open_input(path, to_stdout=to_stdout, keep=keep, force=force) as f:      # a missing input: said first
        if path.endswith(SUFFIX) and not (to_stdout or force):     # as gzip, xz, zstd: -c and -f compress it again
            raise Skipped(f"{path}: already has {SUFFIX} suffix -- unchanged (-c or -f compresses it again)")
        dst = Path(path + SUFFIX)
        if not to_stdout and dst.exists() and not force:
            raise Skipped(f"{dst}: already exists; not overwritten (use -f)")
        if to_stdout:
            st = compress(f, HeldHeader(sys.stdout.buffer), q, name, progress=progress, level=level, threads=threads)
            sys.stdout.buffer.flush()
            return Result(st, "stdout")
        stats = {}

        def write(tmp: str):
            with open(tmp, "wb") as out:
                stats["st"] = compress(f, out, q, name, progress=progress, level=level, threads=threads)
                out.flush()
                os.fsync(out.fileno())
            if not keep:                      # the input goes away: first prove the archive restores it
                verify(Path(tmp), f, q, name, threads)

        atomic_write(dst, write, like=path)
    if not keep:
        os.unlink(path)
    return Result(stats["st"], str(dst))


def verify(archive: Path, original: BinaryIO, q: Engine, name: str, threads: int = 1) -> None:
    """Decode the archive and compare it with the original, read again from its start through the same open
    file (a regular file: open_input allows removing nothing else)."""
    original.seek(0)
    with open(archive, "rb") as a:
        sink = CompareSink(original)
        decompress(a, sink, q, name, threads=threads)
        if not sink.equal or original.read(1):
            raise FormatError(f"{archive}: verification failed, the archive does not restore the input; input kept")


def to_stdout_when_verified(decode: Callable[[BinaryIO], Stats]) -> Stats:
    """Decode into a spooled temporary file, copied to stdout only once every member and block was verified:
    a damaged later member of a concatenation writes nothing (memory up to SPOOL bytes, then a temporary file)."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL) as spool:
        st = decode(spool)
        spool.seek(0)
        shutil.copyfileobj(spool, sys.stdout.buffer, 1 << 20)
    sys.stdout.buffer.flush()
    return st


def decompress_path(path: str, engines: Engines, model: str | None, *, keep: bool, force: bool, to_stdout: bool,
                    test: bool = False, progress: Callable[[int], None] | None = None, threads: int = 1) -> Result:
    """Decompress (or with test=True, only check) one archive, "-" for stdin. Concatenated archives decode to
    the concatenation; each member's model is loaded only if one of its blocks needs it."""
    resolve = lambda head: engines.for_archive(head, model)
    if path == "-":
        src = NamedInput(sys.stdin.buffer, "standard input")
        head = read_header(src)
        if test:
            return Result(decompress(src, None, resolve, head=head, progress=progress, threads=threads), "(test)")
        return Result(to_stdout_when_verified(lambda out: decompress(src, out, resolve, head=head, progress=progress, threads=threads)),
                      "stdout")
    with open_input(path, to_stdout=to_stdout or test, keep=keep, force=force) as f:   # a missing input: said first
        if not test and not to_stdout and not path.endswith(SUFFIX):
            raise Skipped(f"{path}: unknown suffix -- ignored (expected {SUFFIX})")
        dst = Path(path[:-len(SUFFIX)]) if path.endswith(SUFFIX) else None
        if not (test or to_stdout) and dst.exists() and not force:
            raise Skipped(f"{dst}: already exists; not overwritten (use -f)")
        head = read_header(f)
        if test:
            return Result(decompress(f, None, resolve, head=head, progress=progress, threads=threads), "(test)")
        if to_stdout:
            return Result(to_stdout_when_verified(lambda out: decompress(f, out, resolve, head=head, progress=progress, threads=threads)),
                          "stdout")
        stats = {}

        def write(tmp: str):
            with open(tmp, "wb") as out:
                stats["st"] = decompress(f, out, resolve, head=head, progress=progress, threads=threads)
                out.flush()
                os.fsync(out.fileno())

        atomic_write(dst, write, like=path)
    if not keep:
        os.unlink(path)
    return Result(stats["st"], str(dst))


def list_path(path: str) -> Listing:
    """An archive's listing (-l), "-" for stdin; a named input is taken as -t takes it (open_input: nothing is
    written or removed, so a device or FIFO is read as a stream, a directory or socket skipped)."""
    if path == "-":
        return list_archive(NamedInput(sys.stdin.buffer, "standard input"))
    with open_input(path, to_stdout=True, keep=True, force=False) as f:
        return list_archive(f)
