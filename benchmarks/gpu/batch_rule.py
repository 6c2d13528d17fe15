"""Does the shot's large-batch rule train as well per character as the paper's batch 64? A small CPU check.

    python benchmarks/gpu/batch_rule.py --data ptb:../shared/data/text/ptb --hidden 64,64,64 \
        --chars 2560000 --batches 64,256 --threads 1 [--linear]

For each batch B: `hmgen train` on the same data for the same number of characters (chars / (B x seq_len)
steps), LR from shot.py's rule (sqrt(B / 64) x 0.002; --linear adds B / 64 x 0.002 for contrast), warm-up over
--warmup-share of the steps (B > 64 only: batch 64 is the paper's recipe, no warm-up), then validation BPC on
the first --eval-symbols validation characters. Prints a markdown table (and the exact commands).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shot import child_env, scaled_lr  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--hidden", default="64,64,64")
    ap.add_argument("--chars", type=int, default=2_560_000)
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--warmup-share", type=float, default=0.1)
    ap.add_argument("--eval-symbols", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--linear", action="store_true", help="also the linear rule at each B > 64")
    ap.add_argument("--out", type=Path, default=Path("runs/batch-rule"))
    args = ap.parse_args()
    h = args.hidden.split(",")[0]
    configs = []
    for B in (int(b) for b in args.batches.split(",")):
        configs.append((B, "sqrt", scaled_lr(B, 64, 0.002)))
        if args.linear and B > 64:
            configs.append((B, "linear", round(0.002 * B / 64, 6)))
    rows = []
    for B, rule, lr in configs:
        steps = args.chars // (B * args.seq_len)
        warmup = 0 if B == 64 else max(1, round(args.warmup_share * steps))
        out = args.out / f"b{B}-{rule}"
        cmd = [sys.executable, "-m", "hmgen", "train", args.data, "--out", str(out), "--hidden", args.hidden,
               "--out-embed", h, "--batch-size", str(B), "--seq-len", str(args.seq_len), "--lr", str(lr),
               "--warmup", str(warmup), "--steps", str(steps), "--eval-every", str(steps), "--eval-symbols",
               str(args.eval_symbols), "--threads", str(args.threads), "--device", "cpu", "--ckpt-every",
               str(10 * steps), "--json", "-q"]
        t = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args.threads), cwd=ROOT)
        if r.returncode:
            sys.exit(f"batch_rule: {' '.join(cmd[2:])} failed: {r.stderr.strip()[-500:]}")
        s = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append((B, rule, lr, warmup, steps, s["best_valid_bpc"], s["train_seconds"], time.time() - t))
        print("hmgen " + " ".join(cmd[3:]), file=sys.stderr, flush=True)
    print(f"\n{args.chars:,} characters per run, {args.data}, HM-LSTM {args.hidden}, seq {args.seq_len}, CPU, "
          f"{args.threads} thread(s); validation BPC on the first {args.eval_symbols:,} symbols\n")
    print("| batch | rule | lr | warm-up steps | steps | valid BPC | train s |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for B, rule, lr, w, steps, bpc, sec, _ in rows:
        print(f"| {B} | {rule} | {lr:g} | {w} | {steps} | {bpc} | {sec} |")


if __name__ == "__main__":
    main()
