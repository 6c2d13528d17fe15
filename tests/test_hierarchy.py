"""Specification of what keeps the boundary detectors alive (issue 14): the model options, the rate
regulariser, the boundary rows' learning rate, and the detector figures in metrics.jsonl."""
from __future__ import annotations

import json

import pytest
import torch

from hmgen.cell.reference import COPY, CharLM, ModelConfig, operations
from hmgen.training.boundary import (BoundaryRowsLR, RateControl, boundary_rows, group_grad_norms, rate_loss,
                                     threshold_offsets)
from tests.test_train import english, text_file, tiny, train_records, write_ptb  # noqa: F401 (fixture)
from hmgen.training.checkpoint import read_run_config
from hmgen.training.config import OLD_RUN_DEFAULTS, DetectorDefaults, TrainConfig
from hmgen.text.train import TextTask, train

pytestmark = pytest.mark.usefixtures("one_thread")


def small(**options) -> CharLM:
    torch.manual_seed(0)
    return CharLM(ModelConfig(vocab_size=20, embed_dim=8, hidden=[6, 5, 4], out_embed=8, **options))


def test_old_model_config_without_the_new_fields_keeps_the_old_cell():
    old = ModelConfig(**{"vocab_size": 20, "arch": "hmlstm", "embed_dim": 8, "hidden": [6, 5, 4],
                         "out_embed": 8, "layer_norm": True})
    assert old.ln_terms is True
    layer = CharLM(old).rnn.layers[0]
    assert layer.ln_rec.ln.weight.shape == (4 * 6 + 1,)       # every row of the term normalised


def test_ln_terms_off_normalises_c_only():
    model = small(ln_terms=False)
    for layer in model.rnn.layers:
        assert layer.ln_rec.ln is None and layer.ln_bu.ln is None
        assert layer.ln_td is None or layer.ln_td.ln is None
        assert layer.ln_c.ln is not None
    h = torch.randn(3, 6)
    layer = model.rnn.layers[0]
    assert torch.equal(layer.ln_rec(layer.rec(h)), layer.rec(h))


def test_pre_activations_are_handed_out_without_changing_the_output():
    model = small()
    x = torch.randint(0, 20, (2, 7))
    pre = []
    logits, _, z = model(x, model.initial_state(2), pre_z=pre)
    plain, _, z_plain = model(x, model.initial_state(2))
    assert torch.equal(logits, plain) and torch.equal(z, z_plain)
    assert pre[0].shape == (2, 7, 2)
    live = operations(z, torch.zeros(2, 3))[..., :2] != 1     # where the detector was computed (not COPY)
    assert torch.equal((pre[0] > 0) & live, z[..., :2].bool())


@pytest.mark.parametrize("fired, direction", [(0.9, -1), (0.0, +1)])
def test_rate_loss_pulls_the_firing_probability_toward_its_target(fired, direction):
    T = 200
    pre = torch.full((1, T, 1), 0.3 if fired else -0.3, requires_grad=True)
    z = torch.zeros(1, T, 2)
    z[0, : int(fired * T), 0] = 1
    ops = torch.zeros(1, T, 2, dtype=torch.long)                # every step computed (UPDATE)
    rate_loss(pre, z, ops, [0.2]).backward()
    assert torch.all(-pre.grad * direction > 0)                 # descent moves z~ the right way


def test_rate_loss_is_smallest_at_the_target():
    T = 100
    ops = torch.zeros(1, T, 2, dtype=torch.long)
    def loss_at(rate):
        z = torch.zeros(1, T, 2)
        z[0, : int(rate * T), 0] = 1
        p = torch.logit(torch.tensor(rate).clamp(1e-3, 1 - 1e-3))
        return float(rate_loss(torch.full((1, T, 1), float(p)), z, ops, [0.2]))
    assert loss_at(0.2) < min(loss_at(0.05), loss_at(0.5), loss_at(0.9))


def test_default_targets_fall_with_depth():
    t = DetectorDefaults().targets(4)
    assert len(t) == 3 and all(0.02 < r < 0.6 for r in t[:2]) and t == sorted(t, reverse=True)


def test_rate_leak_keeps_the_value_and_gives_a_saturated_detector_a_gradient():
    pre = torch.full((1, 50, 1), -30.0, requires_grad=True)      # far outside the window: sigm' ~ 1e-13
    z, ops = torch.zeros(1, 50, 2), torch.zeros(1, 50, 2, dtype=torch.long)
    plain = rate_loss(pre, z, ops, [0.2])
    plain.backward()
    assert float(pre.grad.abs().max()) < 1e-12
    pre.grad = None
    leaky = rate_loss(pre, z, ops, [0.2], leak=0.01)
    leaky.backward()
    assert float(leaky.detach()) == float(plain.detach())
    assert torch.all(-pre.grad > 1e-5)                          # descent raises z~ toward firing


