"""Specification of the trainer (hmgen.training.loop), its run folder and `hmgen train`.

Every run here is tiny (two layers of 16 units, batch 4, 10 steps of BPTT, a handful of updates) so the
whole file runs in seconds on a busy CPU. Data is generated in the test: English-like sentences as a
byte-level text file, or the same text in Mikolov's char-PTB format.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file
from typer.testing import CliRunner

from hmgen.cli import app
from hmgen.modelio import load_model
from hmgen.errors import UsageError
from hmgen.training.checkpoint import RunError
from hmgen.training.config import OPTIONS, TrainConfig
from hmgen.cli.train import task_for
from hmgen.training.loop import Interrupted, slope
from hmgen.training.loop import train as loop_train

def train(cfg: TrainConfig, **kw) -> dict:
    """The loop on the task of the run's corpus, as `hmgen train` chooses it."""
    return loop_train(cfg, task_for(cfg.run.data), **kw)


BIN = Path(sys.executable).parent          # the virtualenv's bin/: python, torchrun, hmgen
TIMING = {"symbols_per_s", "seconds", "train_seconds"}


# ----------------------------------------------------------------------------- data and runs

def english(n_chars: int, seed: int = 0) -> str:
    """English-like sentences from a small grammar, one to three per line."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the old man", "my sister", "the bird", "a child"]
    verbs = ["sat on", "looked at", "ran to", "walked past", "sang near", "slept under"]
    objects = ["the mat", "a red barn", "the green hill", "the river", "a small house", "the tree"]
    lines, n = [], 0
    while n < n_chars:
        line = " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}."
                        for _ in range(rng.randint(1, 3)))
        lines.append(line)
        n += len(line) + 1
    return "\n".join(lines) + "\n"


def write_ptb(folder: Path, texts: dict[str, str]) -> str:
    """Mikolov's char-PTB files: symbols separated by spaces, `_` between words, lines ending "\\n "."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        lines = text.strip("\n").split("\n")
        body = "".join(" ".join("_" if c == " " else c for c in line) + "\n " for line in lines)
        (folder / f"ptb.char.{split}.txt").write_text(body)
    return f"ptb:{folder}"


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(english(4000))
    return path


def tiny(data, out, **options) -> TrainConfig:
    """A run small enough for a test."""
    base = dict(data=str(data), out=str(out), hidden=[16, 16], embed_dim=8, out_embed=16, batch_size=4,
                seq_len=10, steps=6, eval_every=3, eval_symbols=300, ckpt_every=1000, log_every=1,
                threads=1, device="cpu")
    return TrainConfig(**{**base, **options})


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def train_records(out) -> list[dict]:
    return [r for r in metrics(out) if "loss" in r]


def valid_records(out) -> list[dict]:
    return [r for r in metrics(out) if "valid_bpc" in r]


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def checkpoint_tensors(out) -> dict[str, torch.Tensor]:
    return load_file(str(Path(out) / "checkpoint.safetensors"))


def checkpoint_meta(out) -> dict:
    return json.loads((Path(out) / "checkpoint.json").read_text())


def one_line_error(text: str) -> bool:
    lines = text.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("hmgen: ") and "Traceback" not in text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[TrainConfig, Path]:
    """One ordinary 6-step run with two evaluations, shared by the tests that only read its folder."""
    root = tmp_path_factory.mktemp("finished")
    data = root / "corpus.txt"
    data.write_text(english(4000))
    cfg = tiny(data, root / "run", name="tiny-english")
    train(cfg, quiet=True)
    return cfg, root / "run"


# ----------------------------------------------------------------------------- exact resume

def test_resume_continues_exactly(tmp_path, text_file):
    # The validation text (digits) is never seen in training, so validation BPC does not improve and the
    # plateau schedule (patience 1) divides the LR at step 6: only if the scheduler's count of bad
    # evaluations (1 at step 4) survives the checkpoint does the resumed run decay at the same step.
    valid = tmp_path / "digits.txt"
    valid.write_text("0123456789 " * 40)
    opts = dict(valid=str(valid), steps=8, eval_every=2, patience=1, lr_divide=2.0, lr=0.03)
    whole = tiny(text_file, tmp_path / "whole", **opts)
    train(whole, quiet=True)

    halves = tiny(text_file, tmp_path / "halves", **{**opts, "steps": 4})
    assert train(halves, quiet=True)["step"] == 4
    summary = train(tiny(text_file, tmp_path / "halves", **opts), resume=True, quiet=True)
    assert summary["step"] == 8

    a, b = checkpoint_tensors(tmp_path / "whole"), checkpoint_tensors(tmp_path / "halves")
    assert a.keys() == b.keys()
    for key in a:                                   # weights, Adam moments and steps, carried state, RNG
        assert torch.equal(a[key], b[key]), key
    ma, mb = checkpoint_meta(tmp_path / "whole"), checkpoint_meta(tmp_path / "halves")
    for key in ("step", "best_valid_bpc", "lr_decays", "param_groups", "scheduler"):
        assert ma[key] == mb[key], key

    later = lambda out: [without_timing(r) for r in metrics(out) if r.get("step", 0) > 4 and "event" not in r]
    assert later(tmp_path / "halves") == later(tmp_path / "whole")
    assert len([r for r in later(tmp_path / "whole") if "loss" in r]) == 4
    lr = {r["step"]: r["lr"] for r in valid_records(tmp_path / "halves")}
    assert lr[4] == 0.03 and lr[6] == 0.015, "the schedule must act after the resume for this test to mean anything"


