"""Bits per character of a model on a sequence, with per-layer UPDATE / COPY / FLUSH rates."""
from __future__ import annotations

import math
import time
from typing import Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from hmgen.cell.reference import CharLM, op_counts, rates_dict


class Segment(NamedTuple):
    """One segment of the streams run side by side (t <= seq_len steps)."""
    x: torch.Tensor              # (streams, t) input symbols
    y: torch.Tensor | None       # (streams, t) the symbol after each input (predict=True), else None
    mask: torch.Tensor           # (streams, t) bool: a real input (False: padding after the last piece's end)
    logits: torch.Tensor         # (streams, t, vocab)
    z: torch.Tensor              # (streams, t, L) boundaries
    z_init: torch.Tensor         # (streams, L) the boundaries carried into the segment


@torch.no_grad()
def side_by_side(model: CharLM, ids: np.ndarray, streams: int = 16, seq_len: int = 200, predict: bool = False,
                 device="cpu", progress=None) -> Iterator[Segment]:
    """Run a long sequence as `streams` contiguous pieces side by side, one batch, `seq_len` steps at a time.

    Each piece starts from the zero state (the context before its start is lost: more streams, faster, a
    slightly worse figure); the state is carried across segments. The inputs are ids, or ids[:-1] with
    predict=True (then y holds each input's next symbol, so every symbol after the first is predicted
    exactly once). Pieces are ceil(n / streams) long; the last is padded, mask says where.
    `progress(done, total)` is called after each segment.
    """
    model.eval()
    n = len(ids) - int(predict)                                        # inputs
    if n < 1:
        raise ValueError(f"need at least {1 + int(predict)} symbols")
    streams = max(1, min(streams, n))
    per = math.ceil(n / streams)
    padded = np.zeros(streams * per + 1, dtype=np.int64)
    padded[: len(ids)] = ids
    pos = np.arange(streams)[:, None] * per + np.arange(per)[None, :]  # (streams, per): index of each input
    grid = torch.from_numpy(padded[pos]).to(device)
    after = torch.from_numpy(padded[pos + 1]).to(device) if predict else None
    real = torch.from_numpy(pos < n).to(device)
    state = model.initial_state(streams, device)
    for s in range(0, per, seq_len):
        e = min(s + seq_len, per)
        z_init = torch.cat([z for _, _, z in state], dim=-1)          # (streams, L)
        logits, state, z = model(grid[:, s:e], state)
        yield Segment(grid[:, s:e], None if after is None else after[:, s:e], real[:, s:e], logits, z, z_init)
        if progress:
            progress(e * streams, per * streams)


@torch.no_grad()
def evaluate(model: CharLM, ids: np.ndarray, streams: int = 16, seq_len: int = 200,
             max_symbols: int | None = None, device="cpu", progress=None) -> dict:
    """BPC of `model` on `ids`, predicting every symbol after the first, run as `streams` pieces side by
    side (see side_by_side: each piece starts from the zero state)."""
    if max_symbols is not None:
        ids = ids[: max_symbols + 1]
    if len(ids) < 2:
        raise ValueError("need at least 2 symbols to evaluate")
    nll, count = 0.0, 0
    counts = torch.zeros(model.num_layers, 3, dtype=torch.long, device=device)
    t0 = time.time()
    for seg in side_by_side(model, ids, streams, seq_len, predict=True, device=device, progress=progress):
        loss = F.cross_entropy(seg.logits.reshape(-1, seg.logits.shape[-1]).float(), seg.y.reshape(-1), reduction="none")
        nll += float((loss * seg.mask.reshape(-1)).sum())
        count += int(seg.mask.sum())
        counts += op_counts(model, seg.z, seg.z_init, seg.mask)
    seconds = time.time() - t0
    return {
        "bpc": nll / count / math.log(2),
        "symbols": count,
        "seconds": round(seconds, 3),
        "symbols_per_s": round(count / max(seconds, 1e-9)),
        "layers": rates_dict(counts),
    }
