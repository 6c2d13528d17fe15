"""The torch engine's integers compiled for the CPU with numba: the same numbers, lane by lane, without torch.

`QuantLM` (hmgen.archive.engine.torch_engine) defines the integer scheme and runs it on any torch device as a
few hundred tensor operations per coded step. On a CPU with tens of lanes the operations' overheads, not the
arithmetic, set its speed, and importing torch is a large part of a small file's compression. `IntegerLM` runs
the same quantised model (hmgen.archive.engine.scheme.build) in compiled loops, one layer of all lanes per call:

  * integer products (weights times h, embeddings, the head) in float32 (float64 where a product's bound
    passes 2^24): every partial sum is an integer below 2^24 (2^53), hence exact, so any order of addition,
    vectorisation or fused multiply-add gives the same result. Only `products` (the compiled loops, fastmath)
    and `product` (numpy's BLAS, for the products of every lane) may reorder;
  * everything else — layer norm's one division, square root and multiplication, the roundings, shifts and
    table look-ups — in the same correctly rounded float64 operations, in the same order, as QuantLM, in
    functions compiled without fastmath (so without contraction into fused multiply-adds).

COPY costs nothing here either: a layer above the first runs only on lanes that UPDATE or FLUSH, its top-down
term only where it FLUSHes, its bottom-up term only where the layer below fired (eq. 2-3). The kernels take the
scheme's NamedTuples (Term, Layer, Output) as they are. tests/test_integer_numba.py checks every frequency
against QuantLM, step by step, for every architecture.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hmgen.archive.engine import scheme
from hmgen.archive.engine.scheme import C_BITS, C_MAX, EXP_RANGE, LEVELS, PRE, R, SIGMOID_AT, TANH_AT
from hmgen.jit import njit


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
        one_blas_thread()
        qm = scheme.build(cfg, weights)
        self.hierarchical, self.hidden, self.layers, self.out = qm.hierarchical, qm.hidden, qm.layers, qm.out
        self.gates, self.exp, self.hash, self.x_table = qm.gates, qm.exp, qm.hash, qm.x_table
        self.device = "cpu"
        self.starts = [int(s) for s in np.cumsum([0] + self.hidden)]   # layer l's columns in the concatenated h, c
        t = lambda w: np.ascontiguousarray(w.T)                          # (in, out): BLAS's preferred layout
        self.rec_t, self.embed_t = [t(q.rec.w) for q in self.layers], [t(q.embed) for q in self.layers]
        self.gate_t, self.head_t = t(self.out.gate.w), t(self.out.head)
        self.none = [np.zeros((0, 0), q.rec.w.dtype) for q in self.layers]

    def initial_state(self, lanes: int) -> IntState:
        n, layers = sum(self.hidden), len(self.hidden)
        E = self.out.head.shape[1]
        return IntState(np.zeros((lanes, n), np.float32), np.zeros((lanes, n), np.int64),
                        np.zeros((layers, lanes), np.uint8), np.zeros((layers, lanes, E), np.int64))

    def next_frequencies(self, symbols: np.ndarray, st: IntState) -> tuple[np.ndarray, IntState]:
        """symbols: (lanes,) the symbols just read -> (lanes, vocab) float64 integer frequencies of the next
        symbol; the state is advanced in place (and returned). The products of every lane (layer 1's, the head's)
        by BLAS when there are BLAS_ROWS lanes or more, the gated ones (a few lanes each) in the compiled loops."""
        symbols = np.ascontiguousarray(symbols, np.int64)
        lanes = symbols.shape[0]
        fired = np.ones(lanes, np.uint8)                     # z_t^0 = 1: layer 1 never COPYs
        for l, q in enumerate(self.layers):
            a, b = self.starts[l], self.starts[l + 1]
            h = st.h[:, a:b]
            above = st.h[:, b:self.starts[l + 2]] if q.td.w.size else st.h[:, :0]
            below = st.h[:, self.starts[l - 1]:a] if l else st.h[:, :0]
            blas = lanes >= BLAS_ROWS and (l == 0 or not self.hierarchical)      # every lane runs this layer
            p_rec = product(h, self.rec_t[l]) if blas else self.none[l]            # (lanes, 4H[+1]) or empty
            layer_step(l == 0, self.hierarchical, symbols, self.x_table, h, st.c[:, a:b], st.z[l], st.e[l],
                       above, below, fired, q, self.gates, p_rec, not blas)
            if blas:
                st.e[l][:] = product(h, self.embed_t[l])                           # W_l^e h_t^l, (lanes, E)
            fired = st.z[l]
        emb_q = np.empty((lanes, self.head_t.shape[0]), self.head_t.dtype)
        scale = np.empty(lanes, np.float64)
        output_embedding(product(st.h, self.gate_t), st.e, self.out.gate.scale, self.gates, emb_q, scale,
                         self.out.head_unit)
        freq = np.empty((lanes, self.head_t.shape[1]), np.float64)
        head_frequencies(product(emb_q, self.head_t), scale, self.out.head_bias, self.exp, freq)
        return freq, st


BLAS_ROWS = 16   # from this many lanes, BLAS; under it the compiled loops, which read the weights once per 4 lanes and
                 # do not pack them (benchmarks/RESULTS.md, "the network's products by BLAS")


def product(x: np.ndarray, w_t: np.ndarray) -> np.ndarray:
    """x @ w_t for integer-valued x (rows, in) and w_t (in, out), in w_t's dtype: exact, since every partial sum is an
    integer below 2^24 in float32 (2^53 in float64; scheme.exact_dtype), so BLAS's order of addition, vectorisation
    and fused multiply-adds cannot change a bit."""
    return np.matmul(x.astype(w_t.dtype, copy=False), w_t)


def one_blas_thread() -> None:
    """numpy's BLAS on one thread from here on, in this process: the engine's products are small, its threads are its
    own (LanesOnThreads, blocks side by side), and OpenBLAS's helper threads spin on a core for a while after each
    call it splits, which costs CPU time and takes the core another block is using."""
    global _BLAS_LIMITED
    if not _BLAS_LIMITED:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=1, user_api="blas")
        _BLAS_LIMITED = True


_BLAS_LIMITED = False


class LanesOnThreads:
    """An IntegerLM whose lanes are computed in `parts` groups at once, on this thread and a pool's: each lane's
    network is its own and every sum is exact, so the frequencies are the same integers as on one thread. For a
    block that would leave cores idle (one block alone, or the last of a file) and whose network is most of its
    time. `parts`: a number, or a function asked at every step (how many threads are idle just now)."""

    def __init__(self, q: IntegerLM, pool, parts: int | Callable[[], int]):
        self.q, self.pool, self.parts = q, pool, parts

    def initial_state(self, lanes: int) -> IntState:
        return self.q.initial_state(lanes)

    def next_frequencies(self, symbols: np.ndarray, st: IntState) -> tuple[np.ndarray, IntState]:
        lanes = symbols.shape[0]
        parts = max(1, min(lanes, self.parts() if callable(self.parts) else self.parts))
        if parts == 1:
            return self.q.next_frequencies(symbols, st)
        cuts = [lanes * i // parts for i in range(parts + 1)]

        def part(a: int, b: int) -> np.ndarray:             # (b - a, vocab); lanes a..b of st advanced in place
            rows = IntState(st.h[a:b], st.c[a:b], st.z[:, a:b], st.e[:, a:b])
            return self.q.next_frequencies(symbols[a:b], rows)[0]

        others = [self.pool.submit(part, a, b) for a, b in zip(cuts[1:-1], cuts[2:])]
        first = part(cuts[0], cuts[1])
        return np.concatenate([first, *(f.result() for f in others)]), st


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def products(w, x, src, n, out):
    """out[i] = w @ x[src[i]] for i < n. Exact: integers whose partial sums all stay below 2^24 in float32
    (2^53 in float64), so reordering and fusing, allowed here, cannot change a bit. A tile of four lanes by two
    rows at a time: each weight loaded once for four lanes, each input once for two rows, eight sums in registers
    (~1.2x the speed of four lanes by one row on this project's CPU: benchmarks/RESULTS.md); the last n % 4 lanes
    one at a time."""
    rows, k_in = w.shape
    zero = np.zeros(1, w.dtype)[0]                         # (w[j, 0] * 0 would stop the vectorisation)
    xs = np.empty((n, k_in), w.dtype)                     # the inputs, gathered: contiguous rows vectorise
    for i in range(n):
        for k in range(k_in):
            xs[i, k] = x[src[i], k]
    full = n - n % 4
    for i in range(0, full, 4):
        j = 0
        while j + 2 <= rows:
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero
            for k in range(k_in):
                w0, w1 = w[j, k], w[j + 1, k]
                x0, x1, x2, x3 = xs[i, k], xs[i + 1, k], xs[i + 2, k], xs[i + 3, k]
                a0 += w0 * x0
                a1 += w0 * x1
                a2 += w0 * x2
                a3 += w0 * x3
                b0 += w1 * x0
                b1 += w1 * x1
                b2 += w1 * x2
                b3 += w1 * x3
            out[i, j], out[i + 1, j], out[i + 2, j], out[i + 3, j] = a0, a1, a2, a3
            out[i, j + 1], out[i + 1, j + 1], out[i + 2, j + 1], out[i + 3, j + 1] = b0, b1, b2, b3
            j += 2
        if j < rows:                                       # an odd last row
            a0 = a1 = a2 = a3 = zero
            for k in range(k_in):
                w0 = w[j, k]
                a0 += w0 * xs[i, k]
                a1 += w0 * xs[i + 1, k]
                a2 += w0 * xs[i + 2, k]
                a3 += w0 * xs[i + 3, k]
            out[i, j], out[i + 1, j], out[i + 2, j], out[i + 3, j] = a0, a1, a2, a3
    for i in range(full, n):                               # the last lanes, one at a time
        for j in range(rows):
            a0 = zero
            for k in range(k_in):
                a0 += w[j, k] * xs[i, k]
            out[i, j] = a0


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
def add_term(s, dst, n, prod, term):
    """s[dst[i]] += the Q8 term of the exact products prod[i], i < n: layer-normed when term.gain is non-empty."""
    gain, eps, shift, scale = term.gain, term.eps, term.shift, term.scale
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
def add_gated(s, act, n, gate, always, term, x, src, dst):
    """s[i] += the Q8 term of term.w @ x[act[i]] for the active lanes i < n whose gate is set (all when `always`):
    a gated-off term is not computed at all."""
    m = 0
    for i in range(n):
        if always or gate[act[i]] != 0:
            src[m], dst[m] = act[i], i
            m += 1
    if m > 0:
        prod = np.empty((m, term.w.shape[0]), term.w.dtype)
        products(term.w, x, src, m, prod)
        add_term(s, dst, m, prod, term)


@njit(cache=True, nogil=True)
def layer_step(first, hier, symbols, x_table, h, c, z, e, h_above, h_below, z_below, q, gates, p_rec, embed):
    """One layer of every lane, eq. 1-9, in place: h, c (lanes, H), z (lanes,), e (lanes, E) are this layer's
    state; h_above is the layer above's h_{t-1}, h_below and z_below the layer below's h_t and z_t; q its
    scheme.Layer. p_rec: U_l^l h_{t-1}^l of every lane when the caller computed it (a layer every lane runs), else
    empty; `embed`: whether to compute W_l^e h_t^l here (else the caller does)."""
    lanes, H = h.shape
    rows = q.rec.w.shape[0]
    lo, hi, bias, ln_c, w_e = q.lo, q.hi, q.bias, q.ln_c, q.embed   # taken once, outside branches (hmgen.jit)
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
    if p_rec.shape[0] > 0:                                   # U_l^l h_{t-1}^l, given (n == lanes)
        for i in range(n):
            src[i] = i
        add_term(s, src, n, p_rec, q.rec)
    else:
        add_gated(s, act, n, z, True, q.rec, h, src, dst)
    if q.td.w.shape[0] > 0:                                  # U_{l+1}^l h_{t-1}^{l+1}, gated by z_{t-1}^l
        add_gated(s, act, n, z, False, q.td, h_above, src, dst)
    if first:                                                # input term and bias: a table row
        for i in range(n):
            s[i] += x_table[symbols[act[i]]]
    else:                                                    # W_{l-1}^l h_t^{l-1}, gated by z_t^{l-1}
        for i in range(n):
            s[i] += bias
        add_gated(s, act, n, z_below, not hier, q.bu, h_below, src, dst)
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
            layer_norm_row(t, ln_c, q.c_eps, q.c_shift, u)
        else:
            for j in range(H):
                u[j] = (c_new[j] + (1 << (C_BITS - 9))) >> (C_BITS - 8)
        for j in range(H):
            o = gates[min(max(s[i, 2 * H + j], lo[2 * H + j]), hi[2 * H + j])]
            th = gates[min(max(u[j], -R), R) + TANH_AT]
            h[b, j] = np.float32((o * th * LEVELS + (1 << 29)) >> 30)
            c[b, j] = c_new[j]
        if q.has_boundary:                                   # eq. 8-9: z = 1[z~ > 0]
            z[b] = 1 if s[i, 4 * H] > 0 else 0
    if embed:
        prod_e = np.empty((n, w_e.shape[0]), w_e.dtype)
        products(w_e, h, act, n, prod_e)                     # W_l^e h_t^l, exact
        for i in range(n):
            for j in range(w_e.shape[0]):
                e[act[i], j] = np.int64(prod_e[i, j])


@njit(cache=True, nogil=True)
def output_embedding(gp, e, gate_scale, gates, emb_q, scale, head_unit):
    """Eq. 11 in integers: from the gates' exact products gp (lanes, layers) and the layers' W_l^e h^l in e, each
    lane's ReLU'd embedding sum_l g_l W_l^e h^l, rounded to [0, 127] by its row max (emb_q, (lanes, E)), and the real
    value of one unit of the head's products in that lane (scale)."""
    layers, lanes, width = e.shape
    emb = np.empty(width, np.int64)
    for b in range(lanes):
        emb[:] = 0
        for l in range(layers):
            gq = np.int64(np.rint(np.float64(gp[b, l]) * gate_scale))
            g = gates[min(max(gq, -R), R) + SIGMOID_AT]            # units 2^-15
            for j in range(width):
                emb[j] += g * e[l, b, j]
        m = 1
        for j in range(width):                                      # ReLU, and the row's max
            emb[j] = max(emb[j], 0)
            m = max(m, emb[j])
        mf = np.float64(m)
        for j in range(width):                                      # round(emb * 127 / m): one rounded division
            emb_q[b, j] = np.floor((np.float64(emb[j]) * (2 * LEVELS) + mf) / (2 * mf))
        scale[b] = mf * head_unit


@njit(cache=True, nogil=True)
def head_frequencies(logits, scale, head_bias, exp, out):
    """Eq. 12 in integers: the head's exact products (lanes, vocab), scaled, biased and rounded to PRE units, then
    each symbol's frequency exp(-(top - logit)) from the table: out (lanes, vocab) float64 integers."""
    lanes, vocab = logits.shape
    lq = np.empty(vocab, np.float64)
    for b in range(lanes):
        top = -np.inf
        for v in range(vocab):
            x = np.rint((np.float64(logits[b, v]) * scale[b] + head_bias[v]) * PRE)
            lq[v] = x
            top = max(top, x)
        for v in range(vocab):
            out[b, v] = np.float64(exp[np.int64(min(top - lq[v], EXP_RANGE))])
