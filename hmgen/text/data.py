"""Corpora, vocabularies and truncated-BPTT batches.

A corpus is named by a spec string:
  PATH            a text file or a folder of them (.xz / .gz read directly); byte-level (256 symbols).
                  In a folder, files whose names contain "train" / "valid" / "test" form those splits.
  ptb:DIR         Mikolov's character-level Penn Treebank (ptb.char.{train,valid,test}.txt or .txt.xz), own symbol set.
  text8[:DIR]     Mahoney's text8 (27 symbols), fetched on request, split 90M/5M/5M.
  enwik8[:DIR]    Mahoney's enwik8 (byte-level), fetched on request, split 90M/5M/5M.
"""
from __future__ import annotations

import gzip
import lzma
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hmgen.errors import DataError, UsageError


class VocabError(DataError):
    pass


@dataclass
class Vocab:
    """Either all 256 byte values ("bytes") or a fixed list of characters ("chars")."""
    kind: str = "bytes"
    symbols: list[str] | None = None

    def __post_init__(self):
        if self.kind == "chars":
            self._index = {ch: i for i, ch in enumerate(self.symbols)}
        elif self.kind != "bytes":
            raise DataError(f"unknown vocabulary kind {self.kind!r}")

    @property
    def size(self) -> int:
        return 256 if self.kind == "bytes" else len(self.symbols)

    def encode(self, text: str | bytes) -> np.ndarray:
        """Text (str, or raw bytes for a byte vocabulary) -> uint8/int ids. Raises VocabError for symbols
        the vocabulary cannot encode."""
        if self.kind == "bytes":
            data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
            return np.frombuffer(data, dtype=np.uint8).copy()
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise VocabError(f"input is not valid UTF-8 ({e.reason} at byte {e.start})") from None
        missing = sorted(set(text) - self._index.keys())
        if missing:
            shown = "".join(missing[:20])
            raise VocabError(
                f"{len(missing)} character(s) not in this model's vocabulary: {shown!r} "
                f"(it knows {''.join(self.symbols)!r})")
        dtype = np.uint8 if self.size <= 256 else np.int32
        return np.fromiter((self._index[ch] for ch in text), dtype=dtype, count=len(text))

    def decode(self, ids) -> bytes:
        """ids -> bytes (UTF-8 for a character vocabulary)."""
        ids = [int(i) for i in ids]
        if self.kind == "bytes":
            return bytes(ids)
        return "".join(self.symbols[i] for i in ids).encode("utf-8")

    def to_dict(self) -> dict:
        return {"kind": self.kind} if self.kind == "bytes" else {"kind": "chars", "symbols": self.symbols}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls(d["kind"], d.get("symbols"))

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls("chars", sorted(set(text)))


@dataclass
class Corpus:
    name: str
    vocab: Vocab
    splits: dict[str, np.ndarray]     # split name -> ids (uint8)
    source: str

    def split(self, name: str) -> np.ndarray:
        if name not in self.splits:
            raise DataError(f"{self.name} has no {name!r} split (it has: {', '.join(self.splits)})")
        return self.splits[name]


def read_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes (.xz and .gz decompressed), every file in a folder in name order, or "-": standard input."""
    if str(path) == "-":
        import sys
        return sys.stdin.buffer.read()
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: folder holds no files")
        return b"".join(read_bytes(p) for p in files)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    try:
        if path.suffix == ".xz":
            return lzma.decompress(path.read_bytes())
        if path.suffix == ".gz":
            return gzip.decompress(path.read_bytes())
        return path.read_bytes()
    except (lzma.LZMAError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def _ids(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def ptb_text(raw: bytes) -> str:
    """Mikolov's char-PTB format -> plain text. Symbols are separated by spaces, `_` separates words and
    every line ends with "\\n " (SOURCES.md). `_` becomes a space and each line a "\\n": a bijection onto the
    50-symbol set (49 symbols + end of line), so BPC is that of the paper's table."""
    lines = raw.decode("utf-8").split("\n")
    out = []
    for line in lines:
        symbols = line.split()
        if symbols:
            out.append("".join(" " if s == "_" else s for s in symbols) + "\n")
    return "".join(out)


def load_ptb(directory: str | os.PathLike) -> Corpus:
    d = Path(directory)
    texts = {}
    for split in ("train", "valid", "test"):
        f = d / f"ptb.char.{split}.txt"
        if not f.exists() and f.with_name(f.name + ".xz").exists():
            f = f.with_name(f.name + ".xz")          # xz-compressed copies (lighter to carry to a GPU machine)
        if not f.exists():
            raise DataError(f"{f}: not found (ptb:DIR expects ptb.char.{{train,valid,test}}.txt, or .txt.xz)")
        texts[split] = ptb_text(read_bytes(f))
    vocab = Vocab.from_text("".join(texts.values()))   # = train's 50 symbols on the real files
    return Corpus("ptb", vocab, {k: vocab.encode(v) for k, v in texts.items()}, str(d))


