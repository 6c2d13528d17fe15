"""IAM-OnDB: loading (original layout or the aligned npz), official splits, preprocessing.

A raw line is an int array (N, 3): absolute whiteboard x, y (y grows downward, as in the XML) and the
end-of-stroke bit (1 on the last point of every <Stroke>). Preprocessing turns it into a float array
(M, 3) of pen offsets (dx, dy with y growing UPWARD, eos) in whiteboard units; the model normalises the
offsets with mean/std statistics computed on the training split and stored with the model.

Original layout (what a registered IAM-OnDB user has):
  DIR/lineStrokes/<a01>/<a01-000>/<a01-000u-01>.xml   or  DIR/lineStrokes-all.tar.gz / .tar.xz / .tar
  DIR/ascii/<a01>/<a01-000>/<a01-000u>.txt            or  DIR/ascii-all.tar.gz / .tar.xz / .tar
  DIR/trainset.txt, testset_v.txt, testset_t.txt, testset_f.txt  (or in DIR/splits/): the official task split
The aligned npz (DIR/iamondb_lines.npz, see the data's SOURCES.md) is a faster path to the
same lines.

Splits (the IAM-OnDB task files): our "train" = trainset + testset_t (val-2), "valid" = testset_v (val-1,
early stopping, as in Graves 2013), "test" = testset_f (the official test set, never trained on).
"""
from __future__ import annotations

import io
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hmgen.errors import HmgenError


class HandwritingDataError(HmgenError):
    """Data that cannot be found or read: reported as one line."""


SPLIT_FILES = {"trainset.txt": "train", "testset_t.txt": "val_t", "testset_v.txt": "val_v", "testset_f.txt": "test_f"}
# our three splits in terms of the official files
SPLITS = {"train": ("train", "val_t"), "valid": ("val_v",), "test": ("test_f",)}


@dataclass
class RawLine:
    line_id: str            # e.g. a01-000u-01
    text: str               # the CSR transcription
    split: str              # train / val_t / val_v / test_f / none
    writer: int             # IAM writer id or -1
    points: np.ndarray      # (N, 3) int32: x, y (down), end of stroke


# ----------------------------------------------------------------------------- original layout

