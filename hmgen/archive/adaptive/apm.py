"""An adaptive probability map (APM, or SSE; after lpaq1): refines a probability p in a context by mapping
(context, stretch(p) in 33 interpolated bins) to a learned probability. The nearer of the two bins learns, at rate
1/(count + 1.5) from count START, settling at 1/(LIMIT + 1.5): fast while the bin is new (hmgen's choice: lpaq1's
rate is fixed; the measurements are in benchmarks/RESULTS.md)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hmgen.jit import njit

BINS = 33                        # stretch(p) in [-2048, 2048], one bin per 128
LIMIT = 127
START = 2


class APM(NamedTuple):
    table: np.ndarray            # (contexts * BINS,) int64: p16 << 10 | count
    idx: np.ndarray              # (lanes, 256) int64: the bin each node's prediction will update


def new(contexts: int, lanes: int, squash: np.ndarray) -> APM:
    """Every context starts as the identity: bin j holds squash of its own stretch value."""
    row = (squash[np.clip((np.arange(BINS) - 16) * 128, -2047, 2047) + 2047] * 16) << 10 | START
    return APM(np.tile(row, contexts).astype(np.int64), np.zeros((lanes, 256), dtype=np.int64))


@njit(cache=True, nogil=True, inline="always")
def predict(a, lane, n, cx, p, stretch):
    """p refined in context cx: the two nearest bins interpolated (the nearer one kept for the update of node n)."""
    table = a.table
    s = stretch[p] + 2048                                                 # 1 .. 4095
    i = cx * BINS + (s >> 7)
    w = s & 127
    a.idx[lane, n] = i + (w >> 6)
    return ((table[i] >> 10) * (128 - w) + (table[i + 1] >> 10) * w) >> 11


@njit(cache=True, nogil=True, inline="always")
def update(a, lane, n, y):
    """The bin node n's prediction used moves toward bit y."""
    table = a.table
    i = a.idx[lane, n]
    v = table[i]
    p, c = v >> 10, v & 1023
    target = 65535 if y == 1 else 0
    p += ((target - p) * 2) // (2 * c + 3)
    if c < LIMIT:
        c += 1
    table[i] = (p << 10) | c
