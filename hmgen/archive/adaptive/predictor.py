"""The predictor: the network's next-byte distribution mixed with models of the bytes already coded, in integer
arithmetic only, so that the encoder and decoder agree on every machine.

A byte is seen as 8 binary decisions down a tree of 255 nodes (node 1 the root, node n's children 2n and
2n+1, the leaf 256+b the byte b; the high bit first). At every node each component gives stretch(P(bit = 1)):
  network   the sum of its frequencies under the node's 1-subtree over the node's (integer division);
  contexts  orders 1, 2, 3, 4, 6 (context.py);
  match     the bit of the byte that followed the last occurrence of the lane's context (match.py);
and the mixer (mixer.py) combines them with a bias input. Its weight set is chosen per node by the network's
confidence at the node (|stretch(p_network)| in 8 steps), whether the match model predicts the node and how long
its match is, and the node's depth: the mixer learns where to trust the network. Its weights start at 1 for the
network and 0 for the rest, so a block starts out coded as the network alone would code it.

Method 4 (what compress writes): each bit's mixed P(1) is refined by two APMs (apm.py), one in the context of the
node (the bits of the byte so far), one of the previous byte and the node, and the two averaged:
P(1) = (p_apm1 + p_apm2) / 2 in [1, 4095] / 4096 (hmgen's choice; the alternatives tried are in
benchmarks/RESULTS.md). Only the 8 nodes of the byte's path are computed (the decoder learns each bit before it
computes the next node). Method 3 (still decoded): all 255 mixed probabilities, multiplied along each path into 256
integer frequencies (the 1-child gets mass * p / 4096, the 0-child the rest), no APMs.

Lanes (hmgen.archive.format): at step t every lane predicts (every bit of its byte) from the shared state as it
was at the end of step t-1; then the components learn from the step's bytes lane by lane, in lane order. The decoder
does the same, so both sides hold the same state at every step.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hmgen.archive.adaptive import apm, context, match, mixer
from hmgen.archive.adaptive.logistic import Curves, curves
from hmgen.jit import njit

NET, MATCH, BIAS = 0, len(context.ORDERS) + 1, len(context.ORDERS) + 2    # the mixer's inputs; orders 1..
INPUTS = len(context.ORDERS) + 3
SETS = 8 * 4 * 8                 # weight sets: network confidence x match state x depth


class State(NamedTuple):
    sums: np.ndarray             # (lanes, 512) int64: the network's mass under each node (leaf 256 + b: byte b)
    contexts: context.ContextMaps
    match: match.Match
    mixer: mixer.Mixer
    apm1: apm.APM                # context: the node; empty in method 3
    apm2: apm.APM                # context: the previous byte and the node; empty in method 3
    curves: Curves


class Predictor:
    """The adaptive state of one block of n bytes coded in `lanes` lanes; bitwise: method 4, else method 3. Its
    methods (begin a step, predict, update) run the compiled functions below."""

    def __init__(self, n: int, lanes: int, bitwise: bool):
        c = curves()
        self.state = State(np.zeros((lanes, 512), dtype=np.int64), context.new(n, lanes), match.new(lanes),
                           mixer.new(SETS, INPUTS, lanes, trusted=NET), apm.new(256 if bitwise else 0, lanes, c.squash),
                           apm.new(1 << 16 if bitwise else 0, lanes, c.squash), c)

    def begin(self, net: np.ndarray, grid: np.ndarray, t: int) -> None:
        """Step t: net (k, 256) the network's integer frequencies for the k lanes running."""
        start(self.state, net, grid, t, net.shape[0])

    def predict_bits(self, grid: np.ndarray, t: int, k: int) -> np.ndarray:
        """(8, k): P(1) in 12 bits of every bit of the k bytes grid[:k, t] (encoding: the bytes are known)."""
        out = np.empty((8, k), dtype=np.int64)
        byte_bits(self.state, grid, t, k, out)
        return out

    def predict_bit(self, grid: np.ndarray, t: int, k: int, d: int, nodes: np.ndarray) -> np.ndarray:
        """(k,): P(bit d = 1) in 12 bits of each lane at its node (decoding: the bits above are known)."""
        out = np.empty(k, dtype=np.int64)
        bits(self.state, grid, t, k, d, nodes, out)
        return out

    def predict_bytes(self, grid: np.ndarray, t: int, k: int) -> np.ndarray:
        """(k, 256) float64 integer frequencies of the mixed distribution (method 3)."""
        out = np.empty((k, 256), dtype=np.float64)
        byte_frequencies(self.state, grid, t, k, out)
        return out

    def update(self, grid: np.ndarray, t: int, k: int) -> None:
        """Every component learns from the bytes of step t (grid[:k, t]), lane by lane."""
        learn(self.state, grid, t, k)


