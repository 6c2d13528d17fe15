"""HM-LSTM against the LSTM baseline on character-level Penn Treebank, same harness, same budget.

    python benchmarks/ptb.py --data ../shared/data/text/ptb --hidden 128,128,128 --out-embed 128 \
        --time-limit 900 --out runs/ptb-bench

Trains both architectures with `hmgen.training.loop` (the paper's optimiser settings unless overridden), then
evaluates each best-by-validation model on the full valid and test splits, and prints a markdown table
(parameters, steps, time, hardware, valid/test BPC, per-layer UPDATE/COPY/FLUSH rates on test) next to
the paper's Table 1 figures. Pass --steps instead of --time-limit for a fixed number of updates.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from hmgen.text.data import load_ptb
from hmgen.text.evaluate import evaluate
from hmgen.modelio import load_model
from hmgen.training.config import TrainConfig
from hmgen.text.train import train
from hmgen.training.loop import hardware

PAPER = {"hmlstm": 1.24, "lstm": 1.29}   # Table 1: LN HM-LSTM (step fn + slope annealing), LN LSTM


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with ptb.char.{train,valid,test}.txt")
    ap.add_argument("--out", default="runs/ptb-bench")
    ap.add_argument("--hidden", default="512,512,512")
    ap.add_argument("--out-embed", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--time-limit", type=float, help="seconds of training per model")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-symbols", type=int, default=100_000, help="validation symbols used during training")
    ap.add_argument("--slope-rate", type=float, default=0.04)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--archs", default="hmlstm,lstm")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    corpus = load_ptb(args.data)
    rows = []
    for arch in args.archs.split(","):
        out = Path(args.out) / arch
        cfg = TrainConfig(data=f"ptb:{args.data}", out=str(out), arch=arch,
                          hidden=[int(h) for h in args.hidden.split(",")], out_embed=args.out_embed,
                          batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, steps=args.steps,
                          time_limit=args.time_limit, eval_every=args.eval_every, eval_symbols=args.eval_symbols,
                          ckpt_every=args.eval_every, slope_rate=args.slope_rate, threads=args.threads,
                          device=args.device, name=f"ptb-{arch}")
        t0 = time.time()
        summary = train(cfg, quiet=not sys.stderr.isatty(), data=corpus,
                        command="python " + " ".join(sys.argv))
        train_s = time.time() - t0
        lm = load_model(out / "best", device=cfg.run.device if cfg.run.device != "auto" else "cpu")
        valid = evaluate(lm.model, corpus.split("valid"))
        test = evaluate(lm.model, corpus.split("test"))
        row = {"arch": arch, "parameters": lm.meta["parameters"], "steps": summary["step"],
               "train_s": round(train_s), "hardware": hardware(torch.device("cpu" if args.device == "auto" and not torch.cuda.is_available() else args.device)),
               "valid_bpc": round(valid["bpc"], 4), "test_bpc": round(test["bpc"], 4),
               "test_layers": test["layers"], "paper_test_bpc": PAPER[arch]}
        rows.append(row)
        (Path(args.out) / f"{arch}.json").write_text(json.dumps(row, indent=1))
        print(json.dumps(row), file=sys.stderr)

    print(f"char-PTB, hidden {args.hidden}, output embedding {args.out_embed}, batch {args.batch_size} x {args.seq_len}, "
          f"{'%d s' % args.time_limit if args.time_limit else '%d steps' % args.steps} per model, "
          f"{platform.machine()} {rows[0]['hardware']}\n")
    print("| model | params | steps | train time | valid BPC | test BPC | test UPDATE / COPY / FLUSH per layer | paper test BPC (3x512) |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        ops = "; ".join(f"L{i}: {l['update']:.2f}/{l['copy']:.2f}/{l['flush']:.2f}" for i, l in enumerate(r["test_layers"], 1))
        name = "LN HM-LSTM" if r["arch"] == "hmlstm" else "LN LSTM"
        print(f"| {name} | {r['parameters'] / 1e6:.2f}M | {r['steps']} | {r['train_s']} s | {r['valid_bpc']:.3f} | "
              f"{r['test_bpc']:.3f} | {ops} | {r['paper_test_bpc']} |")


if __name__ == "__main__":
    main()
