"""Where each layer's boundary detector fires on a text: the hierarchy the HM-LSTM found (paper §3, Fig. 3-4).

z_t^l = 1 means layer l's detector fired after reading symbol t: it ends a segment at t, so at t+1 layer l
FLUSHes and layer l+1 UPDATEs (eq. 2). The top layer has no detector (its column is always 0).

Byte-level models read a multi-byte UTF-8 character in several steps. Every figure (z, operations, counts)
is kept per step; for the pictures each character shows the OR of its steps' boundaries (a boundary that
falls inside a character is drawn after it, so no firing disappears) and the most active of its steps'
operations (FLUSH > UPDATE > COPY).
"""
from __future__ import annotations

import unicodedata

from dataclasses import dataclass

import numpy as np
import torch

from hmgen.cell.reference import COPY, FLUSH, OPS, UPDATE, CharLM, operations
from hmgen.text.data import VocabError
from hmgen.text.evaluate import side_by_side

GLYPH = {UPDATE: "─", COPY: "·", FLUSH: "╶"}       # terminal row, one cell per character
MARK = "┃"                                          # the layer's boundary falls after this character
STYLE = {UPDATE: "green", COPY: "bright_black", FLUSH: "yellow"}
COLOUR = {UPDATE: "#59a869", COPY: "#e6e6e6", FLUSH: "#e8a33d"}   # SVG bands
MARK_COLOUR = "#c8283c"
RANK = np.array([1, 0, 2])                            # by op code: FLUSH > UPDATE > COPY ("most active")
SPACE_BYTES = (9, 10, 11, 12, 13, 32)


@dataclass
class Boundaries:
    text: str
    chars: list[str]         # the characters of text
    step_char: np.ndarray    # (T,) index into chars of the character each step reads
    z: np.ndarray            # (T, L) boundaries z_t^l, 0/1; the top column is 0
    ops: np.ndarray          # (T, L) UPDATE / COPY / FLUSH codes (eq. 2)
    model: str = ""

    @property
    def num_layers(self) -> int:
        return self.z.shape[1]

    @property
    def counts(self) -> np.ndarray:
        """(L, 3) steps per layer that UPDATE / COPY / FLUSH."""
        return np.stack([(self.ops == k).sum(0) for k in range(3)], axis=1)

    def char_z(self) -> np.ndarray:
        """(chars, L): did the layer fire at any step of the character."""
        out = np.zeros((len(self.chars), self.num_layers), dtype=np.int8)
        np.maximum.at(out, self.step_char, self.z.astype(np.int8))
        return out

    def char_ops(self) -> np.ndarray:
        """(chars, L): the most active operation among the character's steps."""
        best = np.zeros((len(self.chars), self.num_layers), dtype=np.int64)
        np.maximum.at(best, self.step_char, RANK[self.ops])
        return np.argsort(RANK)[best]                    # rank -> op code

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "text": self.text,
            "steps": int(self.z.shape[0]),
            "layers": self.num_layers,
            "step_char": self.step_char.tolist(),
            "z": self.z.tolist(),                        # z[t][l]: layer l+1 fired after step t
            "ops": self.ops.tolist(),                    # codes into op_names
            "op_names": list(OPS),
            "counts": [{**{n: int(c) for n, c in zip(OPS, row)}, "boundaries": int(b)}
                       for row, b in zip(self.counts, self.z.sum(0))],
        }


@torch.no_grad()
def analyse(lm, text: str, seq_len: int = 256, progress=None) -> Boundaries:
    """Run a LoadedModel over `text` from the zero state and record every layer's boundaries.
    Raises VocabError for text the model cannot encode."""
    model: CharLM = lm.model
    try:
        ids = torch.from_numpy(lm.vocab.encode(text).astype(np.int64))
    except VocabError as e:
        raise VocabError(f"cannot read this text with model {lm.name!r}: {e}") from None
    chars = list(text)
    widths = [len(c.encode("utf-8")) for c in chars] if lm.vocab.kind == "bytes" else [1] * len(chars)
    step_char = np.repeat(np.arange(len(chars)), widths)
    device = next(model.parameters()).device
    state = model.initial_state(1, device)
    zs = []
    for s in range(0, len(ids), seq_len):
        _, state, z = model(ids[None, s:s + seq_len].to(device), state)
        zs.append(z[0].cpu())
        if progress:
            progress(min(s + seq_len, len(ids)), len(ids))
    z = torch.cat(zs) if zs else torch.zeros(0, model.num_layers)     # (T, L)
    ops = operations(z[None], torch.zeros(1, model.num_layers), model.cfg.hierarchical)[0]
    return Boundaries(text, chars, step_char, z.to(torch.int8).numpy(), ops.numpy(), lm.name)