def split_90_5_5(ids: np.ndarray) -> dict[str, np.ndarray]:
    """The paper's 90M/5M/5M split of text8/enwik8 (as fractions, so a small stand-in splits alike)."""
    n = len(ids)
    a, b = n * 90 // 100, n * 95 // 100
    return {"train": ids[:a], "valid": ids[a:b], "test": ids[b:]}


def split_files(folder: Path) -> dict[str, list[Path]]:
    """A folder's files named *train* / *valid* / *test* (its splits, when there is a train file)."""
    files = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))
    return {s: [f for f in files if s in f.name.lower()] for s in ("train", "valid", "test")}


def load_path(path: str, valid: str | None = None) -> Corpus:
    """Any text file or folder, byte-level."""
    p = Path(path)
    splits: dict[str, np.ndarray] = {}
    if p.is_dir():
        named = split_files(p)
        if named["train"]:
            for s, fs in named.items():
                if fs:
                    splits[s] = _ids(b"".join(read_bytes(f) for f in fs))
    if not splits:
        splits["train"] = _ids(read_bytes(p))
    if valid:
        splits["valid"] = _ids(read_bytes(valid))
    if "valid" not in splits:
        # hold out the last 1% (at most 1 MB) of the training data
        ids = splits["train"]
        k = min(len(ids) // 100, 1_000_000)
        if k >= 2:
            splits["train"], splits["valid"] = ids[:-k], ids[-k:]
    if len(splits["train"]) < 2:
        raise DataError(f"{path}: too little data to train on ({len(splits['train'])} bytes)")
    return Corpus(p.name, Vocab("bytes"), splits, str(p))


def load_corpus(spec: str, valid: str | None = None, download: bool = False) -> Corpus:
    """Resolve a data spec (see the module docstring)."""
    name, _, rest = spec.partition(":")
    if name == "ptb" and rest:
        return load_ptb(rest)
    if name in ("text8", "enwik8") and (rest or not Path(spec).exists()):
        from hmgen.text.datasets import fetch
        raw = read_bytes(fetch(name, rest or None, download=download))
        if name == "text8":
            text = raw.decode("ascii")
            vocab = Vocab.from_text(text)
            ids = vocab.encode(text)
        else:
            vocab, ids = Vocab("bytes"), _ids(raw)
        return Corpus(name, vocab, split_90_5_5(ids), name)
    return load_path(spec, valid)


def load_eval_ids(spec: str, split: str | None, vocab: Vocab) -> np.ndarray:
    """Data to evaluate a model on: a plain file or folder, whole (it has no splits: asking for one is a
    usage error), or a split of a corpus (default: test; a corpus without one is refused, naming its splits)."""
    p = Path(spec)
    if spec == "-" or p.is_file() or (p.is_dir() and not split_files(p)["train"]):
        if split is not None:
            raise UsageError(f"{spec}: a plain {'folder' if p.is_dir() else 'file'} has no splits; it is "
                             f"evaluated whole (leave out --split {split})")
        return vocab.encode(read_bytes(spec))
    corpus = load_corpus(spec)
    if split is None and "test" not in corpus.splits:
        raise UsageError(f"{spec} has no test split (it has: {', '.join(corpus.splits)}); choose one with --split")
    if split is not None and split not in corpus.splits:
        raise UsageError(f"{spec} has no {split!r} split (it has: {', '.join(corpus.splits)})")
    ids = corpus.split(split or "test")
    if corpus.vocab != vocab:
        return vocab.encode(corpus.vocab.decode(ids))
    return ids


class StreamBatches:
    """Truncated-BPTT batches. The data is cut into `batch` contiguous streams; segment k of the epoch is
    columns [k*T, (k+1)*T) of every stream, so the state at the end of one segment is the right state
    for the start of the next. A batch is named by its global index, which makes resuming exact.
    With several processes (DDP) process r takes streams r, r+world, ... of the same global batch."""

    def __init__(self, ids: np.ndarray, batch: int, seq_len: int, rank: int = 0, world: int = 1):
        if batch % world:
            raise DataError(f"batch size {batch} is not divisible by the {world} processes")
        self.ids, self.batch, self.seq_len = ids, batch, seq_len
        self.stream_len = (len(ids) - 1) // batch
        self.per_epoch = self.stream_len // seq_len
        if self.per_epoch < 1:
            raise DataError(f"too little data ({len(ids)} symbols) for batch {batch} x length {seq_len}")
        self.starts = np.arange(rank, batch, world) * self.stream_len

    def __len__(self) -> int:
        return self.per_epoch

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Batch `index` (counting across epochs) -> x, y of shape (batch/world, T), and whether it starts an
        epoch (the carried state must then be reset)."""
        k = index % self.per_epoch
        pos = self.starts[:, None] + k * self.seq_len + np.arange(self.seq_len + 1)[None, :]
        chunk = self.ids[pos]
        return chunk[:, :-1], chunk[:, 1:], k == 0
