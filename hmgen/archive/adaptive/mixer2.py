"""Two layers of logistic mixing (methods 8 to 13). Layer 1: MIXERS mixers over the same inputs (stretched
predictions x_i, 1/256 units), each choosing its weight set by a context of its own (the predictor picks them);
mixer k gives s_k = sum_i w_ki x_i / 2^16, clamped to the stretch range. Layer 2: one mixer over the s_k, its
weight set chosen by one more context, gives the bit's P(1) = squash(sum_k v_k s_k / 2^16).

Every weight set learns from its own error, err = (bit << 12) - p: w_i += x_i err rate / 2^16. A set's rate
starts at (1 + BOOST) LR and falls toward LR as the set is used (LR (1 + BOOST 64 / (64 + uses))): a set seen
little learns fast, so that the many sets of a small block still converge (hmgen's choice). Layer 1's weights start at 1 for the input `trusted` (the network, or the order-2
context without one) and FIRST for each context's main input; layer 2 averages.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hmgen.jit import njit

LR, BOOST, LR2 = 24, 6, 4
LR3, BOOST3 = 16, 10    # format 7's models: slower, with a larger boost while a set is new (-0.35 % on code and markup)
SKIP = 32               # |err| below this (of 4096): the set is not updated (time; no loss measured)
ONE = 1 << 16
W_MAX = 1 << 24


class Mixer2(NamedTuple):
    w: np.ndarray                # (mixers, sets, inputs) int32, 16.16 fixed point
    uses: np.ndarray             # (mixers, sets) int64: updates each set has had
    w2: np.ndarray               # (sets2, mixers) int64
    x: np.ndarray                # (inputs,) int32: the inputs of the bit being coded
    sel: np.ndarray              # (mixers + 1,) int64: the sets chosen for it (the last: layer 2's)
    s: np.ndarray                # (mixers,) int64: layer 1's outputs, stretched
    p: np.ndarray                # (mixers + 1,) int64: layer 1's P(1)s and the final one, 12 bits
    rate: np.ndarray             # (2,) int64: LR and BOOST of layer 1


def new(mixers: int, sets: int, inputs: int, sets2: int, trusted: int, first: np.ndarray, first_w: int,
        lr: int = LR, boost: int = BOOST) -> Mixer2:
    w = np.zeros((mixers, sets, inputs), np.int32)
    w[:, :, first] = first_w
    w[:, :, trusted] = ONE
    return Mixer2(w, np.zeros((mixers, sets), np.int64), np.full((sets2, mixers), ONE // mixers, np.int64),
                  np.zeros(inputs, np.int32), np.zeros(mixers + 1, np.int64), np.zeros(mixers, np.int64),
                  np.zeros(mixers + 1, np.int64), np.array([lr, boost], np.int64))


@njit(cache=True, nogil=True, inline="always")
def predict(mx, squash):
    """P(1) of the bit from mx.x under the sets in mx.sel (all chosen by the caller)."""
    w, w2, x, sel, s, p = mx.w, mx.w2, mx.x, mx.sel, mx.s, mx.p
    k = s.shape[0]
    n = x.shape[0]
    top = 0
    j = 0
    while j + 4 <= k:                       # four mixers at a time: each input is loaded once for four sums
        v0, v1, v2, v3 = w[j, sel[j]], w[j + 1, sel[j + 1]], w[j + 2, sel[j + 2]], w[j + 3, sel[j + 3]]
        d0 = d1 = d2 = d3 = np.int64(0)
        for i in range(n):
            xi = np.int64(x[i])
            d0 += np.int64(v0[i]) * xi
            d1 += np.int64(v1[i]) * xi
            d2 += np.int64(v2[i]) * xi
            d3 += np.int64(v3[i]) * xi
        s[j], s[j + 1], s[j + 2], s[j + 3] = d0, d1, d2, d3
        j += 4
    for j in range(j, k):
        dot = np.int64(0)
        wv = w[j, sel[j]]
        for i in range(n):
            dot += np.int64(wv[i]) * np.int64(x[i])
        s[j] = dot
    for j in range(k):
        v = min(2047, max(-2047, s[j] >> 16))
        s[j] = v
        p[j] = squash[v + 2047]
        top += w2[sel[k], j] * v
    p[k] = squash[min(2047, max(-2047, top >> 16)) + 2047]
    return p[k]


@njit(cache=True, nogil=True, inline="always")
def update(mx, y):
    """Every set used learns from its error on bit y."""
    w, uses, w2, x, sel, s, p = mx.w, mx.uses, mx.w2, mx.x, mx.sel, mx.s, mx.p
    lr, boost = mx.rate[0], mx.rate[1]
    k = s.shape[0]
    n = x.shape[0]
    for j in range(k):
        ws = sel[j]
        u = uses[j, ws]
        uses[j, ws] = u + 1
        e = (y << 12) - p[j]
        if -SKIP < e < SKIP:
            continue
        err = e * (lr + (lr * boost * 64) // (64 + u))
        wv = w[j, ws]
        for i in range(n):
            wv[i] = np.int32(min(W_MAX, max(-W_MAX, np.int64(wv[i]) + ((np.int64(x[i]) * err) >> 16))))
    err = ((y << 12) - p[k]) * LR2
    for j in range(k):
        w2[sel[k], j] = min(W_MAX, max(-W_MAX, w2[sel[k], j] + ((s[j] * err) >> 16)))