def test_threshold_offsets_put_the_target_share_of_steps_above_the_threshold():
    pre = torch.arange(100, dtype=torch.float32).reshape(1, 100, 1) - 90.0   # -90 .. 9
    ops = torch.zeros(1, 100, 2, dtype=torch.long)
    q = threshold_offsets(pre, ops, [0.2])
    assert int((pre > q[0]).sum()) == 20                        # 20 % of all steps would fire
    assert -11 < float(q[0]) < -10                              # between the 20th and 21st largest


def test_threshold_offsets_count_padding_out_and_skip_a_layer_that_computed_nothing():
    pre = torch.arange(20, dtype=torch.float32).reshape(1, 20, 1)
    ops = torch.full((1, 20, 2), COPY, dtype=torch.long)
    assert torch.isnan(threshold_offsets(pre, ops, [0.2])[0])   # all COPY: no evidence
    ops[:] = 0
    mask = torch.zeros(1, 20)
    mask[0, :10] = 1                                            # only the first 10 steps are real
    q = threshold_offsets(pre, ops, [0.2], mask)
    assert int((pre[0, :10, 0] > q[0]).sum()) == 2


def test_threshold_offsets_never_ask_a_layer_to_fire_at_more_than_half_its_computed_steps():
    pre = torch.arange(100, dtype=torch.float32).reshape(1, 100, 1)
    ops = torch.full((1, 100, 2), COPY, dtype=torch.long)
    ops[0, :10, 0] = 0                                          # the layer computed 10 of 100 steps
    q = threshold_offsets(pre, ops, [0.2])                      # 20 of all steps is impossible
    assert int((pre[0, :10, 0] > q[0]).sum()) == 5


def test_threshold_offsets_leave_a_detector_inside_its_band_alone_and_move_it_to_the_nearer_edge():
    ops = torch.zeros(1, 100, 2, dtype=torch.long)
    fires = lambda n: torch.cat([torch.full((n,), 1.0), torch.full((100 - n,), -1.0)]).reshape(1, 100, 1)
    assert float(threshold_offsets(fires(30), ops, [0.2], band=2)[0]) == 0.0     # 30 % is in [10 %, 40 %]
    pre = torch.arange(100, dtype=torch.float32).reshape(1, 100, 1) - 49.5     # half of the steps fire
    q = threshold_offsets(pre, ops, [0.2], band=2)
    assert int((pre > q[0]).sum()) == 40                                       # down to the upper edge
    q = threshold_offsets(pre - 45.0, ops, [0.2], band=2)                      # 5 % fire
    assert int((pre - 45.0 > q[0]).sum()) == 10                                # up to the lower edge


def test_rate_control_moves_only_the_boundary_bias():
    model = small()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    RateControl(model.rnn, 0.5).after(torch.tensor([2.0, float("nan")]))    # layer 2: no evidence, no move
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed == ["rnn.layers.0.bias"]
    bias = model.rnn.layers[0].bias.detach()
    assert float(bias[24]) == pytest.approx(float(before["rnn.layers.0.bias"][24]) - 1.0)   # b_z -= gain * q
    assert torch.equal(bias[:24], before["rnn.layers.0.bias"][:24])


def test_rate_control_step_limit_doubles_while_the_sign_holds_and_halves_when_it_flips():
    model = small()
    control = RateControl(model.rnn, 1.0)
    bias = model.rnn.layers[0].bias
    moves = []
    for q in (50.0, 50.0, 50.0, -50.0, 0.1):
        before = float(bias[24].detach())
        control.after(torch.tensor([q, float("nan")]))
        moves.append(round(float(bias[24].detach()) - before, 6))
    assert moves == [-1.0, -2.0, -4.0, 2.0, -0.1]              # limits 1, 2, 4, then 2 after the flip


def fire_rates(model, x) -> torch.Tensor:
    pre = []
    _, _, z = model(x, model.initial_state(x.shape[0]), pre_z=pre)
    return z[..., :-1].float().mean((0, 1)), pre[0], z


