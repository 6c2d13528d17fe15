"""The fast path (hmgen.cell.fast) computes the same function as the reference `CharLM.forward`.

Each test runs both on the same model, inputs and carried state and compares logits, final state, z,
the loss and the gradient of every parameter (and of the incoming state). The loss also takes the final
state and z, so gradients flow through every output, the straight-through boundary gradient included.
float64 is compared tightly; float32 to ~1e-5 relative.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hmgen.cell.fast import FastForward, _Segment, fast_forward, t1_terms, t1_weight
from hmgen.cell.reference import COPY, FLUSH, UPDATE, CharLM, ModelConfig, detach_state, operations

B, T, VOCAB, EMBED, OUT_EMBED = 3, 7, 11, 5, 6
UNEQUAL = (4, 7, 3)          # unequal sizes: a mis-sliced or mis-placed block cannot line up
F64 = dict(rtol=1e-10, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-6)


pytestmark = pytest.mark.usefixtures("one_thread")


def make(arch="hmlstm", layer_norm=True, hidden=UNEQUAL, dtype=torch.float64, seed=0) -> CharLM:
    """Random parameters, LN gains away from 1, boundary rows that fire about half the time."""
    torch.manual_seed(seed)
    model = CharLM(ModelConfig(vocab_size=VOCAB, arch=arch, embed_dim=EMBED, hidden=list(hidden), out_embed=OUT_EMBED,
                               layer_norm=layer_norm)).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(0.5 + torch.rand_like(p) if ".ln" in name else torch.randn_like(p) * 0.7)
    return model


def random_state(model, z=None, seed=1):
    """Non-zero h, c; z_{-1}^l random in {0, 1} (or as given); the top layer's z is 0."""
    g = torch.Generator().manual_seed(seed)
    dtype = model.embed.weight.dtype
    state = []
    L = model.num_layers
    for l, layer in enumerate(model.rnn.layers):
        h = torch.randn(B, layer.hidden, generator=g, dtype=torch.float64).to(dtype)
        c = torch.randn(B, layer.hidden, generator=g, dtype=torch.float64).to(dtype)
        zl = (torch.rand(B, 1, generator=g) < 0.5).to(dtype) if z is None else torch.full((B, 1), float(z[l]), dtype=dtype)
        if model.cfg.arch == "hmlstm" and l == L - 1:
            zl = torch.zeros_like(zl)
        state.append((h.requires_grad_(), c.requires_grad_(), zl))
    return state


def inputs(seed=2, t=T):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (B, t), generator=g), torch.randint(0, VOCAB, (B, t), generator=g)


def run(forward, model, x, y, state, a=1.0, force_z=None):
    """Forward + backward; returns outputs, loss and gradients (parameters, then incoming h, c)."""
    model.zero_grad(set_to_none=True)
    state = [(h.detach().requires_grad_(), c.detach().requires_grad_(), z) for h, c, z in state]
    logits, new, z = forward(model, x, state, a, force_z)
    g = torch.Generator().manual_seed(3)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
    for h, c, _ in new:                                  # every output carries gradient
        loss = loss + (torch.randn(h.shape, generator=g, dtype=h.dtype) * h).sum() * 0.1
        loss = loss + (torch.randn(c.shape, generator=g, dtype=c.dtype) * c).sum() * 0.1
    loss = loss + (torch.randn(z.shape, generator=g, dtype=z.dtype) * z).sum()     # the STE path
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    grads.update({f"state.{l}.{k}": t.grad for l, (h, c, _) in enumerate(state) for k, t in (("h", h), ("c", c))})
    return logits.detach(), detach_state(new), z.detach(), loss.detach(), grads


def reference(model, x, state, a, force_z):
    return model(x, state, a, force_z)


def fast(model, x, state, a, force_z):
    return fast_forward(model, x, state, a, force_z, compiled=False)