# ----------------------------------------------------------------------------- the run folder

def test_checkpoint_holds_no_pickle(finished_run, tmp_path, monkeypatch):
    cfg, out = finished_run
    files = sorted(p.name for p in out.iterdir())
    assert files == ["best.json", "best.safetensors", "checkpoint.json", "checkpoint.safetensors", "metrics.jsonl"]
    for p in out.glob("*.safetensors"):
        assert load_numpy(str(p))                   # plain tensors, readable without torch
    for p in out.glob("*.json"):
        json.loads(p.read_text())

    def no_unpickling(*args, **kwargs):
        raise AssertionError("unpickling while loading a run")
    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, no_unpickling)
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    assert train(tiny(cfg.run.data, copy, steps=7), resume=True, quiet=True)["step"] == 7
    load_model(copy / "best")


def test_metrics_log_is_json_lines(finished_run):
    cfg, out = finished_run

    def not_json(constant):
        raise ValueError(f"{constant} is not JSON")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=not_json) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    assert records[0]["event"] == "start" and records[-1]["event"] == "stop"

    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == list(range(1, cfg.run.steps + 1))
    for r in logged:
        assert {"step", "loss", "bpc", "symbols_per_s", "layers"} <= r.keys()
        assert r["bpc"] == pytest.approx(r["loss"] / math.log(2), abs=1e-3)
        assert r["symbols_per_s"] > 0
        assert len(r["layers"]) == len(cfg.model.hidden)
        for layer in r["layers"]:
            assert layer.keys() == {"update", "copy", "flush"}
            assert all(0 <= v <= 1 for v in layer.values())
            assert sum(layer.values()) == pytest.approx(1, abs=1e-3)


def test_best_model_is_a_loadable_model_file(finished_run):
    cfg, out = finished_run
    loaded = load_model(out / "best")
    assert loaded.name == "tiny-english"
    assert loaded.model.cfg.hidden == [16, 16]
    figures, training = loaded.meta["figures"], loaded.meta["training"]
    assert figures["valid_bpc"] == min(r["valid_bpc"] for r in valid_records(out))
    assert figures["valid_bpc"] == pytest.approx(checkpoint_meta(out)["best_valid_bpc"], abs=1e-4)
    assert training["data"] == cfg.run.data
    assert training["config"]["hidden"] == [16, 16] and training["config"]["steps"] == cfg.run.steps
    ids = torch.from_numpy(loaded.vocab.encode("the cat sat").astype("int64"))[None]
    logits, _, _ = loaded.model(ids, loaded.model.initial_state(1))
    assert logits.shape == (1, len("the cat sat"), 256)


# ----------------------------------------------------------------------------- learning

def test_training_lowers_validation_bpc(tmp_path):
    text = english(6000, seed=1)
    data = write_ptb(tmp_path / "ptb", {"train": text[:5000], "valid": text[5000:], "test": text[5000:]})
    train(tiny(data, tmp_path / "run", steps=40, eval_every=10, log_every=10, lr=0.01), quiet=True)
    bpc = [r["valid_bpc"] for r in valid_records(tmp_path / "run")]
    assert len(bpc) == 4
    assert bpc[-1] < bpc[0] - 0.3, bpc


def test_lstm_baseline_trains(tmp_path, text_file):
    out = tmp_path / "run"
    summary = train(tiny(text_file, out, arch="lstm", hidden=[16, 16, 16]), quiet=True)
    assert summary["step"] == 6
    assert all(math.isfinite(r["loss"]) for r in train_records(out))
    assert all(math.isfinite(r["valid_bpc"]) for r in valid_records(out))
    assert load_model(out / "best").model.cfg.arch == "lstm"


