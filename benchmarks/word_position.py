"""Where in a word does one model lose to another? Bits per symbol by position within the word, on held-out text.

    python benchmarks/word_position.py runs/ptb-hm/best runs/ptb-lstm/best --data ptb:../shared/data/text/ptb \
        --split valid --max-symbols 200000

Every symbol after the first is predicted once (the text run as --streams pieces side by side, each from the zero
state, as `hmgen eval` does). A predicted symbol is put in a bucket by where it stands: whitespace (the space or
newline that ends a word), the 1st, 2nd or 3rd symbol of a word, or a later one. For each model the table gives
the mean bits in each bucket; the last columns give the first model minus the second, and that difference
weighted by the bucket's share (the buckets' contributions add up to the difference in BPC).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from hmgen.modelio import load_model
from hmgen.text.data import load_eval_ids
from hmgen.text.evaluate import side_by_side

BUCKETS = ("whitespace", "1st", "2nd", "3rd", "4th+")
SEQ_LEN = 200           # steps per segment, as hmgen eval runs them


def positions(space: np.ndarray) -> np.ndarray:
    """space: (n,) bool, the symbol is whitespace -> (n,) bucket index: 0 whitespace, 1.. for the 1st, 2nd, 3rd,
    4th+ symbol of a word."""
    out = np.zeros(len(space), dtype=np.int64)
    k = 0
    for i, blank in enumerate(space):
        if blank:
            out[i], k = 0, 0
        else:
            out[i], k = min(k + 1, 4), k + 1
    return out


@torch.no_grad()
def symbol_bits(model, ids: np.ndarray, streams: int) -> np.ndarray:
    """(len(ids) - 1,) bits of each predicted symbol ids[1:]."""
    n = len(ids) - 1
    per = math.ceil(n / streams)
    bits = np.zeros(streams * per)
    for k, seg in enumerate(side_by_side(model, ids, streams, SEQ_LEN, predict=True)):
        nll = F.cross_entropy(seg.logits.transpose(1, 2), seg.y, reduction="none") / math.log(2)   # (streams, T)
        cols = np.arange(k * SEQ_LEN, k * SEQ_LEN + nll.shape[1])
        bits[(np.arange(streams)[:, None] * per + cols[None, :]).reshape(-1)] = nll.reshape(-1).numpy()
    return bits[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs=2, help="two model names or paths with the same vocabulary")
    ap.add_argument("--data", required=True, help="a file, or a corpus spec such as ptb:DIR")
    ap.add_argument("--split", default=None, help="a corpus split (default: test)")
    ap.add_argument("--max-symbols", type=int, default=200_000)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lms = [load_model(m) for m in args.models]
    if lms[0].vocab != lms[1].vocab:
        print("word_position: the two models have different vocabularies", file=sys.stderr)
        return 2
    ids = load_eval_ids(args.data, args.split, lms[0].vocab)[: args.max_symbols + 1].astype(np.int64)
    vocab = lms[0].vocab
    blank = np.array([vocab.decode([i]).isspace() for i in range(vocab.size)])     # per symbol id
    where = positions(blank[ids])[1:]                                      # bucket of each predicted symbol
    bits = [symbol_bits(lm.model, ids, args.streams) for lm in lms]
    rows = []
    for b, name in enumerate(BUCKETS):
        sel = where == b
        a, c = (float(x[sel].mean()) for x in bits)
        rows.append({"bucket": name, "share": float(sel.mean()), "bits": [a, c], "diff": a - c,
                     "contribution": (a - c) * float(sel.mean())})
    total = [float(x.mean()) for x in bits]
    rows.append({"bucket": "all", "share": 1.0, "bits": total, "diff": total[0] - total[1],
                 "contribution": total[0] - total[1]})
    if args.json:
        print(json.dumps({"models": args.models, "data": args.data, "split": args.split, "symbols": len(ids) - 1,
                          "rows": rows}, indent=2))
        return 0
    print(f"| position | share | {args.models[0]} | {args.models[1]} | difference | contribution |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['bucket']} | {r['share']:.3f} | {r['bits'][0]:.3f} | {r['bits'][1]:.3f} | {r['diff']:+.3f} | "
              f"{r['contribution']:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