@torch.no_grad()
def stream_boundaries(model: CharLM, ids: np.ndarray, streams: int = 16, seq_len: int = 200,
                      progress=None) -> tuple[np.ndarray, np.ndarray]:
    """z and operations (n, L) for a long sequence, computed as `streams` contiguous pieces side by side
    (hmgen.text.evaluate.side_by_side: each piece starts from the zero state). For held-out text."""
    device = next(model.parameters()).device
    zs, ops = [], []
    for seg in side_by_side(model, ids, streams, seq_len, device=device, progress=progress):
        ops.append(operations(seg.z, seg.z_init, model.cfg.hierarchical).cpu())
        zs.append(seg.z.cpu())
    L = model.num_layers
    z = torch.cat(zs, dim=1).reshape(-1, L)[:len(ids)]                  # pieces in order; padding is last
    op = torch.cat(ops, dim=1).reshape(-1, L)[:len(ids)]
    return z.to(torch.int8).numpy(), op.numpy()


# ---- word boundaries and precision / recall / F1 ---------------------------------------------------------

def space_flags(ids: np.ndarray, vocab) -> np.ndarray:
    """(T,) bool: is symbol t whitespace. For bytes, ASCII whitespace (UTF-8 never uses these bytes inside a
    multi-byte character)."""
    if vocab.kind == "bytes":
        return np.isin(ids, SPACE_BYTES)
    table = np.array([s.isspace() for s in vocab.symbols])
    return table[ids]


def word_boundaries(space: np.ndarray, where: str = "end") -> np.ndarray:
    """Reference boundaries (T,) bool, in the same convention as z (a boundary at t falls after symbol t).
    A word is a maximal run of non-whitespace symbols (punctuation belongs to its word).
      where="end":   after each word's last symbol (the end of the text also ends a word);
      where="start": after the whitespace before each word, i.e. just before its first symbol."""
    space = np.asarray(space, dtype=bool)
    nxt = np.append(space[1:], True if where == "end" else False)
    if where == "end":
        return ~space & nxt
    if where == "start":
        return space & ~nxt
    raise ValueError(f"where must be 'end' or 'start', not {where!r}")


def prf(pred: np.ndarray, ref: np.ndarray, tolerance: int = 0) -> dict:
    """Precision, recall and F1 of predicted boundary positions against reference ones (both (T,) bool).
    With tolerance k a prediction counts when it lies within k steps of a reference boundary; each reference
    matches at most one prediction (greedy left to right, which is optimal for equal windows on a line)."""
    pred, ref = np.flatnonzero(pred), np.flatnonzero(ref)
    if tolerance == 0:
        tp = len(np.intersect1d(pred, ref))
    else:
        tp, j = 0, 0
        for p in pred:
            while j < len(ref) and ref[j] < p - tolerance:
                j += 1
            if j < len(ref) and ref[j] <= p + tolerance:
                tp, j = tp + 1, j + 1
    precision = tp / len(pred) if len(pred) else 0.0
    recall = tp / len(ref) if len(ref) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": tp,
            "predicted": len(pred), "reference": len(ref)}


# ---- pictures ---------------------------------------------------------------------------------------------

def glyph(ch: str) -> str:
    """What to draw for a character in a row of character cells."""
    from rich.cells import cell_len
    if ch == "\n":
        return "↵"
    if ch == "\t":
        return "→"
    if ord(ch) < 32 or ord(ch) == 127:
        return chr(0x2400 + ord(ch)) if ord(ch) < 32 else "␡"
    if cell_len(ch):
        return ch
    # zero width: a combining mark is shown on a dotted circle, as Unicode charts show it; anything else that
    # takes no cell (a variation selector, an emoji modifier, a zero-width joiner or space) as the circle alone,
    # since terminals differ in what they draw for it and the rows under the text must stay aligned
    return "\u25cc" + ch if unicodedata.combining(ch) else "\u25cc"


def cells(ch: str) -> int:
    """Terminal cells a character's glyph takes: 1, or 2 for wide (East Asian) characters."""
    from rich.cells import cell_len
    return max(1, cell_len(glyph(ch)))


def rows(chars: list[str], width: int) -> list[tuple[int, int]]:
    """Cut the characters into display rows of at most `width` cells: after a newline, else after the last
    space that fits, else hard. Returns (start, end) character ranges."""
    out, start, n = [], 0, len(chars)
    while start < n:
        end, used = start, 0
        while end < n and (end == start or used + cells(chars[end]) <= width):
            used += cells(chars[end])
            end += 1
            if chars[end - 1] == "\n":
                break
        if end < n and chars[end - 1] != "\n":
            sp = max((i for i in range(start, end) if chars[i] == " "), default=None)
            if sp is not None and sp > start:
                end = sp + 1
        out.append((start, end))
        start = end
    return out


def legend_lines(b: Boundaries) -> list[str]:
    unit = "step" if len(b.z) == 1 else "steps"
    unit += "" if len(b.step_char) == len(b.chars) else " (bytes)"
    lines = []
    for l, (row, fired) in enumerate(zip(b.counts, b.z.sum(0)), 1):
        detector = (f"{int(fired)} boundar{'y' if int(fired) == 1 else 'ies'}" if l < b.num_layers
                    else "no detector")
        lines.append(f"layer {l}: UPDATE {row[UPDATE]}  COPY {row[COPY]}  FLUSH {row[FLUSH]}  "
                     f"of {len(b.z)} {unit}; {detector}")
    return lines