def test_lstm_baseline_updates_every_layer_at_every_step(tmp_path, text_file):
    out = tmp_path / "run"
    train(tiny(text_file, out, arch="lstm", hidden=[16, 16, 16]), quiet=True)
    layer_rates = [r["layers"] for r in train_records(out)] + [r["valid_layers"] for r in valid_records(out)]
    assert len(layer_rates) == 6 + 2
    for layers in layer_rates:
        assert [layer["update"] for layer in layers] == [1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- slope annealing

def test_slope_is_linear_in_epochs_up_to_its_cap():
    cfg = TrainConfig(data="x", slope_start=1.0, slope_rate=0.04, slope_max=5.0)
    assert slope(cfg, 0) == 1.0
    assert slope(cfg, 25) == pytest.approx(2.0)
    assert slope(cfg, 0.5) == pytest.approx(1.02)
    assert slope(cfg, 100) == pytest.approx(5.0)
    assert slope(cfg, 1000) == 5.0


def test_slope_in_metrics_grows_over_the_epochs(tmp_path):
    # 3 batches per epoch (4 streams x 31 symbols, segments of 10), so 9 steps are 3 epochs.
    text = english(200, seed=2)[:125]
    data = write_ptb(tmp_path / "ptb", {"train": text, "valid": english(300, seed=3), "test": "the cat\n"})
    cfg = tiny(data, tmp_path / "run", steps=9, slope_rate=1.0, slope_max=2.5, eval_every=100)
    train(cfg, quiet=True)
    records = train_records(tmp_path / "run")
    assert [r["epoch"] for r in records][::3] == [0, 1, 2]
    # step k (from 0) is epoch k/3, counted fractionally; slope 1 + epoch, capped at 2.5
    assert [r["slope"] for r in records] == [1.0, 1.3333, 1.6667, 2.0, 2.3333, 2.5, 2.5, 2.5, 2.5]


# ----------------------------------------------------------------------------- stopping

def test_time_limit_stops_with_a_checkpoint(tmp_path, text_file):
    out = tmp_path / "run"
    summary = train(tiny(text_file, out, steps=None, time_limit=1.0, eval_every=10**6), quiet=True)
    assert summary["stop"] == "time limit"
    assert summary["step"] > 0
    assert checkpoint_meta(out)["step"] == summary["step"]
    assert metrics(out)[-1]["event"] == "stop" and metrics(out)[-1]["stop"] == "time limit"
    more = train(tiny(text_file, out, steps=summary["step"] + 2), resume=True, quiet=True)
    assert (more["step"], more["stop"]) == (summary["step"] + 2, "steps")


# ----------------------------------------------------------------------------- never losing a run

def run_files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(out).iterdir())}


def test_a_new_run_refuses_a_folder_that_holds_a_run(finished_run, text_file):
    cfg, out = finished_run
    before = run_files(out)
    with pytest.raises(RunError) as e:
        train(tiny(text_file, out, steps=2), quiet=True)
    assert "--resume" in str(e.value) and "--force" in str(e.value) and str(out) in str(e.value)
    assert run_files(out) == before


def test_force_starts_the_run_over(tmp_path, text_file):
    out = tmp_path / "run"
    train(tiny(text_file, out), quiet=True)
    summary = train(tiny(text_file, out, steps=2, eval_every=1000), force=True, quiet=True)
    assert summary["step"] == 2 and checkpoint_meta(out)["step"] == 2
    assert [r["event"] for r in metrics(out) if "event" in r] == ["start", "stop"]
    assert [r["step"] for r in train_records(out)] == [1, 2]
    assert load_model(out / "best").meta["figures"]["step"] == 2      # the old run's best model is gone too


@pytest.mark.slow          # a real process, signalled once it has logged a few steps (~13 s on a busy machine)
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_training_with_a_checkpoint_and_says_how_to_continue(tmp_path, text_file, signum, status):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmgen", "train", str(text_file), "-o", str(out), "--steps", "100000",
         "--ckpt-every", "100000", "--eval-every", "100000", "--log-every", "1", *SMALL],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    logged = lambda: (out / "metrics.jsonl").read_text().count('"loss"') if (out / "metrics.jsonl").exists() else 0
    deadline = time.time() + 120
    while logged() < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr
    step = checkpoint_meta(out)["step"]                 # no checkpoint was due: the signal wrote this one
    assert step >= 3 and one_line_error(stderr) and stdout == ""
    assert f"{signal.Signals(signum).name} at step {step}" in stderr and f"--resume --out {out}" in stderr
    assert metrics(out)[-1] == {**metrics(out)[-1], "event": "stop", "step": step, "stop": signal.Signals(signum).name}
    assert train(tiny(text_file, out, steps=step + 1, eval_every=100000, ckpt_every=100000, log_every=1),
                 resume=True, quiet=True)["step"] == step + 1


def signalled_at(monkeypatch, task_class, step: int, signum=signal.SIGINT):
    """Deliver `signum` to this process while the task computes the loss of `step` (from 0)."""
    real = task_class.loss

    def loss(self, net, at, a):
        if at == step:
            os.kill(os.getpid(), signum)
        return real(self, net, at, a)
    monkeypatch.setattr(task_class, "loss", loss)


