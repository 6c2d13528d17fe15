"""Do the boundary detectors stay alive? The reference setting against the remedies of issue 14, equal budgets.

    python benchmarks/hierarchy.py --data ../shared/data/text/ptb --hidden 128,128,128 --out-embed 128 \
        --batch-size 32 --steps 250 --threads 1 --out runs/hierarchy [--variants ref,rate,...]

Every variant trains the same model size on the same data order for the same number of updates with
`hmgen.training.loop` (Adam 0.002, clip 1, the paper's slope annealing) and differs only in the options listed in
VARIANTS (TrainConfig options). Reported per variant: validation BPC at the end (first --eval-symbols of the
valid split), each detector's firing rate (share of all steps) and the share of its computed steps inside
the straight-through window |z~| < 1/a at the start / middle / end of the run (from metrics.jsonl), the
largest pre-clip gradient norm, and F1 of each layer's boundaries against word boundaries (end ±1, see
benchmarks/boundaries.py) on the first --f1-symbols of the valid split. A detector is "alive" when it fires
on 2-60 % of steps; the hierarchy is ordered when layer l+1 fires less often than layer l.
A variant whose JSON already exists in --out is not trained again (delete it to rerun).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from boundaries import measure                    # benchmarks/boundaries.py
from hmgen.text.data import load_ptb
from hmgen.cell.reference import CharLM
from hmgen.training.boundary import glorot_boundary_rows
from hmgen.text.train import train
from hmgen.training.config import TrainConfig

# name -> TrainConfig options (everything else equal); each names its cell and regulariser, so that the table
# does not depend on the defaults of the day. "ref" is hmgen's cell before issue 14.
PLAIN = {"ln_terms": True, "rate_reg": 0.0}
VARIANTS = {
    "lstm": {**PLAIN, "arch": "lstm"},                            # the LN-LSTM baseline, same modules
    "ref": PLAIN,                                                 # LN on every term (Ba et al.) and on c
    "ln-c": {**PLAIN, "ln_terms": False},                         # LN on c only
    "authors": {**PLAIN, "layer_norm": False, "boundary_init": "glorot"},   # the authors' TF code: no LN
    "ln-c+rate": {**PLAIN, "ln_terms": False, "rate_reg": 0.03},  # + H-Net ratio loss toward per-layer targets
    "ln-c+blr0.1": {**PLAIN, "ln_terms": False, "boundary_lr": 0.1},         # + boundary rows at 1/10 of the LR
    "ln-c+rate+blr0.1": {**PLAIN, "ln_terms": False, "rate_reg": 0.03, "boundary_lr": 0.1},   # both remedies
    "ln-c+rate0.1": {**PLAIN, "ln_terms": False, "rate_reg": 0.1},          # a stronger pull toward the targets
    "authors+rate": {**PLAIN, "layer_norm": False, "boundary_init": "glorot", "rate_reg": 0.03},
    # the threshold controller (hmgen.training.boundary.RateControl): biases moved toward the target rates
    "ln-c+ctl+blr0.1": {**PLAIN, "ln_terms": False, "rate_control": 0.3, "boundary_lr": 0.1},
    "ln-c+ctl": {**PLAIN, "ln_terms": False, "rate_control": 0.3},
    "ln-c+ctl+rate+blr0.1": {**PLAIN, "ln_terms": False, "rate_control": 0.3, "rate_reg": 0.03, "boundary_lr": 0.1},
    "ln-c+ctl1+blr0.1": {**PLAIN, "ln_terms": False, "rate_control": 1.0, "boundary_lr": 0.1},
    "ln-c+ctl1": {**PLAIN, "ln_terms": False, "rate_control": 1.0},
}


def phases(log: Path) -> dict:
    """Detector figures at the first, middle and last log line of a run, and the largest pre-clip norm."""
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [r for r in recs if "fire" in r]
    if not steps:
        return {}
    picks = {"start": steps[0], "middle": steps[len(steps) // 2], "end": steps[-1]}
    return {"phases": {k: {"step": r["step"], "fire": r["fire"], "window": r["window"]} for k, r in picks.items()},
            "grad_norm_max": max(r.get("grad_norm_max", r["grad_norm"]) for r in steps),
            "boundary_grad_first": steps[0]["grad_groups"]}


def verdict(fire: list[float]) -> str:
    alive = all(0.02 < f < 0.60 for f in fire)
    ordered = all(b < a for a, b in zip(fire, fire[1:]))
    return ("alive" if alive else "dead/saturated") + (", ordered" if ordered else ", not ordered")


def run(name: str, opts: dict, args, corpus) -> dict:
    out = Path(args.out) / name
    cfg = TrainConfig(data=f"ptb:{args.data}", out=str(out), hidden=[int(h) for h in args.hidden.split(",")],
                      out_embed=args.out_embed, batch_size=args.batch_size, seq_len=args.seq_len,
                      steps=args.steps, eval_every=args.steps, eval_symbols=args.eval_symbols,
                      ckpt_every=args.steps, log_every=args.log_every, threads=args.threads, seed=args.seed,
                      name=f"hierarchy-{name}", **opts)
    summary = train(cfg, quiet=True, data=corpus, command="python " + " ".join(sys.argv))
    row = {"variant": name, "options": opts, "steps": summary["step"], "train_s": summary["train_seconds"],
           "valid_bpc": summary["best_valid_bpc"], **phases(out / "metrics.jsonl")}
    if cfg.model.arch == "hmlstm":
        b = measure(str(out / "best"), f"ptb:{args.data}", args.f1_symbols, 16)
        row["f1_end±1"] = [round(l["end±1"]["f1"], 3) for l in b["layers"] if "rate" in l]
        row["valid_fire"] = [l["rate"] for l in b["layers"] if "rate" in l]
        row["verdict"] = verdict(row["phases"]["end"]["fire"])
    return row


def init_grad_norms(opts: dict, args, corpus, lengths=(10, 50, 100)) -> list[float]:
    """Norm of the loss gradient (before clipping) of a freshly initialised model on the first batch, for
    segments of several lengths: how fast gradients grow through time before any training."""
    cfg = TrainConfig(data="", hidden=[int(h) for h in args.hidden.split(",")], out_embed=args.out_embed, **opts)
    ids = corpus.split("train")[: args.batch_size * (max(lengths) + 1)].astype(np.int64)
    x = torch.from_numpy(ids).reshape(args.batch_size, -1)
    norms = []
    for T in lengths:
        torch.manual_seed(args.seed)
        model = CharLM(cfg.model.text_config(corpus.vocab.size))
        if cfg.detectors.boundary_init == "glorot" and cfg.model.arch == "hmlstm":
            glorot_boundary_rows(model.rnn)
        logits, _, _ = model(x[:, :T], model.initial_state(args.batch_size), 1.0)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:T + 1].reshape(-1)).backward()
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()
                                                                 if p.grad is not None]))))
    return norms


def table(rows: list[dict]) -> str:
    out = ["| variant | options | valid BPC | fire start / middle / end (L1, L2) | in STE window start / end "
           "| max pre-clip norm | F1 end±1 (L1, L2) | verdict (end) |", "|---|---|---:|---|---|---:|---|---|"]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in VARIANTS.get(r["variant"], r["options"]).items()
                         if PLAIN.get(k) != v) or "-"
        if "phases" not in r:
            out.append(f"| {r['variant']} | {opts} | {r['valid_bpc']:.3f} | - | - | - | - | - |")
            continue
        p = r["phases"]
        fire = " / ".join(",".join(f"{f:.2f}" for f in p[k]["fire"]) for k in ("start", "middle", "end"))
        win = " / ".join(",".join(f"{f:.2f}" for f in p[k]["window"]) for k in ("start", "end"))
        f1 = ",".join(f"{f:.2f}" for f in r.get("f1_end±1", []))
        out.append(f"| {r['variant']} | {opts} | {r['valid_bpc']:.3f} | {fire} | {win} | {r['grad_norm_max']:.3g} "
                   f"| {f1} | {r.get('verdict', '')} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with ptb.char.{train,valid,test}.txt")
    ap.add_argument("--out", default="runs/hierarchy")
    ap.add_argument("--hidden", default="128,128,128")
    ap.add_argument("--out-embed", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--eval-symbols", type=int, default=100_000)
    ap.add_argument("--f1-symbols", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--init-grads", action="store_true",
                    help="only print the gradient norm at initialisation for segments of 10, 50, 100 steps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_ptb(args.data)
    if args.init_grads:
        print(f"gradient norm at initialisation, first batch ({args.batch_size} streams), hidden {args.hidden}, "
              f"seed {args.seed}\n\n| variant | T = 10 | T = 50 | T = 100 |\n|---|---:|---:|---:|")
        for name in args.variants.split(","):
            print(f"| {name} | " + " | ".join(f"{n:.3g}" for n in init_grad_norms(VARIANTS[name], args, corpus)) + " |",
                  flush=True)
        return
    rows = []
    for name in args.variants.split(","):
        path = Path(args.out) / f"{name}.json"
        if not path.exists():
            row = run(name, VARIANTS[name], args, corpus)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(row, indent=1) + "\n")
        rows.append(json.loads(path.read_text()))
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"char-PTB, hidden {args.hidden}, output embedding {args.out_embed}, batch {args.batch_size} x "
          f"{args.seq_len}, {args.steps} updates per variant, seed {args.seed}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