def parse_strokes_xml(data: bytes | str) -> np.ndarray:
    """One lineStrokes XML file -> (N, 3) int32 [x, y, eos]. Raises HandwritingDataError on bad files."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise HandwritingDataError(f"not valid XML ({e})") from None
    rows = []
    for stroke in root.iter("Stroke"):
        pts = [(int(float(p.get("x"))), int(float(p.get("y")))) for p in stroke.iter("Point")]
        for j, (x, y) in enumerate(pts):
            rows.append((x, y, int(j == len(pts) - 1)))
    if not rows:
        raise HandwritingDataError("no <Stroke>/<Point> elements")
    return np.asarray(rows, dtype=np.int32)


def parse_ascii(text: str) -> list[str]:
    """An ascii/*.txt transcription file -> the CSR lines (leading/trailing blank lines stripped)."""
    if "CSR:" not in text:
        raise HandwritingDataError("no CSR: section")
    lines = text.split("CSR:", 1)[1].splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return [ln.strip() for ln in lines]


def _iter_files(dir_: Path, name: str, suffix: str):
    """(stem, bytes) for every file ending in suffix under DIR/name/ or inside DIR/name-all.tar*."""
    folder = dir_ / name
    if folder.is_dir():
        for p in sorted(folder.rglob(f"*{suffix}")):
            yield p.stem, p.read_bytes()
        return
    for ext in (".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar"):
        arc = dir_ / f"{name}-all{ext}"
        if arc.is_file():
            try:
                with tarfile.open(arc, "r:*") as tf:
                    for m in tf:
                        if m.isfile() and m.name.endswith(suffix):
                            f = tf.extractfile(m)
                            if f is not None:
                                yield Path(m.name).stem, f.read()
            except (tarfile.TarError, OSError, EOFError) as e:
                raise HandwritingDataError(f"{arc}: cannot read archive ({e})") from None
            return
    raise HandwritingDataError(f"{dir_}: no {name}/ folder and no {name}-all.tar.gz/.tar.xz archive")


def read_splits(dir_: Path) -> dict[str, str]:
    """form id -> split name from the official task files (DIR or DIR/splits)."""
    form_split = {}
    for d in (dir_, dir_ / "splits"):
        for fname, split in SPLIT_FILES.items():
            p = d / fname
            if p.is_file():
                for ln in p.read_text().split():
                    form_split[ln.strip()] = split
    if not form_split:
        raise HandwritingDataError(f"{dir_}: no official split files (trainset.txt, testset_v.txt, testset_t.txt, testset_f.txt)")
    return form_split


def read_writers(dir_: Path) -> dict[str, int]:
    p = dir_ / "writer_ids.csv"
    out = {}
    if p.is_file():
        for ln in p.read_text().splitlines()[1:]:
            form, _, w = ln.partition(",")
            if w.strip().lstrip("-").isdigit():
                out[form.strip()] = int(w)
    return out


def split_of(form: str, form_split: dict[str, str]) -> str:
    # the task files name forms with or without the writer letter (a01-020x, d04-081)
    return form_split.get(form) or form_split.get(form.rstrip("abcdefghijklmnopqrstuvwxyz")) or "none"


def load_original(dir_: str | Path) -> list[RawLine]:
    """Read IAM-OnDB in its original layout. Forms whose CSR line count differs from their number of
    stroke files cannot be aligned and are skipped (a08-551z in the public copy)."""
    dir_ = Path(dir_)
    form_split = read_splits(dir_)
    writers = read_writers(dir_)
    texts = {}
    for stem, data in _iter_files(dir_, "ascii", ".txt"):
        try:
            texts[stem] = parse_ascii(data.decode("latin-1"))
        except HandwritingDataError:
            continue
    strokes: dict[str, dict[int, np.ndarray]] = {}
    for stem, data in _iter_files(dir_, "lineStrokes", ".xml"):
        form, _, num = stem.rpartition("-")
        if not num.isdigit():
            continue
        try:
            strokes.setdefault(form, {})[int(num)] = parse_strokes_xml(data)
        except HandwritingDataError as e:
            raise HandwritingDataError(f"{stem}.xml: {e}") from None
    out = []
    for form in sorted(strokes):
        lines = texts.get(form)
        files = strokes[form]
        if lines is None or len(lines) != len(files) or sorted(files) != list(range(1, len(files) + 1)):
            continue
        for i, text in enumerate(lines, 1):
            if not text or text.startswith("Please Enter Transcription"):
                continue
            out.append(RawLine(f"{form}-{i:02d}", text, split_of(form, form_split), writers.get(form, -1), files[i]))
    if not out:
        raise HandwritingDataError(f"{dir_}: no line has both strokes and a transcription")
    return out


def load_npz(path: str | Path) -> list[RawLine]:
    """The aligned npz (no pickles): strokes [dx, dy, pen_up] int16, line_start, first_xy, text, line_id, split."""
    try:
        z = np.load(path, allow_pickle=False)
        S, st, first = z["strokes"], z["line_start"], z["first_xy"]
        text, ids, split = z["text"], z["line_id"], z["split"]
        writer = z["writer_id"] if "writer_id" in z.files else np.full(len(text), -1)
    except (OSError, KeyError, ValueError) as e:
        raise HandwritingDataError(f"{path}: not an IAM-OnDB npz ({e})") from None
    out = []
    for i in range(len(text)):
        seg = S[st[i]:st[i + 1]].astype(np.int32)
        pts = np.empty_like(seg)
        pts[:, :2] = first[i] + np.cumsum(seg[:, :2], 0)
        pts[:, 2] = seg[:, 2]
        out.append(RawLine(str(ids[i]), str(text[i]), str(split[i]), int(writer[i]), pts))
    return out


def load_iam(spec: str | Path, prefer_npz: bool = True) -> list[RawLine]:
    """DIR (original layout, optionally with iamondb_lines.npz as the fast path) or an .npz file."""
    p = Path(spec)
    if p.suffix == ".npz":
        if not p.is_file():
            raise HandwritingDataError(f"{p}: no such file")
        return load_npz(p)
    if not p.is_dir():
        raise HandwritingDataError(f"{p}: not a folder with IAM-OnDB (lineStrokes + ascii + split files) or an .npz")
    if prefer_npz and (p / "iamondb_lines.npz").is_file():
        return load_npz(p / "iamondb_lines.npz")
    return load_original(p)


def select(lines: list[RawLine], split: str) -> list[RawLine]:
    if split not in SPLITS:
        raise HandwritingDataError(f"unknown split {split!r} (train, valid, test)")
    keep = SPLITS[split]
    return [ln for ln in lines if ln.split in keep]


# ----------------------------------------------------------------------------- preprocessing

SG7 = np.array([-2, 3, 6, 7, 6, 3, -2], dtype=np.float64) / 21.0     # Savitzky-Golay, window 7, order 3


def smooth_stroke(xy: np.ndarray) -> np.ndarray:
    if len(xy) < 7:
        return xy
    pad = np.concatenate([np.repeat(xy[:1], 3, 0), xy, np.repeat(xy[-1:], 3, 0)])
    out = np.stack([np.convolve(pad[:, k], SG7[::-1], mode="valid") for k in range(2)], 1)
    out[0], out[-1] = xy[0], xy[-1]
    return out


def stroke_slices(eos: np.ndarray):
    ends = np.flatnonzero(eos) + 1
    if len(ends) == 0 or ends[-1] != len(eos):
        ends = np.append(ends, len(eos))
    start = 0
    for e in ends:
        yield slice(start, e)
        start = e


def level_rotation(xy: np.ndarray) -> np.ndarray:
    """(2, 2) rotation that makes the least-squares line through the points (N, 2) horizontal: the baseline."""
    if len(xy) <= 2 or np.ptp(xy[:, 0]) == 0:
        return np.eye(2)
    a = -np.arctan(np.polyfit(xy[:, 0], xy[:, 1], 1)[0])
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


@dataclass
class Preprocessing:
    """How raw lines become pen offsets (preprocess): a model stores it (hmgen.handwriting.model.HWConfig), so that
    its training data, its style bank and any lines it is evaluated on are prepared alike. These are the defaults."""
    stride: int = 2
    align: bool = True
    smooth: bool = False
    glitch: float = 300.0
    clip: float = 500.0

    def offsets(self, points: np.ndarray) -> np.ndarray:
        """preprocess(points) with these settings."""
        return preprocess(points, self.stride, self.align, self.smooth, self.glitch, self.clip)


def preprocess(points: np.ndarray, stride: int = Preprocessing.stride, align: bool = Preprocessing.align,
               smooth: bool = Preprocessing.smooth, glitch: float = Preprocessing.glitch,
               clip: float = Preprocessing.clip) -> np.ndarray:
    """Raw (N, 3) [x, y-down, eos] -> (M, 3) float32 offsets [dx, dy-up, eos] in whiteboard units.

    glitch:  an in-stroke step longer than this is a recording glitch: the stroke is split there (pen up).
    smooth:  Savitzky-Golay (7, 3) per stroke.
    align:   rotate the line so that the least-squares line through its points is horizontal (baseline).
    stride:  keep every stride-th point of each stroke (and always its last point).
    clip:    offsets clipped to [-clip, clip] per axis (long pen-up jumps).
    The first point becomes the origin: the sequence holds the N'-1 offsets after it.
    """
    xy = points[:, :2].astype(np.float64) * np.array([1.0, -1.0])
    eos = points[:, 2].astype(bool).copy()
    eos[-1] = True
    if glitch and len(xy) > 1:
        step = np.hypot(*np.diff(xy, axis=0).T)
        eos[:-1] |= step > glitch
    if smooth:
        xy = np.concatenate([smooth_stroke(xy[s]) for s in stroke_slices(eos)])
    if align:
        xy = xy @ level_rotation(xy).T
    if stride > 1:
        keep = np.zeros(len(xy), bool)
        for s in stroke_slices(eos):
            idx = np.arange(s.start, s.stop)
            keep[idx[(idx - s.start) % stride == 0]] = True
            keep[s.stop - 1] = True
        xy, eos = xy[keep], eos[keep]
    if len(xy) < 2:
        return np.zeros((0, 3), np.float32)
    d = np.clip(np.diff(xy, axis=0), -clip, clip)
    return np.concatenate([d, eos[1:, None]], 1).astype(np.float32)


def to_strokes(offsets: np.ndarray) -> list[np.ndarray]:
    """(M, 3) offsets [dx, dy-up, eos] -> list of (k, 2) absolute polylines (y up), starting at the origin."""
    xy = np.concatenate([np.zeros((1, 2)), np.cumsum(offsets[:, :2], 0)])
    eos = np.concatenate([[1.0], offsets[:, 2]]) > 0.5      # the origin ends a (pen-up) move
    out, cur = [], []
    for i in range(len(xy)):
        if i > 0:
            cur.append(xy[i])
        if eos[i] and cur:
            out.append(np.array(cur))
            cur = []
    if cur:
        out.append(np.array(cur))
    return out


# ----------------------------------------------------------------------------- dataset

@dataclass
class Prepared:
    line_id: str
    text: str
    offsets: np.ndarray     # (M, 3) raw units


def prepare_lines(lines: list[RawLine], prep: Preprocessing) -> list[Prepared]:
    """The lines preprocessed as `prep` says (a model's HWConfig is one); lines left with fewer than 2 offsets are
    dropped."""
    out = []
    for ln in lines:
        off = prep.offsets(ln.points)
        if len(off) >= 2:
            out.append(Prepared(ln.line_id, ln.text, off))
    return out


def norm_stats(prepared: list[Prepared]) -> tuple[list[float], list[float]]:
    """Mean and std of dx, dy over a (training) set of lines."""
    allo = np.concatenate([p.offsets[:, :2] for p in prepared]).astype(np.float64)
    return allo.mean(0).round(4).tolist(), allo.std(0).round(4).tolist()


def line_height_units(prepared: list[Prepared]) -> float:
    """Median over lines of the 2-98 percentile vertical extent (aligned), for rendering at a set size."""
    ext = []
    for p in prepared[:2000]:
        y = np.cumsum(p.offsets[:, 1])
        ext.append(np.percentile(y, 98) - np.percentile(y, 2))
    return float(np.median(ext)) if ext else 100.0
