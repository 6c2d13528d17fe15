"""Do the boundary detectors find words? And how much computation does COPY save? Measured on held-out text.

    python benchmarks/boundaries.py --run english-small ../shared/data/text/english/english.valid.txt.xz 300000 \
        --run runs/ptb-cpu/hmlstm/best ptb:../shared/data/text/ptb

Each --run is MODEL DATA [MAX_SYMBOLS]: a model name or path, and a file or corpus spec (a corpus gives its test
split). The text is run as `--streams` contiguous pieces side by side, each from the zero state.

Boundaries (z_t^l = 1: layer l's segment ends after symbol t) are compared with word boundaries. A word is a
maximal run of non-whitespace symbols (punctuation belongs to its word). Three references:
  end    the gap after a word's last symbol (before the whitespace that follows it);
  start  the gap after the whitespace before a word (just before its first symbol);
  end±1  `end`, counting a boundary within one symbol of it (each word end matched at most once).
With single spaces between words, `end` and `start` are one symbol apart and `end±1` accepts both.
A boundary that is at neither (inside a word, or inside a run of whitespace) counts as "elsewhere".

COPY saving: a layer that COPYs computes nothing (§3.1), so its share of COPY steps is the share of that layer's
updates saved. Overall figures weight each layer by its multiply-adds per computed step (W x, U h, U_td h: the
dense cost of the cell; layer norm and elementwise work are not counted), and are also given as a share of the
whole model's multiply-adds per symbol (the output module of eq. 11-12 runs at every step).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hmgen.text.boundaries import prf, space_flags, stream_boundaries, word_boundaries
from hmgen.text.data import load_eval_ids
from hmgen.cell.reference import COPY, FLUSH, OPS
from hmgen.modelio import load_model

# Paper Fig. 3 / §4.1 (PTB sample of 270 characters): layer updates 270 / 56 / 9, i.e. 335 of the 810 a plain
# stack computes (-59%); z^1 fires at or after spaces and sometimes inside words, z^2 at word ends or 2-3-grams.
PAPER_UPDATES = [270, 56, 9]


def macs(cfg) -> tuple[list[dict], int]:
    """Multiply-adds of each layer's products per computed step, by term, and of the output module per step."""
    h, n = cfg.hidden, len(cfg.hidden)
    hier = cfg.arch == "hmlstm"
    layers = []
    for l in range(n):
        rows = 4 * h[l] + int(hier and l + 1 < n)
        layers.append({"bu": rows * (cfg.embed_dim if l == 0 else h[l - 1]), "rec": rows * h[l],
                       "td": rows * h[l + 1] if hier and l + 1 < n else 0})
    out = sum(h) * n + sum(h) * cfg.out_embed + cfg.out_embed * cfg.vocab_size     # gates, W^e, V
    return layers, out


def savings(z: np.ndarray, ops: np.ndarray, cfg) -> dict:
    layers, out = macs(cfg)
    T, L = ops.shape
    dense = np.array([sum(c.values()) for c in layers], dtype=np.float64)           # per layer, per step
    copy = (ops == COPY).mean(0)
    # the exact cost: COPY computes nothing; UPDATE has z_{t-1}^l = 0, so no top-down term; the bottom-up
    # term is gated by z_t^{l-1} (eq. 5-7), which is 0 in a FLUSH that has no boundary below
    z_below = np.concatenate([np.ones((T, 1), np.int64), z[:, :-1]], axis=1)            # z_t^{l-1}, z^0 = 1
    exact = sum(((ops[:, l] != COPY) * (layers[l]["rec"] + layers[l]["bu"] * z_below[:, l])
                 + (ops[:, l] == FLUSH) * layers[l]["td"]).sum() for l in range(L)) / T
    return {
        "copy_per_layer": [round(float(c), 4) for c in copy],
        "layer_updates_saved": round(float(copy.mean()), 4),
        "macs_per_layer_step": [int(d) for d in dense],
        "output_macs_per_step": int(out),
        "stack_macs_saved": round(float((copy * dense).sum() / dense.sum()), 4),
        "model_macs_saved": round(float((copy * dense).sum() / (dense.sum() + out)), 4),
        "stack_macs_saved_exact": round(float(1 - exact / dense.sum()), 4),
    }


