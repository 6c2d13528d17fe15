"""Handwriting benchmark: NLL per line on the IAM-OnDB test split (testset_f), synthesis completion, speed.

  python benchmarks/handwriting.py --data ../shared/data/handwriting/iamondb \\
      --nll runs/hw-bench/conditional-hmlstm/best runs/hw-bench/conditional-lstm/best ... \\
      --complete handwriting-small --time handwriting-small --test-lines 300 --json benchmarks/results/handwriting.json

NLL: every model is scored by the same harness (hmgen.handwriting.train.evaluate_lines) on the same test lines,
each line preprocessed with the model's own stored settings (all models here share them: stride 2, alignment,
clipping) and normalised with its stored training statistics; nats per line and per point (normalised
offsets), comparable only between models with identical preprocessing and statistics.
Completion: the share of 50 random test transcriptions whose synthesis stops because the window passed the
last character (not by the hard cap of max_steps_per_char points per character); coverage = the share of a
line's characters on which the window's maximum sat at some step (1.0: no character skipped).
Time: wall-clock of the real command `hmgen handwrite "hello" -o FILE` (interpreter start-up, model load,
synthesis, SVG), median of --repeat runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hmgen.handwriting.data import load_iam, prepare_lines, select
from hmgen.modelio import load_hw_model
from hmgen.handwriting.sample import synthesize
from hmgen.handwriting.train import evaluate_lines


def test_lines(data: str, n: int | None, seed: int = 0):
    raw = select(load_iam(data), "test")
    if n is not None and n < len(raw):
        idx = np.sort(np.random.default_rng(seed).choice(len(raw), n, replace=False))
        raw = [raw[i] for i in idx]
    return raw


def nll(model_path: str, raw) -> dict:
    m = load_hw_model(model_path)
    c = m.cfg
    lines = prepare_lines(raw, c.stride, c.align, c.smooth, c.glitch, c.clip)
    if c.conditional:   # a line with a character the model never saw cannot be scored by a conditional model
        lines = [p for p in lines if set(p.text) <= set(c.alphabet)]
    t0 = time.time()
    r = evaluate_lines(m.net, lines)
    return {"model": model_path, "arch": c.arch, "hidden": c.hidden, "conditional": c.conditional,
            "parameters": m.meta.get("parameters"), "train_steps": m.meta.get("figures", {}).get("step"),
            "train_seconds": m.meta.get("figures", {}).get("train_seconds"),
            "nll_line": round(r["nll_line"], 2), "nll_point": round(r["nll_point"], 4), "lines": r["lines"],
            "points": r["points"], "z_rates": r["z_rates"], "seconds": round(time.time() - t0, 1)}


def completion(model_path: str, raw, n: int = 50, bias: float = 0.75, seed: int = 0, cap: int = 25) -> dict:
    m = load_hw_model(model_path)
    alpha = set(m.cfg.alphabet)
    texts = [ln.text for ln in raw if set(ln.text) <= alpha]
    rng = np.random.default_rng(seed)
    texts = [texts[i] for i in rng.choice(len(texts), n, replace=False)]
    t0 = time.time()
    out = []
    for i in range(0, n, 10):                 # batches of 10 lines
        out += synthesize(m, texts[i:i + 10], bias=bias, seed=seed + i, max_steps_per_char=cap)
    done = [ln.stop == "end of text" for ln in out]
    return {"model": model_path, "texts": n, "completed": int(sum(done)), "share": round(sum(done) / n, 3),
            "bias": bias, "max_steps_per_char": cap,
            "points_per_char": round(float(np.mean([ln.steps / len(ln.text) for ln in out])), 2),
            "mean_coverage": round(float(np.mean([ln.coverage for ln in out])), 4),
            "full_coverage_share": round(float(np.mean([ln.coverage == 1.0 for ln in out])), 3),
            "seconds": round(time.time() - t0, 1),
            "failed": [ln.text for ln, ok in zip(out, done) if not ok][:10]}


def handwrite_time(model: str, repeat: int = 5) -> dict:
    times = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(repeat):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "hmgen", "handwrite", "hello", "-m", model, "-o",
                                str(Path(d) / "hello.svg"), "--seed", str(i)], capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if r.returncode:
                raise SystemExit(r.stderr)
    return {"model": model, "runs": repeat, "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3), "max_s": round(max(times), 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/handwriting/iamondb")
    ap.add_argument("--nll", nargs="*", default=[], help="models to score on the test split")
    ap.add_argument("--test-lines", type=int, default=None, help="a random subset of the test split (default: all)")
    ap.add_argument("--complete", default=None, help="model for the completion share")
    ap.add_argument("--bias", type=float, default=0.75)
    ap.add_argument("--time", default=None, help="model for the handwrite timing")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"hardware": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
           "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    raw = test_lines(args.data, args.test_lines) if (args.nll or args.complete) else None
    res["nll"] = []
    for mp in args.nll:
        r = nll(mp, raw)
        res["nll"].append(r)
        print(json.dumps(r), flush=True)
    if args.complete:
        res["completion"] = completion(args.complete, select(load_iam(args.data), "test"), bias=args.bias)
        print(json.dumps(res["completion"]), flush=True)
    if args.time:
        res["time"] = handwrite_time(args.time, args.repeat)
        print(json.dumps(res["time"]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
