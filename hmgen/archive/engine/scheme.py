"""Integer scheme 1: the number formats, the tables, and the quantised model that both integer engines run.

hmgen.archive.engine.torch_engine (torch, any device) and hmgen.archive.engine.cpu_engine (compiled loops, CPU,
no torch) compute the same integers from `build`'s QuantModel; an archive's header names the scheme. Nothing here
imports torch, so that `hmgen compress` / `decompress` on a CPU start without it. What each format means and
why every operation is exact: hmgen.archive.engine.torch_engine.
"""
from __future__ import annotations

import decimal
import functools
import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hmgen.cell import HMLSTM_ARCH, LN_EPS

SCHEME = 1
LEVELS = 127            # weights and h: integers in [-127, 127]
PRE = 256               # pre-activations: units of 1/256
GATE = 1 << 15          # sigmoid / tanh outputs: units of 2^-15
C_BITS = 12             # cell state: units of 2^-12
C_MAX = (1 << 22) - 1   # |c| < 1024
R = 12 * PRE            # sigmoid/tanh tables cover pre-activations in [-12, 12]; saturated beyond
EXP_ONE = 1 << 30       # frequency of the most likely symbol
EXP_RANGE = 30 * PRE    # exp table covers logit gaps up to 30 nats; beyond, frequency 0
# QuantModel.gates is [sigmoid | tanh], each on the Q8 grid [-R, R]: a Q8 value k reads gates[k + SIGMOID_AT] or
# gates[k + TANH_AT] (the tanh half starts after the sigmoid's 2R + 1 entries)
SIGMOID_AT = R
TANH_AT = (2 * R + 1) + R


@functools.cache
def tables() -> dict[str, np.ndarray]:
    """sigmoid and tanh on the Q8 grid [-R, R] (index k + R), and exp(-d/256) for d in [0, EXP_RANGE], as int64;
    correctly rounded by `decimal`, so identical on every machine (libm is not)."""
    ctx = decimal.Context(prec=40)
    D = decimal.Decimal

    def rnd(x: decimal.Decimal) -> int:
        return int(x.to_integral_value(rounding=decimal.ROUND_HALF_EVEN, context=ctx))

    sig, tanh = [], []
    for k in range(-R, R + 1):
        e = ctx.exp(D(-k) / PRE)                                   # exp(-x)
        sig.append(rnd(ctx.divide(GATE, 1 + e)))                   # 1 / (1 + e^-x)
        e2 = e * e                                                 # exp(-2x), exact at this precision
        tanh.append(rnd(ctx.divide(GATE * (1 - e2), 1 + e2)))
    exp = [rnd(EXP_ONE * ctx.exp(D(-d) / PRE)) for d in range(EXP_RANGE + 1)]
    return {"sigmoid": np.array(sig, np.int64), "tanh": np.array(tanh, np.int64), "exp": np.array(exp, np.int64)}


def quantise(weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-matrix symmetric quantisation: (integers in [-127, 127] as float64, scale s = max |w|)."""
    w = np.asarray(weight, dtype=np.float64)
    s = float(np.abs(w).max()) or 1.0
    return np.rint(w * (LEVELS / s)), s


def exact_dtype(bound: float) -> type:
    """float32 when every partial sum of a product bounded by `bound` is an exact float32 integer, else float64."""
    if bound >= 2.0 ** 53:
        raise ValueError("layer too large for exact integer inference")
    return np.float32 if bound < 2 ** 24 else np.float64


def ln_shift(n: int, bound: float) -> int:
    """Right shift of LN inputs (|t| <= bound, n of them) that keeps sum t^2 exact in float64 (< 2^53) and
    n * sum t^2 and (sum t)^2 inside int64 (< 2^62)."""
    shift = 0
    while n * (bound / 2 ** shift) ** 2 >= 2.0 ** 53 or (n * bound / 2 ** shift) ** 2 >= 2.0 ** 62:
        shift += 1
    return shift


def ln_eps(n: int, t_unit: float) -> float:
    """LayerNorm's eps in the units of an integer input whose one unit is worth t_unit: n^2 eps / t_unit^2."""
    return float(max(1, round(n * n * LN_EPS / (t_unit * t_unit))))


def weights_hash(state: dict[str, np.ndarray]) -> bytes:
    """sha256 over the float weights (names, shapes, little-endian float32 bytes): the model's identity."""
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        t = np.ascontiguousarray(t, dtype="<f4")
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.tobytes())
    return h.digest()