def test_resume_reads_the_step_written_with_the_tensors_not_a_stale_json_copy(tmp_path, text_file):
    # A stop between the two writes of a checkpoint leaves new tensors beside the previous checkpoint.json.
    whole = tiny(text_file, tmp_path / "whole", steps=6)
    train(whole, quiet=True)
    train(tiny(text_file, tmp_path / "halves", steps=2), quiet=True)
    stale = (tmp_path / "halves" / "checkpoint.json").read_text()
    train(tiny(text_file, tmp_path / "halves", steps=4), resume=True, quiet=True)
    (tmp_path / "halves" / "checkpoint.json").write_text(stale)          # as if stopped before the JSON was written
    assert train(tiny(text_file, tmp_path / "halves", steps=6), resume=True, quiet=True)["step"] == 6
    a, b = checkpoint_tensors(tmp_path / "whole"), checkpoint_tensors(tmp_path / "halves")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert checkpoint_meta(tmp_path / "halves")["step"] == 6


@pytest.mark.parametrize("task", ["text", "handwriting"])
def test_a_run_stopped_by_a_signal_resumes_exactly(tmp_path, text_file, monkeypatch, task):
    """The stop waits for a step boundary (for handwriting: the end of a batch of lines), so the resumed
    run's weights are those of a run never stopped."""
    if task == "text":
        from hmgen.text.train import TextTask as Task
        run = lambda out: tiny(text_file, out, steps=8, eval_every=100, ckpt_every=100)
    else:
        from hmgen.handwriting.train import HandwritingTask as Task
        from tests.test_handwriting import write_iam
        iam = write_iam(tmp_path / "iam")
        run = lambda out: TrainConfig(data=f"iam:{iam}", out=str(out), hidden=[8, 8], mixtures=3, window=2,
                                      batch_size=2, seq_len=16, epochs=2, eval_every=100, ckpt_every=100,
                                      threads=1, device="cpu")
    train(run(tmp_path / "whole"), quiet=True)
    with monkeypatch.context() as m:
        signalled_at(m, Task, 2)
        with pytest.raises(Interrupted) as e:
            train(run(tmp_path / "halves"), quiet=True)
    stopped = checkpoint_meta(tmp_path / "halves")["step"]
    assert e.value.exit_code == 130 and f"SIGINT at step {stopped}" in str(e.value)
    assert stopped == 3 if task == "text" else stopped >= 3
    train(run(tmp_path / "halves"), resume=True, quiet=True)
    a, b = checkpoint_tensors(tmp_path / "whole"), checkpoint_tensors(tmp_path / "halves")
    assert checkpoint_meta(tmp_path / "whole")["step"] == checkpoint_meta(tmp_path / "halves")["step"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "optim.")))


# ----------------------------------------------------------------------------- resume: what may change

@pytest.mark.parametrize("option, value", [("hidden", [16, 16, 16]), ("lr", 0.01), ("arch", "lstm"),
                                           ("batch_size", 8), ("seed", 9)])
def test_resume_refuses_a_changed_model_or_data_option(finished_run, tmp_path, option, value):
    cfg, out = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    with pytest.raises(UsageError) as e:
        train(tiny(cfg.run.data, copy, steps=8, name=cfg.run.name, **{option: value}), resume=True, quiet=True)
    message = str(e.value)
    flag = "--" + option.replace("_", "-")
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, list) else str(v)
    assert message.count(flag) == 2 and shown(value) in message and shown(cfg.to_dict()[option]) in message
    assert run_files(copy) == run_files(out)


def test_resume_refuses_other_data(finished_run, tmp_path):
    cfg, out = finished_run
    other = tmp_path / "other.txt"
    other.write_text(english(4000, seed=5))
    shutil.copytree(out, tmp_path / "run")
    with pytest.raises(UsageError, match="--data"):
        train(tiny(other, tmp_path / "run", steps=8), resume=True, quiet=True)


def test_resume_records_the_options_it_changed(finished_run, tmp_path):
    cfg, out = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    train(tiny(cfg.run.data, copy, steps=8, eval_every=4, lr_divide=10.0, name=cfg.run.name), resume=True,
          command="hmgen train --resume", quiet=True)
    event = [r for r in metrics(copy) if r.get("event") == "resume"][-1]
    assert event["changed"] == {"steps": [6, 8], "eval_every": [3, 4], "lr_divide": [50.0, 10.0]}
    meta = checkpoint_meta(copy)
    assert meta["config"]["steps"] == 8 and meta["config"]["eval_every"] == 4
    assert meta["scheduler"]["factor"] == pytest.approx(0.1)                  # applied, not only recorded
    assert meta["history"][-1] == {"step": 6, "command": "hmgen train --resume", "changed": event["changed"]}
    assert [r["step"] for r in valid_records(copy)][-1] == 8


# ----------------------------------------------------------------------------- options, declared once

def test_config_values_take_the_flags_syntax():
    assert TrainConfig.from_dict({"data": "x", "hidden": "16,16", "batch-size": "4", "lr": "0.01"}).model.hidden == [16, 16]
    assert TrainConfig.from_dict({"data": "x", "hidden": [16, 16], "layer_norm": "false"}).model.layer_norm is False


