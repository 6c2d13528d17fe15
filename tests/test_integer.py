"""The integer engine (hmgen.archive.engine.torch_engine.QuantLM) computes the float cell
(hmgen.cell.reference.layer_step), step by step, for the HM-LSTM and the LSTM baseline, with and without layer norm.

At every step of a random symbol sequence both engines start from the same state: the float trajectory's
state put on the integer grid (h to 1/127, c to 2^-12), which is exactly representable in both. Each takes
one step and h, c, z of every layer are compared. The float model's weights are put on the integer
engine's grid too (each matrix W_q * s / 127, biases in 1/256), so that what is compared is the engine's
arithmetic and its choice of operations, not the weights' rounding.

Tolerance, from the quantisation. Layer 1 gets identical inputs: its pre-activations differ by at most
1.5 units of 1/256 (three Q8-rounded terms), the gates by a quarter of that (sigmoid) or all of it (tanh)
plus 2^-16 (tables), c by that times |c_{t-1}| plus 2^-13, h by 1/254 (its grid) plus o and tanh's
share: measured <= 0.015. A layer above also reads the integer h_t^{l-1}, up to that much off, through
W_{l-1}^l and layer norm: measured <= 0.047 (both architectures, with and without LN, seeds 0-2).
TOL = 0.06. A wrong operation (COPY for UPDATE, a term gated wrongly or dropped, c not reset on FLUSH,
LN(c) missing) moves h or c by far more than that.

z is a step function of the boundary pre-activation z~: where the float z~ lies within rounding of 0
the engines may disagree, and then the layers above see different inputs. So z is compared where the
float detector gives the same z with its bias moved by ±Z_MARGIN; h and c of a layer are compared on
the lanes where every layer below agreed on z (at least 95% of them here).
"""
from __future__ import annotations

import copy

import pytest
import torch

from hmgen.archive.engine import scheme
from hmgen.archive.engine import torch_engine as Q
from hmgen.cell.reference import CharLM, ModelConfig

VOCAB, EMBED, HIDDEN, OUT_EMBED = 11, 8, (16, 24, 16), 12
LANES, STEPS = 6, 60
TOL = 0.06
Z_MARGIN = 0.05          # in pre-activation units: ~13 Q8 units, several times layer 1's rounding
MODELS = [("hmlstm", True, True), ("hmlstm", True, False), ("hmlstm", False, True), ("lstm", True, True),
          ("lstm", True, False), ("lstm", False, True)]     # (arch, layer_norm, ln_terms)

pytestmark = pytest.mark.usefixtures("one_thread")


def grid_model(arch: str, layer_norm: bool, ln_terms: bool = True, seed: int = 0) -> CharLM:
    """Random float64 model whose weights the integer engine represents exactly; LN gains away from 1."""
    torch.manual_seed(seed)
    model = CharLM(ModelConfig(vocab_size=VOCAB, arch=arch, embed_dim=EMBED, hidden=list(HIDDEN), out_embed=OUT_EMBED,
                               layer_norm=layer_norm, ln_terms=ln_terms)).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(0.5 + torch.rand_like(p) if ".ln" in name else torch.randn_like(p) * 0.5)
            if p.dim() == 2:
                w, s = scheme.quantise(p.detach().numpy())
                p.copy_(torch.from_numpy(w * s / scheme.LEVELS))
            elif name.startswith("rnn.") and name.endswith(".bias"):
                p.copy_(torch.round(p * scheme.PRE) / scheme.PRE)
    return model


def on_grid(q: Q.QuantLM, state) -> tuple[Q.QState, list]:
    """A float state put on the integer grid: the integer state and the same values as a float state."""
    h = [torch.round(hl * scheme.LEVELS).float() for hl, _, _ in state]
    c = [torch.round(cl * 2 ** scheme.C_BITS).clamp(-scheme.C_MAX, scheme.C_MAX) for _, cl, _ in state]
    z = [zl[:, 0] > 0 for _, _, zl in state]
    e = [Q.exact_mm(hl, ql.embed) for hl, ql in zip(h, q.layers)]
    float_state = [(hl.double() / scheme.LEVELS, cl / 2 ** scheme.C_BITS, zl)
                   for hl, cl, (_, _, zl) in zip(h, c, state)]
    return Q.QState(h, c, z, e), float_state