# ---- the quantised model ---------------------------------------------------------------------------------
# NamedTuples of numpy arrays: the compiled engine takes them as they are (numba types them, and caches the code).

class Term(NamedTuple):
    """One weight matrix and what turns its exact products with integer inputs into Q8 pre-activation terms."""
    w: np.ndarray        # (out, in) integers in [-127, 127], float32 or float64 (exact_dtype of its bound)
    gain: np.ndarray     # (out,) LN gain * 256, float64; empty: no layer norm
    eps: float           # LN's eps in the units of the shifted product
    shift: int           # right shift of the product before LN (ln_shift)
    scale: float         # Q8 units per unit of the product (without layer norm)


NO_TERM = Term(np.zeros((0, 0), np.float32), np.zeros(0, np.float64), 1.0, 0, 0.0)


class Layer(NamedTuple):
    """One HM-LSTM layer's integers (eq. 1-9)."""
    rec: Term                # U_l^l, on h_{t-1}^l
    td: Term                 # U_{l+1}^l on h_{t-1}^{l+1}; NO_TERM on the top layer and in the LSTM
    bu: Term                 # W_{l-1}^l on h_t^{l-1}; NO_TERM on layer 1 (its input term: QuantModel.x_table)
    bias: np.ndarray         # (4H[+1],) int64: the Q8 bias plus the gate table offsets (gates below)
    lo: np.ndarray           # (4H,) int64 clamp bounds = the table index range of each gate column
    hi: np.ndarray
    ln_c: np.ndarray         # (H,) LN(c) gain * 256, float64; empty: no layer norm
    c_eps: float
    c_shift: int
    embed: np.ndarray        # (E, H) W_l^e, layer l's block of the output embedding, integers, float32/64
    hidden: int
    has_boundary: bool


class Output(NamedTuple):
    """The output module (eq. 11-12)."""
    gate: Term               # (L, sum H): one gate per layer
    head: np.ndarray         # (vocab, E) integers, float32/64
    head_unit: float         # real value of one unit of head @ emb_q, times the row max of the embedding
    head_bias: np.ndarray    # (vocab,) float64, in nats


@dataclass(frozen=True)
class QuantModel:
    """A byte-level CharLM on the integer grid: what both engines run."""
    hierarchical: bool
    hidden: list[int]
    layers: list[Layer]
    x_table: np.ndarray      # (vocab, 4H+1) int64: layer 1's input term LN(W_0^1 x) for every symbol, bias included
    out: Output
    gates: np.ndarray        # one table for every gate: [sigmoid | tanh], int64
    exp: np.ndarray          # exp(-d / 256) * 2^30, int64
    hash: bytes              # weights_hash of the float weights


def term(weight: np.ndarray, in_unit: float, in_max: int, gain: np.ndarray | None) -> Term:
    """The Term of a float matrix (out, in) applied to integers |x| <= in_max whose one unit is worth in_unit."""
    w, s = quantise(weight)
    n = w.shape[0]
    bound = in_max * float(np.abs(w).sum(1).max())                # |T| <= bound for any input
    unit = s / LEVELS * in_unit                                   # real value of one unit of T
    shift = ln_shift(n, bound)
    return Term(np.ascontiguousarray(w, exact_dtype(bound)),
                np.zeros(0, np.float64) if gain is None else np.asarray(gain, np.float64) * PRE,
                ln_eps(n, unit * 2 ** shift), shift, unit * PRE)