@pytest.mark.parametrize("options, named", [
    ({"hidden": "16,,16"}, "hidden"), ({"steps": 0}, "steps"), ({"steps": -3}, "steps"),
    ({"batch_size": 0}, "batch_size"), ({"lr": -1}, "lr"), ({"lr": "fast"}, "lr"), ({"hidden": True}, "hidden"),
    ({"steps": 2.5}, "steps"), ({"arch": "gru"}, "arch"), ({"seq_len": [10]}, "seq_len"),
])
def test_bad_option_values_are_one_line_usage_errors_naming_the_key(options, named):
    with pytest.raises(UsageError) as e:
        TrainConfig.from_dict({"data": "x", **options}, "run.toml")
    assert str(e.value).startswith(f"run.toml: {named}:") and "\n" not in str(e.value)
    with pytest.raises(UsageError):                                              # the Python API checks too
        TrainConfig(data="x", **options)


def test_an_unknown_option_is_refused_naming_the_nearest_one():
    with pytest.raises(UsageError, match=r"unknown option 'hiden' \(did you mean 'hidden'\?\)"):
        TrainConfig.from_dict({"data": "x", "hiden": "16"}, "run.toml")


# ----------------------------------------------------------------------------- warm start (--init)

def test_init_starts_from_a_model_files_weights_with_a_fresh_optimiser(finished_run, tmp_path):
    cfg, out = finished_run
    new = tmp_path / "warm"
    train(tiny(cfg.run.data, new, time_limit=0), init=str(out / "best"), quiet=True)   # stops before step 1
    weights = load_file(str(out / "best.safetensors"))
    tensors = checkpoint_tensors(new)
    assert weights and all(torch.equal(tensors[f"model.{k}"], v) for k, v in weights.items())
    assert not any(k.startswith("optim.") for k in tensors)                   # no Adam moments yet
    assert metrics(new)[0]["init"] == str(out / "best")


def test_init_refuses_a_model_of_another_architecture(finished_run, tmp_path):
    cfg, out = finished_run
    with pytest.raises(UsageError, match=r"--init .*hidden"):
        train(tiny(cfg.run.data, tmp_path / "warm", hidden=[16, 16, 16]), init=str(out / "best"), quiet=True)
    assert not (tmp_path / "warm").exists()


# ----------------------------------------------------------------------------- handwriting through the same loop

def test_handwriting_refuses_fast_and_several_processes_before_loading_anything(tmp_path):
    from hmgen.handwriting.train import HandwritingTask
    cfg = TrainConfig(data=f"iam:{tmp_path / 'nowhere'}", out=str(tmp_path / "run"), fast=True)
    with pytest.raises(UsageError, match="--fast"):
        train(cfg, quiet=True)
    with pytest.raises(UsageError, match="one process"):
        HandwritingTask(TrainConfig(data=cfg.run.data), "cpu", rank=1, world=2)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- the command line

runner = CliRunner()
SMALL = ["--hidden", "16,16", "--embed-dim", "8", "--out-embed", "16", "-b", "4", "--seq-len", "10",
         "--eval-symbols", "300", "--threads", "1", "--device", "cpu", "-q"]


def test_cli_train_without_data_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert one_line_error(result.stderr) and "data" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_train_with_a_missing_data_path_fails_in_one_line(tmp_path):
    missing = tmp_path / "nowhere.txt"
    result = runner.invoke(app, ["train", str(missing), "--out", str(tmp_path / "run"), "--steps", "1"])
    assert result.exit_code == 1
    assert one_line_error(result.stderr) and str(missing) in result.stderr


def test_cli_resume_without_a_checkpoint_fails_in_one_line(tmp_path):
    result = runner.invoke(app, ["train", "--resume", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert one_line_error(result.stderr) and "checkpoint" in result.stderr


def test_cli_errors_are_one_line_without_traceback_from_the_real_command(tmp_path):
    proc = subprocess.run([str(BIN / "hmgen"), "train", str(tmp_path / "nowhere.txt"), "-o", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert one_line_error(proc.stderr) and proc.stdout == ""


def test_cli_config_file_sets_options_and_flags_override_it(tmp_path, text_file):
    out = tmp_path / "run"
    (tmp_path / "run.toml").write_text(
        f'data = "{text_file}"\nout = "{out}"\nhidden = [16, 16]\nembed-dim = 8\nout_embed = 16\n'
        f'batch-size = 4\nseq-len = 10\nsteps = 50\neval-every = 2\neval-symbols = 300\nthreads = 1\n'
        f'device = "cpu"\nseed = 5\n')
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "run.toml"), "--steps", "2", "--seed", "7", "-q"])
    assert result.exit_code == 0, result.stderr
    config = json.loads((out / "best.json").read_text())["training"]["config"]
    assert config["steps"] == 2 and config["seed"] == 7                          # flags win
    assert config["hidden"] == [16, 16] and config["batch_size"] == 4 and config["embed_dim"] == 8
    assert config["out_embed"] == 16 and config["eval_every"] == 2                # from the file
    assert checkpoint_meta(out)["step"] == 2


def test_cli_resume_keeps_the_runs_step_target(tmp_path, text_file):
    # The first invocation stops at once (time limit 0) with a checkpoint at step 0 of a 4-step run.
    # `--resume` without --steps must go on to step 4; the time limit only keeps a wrong run short.
    out = tmp_path / "run"
    first = runner.invoke(app, ["train", str(text_file), "-o", str(out), "--steps", "4", "--time-limit", "0", *SMALL])
    assert first.exit_code == 0, first.stderr
    assert checkpoint_meta(out)["step"] == 0
    again = runner.invoke(app, ["train", "--resume", "-o", str(out), "--time-limit", "2", "--json"])
    assert again.exit_code == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["step"], summary["stop"]) == (4, "steps")


