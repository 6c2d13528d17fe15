"""hmgen.cell.integer's engine compiled for the CPU with numba: the same integers, lane by lane, without torch.

`QuantLM` (hmgen.cell.integer) defines the integer scheme and runs it on any torch device, as ~200 tensor
operations per coded step. On a CPU with tens of lanes the operations' overheads, not the arithmetic, set its
speed, and `import torch` alone takes 1.4 s of a small file's compression. `IntegerLM` computes exactly the same
numbers in compiled loops, one layer of all lanes per call:

  * integer products (weights times h, embeddings, the head) in float32 (float64 where a product's bound
    passes 2^24): every partial sum is an integer below 2^24 (2^53), hence exact, so any order of addition,
    vectorisation or fused multiply-add gives the same result. Only `products` may reorder (fastmath);
  * everything else — layer norm's one division, square root and multiplication, the roundings, shifts and
    table look-ups — in the same correctly rounded float64 operations, in the same order, as QuantLM, in
    functions compiled without fastmath (so without contraction into fused multiply-adds).

COPY costs nothing here either: a layer above the first runs only on lanes that UPDATE or FLUSH, its top-down
term only where it FLUSHes, its bottom-up term only where the layer below fired (eq. 2-3).
tests/test_integer_numba.py checks every frequency against QuantLM, step by step, for every architecture.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hmgen.cell.scheme import (C_BITS, C_MAX, EXP_RANGE, GATE, LEVELS, LN_EPS, PRE, R, ln_eps, ln_shift, quantise,
                               tables, weights_hash)
from hmgen.jit import njit

EMPTY_F64 = np.zeros(0, np.float64)
EMPTY_W = np.zeros((0, 0), np.float32)


def exact_dtype(bound: float) -> type:
    """float32 when every partial sum of a product bounded by `bound` is an exact float32 integer."""
    if bound >= 2.0 ** 53:
        raise ValueError("layer too large for exact integer inference")
    return np.float32 if bound < 2 ** 24 else np.float64


class Term(NamedTuple):
    """One weight matrix and what turns its products with h_q into Q8 pre-activation terms (QuantLM's QLinear)."""
    w: np.ndarray        # (out, in) integers in [-127, 127], float32 or float64 (see exact_dtype)
    gain: np.ndarray     # (out,) LN gain * 256, float64; empty: no layer norm
    eps: float
    shift: int
    scale: float         # Q8 units per unit of the product (no layer norm)


def make_term(weight: np.ndarray, in_unit: float, in_max: int, gain: np.ndarray | None) -> Term:
    w, s = quantise(weight)
    n = w.shape[0]
    bound = in_max * float(np.abs(w).sum(1).max())
    unit = s / LEVELS * in_unit
    shift = ln_shift(n, bound)
    return Term(np.ascontiguousarray(w, exact_dtype(bound)),
                EMPTY_F64 if gain is None else np.asarray(gain, np.float64) * PRE,
                ln_eps(n, unit * 2 ** shift), shift, unit * PRE)


NO_TERM = Term(EMPTY_W, EMPTY_F64, 1.0, 0, 0.0)


@dataclass
class Layer:
    rec: Term
    td: Term                 # NO_TERM on the top layer and in the LSTM
    bu: Term                 # NO_TERM on layer 1 (its input term is the table x_table)
    bias: np.ndarray         # (4H[+1],) int64: Q8 bias plus the gate table offsets
    lo: np.ndarray           # (4H,) int64 clamp bounds = table index range of each gate column
    hi: np.ndarray
    ln_c: np.ndarray         # (H,) LN(c) gain * 256, or empty
    c_eps: float
    c_shift: int
    embed: np.ndarray        # (E, H) W_l^e, integers, float32/64
    start: int               # the layer's columns in the concatenated h and c: start .. start + H
    hidden: int
    has_boundary: bool


@dataclass
class IntState:
    h: np.ndarray            # (lanes, sum H) float32 integers in [-127, 127], layers side by side
    c: np.ndarray            # (lanes, sum H) int64, units 2^-12
    z: np.ndarray            # (layers, lanes) uint8; the top layer's stays 0
    e: np.ndarray            # (layers, lanes, E) int64: W_l^e h^l, kept while layer l COPYs


class IntegerLM:
    """The integer twin of a byte-level CharLM, from its config and float weights (numpy arrays, as in the
    model's safetensors file): next_frequencies(symbols, state) -> integer frequencies of the next symbol."""

    def __init__(self, cfg: dict, weights: dict[str, np.ndarray]):
        W = {k: np.asarray(v) for k, v in weights.items()}
        self.hierarchical = cfg["arch"] == "hmlstm"
        self.hidden = [int(h) for h in cfg["hidden"]]
        self.device = "cpu"
        L = len(self.hidden)
        t = tables()
        self.gates = np.concatenate([t["sigmoid"], t["tanh"]])     # one table: [sigmoid | tanh]
        self.exp = t["exp"]
        h_unit = 1 / LEVELS
        w_e, s_e = quantise(W["out.embed.weight"])                  # (E, sum H)
        starts = np.cumsum([0] + self.hidden)
        self.layers = []
        for l, H in enumerate(self.hidden):
            p = f"rnn.layers.{l}."
            has_boundary = self.hierarchical and l + 1 < L
            rows = 4 * H + int(has_boundary)
            offset = np.full(rows, R, np.int64)                     # f, i, o: sigmoid half; g: tanh half; z~: none
            offset[3 * H:4 * H] += 2 * R + 1
            if has_boundary:
                offset[4 * H] = 0
            c_shift = ln_shift(H, C_MAX)
            c_unit = 2.0 ** -C_BITS
            block = w_e[:, starts[l]:starts[l + 1]]
            self.layers.append(Layer(
                rec=make_term(W[p + "rec.weight"], h_unit, LEVELS, W.get(p + "ln_rec.ln.weight")),
                td=make_term(W[p + "td.weight"], h_unit, LEVELS, W.get(p + "ln_td.ln.weight"))
                if p + "td.weight" in W else NO_TERM,
                bu=make_term(W[p + "bu.weight"], h_unit, LEVELS, W.get(p + "ln_bu.ln.weight")) if l > 0 else NO_TERM,
                bias=np.rint(W[p + "bias"].astype(np.float64) * PRE).astype(np.int64) + offset,
                lo=offset[:4 * H] - R, hi=offset[:4 * H] + R,
                ln_c=(W[p + "ln_c.ln.weight"].astype(np.float64) * PRE) if p + "ln_c.ln.weight" in W else EMPTY_F64,
                c_eps=float(max(1, round(H * H * LN_EPS / (c_unit * 2 ** c_shift) ** 2))), c_shift=c_shift,
                embed=np.ascontiguousarray(block, exact_dtype(LEVELS * float(np.abs(block).sum(1).max()))),
                start=int(starts[l]), hidden=H, has_boundary=has_boundary))
        # Layer 1's input term LN(W_0^1 x) for every symbol at once: a table (vocab, 4H+1) in Q8, bias folded in.
        emb, s_emb = quantise(W["embed.weight"])                                    # (vocab, embed)
        first = self.layers[0]
        x_term = make_term(W["rnn.layers.0.bu.weight"], s_emb / LEVELS, LEVELS, W.get("rnn.layers.0.ln_bu.ln.weight"))
        vocab = emb.shape[0]
        self.x_table = np.zeros((vocab, x_term.w.shape[0]), np.int64)
        every = np.arange(vocab, dtype=np.int64)
        products_ = np.zeros((vocab, x_term.w.shape[0]), x_term.w.dtype)
        products(x_term.w, emb.astype(x_term.w.dtype), every, vocab, products_)
        add_term(self.x_table, every, vocab, products_, x_term.gain, x_term.eps, x_term.shift, x_term.scale)
        self.x_table += first.bias
        # Output module (eq. 11-12).
        self.gate = make_term(W["out.gate.weight"], h_unit, LEVELS, None)          # (L, sum H)
        e_unit = s_e / LEVELS * h_unit / GATE                                       # real value of sum_l g_q W_q h_q
        w_v, s_v = quantise(W["out.head.weight"])                                   # (vocab, E)
        self.head = np.ascontiguousarray(w_v, exact_dtype(LEVELS * float(np.abs(w_v).sum(1).max())))
        self.head_unit = s_v / LEVELS * e_unit / LEVELS                             # times the row max m
        self.head_bias = W["out.head.bias"].astype(np.float64)
        self.out_embed = w_e.shape[0]
        self.hash = weights_hash(W)

    def initial_state(self, lanes: int) -> IntState:
        n = sum(self.hidden)
        return IntState(np.zeros((lanes, n), np.float32), np.zeros((lanes, n), np.int64),
                        np.zeros((len(self.hidden), lanes), np.uint8),
                        np.zeros((len(self.hidden), lanes, self.out_embed), np.int64))

    def next_frequencies(self, symbols: np.ndarray, st: IntState) -> tuple[np.ndarray, IntState]:
        """symbols: (lanes,) the symbols just read -> (lanes, vocab) float64 integer frequencies of the next
        symbol; the state is advanced in place (and returned)."""
        symbols = np.ascontiguousarray(symbols, np.int64)
        lanes = symbols.shape[0]
        fired = np.ones(lanes, np.uint8)                     # z_t^0 = 1: layer 1 never COPYs
        for l, q in enumerate(self.layers):
            a, b = q.start, q.start + q.hidden
            above = st.h[:, b:b + self.hidden[l + 1]] if q.td.w.size else st.h[:, :0]
            below = st.h[:, self.layers[l - 1].start:a] if l else st.h[:, :0]
            layer_step(l == 0, self.hierarchical, q.has_boundary, symbols, self.x_table,
                       st.h[:, a:b], st.c[:, a:b], st.z[l], st.e[l], above, below, fired,
                       *q.rec, *q.td, *q.bu, q.bias, q.lo, q.hi, self.gates, q.ln_c, q.c_eps, q.c_shift, q.embed)
            fired = st.z[l]
        freq = np.empty((lanes, self.head.shape[0]), np.float64)
        frequencies(st.h, st.e, self.gate.w, self.gate.scale, self.gates, self.head, self.head_unit, self.head_bias,
                    self.exp, freq)
        return freq, st


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def products(w, x, src, n, out):
    """out[i] = w @ x[src[i]] for i < n. Exact: integers whose partial sums all stay below 2^24 in float32
    (2^53 in float64), so reordering and fusing, allowed here, cannot change a bit. Four lanes at a time
    (each weight row read once for four)."""
    rows, k_in = w.shape
    zero = np.zeros(1, w.dtype)[0]                         # (w[j, 0] * 0 would stop the vectorisation)
    xs = np.empty((n, k_in), w.dtype)                     # the inputs, gathered: contiguous rows vectorise
    for i in range(n):
        for k in range(k_in):
            xs[i, k] = x[src[i], k]
    i = 0
    while i + 4 <= n:
        for j in range(rows):
            a0 = a1 = a2 = a3 = zero
            for k in range(k_in):
                wk = w[j, k]
                a0 += wk * xs[i, k]
                a1 += wk * xs[i + 1, k]
                a2 += wk * xs[i + 2, k]
                a3 += wk * xs[i + 3, k]
            out[i, j], out[i + 1, j], out[i + 2, j], out[i + 3, j] = a0, a1, a2, a3
        i += 4
    while i < n:
        for j in range(rows):
            a0 = zero
            for k in range(k_in):
                a0 += w[j, k] * xs[i, k]
            out[i, j] = a0
        i += 1


@njit(cache=True, nogil=True)
def layer_norm_row(t, gain, eps, shift, out):
    """out += round(LN(t) * gain) for one row of integers t (int64): exact sums, then QuantLM's rounded
    operations in its order — one square root, one division, one multiplication, round half to even."""
    n = t.shape[0]
    tot = 0
    sq = 0
    for j in range(n):
        v = t[j] >> shift                                    # floor(t / 2^shift)
        t[j] = v
        tot += v
        sq += v * v
    r = np.sqrt(np.float64(n * sq - tot * tot) + eps)
    for j in range(n):
        out[j] += np.int64(np.rint(np.float64(t[j] * n - tot) / r * gain[j]))


@njit(cache=True, nogil=True)
def add_term(s, dst, n, prod, gain, eps, shift, scale):
    """s[dst[i]] += the Q8 term of the exact products prod[i], i < n: layer-normed when gain is non-empty."""
    width = prod.shape[1]
    t = np.empty(width, np.int64)
    for i in range(n):
        row = s[dst[i]]
        if gain.shape[0] == 0:
            for j in range(width):
                row[j] += np.int64(np.rint(np.float64(prod[i, j]) * scale))
        else:
            for j in range(width):
                t[j] = np.int64(prod[i, j])
            layer_norm_row(t, gain, eps, shift, row)


@njit(cache=True, nogil=True)
def add_gated(s, act, n, gate, always, w, x, gain, eps, shift, scale, src, dst):
    """s[i] += the Q8 term of w @ x[act[i]] for the active lanes i < n whose gate is set (all when `always`):
    a gated-off term is not computed at all."""
    m = 0
    for i in range(n):
        if always or gate[act[i]] != 0:
            src[m], dst[m] = act[i], i
            m += 1
    if m > 0:
        prod = np.empty((m, w.shape[0]), w.dtype)
        products(w, x, src, m, prod)
        add_term(s, dst, m, prod, gain, eps, shift, scale)


@njit(cache=True, nogil=True)
def layer_step(first, hier, has_boundary, symbols, x_table, h, c, z, e, h_above, h_below, z_below,
               rec_w, rec_g, rec_eps, rec_shift, rec_scale, td_w, td_g, td_eps, td_shift, td_scale,
               bu_w, bu_g, bu_eps, bu_shift, bu_scale, bias, lo, hi, gates, ln_c, c_eps, c_shift, embed):
    """One layer of every lane, eq. 1-9, in place: h, c (lanes, H), z (lanes,), e (lanes, E) are this layer's
    state; h_above is the layer above's h_{t-1}, h_below and z_below the layer below's h_t and z_t."""
    lanes, H = h.shape
    rows = rec_w.shape[0]
    act = np.empty(lanes, np.int64)                          # lanes that UPDATE or FLUSH (not COPY)
    n = 0
    for b in range(lanes):
        if first or not hier or z[b] != 0 or z_below[b] != 0:
            act[n] = b
            n += 1
    if n == 0:
        return
    s = np.zeros((n, rows), np.int64)                        # (active lanes, 4H[+1]) Q8 pre-activations
    src = np.empty(n, np.int64)
    dst = np.empty(n, np.int64)
    add_gated(s, act, n, z, True, rec_w, h, rec_g, rec_eps, rec_shift, rec_scale, src, dst)   # U_l^l h_{t-1}^l
    if td_w.shape[0] > 0:                                    # U_{l+1}^l h_{t-1}^{l+1}, gated by z_{t-1}^l
        add_gated(s, act, n, z, False, td_w, h_above, td_g, td_eps, td_shift, td_scale, src, dst)
    if first:                                                # input term and bias: a table row
        for i in range(n):
            s[i] += x_table[symbols[act[i]]]
    else:                                                    # W_{l-1}^l h_t^{l-1}, gated by z_t^{l-1}
        for i in range(n):
            s[i] += bias
        add_gated(s, act, n, z_below, not hier, bu_w, h_below, bu_g, bu_eps, bu_shift, bu_scale, src, dst)
    u = np.empty(H, np.int64)
    c_new = np.empty(H, np.int64)
    for i in range(n):
        b = act[i]
        flush = hier and z[b] != 0                           # FLUSH: c = i * g
        for j in range(H):                                   # eq. 2-4, gates in units of 2^-15
            f = gates[min(max(s[i, j], lo[j]), hi[j])]
            ig = gates[min(max(s[i, H + j], lo[H + j]), hi[H + j])]
            g = gates[min(max(s[i, 3 * H + j], lo[3 * H + j]), hi[3 * H + j])]
            cp = 0 if flush else c[b, j]
            v = ((f * cp + (1 << 14)) >> 15) + ((ig * g + (1 << (29 - C_BITS))) >> (30 - C_BITS))
            c_new[j] = min(max(v, -C_MAX), C_MAX)
        if ln_c.shape[0] > 0:
            u[:] = 0
            t = c_new.copy()
            layer_norm_row(t, ln_c, c_eps, c_shift, u)
        else:
            for j in range(H):
                u[j] = (c_new[j] + (1 << (C_BITS - 9))) >> (C_BITS - 8)
        for j in range(H):
            o = gates[min(max(s[i, 2 * H + j], lo[2 * H + j]), hi[2 * H + j])]
            th = gates[min(max(u[j], -R), R) + 3 * R + 1]    # the tanh half of the table
            h[b, j] = np.float32((o * th * LEVELS + (1 << 29)) >> 30)
            c[b, j] = c_new[j]
        if has_boundary:                                     # eq. 8-9: z = 1[z~ > 0]
            z[b] = 1 if s[i, 4 * H] > 0 else 0
    prod_e = np.empty((n, embed.shape[0]), embed.dtype)
    products(embed, h, act, n, prod_e)                       # W_l^e h_t^l, exact
    for i in range(n):
        for j in range(embed.shape[0]):
            e[act[i], j] = np.int64(prod_e[i, j])


@njit(cache=True, nogil=True)
def frequencies(h, e, gate_w, gate_scale, gates, head, head_unit, head_bias, exp, out):
    """Output module (eq. 11-12) in integers: out (lanes, vocab) float64 integer frequencies."""
    lanes = h.shape[0]
    layers, _, width = e.shape
    every = np.arange(lanes)
    gp = np.empty((lanes, layers), gate_w.dtype)
    products(gate_w, h, every, lanes, gp)
    emb_q = np.empty((lanes, width), head.dtype)
    scale = np.empty(lanes, np.float64)
    emb = np.empty(width, np.int64)
    for b in range(lanes):
        emb[:] = 0
        for l in range(layers):
            gq = np.int64(np.rint(np.float64(gp[b, l]) * gate_scale))
            g = gates[min(max(gq, -R), R) + R]              # sigmoid, units 2^-15
            for j in range(width):
                emb[j] += g * e[l, b, j]
        m = 1
        for j in range(width):                               # ReLU, and the row's max
            emb[j] = max(emb[j], 0)
            m = max(m, emb[j])
        mf = np.float64(m)
        for j in range(width):                               # round(emb * 127 / m): one rounded division
            emb_q[b, j] = np.floor((np.float64(emb[j]) * (2 * LEVELS) + mf) / (2 * mf))
        scale[b] = mf * head_unit
    logits = np.empty((lanes, head.shape[0]), head.dtype)
    products(head, emb_q, every, lanes, logits)
    lq = np.empty(head.shape[0], np.float64)
    for b in range(lanes):
        top = -np.inf
        for v in range(head.shape[0]):
            x = np.rint((np.float64(logits[b, v]) * scale[b] + head_bias[v]) * PRE)
            lq[v] = x
            top = max(top, x)
        for v in range(head.shape[0]):
            out[b, v] = np.float64(exp[np.int64(min(top - lq[v], EXP_RANGE))])