def term_table(t: Term, x: np.ndarray) -> np.ndarray:
    """The Q8 term of t.w @ x[i] for every row i of integers x -> (rows, out) int64, with the engines' operations:
    exact products and sums, then LN's one square root, division and multiplication (or the one scaling), each
    correctly rounded, and round half to even."""
    prod = np.asarray(x, np.float64) @ np.asarray(t.w, np.float64).T          # exact: bounded integers
    if not t.gain.size:
        return np.rint(prod * t.scale).astype(np.int64)
    v = np.floor(prod * 2.0 ** -t.shift).astype(np.int64)
    n = v.shape[1]
    tot, sq = v.sum(1, keepdims=True), (v * v).sum(1, keepdims=True)        # exact (ln_shift)
    return np.rint((v * n - tot).astype(np.float64) / np.sqrt((n * sq - tot * tot).astype(np.float64) + t.eps)
                   * t.gain).astype(np.int64)


def exact(w: np.ndarray, in_max: int) -> np.ndarray:
    """Integer matrix w (out, in) in the dtype whose products with |x| <= in_max are exact."""
    return np.ascontiguousarray(w, exact_dtype(in_max * float(np.abs(w).sum(1).max())))


def build(cfg: dict, weights: dict[str, np.ndarray]) -> QuantModel:
    """The quantised model of a byte-level CharLM from its config (arch, hidden) and float weights (numpy arrays
    under their state_dict names, as in the model's safetensors file)."""
    W = {k: np.asarray(v) for k, v in weights.items()}
    hierarchical = cfg["arch"] == HMLSTM_ARCH
    hidden = [int(h) for h in cfg["hidden"]]
    h_unit = 1 / LEVELS

    def h_term(p: str, kind: str) -> Term:                       # a matrix on h (units 1/127), LN'd if the model is
        return term(W[p + kind + ".weight"], h_unit, LEVELS, W.get(p + "ln_" + kind + ".ln.weight"))

    w_e, s_e = quantise(W["out.embed.weight"])                    # (E, sum H)
    starts = np.cumsum([0] + hidden)
    layers = []
    for l, H in enumerate(hidden):
        p = f"rnn.layers.{l}."
        has_boundary = hierarchical and l + 1 < len(hidden)
        offset = np.full(4 * H + int(has_boundary), SIGMOID_AT, np.int64)  # f, i, o: sigmoid
        offset[3 * H:4 * H] = TANH_AT                                       # g: tanh
        if has_boundary:
            offset[4 * H] = 0                                     # z~: no table (any range)
        c_shift = ln_shift(H, C_MAX)
        layers.append(Layer(
            rec=h_term(p, "rec"),
            td=h_term(p, "td") if p + "td.weight" in W else NO_TERM,
            bu=h_term(p, "bu") if l > 0 else NO_TERM,
            bias=np.rint(W[p + "bias"].astype(np.float64) * PRE).astype(np.int64) + offset,
            lo=offset[:4 * H] - R, hi=offset[:4 * H] + R,
            ln_c=W[p + "ln_c.ln.weight"].astype(np.float64) * PRE if p + "ln_c.ln.weight" in W
            else np.zeros(0, np.float64),
            c_eps=ln_eps(H, 2.0 ** -C_BITS * 2 ** c_shift), c_shift=c_shift,
            embed=exact(w_e[:, starts[l]:starts[l + 1]], LEVELS),
            hidden=H, has_boundary=has_boundary))
    x_in, s_x = quantise(W["embed.weight"])                       # (vocab, embed)
    x_term = term(W["rnn.layers.0.bu.weight"], s_x / LEVELS, LEVELS, W.get("rnn.layers.0.ln_bu.ln.weight"))
    x_table = term_table(x_term, x_in) + layers[0].bias           # z_t^0 = 1: never gated, so one row per symbol
    w_v, s_v = quantise(W["out.head.weight"])                     # (vocab, E)
    e_unit = s_e / LEVELS * h_unit / GATE                         # real value of sum_l g_q W_q h_q
    out = Output(gate=term(W["out.gate.weight"], h_unit, LEVELS, None), head=exact(w_v, LEVELS),
                 head_unit=s_v / LEVELS * e_unit / LEVELS, head_bias=W["out.head.bias"].astype(np.float64))
    t = tables()
    return QuantModel(hierarchical, hidden, layers, x_table, out, np.concatenate([t["sigmoid"], t["tanh"]]),
                      t["exp"], weights_hash(W))
