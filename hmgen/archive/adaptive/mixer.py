"""The logistic mixer: p = squash(sum_i w_i x_i / 2^16) over the components' stretched predictions x_i, with one
weight vector per weight set (chosen per node by the predictor), trained online on the coding error:
w_i += x_i err LR / 2^16, err = (bit << 12) - p."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hmgen.jit import njit

LR = 24                          # learning rate (tuned on held-out prose and code)
ONE = 1 << 16                    # weight 1.0
W_MAX = 1 << 24                  # weights stay within +-256


class Mixer(NamedTuple):
    weights: np.ndarray          # (sets, inputs) int64, 16.16 fixed point
    x: np.ndarray                # (lanes, 256, inputs) int64: the inputs at each node, kept for the update
    set: np.ndarray              # (lanes, 256) int64: the weight set each node used
    p: np.ndarray                # (lanes, 256) int64: the mixed P(1) at each node, in 12 bits


def new(sets: int, inputs: int, lanes: int, trusted: int) -> Mixer:
    """Weights 1 for input `trusted` and 0 for the rest: the mixer starts out passing that input through."""
    weights = np.zeros((sets, inputs), dtype=np.int64)
    weights[:, trusted] = ONE
    return Mixer(weights, np.zeros((lanes, 256, inputs), dtype=np.int64), np.zeros((lanes, 256), dtype=np.int64),
                 np.zeros((lanes, 256), dtype=np.int64))


@njit(cache=True, nogil=True, inline="always")
def predict(mx, lane, n, ws, squash):
    """The mixed P(1) at node n of a lane from its inputs mx.x[lane, n] and weight set ws (both kept)."""
    weights, x = mx.weights, mx.x
    mx.set[lane, n] = ws
    dot = 0
    for i in range(x.shape[2]):
        dot += weights[ws, i] * x[lane, n, i]
    p = squash[min(2047, max(-2047, dot >> 16)) + 2047]
    mx.p[lane, n] = p
    return p


@njit(cache=True, nogil=True, inline="always")
def update(mx, lane, n, y):
    """The weight set node n used learns from its error on bit y."""
    weights, x = mx.weights, mx.x
    err = ((y << 12) - mx.p[lane, n]) * LR
    ws = mx.set[lane, n]
    for i in range(x.shape[2]):
        weights[ws, i] = min(W_MAX, max(-W_MAX, weights[ws, i] + ((x[lane, n, i] * err) >> 16)))
