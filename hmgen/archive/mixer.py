"""Learning from the block while coding (methods 3 and 4): the network's next-byte distribution mixed with models of
the bytes already coded, in integer arithmetic only, so that the encoder and decoder agree on every machine.

A byte is seen as 8 binary decisions down a tree of 255 nodes (node 1 the root, node n's children 2n and
2n+1, the leaf 256+b the byte b; the high bit first). For every node each model gives P(bit = 1) in 12 bits:
  network   the sum of its frequencies under the node's 1-subtree over the node's (integer division);
  order-k   k = 1, 2, 3, 4, 6: per context (the lane's last k bytes, hashed into `slots` rows) a row of 256
            adaptive 16-bit probabilities, one per node (contiguous: a byte's prediction reads one row per
            order), learning at rate 1/(count + 1.5) up to 1/256.5;
  match     the longest earlier occurrence of the lane's last MIN_MATCH bytes (anywhere in the block already
            coded) predicts the byte that followed it; on the nodes of that byte's path its bit, with a
            confidence learned per match length;
and a mixer combines them in the logistic domain, p = squash(sum_i w_i stretch(p_i) / 2^16), its weights
trained online on the coding error (w_i += stretch(p_i) err lr). The weight set is chosen per node by the
network's confidence at the node (|stretch(p_network)| in 8 steps), whether the match model predicts the node
and how long its match is, and the node's depth: the mixer learns where to trust the network. Weights start
at 1 for the network and 0 for the rest, so a block starts out coded as the network alone would code it.

Method 4 (what compress writes): the byte is coded as its 8 bits, each with its node's probability refined by
two adaptive probability maps (below), so only the 8 nodes of the byte's path are computed (the decoder learns
each bit before it computes the next node). Method 3 (still decoded): all 255 mixed probabilities, multiplied
along each path into 256 integer frequencies (the 1-child gets mass * p / 4096, the 0-child the rest) that drive
the same categorical range coder as the network alone.

Lanes (hmgen.archive.format): at step t every lane predicts (every bit of its byte) from the shared state as it
was at the end of step t-1; then the models learn from the step's bytes lane by lane, in lane order. The decoder does the same, so
both sides hold the same state at every step. The match model points only at bytes coded in earlier steps.

hmgen's choices (after lpaq1's design, Mahoney 2007, rewritten): the orders, the table sizes, the learning
rates, the mixer's contexts and the squash curve (33 points of 4096 / (1 + e^-x), x in [-8, 8], correctly
rounded with `decimal`, linearly interpolated in integers; stretch is its integer inverse).
"""
from __future__ import annotations

import decimal
import functools

import numpy as np

from hmgen.jit import njit

ORDERS = (1, 2, 3, 4, 6)
INPUTS = len(ORDERS) + 3         # network, orders, match, bias
NET, MATCH, BIAS = 0, len(ORDERS) + 1, len(ORDERS) + 2
MIN_MATCH = 6                    # bytes of context that start a match
MATCH_BITS = 18                  # match hash table: 2^18 positions
MAX_SLOT_BITS = 15               # context rows per order at most (256 x int32 each: 32 MiB)
LIMIT = 255                      # context statistics: rate 1 / (count + 1.5), count up to LIMIT
LR = 24                          # mixer learning rate (w += x err LR / 2^16; tuned on held-out prose and code)
SETS = 8 * 4 * 8                 # weight sets: network confidence x match state x depth
ONE = 1 << 16                    # mixer weight 1.0
W_MAX = 1 << 24                  # weights stay within +-256
APM_LIMIT = 127                  # APM bins: rate 1 / (count + 1.5), count from APM_START up to APM_LIMIT
APM_START = 2


@functools.cache
def curves() -> tuple[np.ndarray, np.ndarray]:
    """(squash: 4095 entries for x in [-2047, 2047] -> p in [1, 4095]; stretch: 4096 entries p -> x)."""
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
    return squash, stretch


