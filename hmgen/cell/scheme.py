"""Integer scheme 1: the number formats, tables and weight quantisation that both integer engines share.

hmgen.cell.integer (torch, any device) and hmgen.cell.integer_numba (compiled loops, CPU, no torch) compute
the same integers from these; an archive's header names the scheme. Nothing here imports torch, so that
`hmgen compress` / `decompress` on a CPU start without it. See hmgen.cell.integer for what each format means.
"""
from __future__ import annotations

import decimal
import functools
import hashlib

import numpy as np

SCHEME = 1
LEVELS = 127            # weights and h: integers in [-127, 127]
PRE = 256               # pre-activations: units of 1/256
GATE = 1 << 15          # sigmoid / tanh outputs: units of 2^-15
C_BITS = 12             # cell state: units of 2^-12
C_MAX = (1 << 22) - 1   # |c| < 1024
R = 12 * PRE            # sigmoid/tanh tables cover pre-activations in [-12, 12]; saturated beyond
EXP_ONE = 1 << 30       # frequency of the most likely symbol
EXP_RANGE = 30 * PRE    # exp table covers logit gaps up to 30 nats; beyond, frequency 0
LN_EPS = 1e-5           # torch.nn.LayerNorm's default eps


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