def test_cli_refuses_to_train_over_a_run_and_force_starts_it_over(tmp_path, text_file):
    out = tmp_path / "run1"
    first = runner.invoke(app, ["train", str(text_file), "--steps", "3", "--out", str(out), *SMALL])
    assert first.exit_code == 0, first.stderr
    before = run_files(out)
    again = runner.invoke(app, ["train", str(text_file), "--steps", "2", "--out", str(out), *SMALL])
    assert again.exit_code == 1 and one_line_error(again.stderr)
    assert "--resume" in again.stderr and "--force" in again.stderr
    assert run_files(out) == before
    forced = runner.invoke(app, ["train", str(text_file), "--steps", "2", "--out", str(out), "--force", *SMALL])
    assert forced.exit_code == 0, forced.stderr
    assert checkpoint_meta(out)["step"] == 2 and metrics(out)[0]["event"] == "start"


def test_cli_resume_refuses_changed_model_options_and_data(tmp_path, text_file):
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", str(text_file), "--steps", "2", "--out", str(out), *SMALL]).exit_code == 0
    before = run_files(out)
    changed = runner.invoke(app, ["train", "--resume", "--out", str(out), "--hidden", "32,32", "--steps", "4"])
    assert changed.exit_code == 2 and one_line_error(changed.stderr)
    assert "--hidden 32,32" in changed.stderr and "--hidden 16,16" in changed.stderr
    other = tmp_path / "other.txt"
    other.write_text(english(3000, seed=9))
    moved = runner.invoke(app, ["train", str(other), "--resume", "--out", str(out), "--steps", "4"])
    assert moved.exit_code == 2 and one_line_error(moved.stderr) and str(other) in moved.stderr
    assert run_files(out) == before
    same = runner.invoke(app, ["train", str(text_file), "--resume", "--out", str(out), "--steps", "4", "-q"])
    assert same.exit_code == 0, same.stderr
    assert checkpoint_meta(out)["step"] == 4 and checkpoint_meta(out)["config"]["steps"] == 4


@pytest.mark.parametrize("args", [["-b", "0"], ["--lr", "-1"], ["--hidden", "16,,16"], ["--steps", "0"],
                                  ["--steps", "-3"], ["--seq-len", "0"], ["--arch", "gru"]])
def test_cli_bad_option_values_are_one_line_usage_errors(tmp_path, text_file, args):
    result = runner.invoke(app, ["train", str(text_file), "--out", str(tmp_path / "run"), *SMALL, *args])
    assert result.exit_code == 2 and one_line_error(result.stderr), result.stderr
    assert args[0] in result.stderr or args[0] == "-b" and "--batch-size" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("line, named", [('hidden = true', "hidden"), ('lr = "fast"', "lr"),
                                         ('hiden = "16,16"', "did you mean 'hidden'")])
def test_cli_config_file_errors_name_the_key(tmp_path, text_file, line, named):
    (tmp_path / "run.toml").write_text(line + "\n")
    result = runner.invoke(app, ["train", str(text_file), "--config", str(tmp_path / "run.toml"), "-q"])
    assert result.exit_code == 2 and one_line_error(result.stderr)
    assert str(tmp_path / "run.toml") in result.stderr and named in result.stderr


def test_cli_config_file_takes_the_flags_syntax(tmp_path, text_file):
    out = tmp_path / "run"
    (tmp_path / "run.toml").write_text(f'hidden = "16,16"\nembed-dim = 8\nout-embed = 16\nbatch-size = 4\n'
                                       f'seq-len = 10\nsteps = 2\nthreads = 1\ndevice = "cpu"\n')
    result = runner.invoke(app, ["train", str(text_file), "-o", str(out), "--config", str(tmp_path / "run.toml"), "-q"])
    assert result.exit_code == 0, result.stderr
    assert checkpoint_meta(out)["config"]["hidden"] == [16, 16]


def test_cli_flags_are_the_config_fields():
    import typer.main
    command = typer.main.get_command(app).commands["train"]
    names = {p.name for p in command.params}
    assert set(OPTIONS) <= names
    assert names - set(OPTIONS) == {"config", "resume", "force", "init", "quiet", "as_json"}
    shown = {p.name: p.help for p in command.params}
    assert "(default: 64)" in shown["batch_size"] and "(default: 512,512,512)" in shown["hidden"]


