"""Bits per character of a model on a sequence, with per-layer UPDATE / COPY / FLUSH rates."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from hmgen.cell.reference import OPS, CharLM, operations


def op_counts(model: CharLM, z: torch.Tensor, z_init: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(layers, 3) counts of UPDATE / COPY / FLUSH over a segment (only where mask is true)."""
    op = operations(z, z_init, model.cfg.arch == "hmlstm")            # (batch, T, L)
    onehot = F.one_hot(op, 3)                                           # (batch, T, L, 3)
    if mask is not None:
        onehot = onehot * mask[..., None, None]
    return onehot.sum(dim=(0, 1))


def rates_dict(counts: torch.Tensor) -> list[dict]:
    """(layers, 3) counts -> [{"update": .., "copy": .., "flush": ..}] per layer, as fractions."""
    total = counts.sum(dim=1, keepdim=True).clamp(min=1)
    r = (counts / total).tolist()
    return [{name: round(v, 4) for name, v in zip(OPS, row)} for row in r]


@torch.no_grad()
def evaluate(model: CharLM, ids: np.ndarray, streams: int = 16, seq_len: int = 200,
             max_symbols: int | None = None, device="cpu", progress=None) -> dict:
    """BPC of `model` on `ids`, predicting every symbol after the first.

    The sequence is cut into `streams` contiguous pieces run side by side as one batch (each piece
    starts from the zero state); the state is carried across segments of `seq_len`. Every symbol is
    scored exactly once. `progress(done, total)` is called after each segment.
    """
    model.eval()
    if max_symbols is not None:
        ids = ids[: max_symbols + 1]
    n = len(ids) - 1
    if n < 1:
        raise ValueError("need at least 2 symbols to evaluate")
    streams = max(1, min(streams, n))
    per = math.ceil(n / streams)
    span = per + 1
    padded = np.zeros(streams * per + 1, dtype=np.int64)
    padded[: n + 1] = ids
    pos = np.arange(streams)[:, None] * per + np.arange(span)[None, :]   # (streams, per+1)
    grid = torch.from_numpy(padded[pos]).to(device)
    valid = torch.from_numpy((pos[:, 1:] <= n)).to(device)                # target exists
    state = model.initial_state(streams, device)
    nll, count = 0.0, 0
    counts = torch.zeros(model.num_layers, 3, dtype=torch.long, device=device)
    t0 = time.time()
    for s in range(0, per, seq_len):
        e = min(s + seq_len, per)
        x, y, m = grid[:, s:e], grid[:, s + 1:e + 1], valid[:, s:e]
        z_init = torch.cat([z for _, _, z in state], dim=-1)
        logits, state, z = model(x, state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="none")
        nll += float((loss * m.reshape(-1)).sum())
        count += int(m.sum())
        counts += op_counts(model, z, z_init, m)
        if progress:
            progress(min(s + seq_len, per) * streams, per * streams)
    seconds = time.time() - t0
    return {
        "bpc": nll / count / math.log(2),
        "symbols": count,
        "seconds": round(seconds, 3),
        "symbols_per_s": round(count / max(seconds, 1e-9)),
        "layers": rates_dict(counts),
    }
