"""Integer inference for compression: the same HM-LSTM, computed so that every machine gets the same bits.

An arithmetic decoder must see exactly the probabilities the encoder saw; one ulp of difference in one
probability makes the range decoder fail or decode garbage from there on. Float inference
does not give that across machines: BLAS sums in a thread- and CPU-dependent order, vectorised exp/tanh
differ between instruction sets, compilers fuse a*b+c differently. `QuantLM` computes the model's
next-byte frequencies on integers, with two kinds of operations only:

  * exact ones: every value involved is an integer whose magnitude (bounded in advance from the weights)
    stays below 2^24 in float32 or 2^53 in float64 — matrix products of integer weights and activations,
    sums, products. Exact results do not depend on summation order, threads, BLAS or fused multiply-add;
  * single IEEE-754 operations that the standard requires to be correctly rounded (one division, one
    square root, one multiplication, round-half-even, floor), each its own tensor operation, so every
    machine rounds them alike;
and table look-ups for sigmoid, tanh and exp, tables computed with Python's `decimal` (correctly rounded
in software). No float reductions of non-integers, no library transcendental functions.

Number formats (scheme 1, hmgen.archive.engine.scheme; the archive header names the scheme):
  weights   per matrix: W ≈ W_q * s / 127, W_q integer in [-127, 127], s = max|W|
  h         h ≈ h_q / 127, h_q integer in [-127, 127] (h = o * tanh(.) lies in [-1, 1])
  pre-acts  units of 1/256 (Q8): each eq. 5-7 term after layer norm, and the bias
  gates     sigmoid / tanh outputs in units of 2^-15
  c         units of 2^-12, clamped to |c| < 1024 (never reached by a trained model)
  logits    units of 1/256 nat; frequencies round(2^30 * exp(logit - max logit))

Layer normalisation is exact: LN(x) = (x - mean) / sqrt(var + eps) is scale-invariant, so it is applied
to the integer product T itself, (n T - sum T) / sqrt(n sum T^2 - (sum T)^2 + n^2 eps'); the sums are exact.

COPY (eq. 2-3) needs no computation: above layer 1, a layer's rows are computed only for the lanes where it
UPDATEs or FLUSHes, its top-down term only where it FLUSHes (z_{t-1}^l = 1), its bottom-up term only where
the layer below fired (z_t^{l-1} = 1). `dense=True` computes every row and masks instead, to measure the
saving; both give identical integers (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hmgen.archive.engine import scheme
from hmgen.archive.engine.scheme import C_BITS, C_MAX, EXP_RANGE, LEVELS, PRE, R, SIGMOID_AT, TANH_AT
from hmgen.cell.reference import CharLM

F64 = torch.float64


def exact_mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ w for integer-valued x and w whose dtype makes the product exact -> float64.
    float32 products are exact only at full float32 precision: TF32 (CUDA) or bf16 passes (CPU, when someone
    set torch.set_float32_matmul_precision below "highest") would round. Then float64 is used instead —
    the same integers, so the same bits, whichever runs."""
    if w.dtype == torch.float32 and (w.is_cuda or torch.get_float32_matmul_precision() != "highest"):
        w = w.double()
    return (x.to(w.dtype) @ w).to(F64)


def round_shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """round(x / 2^k), halves up, for integer-valued float64 x (exact: a power-of-two scaling and a floor)."""
    return torch.floor((x + (1 << (k - 1))) * (2.0 ** -k))