def assert_same(model, x, y, state, a=1.0, force_z=None, tol=F64, values_only=False):
    ref = run(reference, model, x, y, state, a, force_z)
    out = run(fast, model, x, y, state, a, force_z)
    torch.testing.assert_close(out[0], ref[0], **tol)                              # logits
    for (h, c, z), (h0, c0, z0) in zip(out[1], ref[1]):                           # final state
        torch.testing.assert_close((h, c, z), (h0, c0, z0), **tol)
    torch.testing.assert_close(out[2], ref[2], rtol=0, atol=0)                     # z: exactly
    torch.testing.assert_close(out[3], ref[3], **tol)                              # loss
    if not values_only:
        assert out[4].keys() == ref[4].keys()
        for name in ref[4]:
            assert (out[4][name] is None) == (ref[4][name] is None), name
            if ref[4][name] is not None:
                torch.testing.assert_close(out[4][name], ref[4][name], **tol, msg=lambda m: f"{name}: {m}")
    return ref


# ---------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("layer_norm", [True, False])
def test_hmlstm_outputs_match_reference(layer_norm):
    model = make(layer_norm=layer_norm)
    x, y = inputs()
    assert_same(model, x, y, random_state(model), values_only=True)


@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize("hidden", [UNEQUAL, (4, 4, 4)])
def test_lstm_outputs_and_gradients_match_reference(layer_norm, hidden):
    model = make("lstm", layer_norm, hidden)
    x, y = inputs()
    assert_same(model, x, y, random_state(model))


@pytest.mark.parametrize("hidden", [(5,), (4, 7), UNEQUAL, (4, 4, 4)])
def test_one_to_three_layers_equal_or_unequal_sizes_match_reference(hidden):
    model = make(hidden=hidden)
    x, y = inputs()
    assert_same(model, x, y, random_state(model))


def test_no_grad_inference_matches_reference():
    """The inference lanes (compression, sampling) run the fast path without autograd."""
    model = make()
    x, _ = inputs()
    state = [(h.detach(), c.detach(), z) for h, c, z in random_state(model)]
    with torch.no_grad():
        ref, fst = model(x, state), fast_forward(model, x, state, compiled=False)
    torch.testing.assert_close(fst[0], ref[0], **F64)
    torch.testing.assert_close(fst[2], ref[2], rtol=0, atol=0)


def test_state_carried_across_segments_matches_reference():
    """Truncated BPTT: the state out of one call is the state into the next."""
    model = make()
    x, _ = inputs(t=2 * T)
    state = [(h.detach(), c.detach(), z) for h, c, z in random_state(model)]
    with torch.no_grad():
        ref, fst = state, state
        for s in (slice(0, T), slice(T, 2 * T)):
            r_logits, ref, _ = model(x[:, s], ref)
            f_logits, fst, _ = fast_forward(model, x[:, s], fst, compiled=False)
            torch.testing.assert_close(f_logits, r_logits, **F64)


def test_module_wrapper_runs_the_fast_path_over_the_same_parameters():
    """FastForward (what DDP wraps in the trainer) holds exactly the model's parameters and computes it."""
    model = make()
    x, y = inputs()
    wrapper = FastForward(model, compiled=False)
    assert [id(p) for p in wrapper.parameters()] == [id(p) for p in model.parameters()]
    ref = run(reference, model, x, y, random_state(model), a=1.7)
    out = run(lambda m, x_, s, a, fz: wrapper(x_, s, a, fz), model, x, y, random_state(model), a=1.7)
    torch.testing.assert_close(out[3], ref[3], **F64)
    for name in ref[4]:
        torch.testing.assert_close(out[4][name], ref[4][name], **F64)


def test_graph_segment_reads_flat_state_and_slope_buffer_like_reference():
    """The module that GraphedSegment captures on CUDA: state in and out as flat (h, c, z) per layer,
    the slope read from its buffer. Checked here eagerly (capture itself needs a GPU: check_fast.py)."""
    model = make()
    x, y = inputs()
    seg = _Segment(model, compiled=False)
    seg.a.fill_(1.7)

    def through_segment(m, x_, state, a, fz):
        out = seg(x_, *[t for layer in state for t in layer])
        return out[0], [tuple(out[2 + 3 * l:5 + 3 * l]) for l in range(m.num_layers)], out[1]

    ref = run(reference, model, x, y, random_state(model), a=1.7)
    out = run(through_segment, model, x, y, random_state(model))
    torch.testing.assert_close(out[3], ref[3], **F64)
    for (h, c, z), (h0, c0, z0) in zip(out[1], ref[1]):
        torch.testing.assert_close((h, c, z), (h0, c0, z0), **F64)
    for name in ref[4]:
        torch.testing.assert_close(out[4][name], ref[4][name], **F64)


