"""The match model: the longest earlier occurrence of the lane's last MIN_MATCH bytes (anywhere in the block
already coded) predicts the byte that followed it; on the nodes of that byte's path it predicts its bit, with a
confidence learned per match length. It points only at bytes coded in earlier steps (hmgen.archive.adaptive.predictor).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hmgen.jit import njit

MIN_MATCH = 6                    # bytes of context that start a match
MATCH_BITS = 18                  # hash table: 2^18 positions
LENGTHS = 64                     # confidences by match length, the longest shared


class Match(NamedTuple):
    p: np.ndarray                # (LENGTHS,) int64: P(predicted bit is right) << 10, by match length
    table: np.ndarray            # (2^MATCH_BITS,) int64: hash of MIN_MATCH bytes -> position after them + 1; 0 none
    ptr: np.ndarray              # (lanes,) int64: each lane's match, as a position in the flattened grid
    length: np.ndarray           # (lanes,) int64: its length in bytes; 0 = no match


def new(lanes: int) -> Match:
    return Match(np.full(LENGTHS, 3072 << 10, dtype=np.int64), np.zeros(1 << MATCH_BITS, dtype=np.int64),
                 np.zeros(lanes, dtype=np.int64), np.zeros(lanes, dtype=np.int64))


@njit(cache=True, nogil=True, inline="always")
def expected(mm, flat, lane):
    """The byte the lane's match predicts, + 256 (its leaf in the bit tree); 0 without a match."""
    ptr, length = mm.ptr, mm.length
    pb = np.int64(flat[ptr[lane]]) + 256                     # read unconditionally: ptr is always a position
    return pb if length[lane] > 0 else np.int64(0)


@njit(cache=True, nogil=True, inline="always")
def predict(mm, flat, lane, n, d, stretch):
    """(stretch(P(1)), state) at node n (depth d): state 1-3 by match length where the match predicts this node,
    and then the input says its bit with the length's confidence; (0, 0) elsewhere."""
    p, mlen = mm.p, mm.length[lane]
    pb = expected(mm, flat, lane)
    e = stretch[p[min(mlen, LENGTHS - 1)] >> 10]
    if mlen > 0 and (pb >> (8 - d)) == n:
        return (e if ((pb >> (7 - d)) & 1) == 1 else -e), (1 if mlen < 16 else (2 if mlen < 32 else 3))
    return np.int64(0), 0


@njit(cache=True, nogil=True, inline="always")
def update(mm, flat, lane, n, d, y):
    """The confidence of the lane's match length learns whether its bit at node n (if predicted) was y."""
    p, mlen = mm.p, mm.length[lane]
    pb = expected(mm, flat, lane)
    if mlen > 0 and (pb >> (8 - d)) == n:
        right = 1 if ((pb >> (7 - d)) & 1) == y else 0
        lb = min(mlen, LENGTHS - 1)
        p[lb] += (((right << 22) - p[lb]) * 3) >> 6


@njit(cache=True, nogil=True, inline="always")
def match_hash(grid, lane, t):
    h = 0
    for j in range(MIN_MATCH):
        h = ((h * 0x2F0B5) ^ np.int64(grid[lane, t - j])) & 0xFFFFFFFFF
    return h ^ (h >> 17)


@njit(cache=True, nogil=True, inline="always")
def follow(mm, grid, t, k):
    """After step t's bytes (grid[:k, t]): each lane follows its match or loses it (then looks its last MIN_MATCH
    bytes up), lane by lane; then each records where its context leads."""
    flat = grid.reshape(-1)
    m = grid.shape[1]
    total = flat.shape[0]
    table, ptr, length = mm.table, mm.ptr, mm.length
    mask = table.shape[0] - 1
    for lane in range(k):
        b = grid[lane, t]
        if length[lane] > 0:
            if flat[ptr[lane]] == b and ptr[lane] + 1 < total:
                length[lane] += 1
                ptr[lane] += 1
            else:
                length[lane] = 0
        if length[lane] == 0 and t + 1 >= MIN_MATCH:
            cand = table[match_hash(grid, lane, t) & mask] - 1
            if cand >= 0:
                ptr[lane] = cand
                length[lane] = 1
    for lane in range(k):
        if t + 1 >= MIN_MATCH and t + 1 < m:
            table[match_hash(grid, lane, t) & mask] = lane * m + t + 1 + 1