def render_terminal(b: Boundaries, width: int = 80) -> list:
    """Rich Text lines: per block of the text, the text row and one row per layer under it (layer 1 first,
    as the model is read from the bottom up), then the key and per-layer counts."""
    from rich.text import Text

    label = 4                                               # "L1  "
    zc, oc = b.char_z(), b.char_ops()
    lines = []
    for start, end in rows(b.chars, max(width - label, 8)):
        lines.append(Text(" " * label + "".join(glyph(c) for c in b.chars[start:end])))
        for l in range(b.num_layers):
            row = Text(f"L{l + 1}".ljust(label), style="bold")
            for i in range(start, end):
                op, w = int(oc[i, l]), cells(b.chars[i])
                if w > 1:                                   # wide character: op cells, then the mark cell
                    row.append(GLYPH[op] * (w - 1), style=STYLE[op])
                row.append(MARK if zc[i, l] else GLYPH[op], style="bold magenta" if zc[i, l] else STYLE[op])
            lines.append(row)
        lines.append(Text(""))
    key = Text()
    for text, style in ((MARK, "bold magenta"), (" boundary after this character   ", ""),
                        (GLYPH[UPDATE], STYLE[UPDATE]), (" update  ", ""), (GLYPH[FLUSH], STYLE[FLUSH]),
                        (" flush  ", ""), (GLYPH[COPY], STYLE[COPY]), (" copy", "")):
        key.append(text, style=style)
    lines.append(key)
    lines += [Text(s) for s in legend_lines(b)]
    return lines


def render_svg(b: Boundaries, width: int = 100) -> str:
    """An SVG in the spirit of the paper's Fig. 3-4: the text along x, one band per layer under it (layer 1
    on top), coloured by operation, with a bar between characters where the layer's boundary falls; long
    text wraps into blocks; a legend gives each layer's UPDATE/COPY/FLUSH counts."""
    import svgwrite

    cw, band, gap, pad, left = 10, 13, 3, 12, 62       # character cell, band height, gaps, label column
    zc, oc = b.char_z(), b.char_ops()
    blocks = rows(b.chars, width)
    edge = np.concatenate([[0], np.cumsum([cells(c) for c in b.chars])]).tolist()   # cell where character i starts
    ncols = max((edge[e] - edge[s] for s, e in blocks), default=1)
    block_h = 20 + b.num_layers * (band + gap) + pad
    legend_h = 22 + 16 * (b.num_layers + 1)
    W, H = left + max(ncols * cw, 460) + pad, pad + len(blocks) * block_h + legend_h
    d = svgwrite.Drawing(size=(W, H), profile="full")
    d.add(d.rect((0, 0), (W, H), fill="white"))
    font = dict(font_family="DejaVu Sans Mono, Menlo, Consolas, monospace", font_size=14)
    text_g = d.add(d.g(class_="text", **font))
    bands = [d.add(d.g(class_="band", id=f"layer-{l + 1}")) for l in range(b.num_layers)]
    for k, (start, end) in enumerate(blocks):
        y0 = pad + k * block_h
        x = lambda i: left + (edge[i] - edge[start]) * cw          # left edge of character i's cell
        for i in range(start, end):
            if b.chars[i] != " ":
                text_g.add(d.text(glyph(b.chars[i]), insert=((x(i) + x(i + 1)) / 2, y0 + 14), text_anchor="middle"))
        for l in range(b.num_layers):
            y = y0 + 20 + l * (band + gap)
            g = bands[l]
            g.add(d.text(f"layer {l + 1}", insert=(4, y + band - 3), font_size=11, font_family="sans-serif",
                         fill="#555"))
            i = start
            while i < end:                                    # one rectangle per run of the same operation
                j = i
                while j < end and oc[j, l] == oc[i, l]:
                    j += 1
                g.add(d.rect((x(i), y), (x(j) - x(i), band), fill=COLOUR[int(oc[i, l])]))
                i = j
            for i in range(start, end):
                if zc[i, l]:                                  # between character i and i+1
                    g.add(d.line((x(i + 1), y - 2), (x(i + 1), y + band + 2), stroke=MARK_COLOUR, stroke_width=2,
                                 class_="boundary"))
    legend = d.add(d.g(class_="legend", font_family="sans-serif", font_size=12))
    y = pad + len(blocks) * block_h + 4
    x = left
    for name, colour in (("UPDATE", COLOUR[UPDATE]), ("COPY", COLOUR[COPY]), ("FLUSH", COLOUR[FLUSH])):
        legend.add(d.rect((x, y), (12, 12), fill=colour, stroke="#999", stroke_width=0.5))
        legend.add(d.text(name, insert=(x + 16, y + 10)))
        x += 80
    legend.add(d.line((x + 6, y - 2), (x + 6, y + 14), stroke=MARK_COLOUR, stroke_width=2))
    legend.add(d.text("boundary (z = 1)", insert=(x + 14, y + 10)))
    for k, line in enumerate(legend_lines(b)):
        legend.add(d.text(line, insert=(left, y + 30 + 16 * k), class_="counts"))
    d.set_desc(title=f"HM-LSTM boundaries{' of ' + b.model if b.model else ''}")
    return d.tostring()