def test_cli_init_warm_starts_and_refuses_another_architecture(finished_run, tmp_path):
    cfg, out = finished_run
    good = runner.invoke(app, ["train", cfg.run.data, "-o", str(tmp_path / "warm"), "--init", str(out / "best"),
                               "--steps", "1", *SMALL])
    assert good.exit_code == 0, good.stderr
    bad = runner.invoke(app, ["train", cfg.run.data, "-o", str(tmp_path / "bad"), "--init", str(out / "best"),
                              "--steps", "1", *SMALL, "--hidden", "16,16,16"])
    assert bad.exit_code == 2 and one_line_error(bad.stderr) and "--init" in bad.stderr


# ----------------------------------------------------------------------------- several processes (DDP)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                          reason="torch.distributed with gloo is not available")


DDP_FLAGS = ["--hidden", "16,16", "--embed-dim", "8", "--out-embed", "16", "-b", "4", "--seq-len", "10",
             "--steps", "4", "--eval-every", "2", "--eval-symbols", "300", "--log-every", "1",
             "--threads", "1", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def ddp_and_single_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The same 4-step run (global batch 4, evaluations at 2 and 4) in 2 processes and in 1 process."""
    root = tmp_path_factory.mktemp("ddp")
    data = root / "corpus.txt"
    data.write_text(english(4000))
    proc = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
         str(free_port()), "-m", "hmgen", "train", str(data), "--out", str(root / "ddp"), *DDP_FLAGS],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    train(tiny(data, root / "one", steps=4, eval_every=2), quiet=True)
    return data, root / "ddp", root / "one"


def assert_close(a: dict, b: dict, prefixes: tuple[str, ...], atol: float) -> None:
    keys = [k for k in a if k.startswith(prefixes)]
    assert keys and a.keys() == b.keys()
    for key in keys:
        assert torch.allclose(a[key], b[key], atol=atol), (key, float((a[key] - b[key]).abs().max()))


@pytest.mark.slow          # torchrun starts two processes (~19 s on a busy machine)
@gloo
def test_ddp_two_processes_match_one_process(ddp_and_single_runs, tmp_path):
    data, ddp, one = ddp_and_single_runs
    assert checkpoint_meta(ddp)["step"] == checkpoint_meta(one)["step"] == 4
    a, b = checkpoint_tensors(ddp), checkpoint_tensors(one)
    assert_close(a, b, ("model.", "optim."), atol=1e-5)
    # The carried state is gathered back into the global batch in stream order. It holds activations of
    # size ~1 that amplify the weights' float differences a little; streams out of order differ by ~0.5.
    assert_close(a, b, ("carry.",), atol=1e-3)

    # The 2-process checkpoint resumes in one process and goes on as the 1-process run does.
    for run in (ddp, one):
        shutil.copytree(run, tmp_path / run.name)
        train(tiny(data, tmp_path / run.name, steps=6, eval_every=2), resume=True, quiet=True)
    a, b = checkpoint_tensors(tmp_path / "ddp"), checkpoint_tensors(tmp_path / "one")
    assert_close(a, b, ("model.",), atol=1e-5)
    assert_close(a, b, ("carry.",), atol=1e-3)


@pytest.mark.slow
@gloo
def test_ddp_metrics_report_the_whole_batch(ddp_and_single_runs):
    _, ddp, one = ddp_and_single_runs
    a, b = train_records(ddp), train_records(one)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-3)
        assert x["layers"] == y["layers"]


def test_warmup_ramps_the_learning_rate_linearly(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    cfg = TrainConfig(data=str(text), out=str(tmp_path / "run"), hidden=[8, 8], out_embed=8, embed_dim=8,
                      batch_size=2, seq_len=8, steps=6, warmup=4, lr=0.01, log_every=1, eval_every=1000)
    train(cfg, quiet=True)
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert lrs == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_training_with_the_fast_forward_follows_the_same_trajectory(tmp_path, monkeypatch):
    """--fast computes the same function (tests/test_fast.py); through the trainer the losses agree too."""
    import hmgen.cell.fast
    calls = []
    real = hmgen.cell.fast.fast_forward
    monkeypatch.setattr(hmgen.cell.fast, "fast_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = tmp_path / "text.txt"
    data.write_text(english(4000))
    train(tiny(data, tmp_path / "ref"), quiet=True)
    assert not calls
    train(tiny(data, tmp_path / "fast", fast=True), quiet=True)
    assert len(calls) >= 6                                   # the fast run really went through it
    ref, fast = train_records(tmp_path / "ref"), train_records(tmp_path / "fast")
    assert len(ref) == len(fast) == 6
    for r, f in zip(ref, fast):
        assert math.isclose(r["loss"], f["loss"], rel_tol=1e-4)


# ----------------------------------------------------------------------------- runs that fail stay usable

def hmgen_train(*args, cwd=None, file_limit=None, stdin=None):
    """The real command in a process of its own (a file size limit applies to it alone)."""
    import resource
    limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))) if file_limit else None
    return subprocess.run([str(BIN / "hmgen"), "train", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, preexec_fn=limit, input=stdin)


def test_empty_validation_data_is_refused_before_training_and_leaves_no_run(tmp_path, text_file):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(text_file), "--valid", str(empty), "--steps", "2", "-o", str(out), *SMALL])
    assert result.exit_code == 1 and one_line_error(result.stderr) and "empty.txt" in result.stderr
    assert not out.exists()


def test_a_new_run_that_fails_to_write_leaves_nothing_that_blocks_the_next(tmp_path, text_file):
    out = tmp_path / "run"
    full = hmgen_train(str(text_file), "--steps", "2", "-o", str(out), *SMALL, file_limit=20_000)
    assert full.returncode == 1 and one_line_error(full.stderr) and "File too large" in full.stderr
    assert ".tmp" not in full.stderr and not out.exists()
    assert hmgen_train(str(text_file), "--steps", "2", "-o", str(out), *SMALL).returncode == 0


def test_a_resume_that_fails_to_write_keeps_the_run_resumable_and_logs_each_step_once(tmp_path, text_file):
    out = tmp_path / "run"
    assert hmgen_train(str(text_file), "--steps", "2", "--ckpt-every", "2", "-o", str(out), *SMALL).returncode == 0
    size = (out / "checkpoint.safetensors").stat().st_size
    full = hmgen_train("--resume", "-o", str(out), "--steps", "6", "--ckpt-every", "2", file_limit=size // 2)
    assert full.returncode == 1 and one_line_error(full.stderr) and checkpoint_meta(out)["step"] == 2
    again = hmgen_train("--resume", "-o", str(out), "--steps", "6", "--ckpt-every", "2")
    assert again.returncode == 0 and checkpoint_meta(out)["step"] == 6
    logged = [r["step"] for r in train_records(out)]
    assert logged == sorted(set(logged)) and logged[-1] == 6


def test_a_run_stopped_before_any_validation_says_it_saved_no_model(tmp_path, text_file):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(text_file), "--steps", "4", "--time-limit", "0", "-o", str(out), *SMALL[:-1]])
    assert result.exit_code == 0 and "no model saved" in result.stderr and not (out / "best.json").exists()


def test_resume_works_from_another_folder_than_the_one_it_started_in(tmp_path, text_file):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(text_file, tmp_path / "a" / "corpus.txt")
    assert hmgen_train("corpus.txt", "--steps", "2", "-o", "../run", *SMALL, cwd=tmp_path / "a").returncode == 0
    again = hmgen_train("--resume", "-o", "../run", "--steps", "4", cwd=tmp_path / "b")
    assert again.returncode == 0, again.stderr
    assert checkpoint_meta(tmp_path / "run")["config"]["data"] == str(tmp_path / "a" / "corpus.txt")


def test_train_dash_trains_on_standard_input_kept_in_the_run_folder(tmp_path, text_file):
    out = tmp_path / "run"
    result = hmgen_train("-", "--steps", "2", "-o", str(out), *SMALL, stdin=text_file.read_text())
    assert result.returncode == 0, result.stderr
    assert (out / "stdin.txt").read_bytes() == text_file.read_bytes()
    assert hmgen_train("--resume", "-o", str(out), "--steps", "3").returncode == 0


def test_cold_starts_restart_the_drawn_streams_from_zero_after_a_newline(tmp_path, text_file):
    from hmgen.text.train import TextTask
    task = TextTask(tiny(text_file, tmp_path / "run", cold_starts=0.5), torch.device("cpu"))
    task.state = [tuple(torch.ones_like(t) for t in layer) for layer in task.state]
    x = np.full((4, 10), 65, dtype=np.int64)
    out = task.cold_start(x, step=7)
    cold = out[:, 0] == task.newline
    assert 0 < cold.sum() < 4 and (out[:, 1:] == 65).all() and (x == 65).all()
    for layer in task.state:
        for t in layer:
            assert (t[torch.from_numpy(cold)] == 0).all() and (t[torch.from_numpy(~cold)] == 1).all()
    again = TextTask(tiny(text_file, tmp_path / "run2", cold_starts=0.5), torch.device("cpu"))
    assert (again.cold_start(x, step=7)[:, 0] == out[:, 0]).all()       # the same streams for the same step


def test_a_run_with_cold_starts_resumes_exactly(tmp_path, text_file):
    whole = train(tiny(text_file, tmp_path / "whole", steps=6, cold_starts=0.3))
    train(tiny(text_file, tmp_path / "part", steps=3, cold_starts=0.3))
    resumed = train(tiny(text_file, tmp_path / "part", steps=6, cold_starts=0.3), resume=True)
    assert resumed["best_valid_bpc"] == whole["best_valid_bpc"]