def test_rate_control_brings_a_dead_detector_back():
    model = small(layer_norm=False)
    x = torch.randint(0, 20, (8, 50))
    with torch.no_grad():
        model.rnn.layers[0].bias[24] = -40.0                    # layer 1 never fires, so layer 2 never computes
        fired, pre, z = fire_rates(model, x)
        assert float(fired[0]) == 0.0
        control = RateControl(model.rnn, 1.0)
        for _ in range(12):
            fired, pre, z = fire_rates(model, x)
            control.after(threshold_offsets(pre, operations(z, torch.zeros(8, 3)), [0.2, 0.05]))
        fired, _, _ = fire_rates(model, x)
    assert 0.1 <= float(fired[0]) <= 0.3 and 0.0 < float(fired[1]) <= 0.2


def test_boundary_grad_scales_the_straight_through_gradient_and_leaves_the_forward_alone():
    x = torch.randint(0, 20, (2, 9))
    grads, outs = {}, {}
    for scale in (1.0, 0.5, 0.0):
        model = small(ln_terms=False)
        model.rnn.set_ste(scale)
        logits, _, z = model(x, model.initial_state(2))
        logits.logsumexp(-1).sum().backward()
        outs[scale] = (logits.detach(), z)
        # the boundary rows reach the loss only through z, i.e. only through the straight-through gradient
        grads[scale] = torch.cat([p.grad[r].flatten() for p, r in boundary_rows(model.rnn)[1]])
    assert torch.equal(outs[0.5][0], outs[1.0][0]) and torch.equal(outs[0.0][1], outs[1.0][1])
    assert grads[1.0].abs().sum() > 0
    assert grads[0.5].abs().sum() > 0 and not torch.allclose(grads[0.5], grads[1.0])
    assert torch.count_nonzero(grads[0.0]) == 0


def test_boundary_rows_move_at_the_scaled_learning_rate():
    model = small()
    rows = BoundaryRowsLR(model.rnn, 0.1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    weight = model.rnn.layers[0].rec.weight
    before = weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    rows.before()
    opt.step()
    rows.after()
    assert torch.allclose(weight[24] - before[24], torch.full((6,), -0.1))      # the boundary row
    assert torch.allclose(weight[:24] - before[:24], torch.full((24, 6), -1.0))  # the gate rows


def test_group_grad_norms_keep_the_boundary_rows_apart():
    model = small()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for p, r in boundary_rows(model.rnn)[1]:
        p.grad[r] = 1.0
    norms = group_grad_norms(model.rnn, model)
    assert set(norms) == {"L1.gates", "L1.boundary", "L2.gates", "L2.boundary", "L3.gates", "other"}
    n_rows = sum(p[r].numel() for p, r in boundary_rows(model.rnn)[1])
    assert norms["L2.boundary"] == pytest.approx(n_rows ** 0.5)
    assert norms["L2.gates"] == pytest.approx(0.0, abs=1e-6) and norms["L1.boundary"] == 0.0


def test_metrics_show_detector_rates_window_and_gradient_groups_from_step_1(tmp_path, text_file):
    train(tiny(text_file, tmp_path / "run", hidden=[16, 16, 16]), quiet=True)
    first = train_records(tmp_path / "run")[0]
    assert first["step"] == 1
    assert len(first["fire"]) == 2 and len(first["window"]) == 2
    assert all(0 <= v <= 1 for v in first["fire"] + first["window"])
    assert {"L1.boundary", "L1.gates", "other"} <= first["grad_groups"].keys()
    assert first["grad_norm_max"] >= first["grad_norm"]


def test_a_new_run_records_the_rate_band_of_its_task():
    from hmgen.handwriting.train import HandwritingTask
    band = lambda task, **options: TrainConfig(data="x", **options).with_defaults(task.detector_defaults).detectors.rate_band
    assert TrainConfig(data="corpus.txt").detectors.rate_band is None        # left to the task
    assert band(TextTask) == 2.0                                              # text: rates free inside the band
    assert band(HandwritingTask) == 1.0                                       # handwriting: held at the target
    assert band(TextTask, rate_band=1) == 1.0                                 # an explicit band wins


def test_a_run_saved_before_the_detector_options_resumes_with_its_old_cell(tmp_path, text_file):
    out = tmp_path / "run"
    train(tiny(text_file, out, steps=2, **OLD_RUN_DEFAULTS), quiet=True)
    meta_path = out / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    for key in OLD_RUN_DEFAULTS:                                # what an older hmgen wrote
        del meta["config"][key]
    meta_path.write_text(json.dumps(meta))
    cfg = TrainConfig.from_dict({**read_run_config(out), "steps": 3})          # as `hmgen train --resume` does
    assert train(cfg, resume=True, quiet=True)["step"] == 3
    resumed = json.loads(meta_path.read_text())["config"]
    assert {k: resumed[k] for k in OLD_RUN_DEFAULTS} == OLD_RUN_DEFAULTS
