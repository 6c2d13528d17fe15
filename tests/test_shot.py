"""benchmarks/gpu/shot.py --dry-run: the one-shot GPU orchestration, run on CPU at toy size, so that it
cannot rot while it waits for a GPU. One run (~1-2 min), several checks of what it returns."""
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hmgen.modelio import load_hw_model, load_model

ROOT = Path(__file__).resolve().parents[1]
RUNS = ["english", "english-192", "english-large", "ptb-hmlstm", "ptb-lstm", "handwriting", "handwriting-lstm"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu/shot.py"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    unpacked = tmp_path_factory.mktemp("unpacked")
    parts = sorted(out.glob("shot.tar*"))
    joined = unpacked / "joined.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        tar.extractall(unpacked / "x", filter="data")
    return out, unpacked / "x", r.stdout


def test_returned_files_keep_the_device_tools_limits(shot):
    out, _, _ = shot
    files = [f for f in out.rglob("*") if f.is_file()]
    assert 3 <= len(files) <= 8
    assert sum(f.stat().st_size for f in files) <= 64 * 2**20
    for f in files:
        rel = f.relative_to(out)
        assert f.stat().st_size <= 16 * 2**20 and len(rel.parts) <= 3
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p) for p in rel.parts)


def test_prints_a_budget_plan_first_and_a_summary_at_the_end(shot):
    out, _, stdout = shot
    assert stdout.splitlines()[1].startswith("budget plan (125 s in all)")
    assert "| run | batch | lr |" in stdout and "within the return limits" in stdout.splitlines()[-1]
    assert (out / "summary.md").read_text().startswith("device ")


def test_every_run_trained_and_its_model_loads_with_hmgen(shot):
    _, x, _ = shot
    for name in RUNS:
        assert (x / "runs" / name / "metrics.jsonl").stat().st_size > 0, name
        stem = x / "runs" / name / "best"
        if name.startswith("handwriting"):
            assert load_hw_model(str(stem)).cfg.hidden == [16, 16, 16]
        else:
            assert load_model(str(stem)).model.cfg.hidden == [16, 16, 16]


def test_text_models_are_evaluated_on_validation_and_ptb_on_test(shot):
    import json
    _, x, _ = shot
    figures = json.loads((x / "eval.json").read_text())
    for name in ("english", "english-192", "english-large", "ptb-hmlstm", "ptb-lstm"):
        assert 0 < figures[name]["valid_bpc"] < 9, name
    assert figures["ptb-hmlstm"]["test_bpc"] > 0
    assert figures["handwriting"]["valid_nll_line"] is not None
    meta = json.loads((x / "runs" / "ptb-hmlstm" / "best.json").read_text())
    assert meta["figures"]["test_bpc"] == figures["ptb-hmlstm"]["test_bpc"]   # the returned weights' figure


def test_fast_path_checks_decide_each_runs_path(shot):
    _, x, stdout = shot
    assert '"path": "eager"' in (x / "checks.jsonl").read_text()
    assert re.search(r"^path english: (--fast|reference) \(", stdout, re.M)   # why, in brackets
    assert "path handwriting: reference (no fast path for this model)" in stdout


def test_a_run_with_weights_in_init_starts_from_them(shot):
    _, _, stdout = shot
    has_init = "--init" in subprocess.run([sys.executable, "-m", "hmgen", "train", "--help"], capture_output=True,
                                          text=True).stdout
    if has_init:
        assert re.search(r"^  english: .*warm start from .*init/english$", stdout, re.M)
        assert "(init)" in stdout            # the summary marks it
    else:
        assert "`hmgen train` has no --init yet" in stdout
