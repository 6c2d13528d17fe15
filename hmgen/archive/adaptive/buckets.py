"""Hashed context maps of bit histories (methods 8 and 9): for each context of a byte (a 64-bit hash,
hmgen.archive.adaptive.predictor2) the bit histories (hmgen.archive.adaptive.history) of the byte's bits, and
the byte that last followed the context with how often it did in a row.

Bit histories live in buckets of 16 bytes: a check byte and the 15 nodes of a nibble's bit tree. A context takes
one bucket for the byte's high nibble and another (hashed with that nibble) for its low one, so a byte costs two
look-ups per context, each within one 64-byte cache line: four neighbouring buckets are searched for the check
byte, and when none has it the one whose first node has seen least is cleared and taken. All contexts share one
table, sized by the block (more contexts than rows: the least used give way).

Runs: per context one 64-bit entry, check << 16 | byte << 8 | run length, in a table of its own.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hmgen.archive.adaptive import history
from hmgen.jit import njit

MIN_BITS, MAX_BITS = 12, 23      # 2^12 .. 2^23 buckets (64 KiB .. 128 MiB)


class Buckets(NamedTuple):
    t: np.ndarray                # (buckets, 16) uint8: check byte, then the states of nibble nodes 1..15
    runs: np.ndarray             # (run entries,) int64: check << 16 | byte << 8 | run length (0: none)
    count: np.ndarray            # (256,) int64: n0 + n1 of each state (the replacement priority)


def new(n: int, contexts: int) -> Buckets:
    """The maps of a block of n bytes with `contexts` contexts per byte."""
    bits = min(MAX_BITS, max(MIN_BITS, (max(n, 1) * contexts // 2 - 1).bit_length()))
    t = history.table()
    return Buckets(np.zeros((1 << bits, 16), np.uint8), np.zeros(1 << max(MIN_BITS, bits - 2), np.int64),
                   t.n0 + t.n1)


@njit(cache=True, nogil=True, inline="always")
def scramble(h, salt):
    """A 64-bit mix of a context hash and a salt (a nibble, or the run table's), non-negative."""
    k = (h ^ (salt * 0x2545F4914F6CDD1D)) * 0x1E3779B97F4A7C15
    k ^= (k >> 29) & 0x7FFFFFFFF
    return (k * 0x3F58476D1CE4E5B9) & 0x7FFFFFFFFFFFFFFF


@njit(cache=True, nogil=True, inline="always")
def find(b, h, nibble):
    """The bucket of context hash h for a nibble (0: the high one; 16 + the high nibble: the low one)."""
    t, count = b.t, b.count
    k = scramble(h, nibble + 1)
    mask = t.shape[0] - 1
    idx = (k >> 8) & mask
    chk = np.uint8(k & 255)
    group = idx & ~3
    for a in range(4):
        if t[group + a, 0] == chk:
            return group + a
    victim, least = group, 1 << 30
    for a in range(4):
        seen = count[t[group + a, 1]]
        if seen < least:
            victim, least = group + a, seen
    for j in range(16):
        t[victim, j] = 0
    t[victim, 0] = chk
    return victim


@njit(cache=True, nogil=True, inline="always")
def run_slot(b, h):
    """(entry index, check) of context hash h in the run table."""
    k = scramble(h, 977)
    return (k >> 8) & (b.runs.shape[0] - 1), (k >> 40) & 0xFFFF


@njit(cache=True, nogil=True, inline="always")
def run_of(b, slot, chk):
    """(byte, run length) the entry remembers for this check; (-1, 0) if another context holds it."""
    v = b.runs[slot]
    if (v >> 16) == chk and (v & 255) > 0:
        return (v >> 8) & 255, v & 255
    return np.int64(-1), np.int64(0)


@njit(cache=True, nogil=True, inline="always")
def run_learn(b, slot, chk, byte):
    """The context was followed by `byte`: its run grows, or starts again with it."""
    runs = b.runs
    v = runs[slot]
    if (v >> 16) == chk and ((v >> 8) & 255) == byte and (v & 255) > 0:
        runs[slot] = (chk << 16) | (byte << 8) | min(255, (v & 255) + 1)
    else:
        runs[slot] = (chk << 16) | (byte << 8) | 1


@njit(cache=True, nogil=True, inline="always")
def touch(b, h, nibble):
    """Read the first byte of the group of buckets find(b, h, nibble) will search and return it: a prefetch. The
    predictor touches every context's group (and run entry) before it finds any, so that their cache misses overlap
    instead of coming one after another; it changes nothing."""
    k = scramble(h, nibble + 1)
    return np.int64(b.t[((k >> 8) & (b.t.shape[0] - 1)) & ~3, 0])