def on(device, a: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A numpy array of the quantised model as a tensor on the device (integers stay exact in any float dtype)."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)


class QLinear:
    """A scheme.Term on the device: an integer weight matrix and what turns its products with h_q into Q8 terms."""

    def __init__(self, term: scheme.Term, device):
        self.w_t = on(device, term.w.T)                            # (in, out)
        self.gain = on(device, term.gain) if term.gain.size else None   # (out,) LN gain * 256
        self.eps, self.shift, self.scale = term.eps, term.shift, term.scale

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """x: (rows, in) integer-valued -> T (rows, out), exact, as float64."""
        return exact_mm(x, self.w_t)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (rows, in) -> (rows, out) float64 integers: the term in Q8 (layer-normed when the model is)."""
        t = self.product(x)
        if self.gain is None:
            return torch.round(t * self.scale)
        return layer_norm(t, self.gain, self.eps, self.shift)


def linear(term: scheme.Term, device) -> QLinear | None:
    return QLinear(term, device) if term.w.size else None


def layer_norm(t: torch.Tensor, gain: torch.Tensor, eps: float, shift: int = 0) -> torch.Tensor:
    """Exact-integer LN over the last axis of integer-valued float64 t, times gain*256 -> Q8 integers."""
    if shift:
        t = torch.floor(t * 2.0 ** -shift)
    n = t.shape[-1]
    s = t.sum(-1, keepdim=True)                                    # exact (bounded)
    q = torch.linalg.vecdot(t, t).unsqueeze(-1)                    # sum t^2, exact (bounded, see scheme.ln_shift)
    d = n * q.to(torch.int64) - s.to(torch.int64) ** 2             # n^2 var, exact in int64
    y = (t * n).sub_(s)                                            # exact
    return y.div_(torch.sqrt(d.to(F64) + eps)).mul_(gain).round_() # each op correctly rounded


def float_weights(lm: CharLM) -> dict[str, np.ndarray]:
    """The model's weights as float64 numpy arrays (exact for float32, bfloat16 and float64 models)."""
    return {k: v.detach().cpu().double().numpy() for k, v in lm.state_dict().items()}


@dataclass
class QState:
    h: list[torch.Tensor]    # (batch, H_l) float32 integers in [-127, 127]
    c: list[torch.Tensor]    # (batch, H_l) float64 integers, units 2^-12
    z: list[torch.Tensor]    # (batch,) bool; the top layer's is always False
    e: list[torch.Tensor]    # (batch, out_embed) float64 integers: W_l^e h^l, kept while layer l COPYs


@dataclass
class QLayer:
    """A scheme.Layer on the device."""
    rec: QLinear
    td: QLinear | None
    bu: QLinear | None               # None for layer 1 (its input term is a table)
    bias: torch.Tensor               # (4H[+1],) Q8 plus the table offsets
    lo: torch.Tensor                 # (4H,) clamp bounds = table index range of each gate column
    hi: torch.Tensor
    ln_c: torch.Tensor | None        # (H,) gain*256 of LN(c)
    c_eps: float
    c_shift: int
    embed: torch.Tensor              # (H, E) integer block W_l^e of the output embedding, transposed
    hidden: int
    has_boundary: bool

    @classmethod
    def of(cls, q: scheme.Layer, dev) -> QLayer:
        return cls(QLinear(q.rec, dev), linear(q.td, dev), linear(q.bu, dev), on(dev, q.bias, F64), on(dev, q.lo, F64),
                   on(dev, q.hi, F64), on(dev, q.ln_c) if q.ln_c.size else None, q.c_eps, q.c_shift,
                   on(dev, q.embed.T), q.hidden, q.has_boundary)


class QuantLM:
    """The integer twin of a byte-level CharLM: step(symbols) -> integer frequencies of the next symbol."""

    def __init__(self, lm: CharLM | None = None, device: str | torch.device = "cpu", *, cfg: dict | None = None,
                 weights: dict[str, np.ndarray] | None = None):
        """From a CharLM, or from its config and float weights as a model file holds them (hmgen.modelfile)."""
        qm = scheme.build(lm.cfg.to_dict(), float_weights(lm)) if lm is not None else scheme.build(cfg, weights)
        self.device = dev = torch.device(device)
        self.hierarchical = qm.hierarchical
        self.hidden = qm.hidden
        self.gates = on(dev, qm.gates, F64)                                 # [sigmoid | tanh], index = Q8 + offset
        self.exp = on(dev, qm.exp, F64)
        self.layers = [QLayer.of(q, dev) for q in qm.layers]
        self.x_table = on(dev, qm.x_table, F64)                            # layer 1's input term and bias, per symbol
        # Output module (eq. 11-12).
        self.gate = QLinear(qm.out.gate, dev)                               # (L, sum H) -> one gate per layer
        self.head = on(dev, qm.out.head.T)                                  # (E, vocab)
        self.head_unit = qm.out.head_unit                                   # times the row max m, below
        self.head_bias = on(dev, qm.out.head_bias)
        self.hash = qm.hash

    def initial_state(self, batch: int) -> QState:
        dev, E = self.device, self.head.shape[0]
        return QState(
            h=[torch.zeros(batch, H, device=dev) for H in self.hidden],
            c=[torch.zeros(batch, H, dtype=F64, device=dev) for H in self.hidden],
            z=[torch.zeros(batch, dtype=torch.bool, device=dev) for _ in self.hidden],
            e=[torch.zeros(batch, E, dtype=F64, device=dev) for _ in self.hidden],
        )

    def cell(self, q: QLayer, s: torch.Tensor, c_prev: torch.Tensor, flush: torch.Tensor | None):
        """eq. 2-4 and 8-9 from pre-activations s (rows, 4H[+1]) (Q8 + table offsets, bias included)."""
        H = q.hidden
        act = torch.take(self.gates, torch.clamp(s[:, :4 * H], q.lo, q.hi).long())   # (rows, 4H)
        f, i, o, g = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]   # units 2^-15
        if flush is not None:                                                # FLUSH: c = i*g
            c_prev = c_prev * (~flush)[:, None]
        c = round_shift(f * c_prev, 15) + round_shift(i * g, 30 - C_BITS)    # units 2^-12, exact
        c = c.clamp(-C_MAX, C_MAX)
        u = layer_norm(c, q.ln_c, q.c_eps, q.c_shift) if q.ln_c is not None else round_shift(c, C_BITS - 8)
        th = torch.take(self.gates, u.clamp(-R, R).long() + TANH_AT)
        h = round_shift(o * th * LEVELS, 30)                                 # o*tanh(.) in 1/127, exact
        z = s[:, 4 * H] > 0 if q.has_boundary else None                      # eq. 8-9: z = 1[z~ > 0]
        return h.float(), c, z

    @torch.no_grad()
    def step(self, symbols: torch.Tensor, st: QState, dense: bool = False) -> tuple[torch.Tensor, QState]:
        """symbols: (batch,) the symbols just read -> (batch, vocab) float64 integer frequencies of the next
        symbol, and the new state."""
        h, c, z, e = list(st.h), list(st.c), list(st.z), list(st.e)
        z_below = None                                                       # z_t^0 = 1: layer 1 never COPYs
        for l, q in enumerate(self.layers):
            z_prev = st.z[l]
            flush = z_prev if self.hierarchical else None
            if l == 0 or not self.hierarchical or dense:
                rows, active = None, (None if l == 0 or not self.hierarchical else (z_prev | z_below))
            else:
                active = z_prev | z_below                                    # not COPY
                rows = active.nonzero().squeeze(1)
                if rows.numel() == 0:                                        # every lane COPYs this layer
                    z_below = z[l]
                    continue
            pick = (lambda x: x) if rows is None else (lambda x: x[rows])
            s = q.rec(pick(st.h[l]))                                         # (rows, 4H+1); never gated
            if q.td is not None:                                             # top-down, gated by z_{t-1}^l
                add_gated(s, q.td, st.h[l + 1], z_prev, rows, dense)
            if l == 0:                                                       # input term and bias: a table row
                s += self.x_table.index_select(0, symbols)
            else:
                s += q.bias
                if self.hierarchical:                                        # bottom-up, gated by z_t^{l-1}
                    add_gated(s, q.bu, h[l - 1], z_below, rows, dense)
                else:
                    s += q.bu(h[l - 1])
            h_new, c_new, z_new = self.cell(q, s, pick(st.c[l]), None if flush is None else pick(flush))
            e_new = exact_mm(h_new, q.embed)                                 # W_l^e h^l, exact
            if rows is not None:                                             # sparse: write the computed rows
                h[l], c[l], e[l] = st.h[l].index_put((rows,), h_new), st.c[l].index_put((rows,), c_new), \
                    st.e[l].index_put((rows,), e_new)
                if z_new is not None:
                    z[l] = z_prev.index_put((rows,), z_new)
            elif active is not None:                                         # dense: mask the COPY rows
                keep = active[:, None]
                h[l], c[l], e[l] = torch.where(keep, h_new, st.h[l]), torch.where(keep, c_new, st.c[l]), \
                    torch.where(keep, e_new, st.e[l])
                if z_new is not None:
                    z[l] = z_new & active
            else:                                                            # layer 1, or the LSTM baseline
                h[l], c[l], e[l] = h_new, c_new, e_new
                if z_new is not None:
                    z[l] = z_new
            z_below = z[l]
        st = QState(h, c, z, e)
        return self.frequencies(st), st

    def next_frequencies(self, symbols: np.ndarray, st: QState) -> tuple[np.ndarray, QState]:
        """step() for the archive coder, which works in numpy (as hmgen.archive.engine.cpu_engine.IntegerLM does):
        symbols (batch,) int64 -> (batch, vocab) float64 integer frequencies, and the new state."""
        freq, st = self.step(torch.from_numpy(np.ascontiguousarray(symbols, np.int64)).to(self.device), st)
        return freq.cpu().numpy(), st

    def frequencies(self, st: QState) -> torch.Tensor:
        """Output module (eq. 11-12) in integers -> (batch, vocab) float64 integer frequencies."""
        hs = torch.cat(st.h, dim=1)                                          # (batch, sum H)
        gq = torch.round(self.gate.product(hs) * self.gate.scale)           # Q8 gate pre-activations
        g = torch.take(self.gates, gq.clamp(-R, R).long() + SIGMOID_AT)      # (batch, L), units 2^-15
        emb = g[:, 0:1] * st.e[0]                                            # (batch, E), exact
        for l in range(1, len(self.hidden)):
            emb = emb + g[:, l:l + 1] * st.e[l]
        emb = emb.clamp(min=0)                                               # ReLU
        m = emb.amax(dim=1, keepdim=True).clamp(min=1)                       # per-row scale, exact
        emb_q = torch.floor((emb * (2 * LEVELS) + m) / (2 * m))              # round(emb * 127 / m): one rounded /
        t = exact_mm(emb_q, self.head)                                       # exact
        logits = t * (m * self.head_unit) + self.head_bias                   # nats: three rounded ops
        lq = torch.round(logits * PRE)
        gap = (lq.amax(dim=1, keepdim=True) - lq).clamp(max=EXP_RANGE)
        return torch.take(self.exp, gap.long())


def add_gated(s: torch.Tensor, lin: QLinear, x: torch.Tensor, gate: torch.Tensor, rows: torch.Tensor | None,
              dense: bool) -> None:
    """s += gate * lin(x) over the chosen rows (all when rows is None), computing lin only where the gate is
    set (dense: everywhere, then masked). Exact integers, so the order of additions cannot matter."""
    if dense:
        s += lin(x) * gate[:, None]
        return
    if rows is not None:
        x, gate = x[rows], gate[rows]
    on = gate.nonzero().squeeze(1)
    if on.numel():
        s.index_add_(0, on, lin(x[on]))
