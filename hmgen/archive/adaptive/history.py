"""Bit histories (methods 8 and 9): what a context has seen, in one byte, and what that history predicts.

A state stands for a pair of counts (n0, n1) of the zeros and ones seen in a context, and, while both are small,
which came last. When bit y is seen, n_y grows by one and the other count, above 2, is discounted to half plus
one: a context that starts to disagree with its past soon forgets it (data is not stationary). Counts are capped
(CAPS: the larger count's cap given the smaller; more evidence than that is not kept), so that the states
reachable from (0, 0) number fewer than 256 (hmgen's choice of rule and caps, after lpaq's nonstationary
states). State 0 is the empty history.

A state map (an "indirect" model) learns, for each state, the probability that the next bit is 1: a state is
not read as a ratio of its counts, but as what followed that history in this block. Entries are 16-bit
probabilities with a count, learning at rate 1/(count + 1.5) down to 1/(LIMIT + 1.5).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from hmgen.jit import njit

CAPS = (40, 24, 14, 9, 7, 6, 6)  # CAPS[k]: the larger count's cap when the smaller count is k
LAST_UNTIL = 12                  # the last bit is part of the state while n0 + n1 <= this and both are > 0
LIMIT = 255                      # state-map counts stop here


class Table(NamedTuple):
    next: np.ndarray             # (256, 2) int64: state after bit 0 / bit 1
    n0: np.ndarray               # (256,) int64: the state's count of zeros
    n1: np.ndarray               # (256,) int64: ... and of ones
    p0: np.ndarray               # (256,) int64: a state map's starting P(1) in 16 bits, from the counts


def allowed(n0: int, n1: int) -> bool:
    lo, hi = min(n0, n1), max(n0, n1)
    return lo < len(CAPS) and hi <= CAPS[lo]


def after(state: tuple[int, int, int], y: int) -> tuple[int, int, int]:
    """(n0, n1, last) after bit y."""
    n = [state[0], state[1]]
    n[y] += 1
    if n[1 - y] > 2:
        n[1 - y] = n[1 - y] // 2 + 1
    while not allowed(*n):                       # at a cap: keep the larger count where it is
        if n[y] > n[1 - y]:
            n[y] -= 1
        else:
            n[1 - y] -= 1
    last = y if 0 < n[0] and 0 < n[1] and n[0] + n[1] <= LAST_UNTIL else 0
    return n[0], n[1], last


@functools.cache
def table() -> Table:
    """The states reachable from the empty history, numbered in the order they are first reached."""
    index = {(0, 0, 0): 0}
    order = [(0, 0, 0)]
    for s in order:                              # grows while it is walked: a breadth-first search
        for y in (0, 1):
            t = after(s, y)
            if t not in index:
                index[t] = len(order)
                order.append(t)
    if len(order) > 256:
        raise AssertionError(f"{len(order)} bit-history states do not fit a byte")
    nxt = np.zeros((256, 2), np.int64)
    n0, n1, p0 = np.zeros(256, np.int64), np.zeros(256, np.int64), np.full(256, 32768, np.int64)
    for s, k in index.items():
        nxt[k] = index[after(s, 0)], index[after(s, 1)]
        n0[k], n1[k] = s[0], s[1]
        p0[k] = min(64512, max(1024, (65536 * (2 * s[1] + 1)) // (2 * (s[0] + s[1]) + 2)))
    return Table(nxt, n0, n1, p0)


class StateMaps(NamedTuple):
    p: np.ndarray                # (maps, 256) int64: P(1) in 16 bits per state
    n: np.ndarray                # (maps, 256) int64: its count
    rates: np.ndarray            # (LIMIT + 1,) int64: 65536 * 2 / (2 count + 3)


def state_maps(maps: int) -> StateMaps:
    t = table()
    return StateMaps(np.tile(t.p0, (maps, 1)), np.zeros((maps, 256), np.int64),
                     np.array([65536 * 2 // (2 * c + 3) for c in range(LIMIT + 1)], np.int64))


@njit(cache=True, nogil=True, inline="always")
def learn(sm, i, s, y):
    """Map i's entry for state s moves toward bit y."""
    p, n, rates = sm.p, sm.n, sm.rates
    c = n[i, s]
    p[i, s] += ((((y << 16) - y) - p[i, s]) * rates[c]) >> 16
    if c < LIMIT:
        n[i, s] = c + 1
