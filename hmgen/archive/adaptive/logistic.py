"""The logistic domain every component speaks: probabilities in 12 bits, stretch(p) = ln(p / (1 - p)) and its
inverse squash, in integers (x in [-2047, 2047], units of 1/256)."""
from __future__ import annotations

import decimal
import functools
from typing import NamedTuple

import numpy as np


class Curves(NamedTuple):
    squash: np.ndarray       # (4095,) int64: x in [-2047, 2047] (index x + 2047) -> p in [1, 4095]
    stretch: np.ndarray      # (4096,) int64: p -> x, squash's integer inverse


@functools.cache
def curves() -> Curves:
    """squash: 33 points of 4096 / (1 + e^-x), x in [-8, 8], correctly rounded with `decimal`, linearly interpolated
    in integers; stretch: for each p the smallest x whose squash reaches it (hmgen's choice of curve)."""
    ctx = decimal.Context(prec=30)
    pts = [int((ctx.divide(4096, 1 + ctx.exp(decimal.Decimal(-(i - 16)) / 2))).to_integral_value(
        rounding=decimal.ROUND_HALF_EVEN, context=ctx)) for i in range(33)]
    squash = np.zeros(4095, dtype=np.int64)
    for x in range(-2047, 2048):
        j, w = (x + 2048) >> 7, (x + 2048) & 127
        squash[x + 2047] = min(4095, max(1, (pts[j] * (128 - w) + pts[j + 1] * w + 64) >> 7))
    stretch = np.zeros(4096, dtype=np.int64)
    pi = 0
    for x in range(-2047, 2048):
        v = int(squash[x + 2047])
        stretch[pi:v + 1] = x
        pi = max(pi, v + 1)
    stretch[pi:] = 2047
    return Curves(squash, stretch)