def measure(model_name: str, data: str, max_symbols: int | None, streams: int) -> dict:
    lm = load_model(model_name)
    ids = load_eval_ids(data, None, lm.vocab)[:max_symbols]
    t0 = time.time()
    z, ops = stream_boundaries(lm.model, ids, streams=streams)
    seconds = time.time() - t0
    space = space_flags(ids, lm.vocab)
    refs = {"end": word_boundaries(space, "end"), "start": word_boundaries(space, "start")}
    T, L = z.shape
    layers = []
    for l in range(L):
        row = {"layer": l + 1, **{k: round(float((ops[:, l] == i).mean()), 4) for i, k in enumerate(OPS)}}
        if l + 1 < L and lm.model.cfg.arch == "hmlstm":                    # the top layer has no detector
            fired = z[:, l].astype(bool)
            row["rate"] = round(float(fired.mean()), 4)
            row["end"] = prf(fired, refs["end"])
            row["start"] = prf(fired, refs["start"])
            row["end±1"] = prf(fired, refs["end"], tolerance=1)
            at_start, at_end = fired & refs["start"], fired & refs["end"] & ~refs["start"]
            row["where"] = {k: round(float(v.sum() / max(fired.sum(), 1)), 4) for k, v in
                            (("word start", at_start), ("word end", at_end), ("elsewhere", fired & ~at_start & ~at_end))}
        layers.append(row)
    return {"model": lm.name, "path": str(lm.path), "data": data, "symbols": int(T), "streams": streams,
            "word_end_rate": round(float(refs["end"].mean()), 4), "layers": layers,
            "copy_saving": savings(z, ops, lm.model.cfg), "seconds": round(seconds, 1),
            "hardware": f"{platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"}


def f(x: float) -> str:
    return f"{x:.3f}"


def table(results: list[dict]) -> str:
    out = ["| model | layer | fires (count) | of which at word start / word end / elsewhere | P / R / F1 vs word end "
           "| P / R / F1 vs word start | P / R / F1 vs end ±1 |",
           "|---|---:|---:|---|---|---|---|"]
    for r in results:
        for row in r["layers"]:
            if "rate" not in row:
                continue
            cells = [" / ".join(f(row[k][m]) for m in ("precision", "recall", "f1")) for k in ("end", "start", "end±1")]
            where = " / ".join(f"{v:.2f}" for v in row["where"].values())
            out.append(f"| {r['model']} | {row['layer']} | {row['rate']:.3f} ({row['end']['predicted']:,}) | {where} | " + " | ".join(cells) + " |")
    out += ["", "| model | word ends / symbol | UPDATE / COPY / FLUSH per layer | layer updates saved by COPY "
            "(per layer; all) | stack multiply-adds saved | whole-model multiply-adds saved | exact gating* |",
            "|---|---:|---|---|---:|---:|---:|"]
    for r in results:
        s = r["copy_saving"]
        ops = "; ".join(f"L{row['layer']}: {row['update']:.2f}/{row['copy']:.2f}/{row['flush']:.2f}" for row in r["layers"])
        per = " / ".join(f"{c:.2f}" for c in s["copy_per_layer"])
        out.append(f"| {r['model']} | {r['word_end_rate']:.3f} | {ops} | {per}; **{s['layer_updates_saved']:.1%}** | "
                   f"{s['stack_macs_saved']:.1%} | {s['model_macs_saved']:.1%} | {s['stack_macs_saved_exact']:.1%} |")
    paper = PAPER_UPDATES
    out.append(f"| paper, Fig. 3 sample (270 chars of PTB) | | | {' / '.join(f'{1 - u / paper[0]:.2f}' for u in paper)}; "
               f"**{1 - sum(paper) / (3 * paper[0]):.1%}** | | | |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", nargs="+", action="append", required=True, metavar="MODEL DATA [MAX_SYMBOLS]")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for run in args.run:
        if len(run) not in (2, 3):
            ap.error("--run takes MODEL DATA [MAX_SYMBOLS]")
        r = measure(run[0], run[1], int(run[2]) if len(run) == 3 else None, args.streams)
        r["command"] = "python " + " ".join(sys.argv)
        out = Path(args.results) / f"boundaries-{r['model']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=1) + "\n")
        print(f"{r['model']}: {r['symbols']:,} symbols in {r['seconds']} s -> {out}", file=sys.stderr)
        results.append(r)
    print(table(results))


if __name__ == "__main__":
    main()
