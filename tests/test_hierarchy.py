"""Specification of what keeps the boundary detectors alive (issue 14): the model options, the rate
regulariser, the boundary rows' learning rate, and the detector figures in metrics.jsonl."""
from __future__ import annotations

import json

import pytest
import torch

from hmgen.cell.reference import CharLM, ModelConfig, operations
from hmgen.training.boundary import (BoundaryRowsLR, boundary_rows, default_rate_targets, group_grad_norms,
                                     rate_loss)
from tests.test_train import english, text_file, tiny, train_records, write_ptb  # noqa: F401 (fixture)
from hmgen.training.checkpoint import read_run_config
from hmgen.training.config import OLD_RUN_DEFAULTS, TrainConfig
from hmgen.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


def small(**options) -> CharLM:
    torch.manual_seed(0)
    return CharLM(ModelConfig(20, embed_dim=8, hidden=[6, 5, 4], out_embed=8, **options))


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
    t = default_rate_targets(4)
    assert len(t) == 3 and all(0.02 < r < 0.6 for r in t[:2]) and t == sorted(t, reverse=True)


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
    norms = group_grad_norms(model)
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
