"""Context maps: for each order k (the lane's last k bytes, hashed into `slots` rows) a row of 256 adaptive
probabilities, one per node of the byte's bit tree, so that a byte's prediction reads one row per order.

Each entry is a 16-bit P(1) with a count, learning at rate 1/(count + 1.5) down to 1/(LIMIT + 1.5): fast while a
context is new, then averaging. An entry never seen is 0 and gives the mixer no input (stretch 0).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hmgen.jit import njit

ORDERS = (1, 2, 3, 4, 6)
MAX_SLOT_BITS = 15               # context rows per order at most (256 x int32 each: 32 MiB)
LIMIT = 255                      # counts stop here: the slowest rate is 1 / (LIMIT + 1.5)


class ContextMaps(NamedTuple):
    orders: np.ndarray           # (orders,) int64: bytes of context of each map
    tables: np.ndarray           # (orders, slots, 256) int32: per row and node p16 << 10 | count; 0 = unseen
    rows: np.ndarray             # (lanes, orders) int64: each lane's row in each map at the current step
    rates: np.ndarray            # (LIMIT + 1,) int64: 65536 / (count + 1.5)


def new(n: int, lanes: int) -> ContextMaps:
    """The maps of a block of n bytes: rows enough for its contexts (2^8 .. 2^MAX_SLOT_BITS per order)."""
    slots = 1 << min(MAX_SLOT_BITS, max(8, (max(n, 1) - 1).bit_length()))
    return ContextMaps(np.array(ORDERS, dtype=np.int64), np.zeros((len(ORDERS), slots, 256), dtype=np.int32),
                       np.zeros((lanes, len(ORDERS)), dtype=np.int64),
                       np.array([65536 * 2 // (2 * c + 3) for c in range(LIMIT + 1)], dtype=np.int64))


@njit(cache=True, nogil=True, inline="always")
def context_row(grid, lane, t, order, slots):
    """The row of a lane's context before byte t: the previous byte itself for order 1, else a hash."""
    if order == 1:
        return np.int64(grid[lane, t - 1]) if t >= 1 else np.int64(0)
    h = order * 0x3C6EF
    for j in range(1, order + 1):
        b = np.int64(grid[lane, t - j]) if t >= j else np.int64(0)
        h = ((h ^ b) * 0x2F0B5 + j) & 0xFFFFFFFF
    return (h ^ (h >> 15)) & (slots - 1)


@njit(cache=True, nogil=True, inline="always")
def select(cm, grid, lane, t):
    """Point the lane's rows at its contexts for byte t."""
    orders, rows, slots = cm.orders, cm.rows, cm.tables.shape[1]
    for o in range(orders.shape[0]):
        rows[lane, o] = context_row(grid, lane, t, orders[o], slots)


@njit(cache=True, nogil=True, inline="always")
def predict(cm, lane, n, stretch, x, at):
    """stretch(P(1)) of every order at node n into x[at], x[at + 1], ... (0 where the context is unseen)."""
    tables, rows = cm.tables, cm.rows
    for o in range(rows.shape[1]):
        v = tables[o, rows[lane, o], n]
        s = stretch[v >> 14]
        x[at + o] = 0 if v == 0 else s


@njit(cache=True, nogil=True, inline="always")
def learn(v, y, rates):
    """One entry (p16 << 10 | count, 0 = unseen) moved toward bit y."""
    if v == 0:
        v = 32768 << 10
    p, c = v >> 10, v & 1023
    target = 65535 if y == 1 else 0
    p += ((target - p) * rates[c] + (1 << 15)) >> 16
    p = min(65520, max(16, p))
    if c < rates.shape[0] - 1:
        c += 1
    return (p << 10) | c


@njit(cache=True, nogil=True, inline="always")
def update(cm, lane, n, y):
    """Every order's entry at node n learns the lane's bit y."""
    tables, rows, rates = cm.tables, cm.rows, cm.rates
    for o in range(rows.shape[1]):
        r = rows[lane, o]
        tables[o, r, n] = learn(tables[o, r, n], y, rates)
