"""Specification tests for hmgen.cell.reference against the HM-LSTM paper (Chung, Ahn & Bengio, ICLR 2017,
arXiv 1609.01704v7: eq. 1-12 and §3.3).

Expected values are computed here with plain torch ops written out from the paper's equations,
never by calling the model's own cell code. Tiny float64 models keep every test fast and tight.
"""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from hmgen.cell.reference import (
    COPY,
    FLUSH,
    UPDATE,
    CharLM,
    ModelConfig,
    boundary,
    count_parameters,
    detach_state,
    operations,
)

B = 2                     # batch
HIDDEN = (2, 3, 2)        # unequal sizes so that transposed / mis-sliced weights cannot line up
EMBED = 3
VOCAB = 5
OUT_EMBED = 4
LN_EPS = 1e-5             # nn.LayerNorm's default


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# helpers: building chosen models and states, and the paper's equations written out by hand
# ----------------------------------------------------------------------------------------------

def fill_(model: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """Set every parameter to chosen (seeded) values: weights/biases in [-scale, scale],
    layer-norm gains in [0.5, 1.5] (away from 1, so a forgotten gain shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=g, dtype=torch.float64)
            p.copy_(0.5 + u if ".ln" in name else (2 * u - 1) * scale)
    return model


def tiny(arch="hmlstm", layer_norm=False, hidden=HIDDEN, seed=0, scale=1.0) -> CharLM:
    cfg = ModelConfig(vocab_size=VOCAB, arch=arch, embed_dim=EMBED, hidden=list(hidden),
                      out_embed=OUT_EMBED, layer_norm=layer_norm)
    return fill_(CharLM(cfg).double(), seed, scale)


def chosen_state(model: CharLM, z_prev, seed=1):
    """Non-zero h_{t-1}, c_{t-1} per layer and the given z_{t-1}^l (same for every batch row)."""
    g = torch.Generator().manual_seed(seed)
    state = []
    for layer, z in zip(model.rnn.layers, z_prev):
        h = torch.rand(B, layer.hidden, generator=g, dtype=torch.float64) * 2 - 1
        c = (torch.rand(B, layer.hidden, generator=g, dtype=torch.float64) * 2 - 1) * 2
        state.append((h, c, torch.full((B, 1), float(z), dtype=torch.float64)))
    return state


def chosen_input(seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, EMBED, generator=g, dtype=torch.float64) * 2 - 1


def run_step(model: CharLM, x, state, force_z=None):
    fz = None if force_z is None else torch.tensor([force_z] * B, dtype=torch.float64)
    return model.rnn.step(model.rnn.project_input(x), state, force_z=fz)


def mm(W, v):
    """W v for a batch of row vectors v."""
    return v @ W.T


def gates(s, H):
    """eq. 4: (f, i, o, g) = (sigm, sigm, sigm, tanh) of the slices of the pre-activation."""
    return (torch.sigmoid(s[:, :H]), torch.sigmoid(s[:, H:2 * H]),
            torch.sigmoid(s[:, 2 * H:3 * H]), torch.tanh(s[:, 3 * H:4 * H]))


def paper_update(s, c_prev, H, norm_c=lambda c: c):
    f, i, o, g = gates(s, H)
    c = f * c_prev + i * g                    # eq. 2, UPDATE
    return c, o * torch.tanh(norm_c(c))       # eq. 3


def paper_flush(s, H, norm_c=lambda c: c):
    _, i, o, g = gates(s, H)
    c = i * g                                 # eq. 2, FLUSH (hard reset)
    return c, o * torch.tanh(norm_c(c))


def ln(v, gain):
    """Layer normalisation (Ba et al. 2016) with a gain and no bias."""
    mu = v.mean(-1, keepdim=True)
    var = ((v - mu) ** 2).mean(-1, keepdim=True)
    return (v - mu) / torch.sqrt(var + LN_EPS) * gain


def params(model: CharLM, l: int):
    """W_{l-1}^l, U_l^l, U_{l+1}^l, b of layer l (0-based)."""
    layer = model.rnn.layers[l]
    td = None if layer.td is None else layer.td.weight
    return layer.bu.weight, layer.rec.weight, td, layer.bias


def close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# 1. the three operations, hand-computed (eq. 2-7), layer_norm=False
# ----------------------------------------------------------------------------------------------

def test_update_is_lstm_step_without_top_down_term():
    # z_{t-1}^l = 0 everywhere, z_t^1 = z_t^2 = 1: all three layers UPDATE.
    model = tiny()
    state = chosen_state(model, z_prev=[0, 0, 0])
    x = chosen_input()
    new = run_step(model, x, state, force_z=[1, 1])

    h_below = x
    for l, H in enumerate(HIDDEN):
        W, U, _, b = params(model, l)
        h_prev, c_prev, _ = state[l]
        s = mm(U, h_prev) + mm(W, h_below) + b          # recurrent + bottom-up; no top-down
        c, h = paper_update(s, c_prev, H)
        close(new[l][1], c)
        close(new[l][0], h)
        h_below = h


def test_flush_resets_cell_and_includes_top_down_term():
    # z_{t-1}^1 = z_{t-1}^2 = 1: layers 1 and 2 FLUSH; z_t^1 = z_t^2 = 1 so bottom-up is on;
    # layer 3 (z_{t-1}^3 = 0, z_t^2 = 1) UPDATEs.
    model = tiny()
    state = chosen_state(model, z_prev=[1, 1, 0])
    x = chosen_input()
    new = run_step(model, x, state, force_z=[1, 1])

    W, U, Utd, b = params(model, 0)
    s1 = mm(U, state[0][0]) + mm(Utd, state[1][0]) + mm(W, x) + b      # top-down uses h_{t-1}^2
    c1, h1 = paper_flush(s1, HIDDEN[0])
    close(new[0][1], c1)
    close(new[0][0], h1)

    W, U, Utd, b = params(model, 1)
    s2 = mm(U, state[1][0]) + mm(Utd, state[2][0]) + mm(W, h1) + b
    c2, h2 = paper_flush(s2, HIDDEN[1])
    close(new[1][1], c2)
    close(new[1][0], h2)

    W, U, _, b = params(model, 2)
    s3 = mm(U, state[2][0]) + mm(W, h2) + b
    c3, h3 = paper_update(s3, state[2][1], HIDDEN[2])
    close(new[2][1], c3)
    close(new[2][0], h3)


def test_flush_without_boundary_below_drops_bottom_up_term():
    # Layer 2: z_{t-1}^2 = 1 (FLUSH) while z_t^1 = 0: s = U h_{t-1} + U_td h_{t-1}^3 + b, no W h_t^1.
    model = tiny()
    state = chosen_state(model, z_prev=[0, 1, 0])
    x = chosen_input()
    new = run_step(model, x, state, force_z=[0, 1])

    W, U, _, b = params(model, 0)
    c1, h1 = paper_update(mm(U, state[0][0]) + mm(W, x) + b, state[0][1], HIDDEN[0])
    close(new[0][0], h1)
    assert torch.equal(new[0][2], torch.zeros(B, 1, dtype=torch.float64))

    _, U, Utd, b = params(model, 1)
    c2, h2 = paper_flush(mm(U, state[1][0]) + mm(Utd, state[2][0]) + b, HIDDEN[1])
    close(new[1][1], c2)
    close(new[1][0], h2)

    # z_t^2 = 1 (forced; layer 2 did not COPY), so layer 3 UPDATEs from h_t^2.
    W, U, _, b = params(model, 2)
    c3, h3 = paper_update(mm(U, state[2][0]) + mm(W, h2) + b, state[2][1], HIDDEN[2])
    close(new[2][1], c3)
    close(new[2][0], h3)


# ----------------------------------------------------------------------------------------------
# 2. COPY
# ----------------------------------------------------------------------------------------------

def test_copy_leaves_c_and_h_bit_identical():
    # z_{t-1}^2 = 0 and z_t^1 = 0: layer 2 COPYs; then z_t^2 = 0, so layer 3 COPYs too.
    model = tiny()
    state = chosen_state(model, z_prev=[0, 0, 0])
    new = run_step(model, chosen_input(), state, force_z=[0, 1])
    for l in (1, 2):
        assert torch.equal(new[l][0], state[l][0])
        assert torch.equal(new[l][1], state[l][1])


def test_copy_keeps_z_zero_even_when_detector_would_fire():
    model = tiny()
    with torch.no_grad():
        model.rnn.layers[0].bias[-1] = -100.0     # z_t^1 = 0  -> layer 2 COPYs
        model.rnn.layers[1].bias[-1] = 100.0      # layer 2's detector alone would say 1
    state = chosen_state(model, z_prev=[0, 0, 0])
    new = run_step(model, chosen_input(), state)
    assert torch.equal(new[0][2], torch.zeros(B, 1, dtype=torch.float64))
    assert torch.equal(new[1][2], torch.zeros(B, 1, dtype=torch.float64))


def test_copy_keeps_z_zero_when_boundary_is_forced():
    model = tiny()
    new = run_step(model, chosen_input(), chosen_state(model, z_prev=[0, 0, 0]), force_z=[0, 1])
    assert torch.equal(new[1][2], torch.zeros(B, 1, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# 1 (cont.). which term is gated by what (eq. 5-7; pitfall §6.1), by perturbing one weight
# ----------------------------------------------------------------------------------------------

def _layer_output_changes(model, l_weight, attr, l_out, z_prev, force_z):
    state = chosen_state(model, z_prev=z_prev)
    x = chosen_input()
    before = run_step(model, x, state, force_z=force_z)
    with torch.no_grad():
        getattr(model.rnn.layers[l_weight], attr).weight.add_(0.5)
    after = run_step(model, x, state, force_z=force_z)
    return not torch.equal(before[l_out][1], after[l_out][1])


@pytest.mark.parametrize("z_prev_own, used", [(0, False), (1, True)])
def test_top_down_term_is_gated_by_own_previous_boundary(z_prev_own, used):
    # Layer 2, z_t^1 = 1: UPDATE when z_{t-1}^2 = 0 (no U_3^2 h^3), FLUSH when 1 (U_3^2 h^3 in).
    assert _layer_output_changes(tiny(), 1, "td", 1, [0, z_prev_own, 0], [1, 0]) is used


@pytest.mark.parametrize("z_below, used", [(0, False), (1, True)])
def test_bottom_up_term_is_gated_by_boundary_below(z_below, used):
    # Layer 2 FLUSHes (z_{t-1}^2 = 1), so it computes either way; W_1^2 h_t^1 only when z_t^1 = 1.
    assert _layer_output_changes(tiny(), 1, "bu", 1, [0, 1, 0], [z_below, 0]) is used


@pytest.mark.parametrize("z_prev, force_z", [([0, 0, 0], [1, 0]),   # layer 2 UPDATE
                                             ([0, 1, 0], [0, 0]),   # layer 2 FLUSH, nothing from below
                                             ([0, 1, 0], [1, 0])])  # layer 2 FLUSH, with bottom-up
def test_recurrent_term_is_never_gated(z_prev, force_z):
    assert _layer_output_changes(tiny(), 1, "rec", 1, z_prev, force_z)


# ----------------------------------------------------------------------------------------------
# 1 (cont.). with layer normalisation (Ba et al.'s per-term placement; the paper gives none):
# s = LN(U h) + z_{t-1}^l LN(U_td h^{l+1}) + z_t^{l-1} LN(W h^{l-1}) + b,  h = o * tanh(LN(c))
# ----------------------------------------------------------------------------------------------

def test_layer_norm_variant_matches_hand_computed_flush_update_copy():
    # layer 1 FLUSH (z_{t-1}^1 = 1), layer 2 UPDATE (z_t^1 = 1), layer 3 COPY (z_t^2 = 0).
    model = tiny(layer_norm=True)
    state = chosen_state(model, z_prev=[1, 0, 0])
    x = chosen_input()
    new = run_step(model, x, state, force_z=[1, 0])
    L1, L2 = model.rnn.layers[0], model.rnn.layers[1]

    s1 = (ln(mm(L1.rec.weight, state[0][0]), L1.ln_rec.ln.weight)
          + ln(mm(L1.td.weight, state[1][0]), L1.ln_td.ln.weight)
          + ln(mm(L1.bu.weight, x), L1.ln_bu.ln.weight) + L1.bias)
    c1, h1 = paper_flush(s1, HIDDEN[0], lambda c: ln(c, L1.ln_c.ln.weight))
    close(new[0][1], c1)
    close(new[0][0], h1)

    s2 = (ln(mm(L2.rec.weight, state[1][0]), L2.ln_rec.ln.weight)
          + ln(mm(L2.bu.weight, h1), L2.ln_bu.ln.weight) + L2.bias)
    c2, h2 = paper_update(s2, state[1][1], HIDDEN[1], lambda c: ln(c, L2.ln_c.ln.weight))
    close(new[1][1], c2)
    close(new[1][0], h2)

    assert torch.equal(new[2][0], state[2][0])
    assert torch.equal(new[2][1], state[2][1])


# ----------------------------------------------------------------------------------------------
# 3. top layer never FLUSHes, first layer never COPYs (§3.2; pitfall §6.2)
# ----------------------------------------------------------------------------------------------

def test_top_layer_has_no_boundary_row_and_no_top_down_weights():
    model = tiny()
    top = model.rnn.layers[-1]
    H = HIDDEN[-1]
    assert top.bu.weight.shape[0] == 4 * H
    assert top.rec.weight.shape[0] == 4 * H
    assert top.bias.shape == (4 * H,)
    assert top.td is None
    for layer, H in zip(model.rnn.layers[:-1], HIDDEN[:-1]):      # the others do have z~ rows
        assert layer.bu.weight.shape[0] == layer.rec.weight.shape[0] == layer.td.weight.shape[0] == 4 * H + 1


def test_top_layer_z_is_always_zero():
    model = tiny(scale=3.0)
    with torch.no_grad():                         # every lower detector fires at every step
        for layer in model.rnn.layers[:-1]:
            layer.bias[-1] = 100.0
    x = torch.randint(0, VOCAB, (B, 12), generator=torch.Generator().manual_seed(3))
    _, state, z = model(x, model.initial_state(B))
    assert (z[..., :-1] == 1).all()
    assert (z[..., -1] == 0).all()
    assert (state[-1][2] == 0).all()
    ops = operations(z, torch.zeros(B, len(HIDDEN)))
    assert (ops[..., -1] == UPDATE).all()         # z_t^{L-1} = 1 always, and never FLUSH


def test_first_layer_never_copies():
    model = tiny()
    with torch.no_grad():                         # no detector ever fires: z^1 = z^2 = 0
        for layer in model.rnn.layers[:-1]:
            layer.bias[-1] = -100.0
    state = chosen_state(model, z_prev=[0, 0, 0])
    start = state
    gen = torch.Generator().manual_seed(4)
    for _ in range(4):
        prev = state
        _, state = model.step_logits(torch.randint(0, VOCAB, (B,), generator=gen), state)
        assert not torch.equal(state[0][0], prev[0][0])          # layer 1 computed (z^0 = 1) ...
        for l in (1, 2):                                      # ... while layers 2, 3 copied
            assert torch.equal(state[l][0], start[l][0])
            assert torch.equal(state[l][1], start[l][1])
    x = torch.randint(0, VOCAB, (B, 6), generator=gen)
    _, _, z = model(x, model.initial_state(B))
    ops = operations(z, torch.zeros(B, len(HIDDEN)))
    assert (ops[..., 0] == UPDATE).all()
    assert (ops[..., 1:] == COPY).all()


def test_operations_codes_follow_paper_table():
    #            t:  0  1  2  3  4
    z = torch.tensor([[[1, 0, 0],
                       [0, 0, 0],
                       [0, 0, 0],
                       [1, 1, 0],
                       [0, 0, 0]]], dtype=torch.float64)
    z_init = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    U, C, F = UPDATE, COPY, FLUSH
    expected = torch.tensor([[[U, F, C],       # t0: l2 had z_{-1} = 1
                              [F, C, C],       # t1: l1 had z_0 = 1; z_1^1 = 0 -> l2, l3 copy
                              [U, C, C],
                              [U, U, U],       # t3: z^1 = 1 -> l2 updates; z^2 = 1 -> l3 updates
                              [F, F, C]]])     # t4: l1, l2 had z_3 = 1
    assert torch.equal(operations(z, z_init), expected)


# ----------------------------------------------------------------------------------------------
# 4. boundary detector: step forward, straight-through hard-sigmoid backward (eq. 8-9)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a", [1.0, 3.0, 5.0])
def test_boundary_forward_is_step_function_at_zero(a):
    s = torch.tensor([-5.0, -0.2, -1e-12, 0.0, 1e-12, 0.2, 5.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.equal(boundary(s, a), expected)


@pytest.mark.parametrize("a", [1.0, 3.0])
def test_boundary_gradient_is_half_slope_inside_window_and_zero_outside(a):
    s = (torch.tensor([-1.5, -1.01, -0.99, -0.3, 0.0, 0.3, 0.99, 1.01, 1.5], dtype=torch.float64) / a)
    s.requires_grad_(True)
    upstream = torch.arange(1.0, 10.0, dtype=torch.float64)
    boundary(s, a).backward(upstream)
    inside = torch.tensor([0, 0, 1, 1, 1, 1, 1, 0, 0], dtype=torch.float64)
    assert torch.allclose(s.grad, upstream * (a / 2) * inside, rtol=0, atol=1e-15)


@pytest.mark.parametrize("a", [1.0, 3.0])
def test_boundary_gradient_equals_hard_sigmoid_derivative(a):
    s = torch.linspace(-2, 2, 41, dtype=torch.float64)
    s = s[((s.abs() * a - 1).abs() > 1e-6)]                  # away from the kinks at |s| = 1/a
    s1 = s.clone().requires_grad_(True)
    boundary(s1, a).sum().backward()
    s2 = s.clone().requires_grad_(True)
    torch.clamp((a * s2 + 1) / 2, 0, 1).sum().backward()     # hard_sigm(a s), eq. 9
    assert torch.allclose(s1.grad, s2.grad, rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# 5. incremental (step_logits) == whole sequence (forward)
# ----------------------------------------------------------------------------------------------

def test_step_by_step_equals_whole_sequence():
    model = tiny(layer_norm=True, seed=5)
    x = torch.randint(0, VOCAB, (B, 10), generator=torch.Generator().manual_seed(6))
    logits, state, z = model(x, model.initial_state(B))
    assert 0 < z[..., :-1].mean() < 1                          # the detectors actually vary

    st = model.initial_state(B)
    step_logits, step_z = [], []
    for t in range(x.shape[1]):
        lg, st = model.step_logits(x[:, t], st)
        step_logits.append(lg)
        step_z.append(torch.cat([zz for _, _, zz in st], dim=-1))
    close(torch.stack(step_logits, dim=1), logits)
    assert torch.equal(torch.stack(step_z, dim=1), z)
    for (h, c, zz), (h2, c2, zz2) in zip(st, state):
        close(h, h2)
        close(c, c2)
        assert torch.equal(zz, zz2)


# ----------------------------------------------------------------------------------------------
# 6. gradcheck with boundaries held fixed
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer_norm", [False, True])
def test_gradients_match_finite_differences_with_fixed_boundaries(layer_norm):
    model = tiny(layer_norm=layer_norm, seed=7)
    T = 4
    x = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(8))
    force_z = torch.tensor([[[1, 0], [0, 1], [0, 0], [1, 1]],
                            [[0, 1], [1, 1], [1, 0], [0, 0]]], dtype=torch.float64)
    z_init = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    state0 = chosen_state(model, z_prev=[0, 0, 0])
    state0 = [(h, c, z_init[:, l:l + 1]) for l, (h, c, _) in enumerate(state0)]

    names = ["embed.weight", "rnn.layers.0.td.weight", "rnn.layers.1.rec.weight",
             "rnn.layers.2.bu.weight", "rnn.layers.1.bias", "out.embed.weight"]
    named = dict(model.named_parameters())
    inputs = tuple(named[n].detach().clone().requires_grad_(True) for n in names)
    h2_0 = state0[1][0].clone().requires_grad_(True)

    _, _, z = model(x, state0, force_z=force_z)               # the pattern covers all three ops
    ops = operations(z, z_init)
    assert {UPDATE, COPY, FLUSH} <= set(ops[:, :, 1].flatten().tolist() + ops[:, :, 2].flatten().tolist())

    def f(*tensors):
        *ps, h2 = tensors
        st = list(state0)
        st[1] = (h2, st[1][1], st[1][2])
        logits, final, _ = functional_call(model, dict(zip(names, ps)), (x, st), {"force_z": force_z})
        return (logits,) + tuple(c for _, c, _ in final)

    assert torch.autograd.gradcheck(f, inputs + (h2_0,), eps=1e-6, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# 7. the LSTM baseline
# ----------------------------------------------------------------------------------------------

def test_lstm_baseline_has_no_boundary_rows_or_top_down_weights():
    model = tiny(arch="lstm")
    for layer, H in zip(model.rnn.layers, HIDDEN):
        assert layer.td is None
        assert layer.bu.weight.shape[0] == layer.rec.weight.shape[0] == layer.bias.shape[0] == 4 * H


def test_lstm_baseline_updates_every_layer_every_step():
    model = tiny(arch="lstm")
    x = torch.randint(0, VOCAB, (B, 6), generator=torch.Generator().manual_seed(9))
    _, _, z = model(x, model.initial_state(B))
    assert (operations(z, torch.zeros(B, len(HIDDEN)), hierarchical=False) == UPDATE).all()


def test_lstm_baseline_equals_hand_written_lstm_stack_for_one_step():
    model = tiny(arch="lstm")
    state = chosen_state(model, z_prev=[0, 0, 0])
    x = chosen_input()
    new = run_step(model, x, state)
    h_below = x
    for l, H in enumerate(HIDDEN):
        W, U, _, b = params(model, l)
        h_prev, c_prev, _ = state[l]
        i_f_o_g = mm(W, h_below) + mm(U, h_prev) + b           # standard LSTM, input = h_t^{l-1}
        c, h = paper_update(i_f_o_g, c_prev, H)
        close(new[l][1], c)
        close(new[l][0], h)
        h_below = h


# ----------------------------------------------------------------------------------------------
# 8. truncated BPTT: state carries across segments
# ----------------------------------------------------------------------------------------------

def _segments(model, x, k):
    full = model(x, model.initial_state(B))
    first = model(x[:, :k], model.initial_state(B))
    second = model(x[:, k:], detach_state(first[1]))
    return full, first, second


def test_state_carries_across_truncated_segments():
    model = tiny(layer_norm=True, seed=10)
    x = torch.randint(0, VOCAB, (B, 9), generator=torch.Generator().manual_seed(11))
    (logits, state, z), first, second = _segments(model, x, k=4)
    assert 0 < z[..., :-1].mean() < 1
    close(torch.cat([first[0], second[0]], dim=1), logits)
    assert torch.equal(torch.cat([first[2], second[2]], dim=1), z)
    for (h, c, zz), (h2, c2, zz2) in zip(second[1], state):
        close(h, h2)
        close(c, c2)
        assert torch.equal(zz, zz2)


def test_operations_of_a_segment_use_the_carried_boundaries():
    model = tiny(layer_norm=True, seed=10)
    x = torch.randint(0, VOCAB, (B, 9), generator=torch.Generator().manual_seed(11))
    (_, _, z), first, second = _segments(model, x, k=4)
    z_init = torch.zeros(B, len(HIDDEN), dtype=torch.float64)
    carried = torch.cat([zz for _, _, zz in first[1]], dim=-1)
    assert torch.equal(operations(second[2], carried), operations(z, z_init)[:, 4:])


# ----------------------------------------------------------------------------------------------
# 9. output module (eq. 11-12)
# ----------------------------------------------------------------------------------------------

def test_output_module_has_one_scalar_gate_per_layer_and_no_embedding_bias():
    out = tiny().out
    assert out.gate.weight.shape == (len(HIDDEN), sum(HIDDEN))     # rows are w^l
    assert out.gate.bias is None
    assert out.embed.weight.shape == (OUT_EMBED, sum(HIDDEN))      # [W_1^e ... W_L^e]
    assert out.embed.bias is None


def test_output_module_matches_gated_relu_embedding_then_softmax_logits():
    model = tiny(seed=12)
    out = model.out
    hs = torch.rand(B, 3, sum(HIDDEN), generator=torch.Generator().manual_seed(13), dtype=torch.float64) * 2 - 1
    pre = torch.zeros(B, 3, OUT_EMBED, dtype=torch.float64)
    lo = 0
    for l, H in enumerate(HIDDEN):
        g_l = torch.sigmoid(hs @ out.gate.weight[l])                      # scalar g^l, eq. 11
        h_l = hs[..., lo:lo + H]
        W_l = out.embed.weight[:, lo:lo + H]                               # W_l^e
        pre = pre + g_l[..., None] * (h_l @ W_l.T)
        lo += H
    assert (pre < 0).any() and (pre > 0).any()                             # the ReLU matters here
    expected = torch.relu(pre) @ out.head.weight.T + out.head.bias         # V h^e + c, eq. 12
    close(out(hs), expected)


# ----------------------------------------------------------------------------------------------
# 10. sizes of the paper's PTB configuration
# ----------------------------------------------------------------------------------------------

def test_input_embedding_is_128_dimensional_by_default():
    cfg = ModelConfig(vocab_size=50)
    assert cfg.embed_dim == 128
    assert CharLM(ModelConfig(vocab_size=50, hidden=[4, 4, 4], out_embed=4)).embed.weight.shape == (50, 128)


def test_ptb_configuration_has_about_8_4m_parameters():
    model = CharLM(ModelConfig(vocab_size=50, hidden=[512, 512, 512], out_embed=512))
    assert abs(count_parameters(model) - 8.4e6) / 8.4e6 < 0.03