# ---------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("layer_norm", [True, False])
def test_hmlstm_gradients_match_reference(layer_norm):
    model = make(layer_norm=layer_norm)
    x, y = inputs()
    assert_same(model, x, y, random_state(model))


def test_free_boundary_detectors_fire_and_pass_straight_through_gradient():
    """Detectors left free: both z = 0 and z = 1 occur in layers 1-2, and the boundary rows
    (row 4H of each W, U, b) get the same non-zero STE gradient as in the reference."""
    model = make()
    x, y = inputs()
    ref = assert_same(model, x, y, random_state(model))
    z = ref[2]
    for l in range(2):
        assert 0 < z[..., l].mean() < 1, f"layer {l + 1} detector never varies"
        H = model.rnn.layers[l].hidden
        assert ref[4][f"rnn.layers.{l}.bias"][4 * H].abs() > 0   # the boundary row learns


@pytest.mark.parametrize("a", [0.5, 3.0])
def test_slope_shapes_gradient_as_in_reference(a):
    """a only changes the STE window (|s| < 1/a) and height (a/2); a float and a tensor give the same."""
    model = make()
    x, y = inputs()
    state = random_state(model)
    assert_same(model, x, y, state, a=a)
    ta = run(lambda m, x_, s, _, fz: fast_forward(m, x_, s, torch.tensor(a, dtype=torch.float64), fz, compiled=False),
             model, x, y, state)
    tf = run(fast, model, x, y, state, a)
    for name in tf[4]:
        torch.testing.assert_close(ta[4][name], tf[4][name], rtol=0, atol=0)


def test_forced_update_copy_flush_pattern_matches_reference():
    """force_z chosen so that layers 2 and 3 go through every operation; values and gradients agree."""
    model = make()
    x, y = inputs()
    # rows: z_t^1, z_t^2 per step, cycling through (1,1) (1,0) (0,0) (0,1)
    pattern = torch.tensor([[1, 1], [1, 0], [0, 0], [0, 1], [1, 1], [0, 0], [1, 0]], dtype=torch.float64)
    force_z = pattern[None].repeat(B, 1, 1)                         # (batch, T, L-1)
    state = random_state(model, z=[0, 1, 0])
    ref = assert_same(model, x, y, state, force_z=force_z)
    z_init = torch.cat([z for _, _, z in state], dim=-1)
    ops = operations(ref[2], z_init)
    for l in (1, 2):
        seen = set(ops[..., l].unique().tolist())
        assert {UPDATE, COPY} <= seen and (l == 2 or FLUSH in seen), f"layer {l + 1}: {seen}"


def test_float32_matches_reference_to_float_tolerance():
    model = make(dtype=torch.float32, seed=4)
    x, y = inputs()
    assert_same(model, x, y, random_state(model), tol=F32)


def test_float32_lstm_matches_reference_to_float_tolerance():
    model = make("lstm", dtype=torch.float32, seed=4)
    x, y = inputs()
    assert_same(model, x, y, random_state(model), tol=F32)


# ---------------------------------------------------------------------------------------------- layout


@pytest.mark.parametrize("hidden, kind", [(UNEQUAL, "dense"), ((4, 4, 4), "stacked")])
def test_one_product_gives_each_layers_recurrent_and_top_down_term(hidden, kind):
    """(a): the terms sliced from the single t-1 product are U_l^l h^l and U_{l+1}^l h^{l+1}, layer by layer."""
    model = make(hidden=hidden)
    hs = [h.detach() for h, _, _ in random_state(model)]
    packed = t1_weight(model.rnn)
    assert packed[0] == kind
    terms = t1_terms(packed, hs)
    for l, layer in enumerate(model.rnn.layers):
        rec, td = terms[l]
        torch.testing.assert_close(rec, hs[l] @ layer.rec.weight.T, **F64)
        if layer.td is None:
            assert td is None
        else:
            torch.testing.assert_close(td, hs[l + 1] @ layer.td.weight.T, **F64)