def boundary_bias_moved(model: CharLM, delta: float) -> CharLM:
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for layer in moved.rnn.layers:
            if layer.has_boundary:
                layer.bias[4 * layer.hidden] += delta
    return moved


def float_step(model: CharLM, symbols, state):
    return model.rnn.step(model.rnn.project_input(model.embed(symbols)), state)


@torch.no_grad()
def steps(model: CharLM, seed: int = 5):
    """For each step and layer: float (h, c, z), integer (h, c, z) in real units, z robust to ±Z_MARGIN,
    and the lanes where every layer below agreed on z."""
    q = Q.QuantLM(model)
    low, high = boundary_bias_moved(model, -Z_MARGIN), boundary_bias_moved(model, Z_MARGIN)
    symbols = torch.randint(0, VOCAB, (LANES, STEPS), generator=torch.Generator().manual_seed(seed))
    state = model.initial_state(LANES)
    for t in range(STEPS):
        q_state, f_state = on_grid(q, state)
        new = float_step(model, symbols[:, t], f_state)
        low_z, high_z = (float_step(m, symbols[:, t], f_state) for m in (low, high))
        _, q_new = q.step(symbols[:, t], q_state)
        agreed = torch.ones(LANES, dtype=torch.bool)
        for l, (h, c, z) in enumerate(new):
            z = z[:, 0] > 0
            robust = (low_z[l][2][:, 0] > 0) == (high_z[l][2][:, 0] > 0)
            q_hcz = (q_new.h[l].double() / scheme.LEVELS, q_new.c[l] / 2 ** scheme.C_BITS, q_new.z[l])
            yield l, (h, c, z), q_hcz, robust, agreed
            agreed = agreed & (z == q_new.z[l])
        state = new


@pytest.mark.parametrize("arch, layer_norm, ln_terms", MODELS)
def test_integer_h_and_c_match_the_float_cell_at_every_step_and_layer(arch, layer_norm, ln_terms):
    worst = [[0.0, 0.0] for _ in HIDDEN]
    compared = [0] * len(HIDDEN)
    for l, (h, c, _), (qh, qc, _), _, agreed in steps(grid_model(arch, layer_norm, ln_terms)):
        compared[l] += int(agreed.sum())
        if agreed.any():
            worst[l][0] = max(worst[l][0], float((h - qh)[agreed].abs().max()))
            worst[l][1] = max(worst[l][1], float((c - qc)[agreed].abs().max()))
    assert min(compared) >= 0.95 * LANES * STEPS, compared
    assert max(max(w) for w in worst) <= TOL, f"max |float - integer| per layer (h, c): {worst}"


@pytest.mark.parametrize("arch, layer_norm, ln_terms", MODELS)
def test_integer_boundaries_match_the_float_detector_away_from_zero(arch, layer_norm, ln_terms):
    fired = [0] * len(HIDDEN)
    for l, (_, _, z), (_, _, qz), robust, agreed in steps(grid_model(arch, layer_norm, ln_terms)):
        check = robust & agreed
        assert torch.equal(z[check], qz[check]), f"layer {l + 1}: float {z.tolist()} integer {qz.tolist()}"
        fired[l] += int(z.sum())
    if arch == "hmlstm":       # the detectors of layers 1..L-1 fire and stay silent, the top never fires
        assert all(0 < n < LANES * STEPS for n in fired[:-1]) and fired[-1] == 0, fired
    else:                      # the LSTM has no detectors
        assert fired == [0] * len(HIDDEN)
