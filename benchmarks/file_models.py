"""The file's models alone (one lane, no network: what hmgen codes data, and code or markup the network does not win,
with) on benchmarks/compress.py's non-prose files: payload bytes of format 10's models against format 11's.

    python benchmarks/file_models.py [--corpus DIR ...] [--cap 200000] [--ablate text|data]

Text (code, markup, man pages, logs, other text) takes the contexts for text (format 10: format 9's, models 6;
format 11: with the groups context, models 8), the rest the contexts for data (format 10: wide, models 7; format
11: with the groups context, models 9); prose, random, zeros, repetition and compressed files are left out. --ablate GROUP prints, for that group, the total without each context
of the set in turn (how TEXT5 and DATA5 were chosen: benchmarks/RESULTS.md, "format 9"). Sizes only: they do not
depend on the machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compress as B                                            # noqa: E402  (the benchmark's set of files)
from hmgen.archive import format as C                           # noqa: E402
from hmgen.archive.adaptive import predictor2 as P              # noqa: E402

LEFT_OUT = {"prose", "random", "zeros", "repetitive", "compressed"}   # the network's, or only the bound's


def payload(data: bytes, models: int) -> int:
    return len(C.code_alone(len(data), True, data, None, None, b"", models))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", action="append", default=[], help="add every file of this folder")
    ap.add_argument("--cap", type=int, default=200_000, help="bytes per file at most")
    ap.add_argument("--ablate", choices=("text", "data"), help="totals without each context of this group's set")
    args = ap.parse_args()
    files = []
    for name, kind, _, read in B.SET + [r for d in args.corpus for r in B.corpus(d)]:
        try:
            data = read(args.cap)
        except OSError as e:
            print(f"<!-- {name}: skipped, {e} -->")
            continue
        if data and kind not in LEFT_OUT:
            files.append((name, "text" if kind in B.TEXT_KINDS else "data", data))
    if args.ablate:
        models = 8 if args.ablate == "text" else 9
        chosen = [d for _, g, d in files if g == args.ablate]
        full = P.ACTIVE[models, False]
        base = sum(payload(d, models) for d in chosen)
        print(f"{args.ablate}: {len(chosen)} files, {len(full)} contexts: {base:,} bytes\n")
        print("| without | bytes | change |\n|---|---:|---:|")
        try:
            for c in full:
                P.ACTIVE[models, False] = tuple(x for x in full if x != c)
                size = sum(payload(d, models) for d in chosen)
                print(f"| {P.CONTEXTS[c]} | {size:,} | {size - base:+,} |", flush=True)
        finally:
            P.ACTIVE[models, False] = full
        return
    print("| file | group | bytes | format 10 | format 11 | change |\n|---|---|---:|---:|---:|---:|")
    totals = {}
    for name, group, data in files:
        old = payload(data, 6 if group == "text" else 7)
        new = payload(data, 8 if group == "text" else 9)
        t = totals.setdefault(group, [0, 0, 0])
        t[0] += 1; t[1] += old; t[2] += new
        print(f"| {name} | {group} | {len(data):,} | {old:,} | {new:,} | {100 * (new / old - 1):+.2f} % |", flush=True)
    for group, (n, old, new) in totals.items():
        print(f"| **{group}: {n} files** | | | {old:,} | {new:,} | {100 * (new / old - 1):+.2f} % |")


if __name__ == "__main__":
    main()