def rates() -> np.ndarray:
    return np.array([65536 * 2 // (2 * n + 3) for n in range(LIMIT + 1)], dtype=np.int64)   # 1 / (n + 1.5)


class Mixer:
    """The adaptive state of one block coded in `lanes` lanes of m bytes."""

    def __init__(self, n: int, lanes: int, m: int, bitwise: bool = False):
        bits = min(MAX_SLOT_BITS, max(8, (max(n, 1) - 1).bit_length()))
        self.slots = 1 << bits
        self.tables = np.zeros((len(ORDERS), self.slots, 256), dtype=np.int32)   # p16 << 10 | count; 0 = unseen
        self.weights = np.zeros((SETS, INPUTS), dtype=np.int64)
        self.weights[:, NET] = ONE
        self.match_p = np.full(64, 3072 << 10, dtype=np.int64)                     # P(match bit right), by length
        self.match_table = np.zeros(1 << MATCH_BITS, dtype=np.int64)               # hash -> position + 1
        self.match_ptr = np.zeros(lanes, dtype=np.int64)
        self.match_len = np.zeros(lanes, dtype=np.int64)
        self.rows = np.zeros((lanes, len(ORDERS)), dtype=np.int64)                 # context row per order
        self.inputs = np.zeros((lanes, 256, INPUTS), dtype=np.int64)               # stretch(p_i) per node
        self.sets = np.zeros((lanes, 256), dtype=np.int64)                         # weight set per node
        self.mixed = np.zeros((lanes, 256), dtype=np.int64)                        # mixed P(1) per node
        self.freq = np.zeros((lanes, 256), dtype=np.float64)
        self.m = m
        self.squash, self.stretch = curves()
        self.rates = rates()
        self.orders = np.array(ORDERS, dtype=np.int64)
        self.bitwise = bitwise
        if bitwise:                                                                  # method 4's state
            self.sums = np.zeros((lanes, 512), dtype=np.int64)                       # network mass per node
            row = (self.squash[np.clip((np.arange(33) - 16) * 128, -2047, 2047) + 2047] * 16) << 10 | APM_START
            self.apm1 = np.tile(row, 256).astype(np.int64)                            # node -> 33 bins
            self.apm2 = np.tile(row, 1 << 16).astype(np.int64)                        # previous byte, node -> 33 bins
            self.apm_idx = np.zeros((lanes, 256, 2), dtype=np.int64)
            self.bits = np.zeros((8, lanes), dtype=np.int64)

    def predict(self, net: np.ndarray, grid: np.ndarray, t: int) -> np.ndarray:
        """net: (k, 256) integer frequencies from the network for the k lanes running at step t -> (k, 256)
        float64 integer frequencies of the mixed distribution."""
        k = net.shape[0]
        predict(net, grid, t, k, self.orders, self.slots, self.tables, self.weights, self.match_p, self.match_ptr,
                self.match_len, self.rows, self.inputs, self.sets, self.mixed, self.freq, self.squash, self.stretch)
        return self.freq[:k]

    def update(self, grid: np.ndarray, t: int, k: int) -> None:
        """Learn from the bytes of step t (grid[:k, t]), lane by lane."""
        update(grid, t, k, self.tables, self.weights, self.match_p, self.match_table, self.match_ptr,
               self.match_len, self.rows, self.inputs, self.sets, self.mixed, self.rates, self.stretch)
        if self.bitwise:
            update_apm(grid, t, k, self.apm1, self.apm2, self.apm_idx)

    # Method 4: the byte coded as its 8 bits, each with the final P(1) of its node (no 256-entry table).
    def prepare(self, net: np.ndarray, grid: np.ndarray, t: int) -> None:
        """Step t's network masses and context rows for the k = len(net) lanes running."""
        prepare(net, grid, t, net.shape[0], self.orders, self.slots, self.rows, self.sums)

    def predict_bits(self, grid: np.ndarray, t: int, k: int, d: int, nodes: np.ndarray) -> np.ndarray:
        """P(bit d = 1) in 12 bits for each of the k lanes at its node (decoding: the bits above are known)."""
        out = self.bits[d, :k]
        predict_depth(d, nodes, grid, t, k, self.sums, self.rows, self.tables, self.weights, self.match_p,
                      self.match_ptr, self.match_len, self.inputs, self.sets, self.mixed, self.apm1, self.apm2,
                      self.apm_idx, self.squash, self.stretch, out)
        return out

    def predict_byte_bits(self, grid: np.ndarray, t: int, k: int) -> np.ndarray:
        """(8, k): P(1) of every bit of the k bytes grid[:k, t] (encoding: the whole byte is known)."""
        for d in range(8):
            nodes = (grid[:k, t].astype(np.int64) | 256) >> (8 - d)
            self.predict_bits(grid, t, k, d, nodes)
        return self.bits[:, :k]


@njit(cache=True, nogil=True)
def context_row(grid, lane, t, order, slots):
    if order == 1:
        return np.int64(grid[lane, t - 1]) if t >= 1 else np.int64(0)
    h = order * 0x3C6EF
    for j in range(1, order + 1):
        b = np.int64(grid[lane, t - j]) if t >= j else np.int64(0)
        h = ((h ^ b) * 0x2F0B5 + j) & 0xFFFFFFFF
    return (h ^ (h >> 15)) & (slots - 1)


@njit(cache=True, nogil=True)
def net_p(sums, n):
    """The network's P(bit = 1) at node n in 12 bits: its mass under the 1-child over the node's."""
    s = sums[n]
    p = 2048 if s == 0 else (sums[2 * n + 1] * 4096 + s // 2) // s
    return min(4095, max(1, p))


@njit(cache=True, nogil=True)
def match_state(flat, match_ptr, match_len, lane):
    """(match length, predicted byte + 256 or 0, length bucket, mixer match state) of a lane."""
    mlen = match_len[lane]
    pb = np.int64(flat[match_ptr[lane]]) + 256 if mlen > 0 else 0
    mstate = 0 if mlen == 0 else (1 if mlen < 16 else (2 if mlen < 32 else 3))
    return mlen, pb, min(mlen, 63), mstate


@njit(cache=True, nogil=True)
def mix_node(lane, n, d, p_net, rows, tables, weights, match_p, pb, lb, mlen, mstate, inputs, sets, squash,
             stretch):
    """The mixer's P(bit = 1) at node n (depth d) of a lane, its inputs and weight set kept for the update."""
    no = rows.shape[1]
    xn = stretch[p_net]
    inputs[lane, n, 0] = xn
    conf = min(7, abs(xn) >> 8)
    for o in range(no):
        v = tables[o, rows[lane, o], n]
        inputs[lane, n, 1 + o] = 0 if v == 0 else stretch[v >> 14]
    ms = 0
    if mlen > 0 and (pb >> (8 - d)) == n:
        e = stretch[match_p[lb] >> 10]
        inputs[lane, n, no + 1] = e if ((pb >> (7 - d)) & 1) == 1 else -e
        ms = mstate
    else:
        inputs[lane, n, no + 1] = 0
    inputs[lane, n, no + 2] = 256
    ws = (conf * 4 + ms) * 8 + d
    sets[lane, n] = ws
    dot = 0
    for i in range(no + 3):
        dot += weights[ws, i] * inputs[lane, n, i]
    dot = min(2047, max(-2047, dot >> 16))
    return squash[dot + 2047]


@njit(cache=True, nogil=True)
def predict(net, grid, t, k, orders, slots, tables, weights, match_p, match_ptr, match_len, rows, inputs, sets,
            mixed, freq, squash, stretch):
    flat = grid.reshape(-1)
    sums = np.zeros(512, dtype=np.int64)
    no = orders.shape[0]
    for lane in range(k):
        for b in range(256):
            sums[256 + b] = np.int64(net[lane, b])
        for n in range(255, 0, -1):
            sums[n] = sums[2 * n] + sums[2 * n + 1]
        for o in range(no):
            rows[lane, o] = context_row(grid, lane, t, orders[o], slots)
        mlen, pb, lb, mstate = match_state(flat, match_ptr, match_len, lane)
        for d in range(8):
            for n in range(1 << d, 2 << d):
                mixed[lane, n] = mix_node(lane, n, d, net_p(sums, n), rows, tables, weights, match_p, pb, lb, mlen,
                                          mstate, inputs, sets, squash, stretch)
        mass = sums                                                       # reuse: masses top-down
        mass[1] = 1 << 28
        for n in range(1, 256):
            one = (mass[n] * mixed[lane, n]) >> 12
            mass[2 * n + 1] = one
            mass[2 * n] = mass[n] - one
        for b in range(256):
            freq[lane, b] = np.float64(mass[256 + b])


@njit(cache=True, nogil=True)
def learn(v, y, rates):
    """One context statistic (p16 << 10 | count, 0 = unseen) moved toward bit y."""
    if v == 0:
        v = 32768 << 10
    p, c = v >> 10, v & 1023
    target = 65535 if y == 1 else 0
    p += ((target - p) * rates[c] + (1 << 15)) >> 16
    p = min(65520, max(16, p))
    if c < rates.shape[0] - 1:
        c += 1
    return (p << 10) | c


@njit(cache=True, nogil=True)
def update(grid, t, k, tables, weights, match_p, match_table, match_ptr, match_len, rows, inputs, sets, mixed,
           rates, stretch):
    flat = grid.reshape(-1)
    m = grid.shape[1]
    no = rows.shape[1]
    total = flat.shape[0]
    mask = match_table.shape[0] - 1
    for lane in range(k):
        b = np.int64(grid[lane, t])
        mlen = match_len[lane]
        pb = np.int64(flat[match_ptr[lane]]) + 256 if mlen > 0 else 0
        lb = min(mlen, 63)
        n = 1
        for d in range(8):
            y = (b >> (7 - d)) & 1
            err = ((y << 12) - mixed[lane, n]) * LR
            ws = sets[lane, n]
            for i in range(no + 3):
                weights[ws, i] = min(W_MAX, max(-W_MAX, weights[ws, i] + ((inputs[lane, n, i] * err) >> 16)))
            for o in range(no):
                tables[o, rows[lane, o], n] = learn(tables[o, rows[lane, o], n], y, rates)
            if mlen > 0 and (pb >> (8 - d)) == n:
                right = 1 if ((pb >> (7 - d)) & 1) == y else 0
                p = match_p[lb]
                match_p[lb] = p + ((((right << 22) - p) * 3) >> 6)
            n = 2 * n + y
    for lane in range(k):                                                 # follow or lose each lane's match
        b = grid[lane, t]
        if match_len[lane] > 0:
            if flat[match_ptr[lane]] == b and match_ptr[lane] + 1 < total:
                match_len[lane] += 1
                match_ptr[lane] += 1
            else:
                match_len[lane] = 0
        if match_len[lane] == 0 and t + 1 >= MIN_MATCH:                          # look up the last MIN_MATCH bytes
            h = match_hash(grid, lane, t) & mask
            cand = match_table[h] - 1
            if cand >= 0:
                match_ptr[lane] = cand
                match_len[lane] = 1
    for lane in range(k):                                                 # then record where each context leads
        if t + 1 >= MIN_MATCH and t + 1 < m:
            match_table[match_hash(grid, lane, t) & mask] = lane * m + t + 1 + 1


@njit(cache=True, nogil=True)
def match_hash(grid, lane, t):
    h = 0
    for j in range(MIN_MATCH):
        h = ((h * 0x2F0B5) ^ np.int64(grid[lane, t - j])) & 0xFFFFFFFFF
    return h ^ (h >> 17)


# ---- method 4: bit by bit, with an adaptive probability map (APM / SSE) after the mixer --------------------
# The mixer's P(1) is refined by two APMs (after lpaq1): each maps (context, stretch(p) in 33 interpolated bins)
# to a learned probability (the nearer bin learns, at a rate that starts fast and settles at 1/128.5: on held-out
# XML, HTML, Python and prose this beat lpaq1's fixed 1/128 by 0.3-4.9 %); contexts: the node (the bits of the byte so far), and the previous byte with the
# node. The coded P(1) = (p_apm1 + p_apm2) / 2, in [1, 4095] / 4096. (Chosen on held-out XML, prose, Python and
# HTML, 40-131 kB each: averaging the two APMs beat 2:1:1 and 1:1:2 with the mixer's own p on all four files,
# by 0.3-1.3 %; an order-2 hashed context for the first APM did not help.)


@njit(cache=True, nogil=True)
def prepare(net, grid, t, k, orders, slots, rows, sums):
    for lane in range(k):
        for b in range(256):
            sums[lane, 256 + b] = np.int64(net[lane, b])
        for n in range(255, 0, -1):
            sums[lane, n] = sums[lane, 2 * n] + sums[lane, 2 * n + 1]
        for o in range(orders.shape[0]):
            rows[lane, o] = context_row(grid, lane, t, orders[o], slots)


@njit(cache=True, nogil=True)
def apm(table, cx, p, stretch):
    """(refined P(1) in 12 bits, index of the nearer bin, the one updated)."""
    s = stretch[p] + 2048                                                 # 1 .. 4095
    i = cx * 33 + (s >> 7)
    w = s & 127
    return ((table[i] >> 10) * (128 - w) + (table[i + 1] >> 10) * w) >> 11, i + (w >> 6)


@njit(cache=True, nogil=True)
def predict_depth(d, nodes, grid, t, k, sums, rows, tables, weights, match_p, match_ptr, match_len, inputs, sets,
                  mixed, apm1, apm2, apm_idx, squash, stretch, out):
    flat = grid.reshape(-1)
    for lane in range(k):
        n = nodes[lane]
        mlen, pb, lb, mstate = match_state(flat, match_ptr, match_len, lane)
        pm = mix_node(lane, n, d, net_p(sums[lane], n), rows, tables, weights, match_p, pb, lb, mlen, mstate,
                      inputs, sets, squash, stretch)
        mixed[lane, n] = pm
        b1 = np.int64(grid[lane, t - 1]) if t >= 1 else np.int64(0)
        p1, i1 = apm(apm1, n, pm, stretch)
        p2, i2 = apm(apm2, b1 * 256 + n, pm, stretch)
        apm_idx[lane, n, 0] = i1
        apm_idx[lane, n, 1] = i2
        out[lane] = min(4095, max(1, (p1 + p2 + 1) >> 1))


@njit(cache=True, nogil=True)
def apm_learn(v, y):
    """One APM bin (p16 << 10 | count) moved toward bit y at rate 1 / (count + 1.5): fast while it is new."""
    p, c = v >> 10, v & 1023
    target = 65535 if y == 1 else 0
    p += ((target - p) * 2) // (2 * c + 3)
    if c < APM_LIMIT:
        c += 1
    return (p << 10) | c


@njit(cache=True, nogil=True)
def update_apm(grid, t, k, apm1, apm2, apm_idx):
    for lane in range(k):
        b = np.int64(grid[lane, t])
        n = 1
        for d in range(8):
            y = (b >> (7 - d)) & 1
            i1, i2 = apm_idx[lane, n, 0], apm_idx[lane, n, 1]
            apm1[i1] = apm_learn(apm1[i1], y)
            apm2[i2] = apm_learn(apm2[i2], y)
            n = 2 * n + y