@njit(cache=True, nogil=True)
def start(P, net, grid, t, k):
    """The network's masses per node, and each lane's context rows, for step t."""
    all_sums, contexts = P.sums, P.contexts
    for lane in range(k):
        sums = all_sums[lane]
        for b in range(256):
            sums[256 + b] = np.int64(net[lane, b])
        for n in range(255, 0, -1):
            sums[n] = sums[2 * n] + sums[2 * n + 1]
        context.select(contexts, grid, lane, t)


@njit(cache=True, nogil=True, inline="always")
def net_p(sums, n):
    """The network's P(bit = 1) at node n in 12 bits: its mass under the 1-child over the node's."""
    s, one = sums[n], sums[2 * n + 1]
    p = 2048 if s == 0 else (one * 4096 + s // 2) // s
    return min(4095, max(1, p))


@njit(cache=True, nogil=True, inline="always")
def mix(P, flat, lane, n, d):
    """The mixer's P(1) at node n (depth d) of a lane, from every component's prediction."""
    squash, stretch, mx = P.curves.squash, P.curves.stretch, P.mixer
    x = mx.x[lane, n]
    x[NET] = stretch[net_p(P.sums[lane], n)]
    context.predict(P.contexts, lane, n, stretch, x, NET + 1)
    xm, ms = match.predict(P.match, flat, lane, n, d, stretch)
    x[MATCH] = xm
    x[BIAS] = 256
    confidence = min(7, abs(x[NET]) >> 8)
    return mixer.predict(mx, lane, n, (confidence * 4 + ms) * 8 + d, squash)


@njit(cache=True, nogil=True, inline="always")
def bit(P, grid, flat, t, lane, n, d):
    """Method 4's P(1) at node n (depth d) of a lane: the mixed p refined by the two APMs, averaged."""
    p = mix(P, flat, lane, n, d)
    stretch, apm1, apm2 = P.curves.stretch, P.apm1, P.apm2
    before = np.int64(grid[lane, t - 1]) if t >= 1 else np.int64(0)
    p1 = apm.predict(apm1, lane, n, n, p, stretch)
    p2 = apm.predict(apm2, lane, n, before * 256 + n, p, stretch)
    return min(4095, max(1, (p1 + p2 + 1) >> 1))


@njit(cache=True, nogil=True)
def bits(P, grid, t, k, d, nodes, out):
    flat = grid.reshape(-1)
    for lane in range(k):
        out[lane] = bit(P, grid, flat, t, lane, nodes[lane], d)


@njit(cache=True, nogil=True)
def byte_bits(P, grid, t, k, out):
    flat = grid.reshape(-1)
    for lane in range(k):
        b = np.int64(grid[lane, t])
        n = 1
        for d in range(8):
            out[d, lane] = bit(P, grid, flat, t, lane, n, d)
            n = 2 * n + ((b >> (7 - d)) & 1)


@njit(cache=True, nogil=True)
def byte_frequencies(P, grid, t, k, freq):
    flat = grid.reshape(-1)
    mixed = P.mixer.p
    mass = np.zeros(512, dtype=np.int64)
    for lane in range(k):
        for d in range(8):
            for n in range(1 << d, 2 << d):
                mix(P, flat, lane, n, d)
        mass[1] = 1 << 28
        for n in range(1, 256):
            one = (mass[n] * mixed[lane, n]) >> 12
            mass[2 * n + 1] = one
            mass[2 * n] = mass[n] - one
        for b in range(256):
            freq[lane, b] = np.float64(mass[256 + b])


@njit(cache=True, nogil=True)
def learn(P, grid, t, k):
    flat = grid.reshape(-1)
    mx, contexts, mm, apm1, apm2 = P.mixer, P.contexts, P.match, P.apm1, P.apm2
    refine = apm1.table.shape[0] > 0                                      # method 4
    for lane in range(k):
        b = np.int64(grid[lane, t])
        n = 1
        for d in range(8):
            y = (b >> (7 - d)) & 1
            mixer.update(mx, lane, n, y)
            context.update(contexts, lane, n, y)
            match.update(mm, flat, lane, n, d, y)
            if refine:
                apm.update(apm1, lane, n, y)
                apm.update(apm2, lane, n, y)
            n = 2 * n + y
    match.follow(mm, grid, t, k)
