"""hmgen as a compression library, in the manner of Python's lzma and gzip modules:

    import hmgen
    packed = hmgen.compress(b"some text")                  # one archive member (.hmz), bytes in, bytes out
    assert hmgen.decompress(packed) == b"some text"         # any archive: concatenated members too
    with hmgen.open("notes.txt.hmz", "wt") as f:            # a file object, streaming (bounded memory)
        f.write("text")
    with hmgen.open("notes.txt.hmz", "rt") as f:            # "rb" / "wb" / "xb" / "ab" for bytes
        print(f.read())

The archives are the CLI's (`hmgen compress`, `hmgen decompress` read and write the same). A damaged archive, or
one that needs a model that is not installed, raises hmgen.archive.format.FormatError; a model that cannot be
loaded, hmgen.modelfile.ModelError; both are hmgen.errors.HmgenError. Models are loaded once per process.
"""
from __future__ import annotations

import builtins
import io
import os
from typing import BinaryIO

from hmgen.archive.format import (BLOCK, DEFAULT_LEVEL, LEVELS, FormatError, Level, MemberWriter, Stats,
                                  decoded_blocks, read_header)
from hmgen.archive.files import Engines

_ENGINES: dict[str, Engines] = {}


def engines(device: str = "cpu") -> Engines:
    if device not in _ENGINES:
        _ENGINES[device] = Engines(device)
    return _ENGINES[device]


def level_of(level: int | None) -> Level:
    if level is None:
        return LEVELS[DEFAULT_LEVEL]
    if level not in LEVELS:
        raise ValueError(f"level must be one of 1..9, got {level!r}")
    return LEVELS[level]


def compress(data: bytes, model: str | None = None, *, level: int | None = None, threads: int = 0,
             device: str = "cpu") -> bytes:
    """`data` as one archive member, coded with `model` (default: the bundled default text model) on `threads`
    threads (0: one per core; the archive is the same for any number)."""
    out = io.BytesIO()
    with HmzFile(out, "wb", model=model, level=level, threads=threads, device=device) as f:
        f.write(data)
    return out.getvalue()


def decompress(data: bytes, model: str | None = None, *, threads: int = 0, device: str = "cpu") -> bytes:
    """The bytes an archive holds (the concatenation of its members'). `model` overrides the one each member
    names (its weights must still be the ones the member was made with)."""
    with HmzFile(io.BytesIO(data), "rb", model=model, threads=threads, device=device) as f:
        return f.read()


def open(filename: str | os.PathLike | BinaryIO, mode: str = "rb", *, model: str | None = None,
         level: int | None = None, threads: int = 0, device: str = "cpu", encoding: str | None = None,
         errors: str | None = None, newline: str | None = None):
    """An archive opened as a file object: "rb", "wb", "xb", "ab" (an appended member) give an HmzFile; "rt",
    "wt", "xt", "at" wrap it in io.TextIOWrapper (encoding, errors, newline), as lzma.open does."""
    text = "t" in mode
    if text and "b" in mode:
        raise ValueError(f"invalid mode {mode!r}")
    binary = HmzFile(filename, mode.replace("t", ""), model=model, level=level, threads=threads, device=device)
    if text:
        return io.TextIOWrapper(binary, encoding, errors, newline)
    return binary


class HmzFile(io.BufferedIOBase):
    """A .hmz archive as a binary file object. Reading decodes block by block (each block checked against its
    CRC32 before any of it is returned); writing codes a block whenever BLOCK bytes have been written, and the
    rest at close(), which also writes the member's end. Not seekable."""

    def __init__(self, filename: str | os.PathLike | BinaryIO, mode: str = "rb", *, model: str | None = None,
                 level: int | None = None, threads: int = 0, device: str = "cpu"):
        if mode not in ("r", "rb", "w", "wb", "x", "xb", "a", "ab"):
            raise ValueError(f"invalid mode {mode!r}")
        self._mode = mode[0]
        if isinstance(filename, (str, bytes, os.PathLike)):
            self._file, self._owns = builtins.open(filename, self._mode + "b"), True
        elif hasattr(filename, "read" if self._mode == "r" else "write"):
            self._file, self._owns = filename, False
        else:
            raise TypeError("filename must be a path or a file object")
        self._engines, self._model = engines(device), model
        self._threads = threads or len(os.sched_getaffinity(0))
        self._buffer = bytearray()
        self.stats = Stats()
        if self._mode == "r":
            self._blocks = None                 # decoding starts at the first read
        else:
            q, name = self._engines.get(model)
            self._writer = MemberWriter(self._file, q, name, level=level_of(level), threads=self._threads)

    # -- reading
    def readable(self) -> bool:
        return self._mode == "r"

    def _fill(self) -> bool:
        """Decode the next block into the buffer; False at the end of the archive."""
        if self._blocks is None:
            head = read_header(self._file)
            self._blocks = decoded_blocks(self._file, lambda h: self._engines.for_archive(h, self._model), head,
                                          self.stats, threads=self._threads)
        try:
            self._buffer += next(self._blocks)
            return True
        except StopIteration:
            return False

    def read(self, size: int | None = -1) -> bytes:
        self._check("r")
        if size is None or size < 0:
            while self._fill():
                pass
            size = len(self._buffer)
        while len(self._buffer) < size and self._fill():
            pass
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def read1(self, size: int = -1) -> bytes:
        self._check("r")
        if not self._buffer:
            self._fill()
        return self.read(len(self._buffer) if size is None or size < 0 else min(size, len(self._buffer)))

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    # -- writing
    def writable(self) -> bool:
        return self._mode != "r"

    def write(self, data) -> int:
        self._check("w")
        data = memoryview(data).cast("B")
        self._buffer += data
        while len(self._buffer) >= BLOCK:
            self._writer.write_block(bytes(self._buffer[:BLOCK]))
            del self._buffer[:BLOCK]
        return len(data)

    def _check(self, want: str) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if (want == "r") != (self._mode == "r"):
            raise io.UnsupportedOperation("not readable" if want == "r" else "not writable")

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._mode != "r":
                if self._buffer:
                    self._writer.write_block(bytes(self._buffer))
                self.stats = self._writer.close()
                self._buffer.clear()
                if hasattr(self._file, "flush"):
                    self._file.flush()
        finally:
            if self._owns:
                self._file.close()
            super().close()


__all__ = ["compress", "decompress", "open", "HmzFile", "FormatError"]
