"""Where do the two pace rules stop, and are they right? (the data behind `gives_up` and `yields_to` in
hmgen/archive/format.py; benchmarks/RESULTS.md, "method 11 first on prose")

    python benchmarks/give_up_pace.py [--json OUT] FILE[@START:END] ...

Every FILE[@START:END] is one text block (after the format's transform), coded in full by the file's models in one
lane ("method 12" below, its rule's name: 12 for prose, 15 for other text) and by the network with the file's
models in lanes ("method 11": 11 for prose, 14 for other text), as the encoder chooses, each reporting its bits
before every byte. Then both rules are asked at the points the encoder asks them: method 11's (`gives_up`, used when
method 12 went first: every CHECK_EVERY steps, against method 12's costs) and method 12's (`yields_to`, used when
method 11 went first, which it does for prose on one thread: every 1/ALONE_CHECKS of the block, against method
11's costs). A stop is wrong when the stopped method would have won. One row per block: sizes, CPU seconds, the
share of the block at which each rule stops (none: it never does), whether the block counts as prose.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hmgen.archive import format as F
from hmgen.archive import methods
from hmgen.archive.api import engines


def read_block(spec: str) -> bytes:
    path, _, span = spec.partition("@")
    data = Path(path).read_bytes()
    if span:
        a, b = (int(x) for x in span.split(":"))
        data = data[a:b]
    return methods.forward(data)[1]


def measure(q, name: str, coded: bytes) -> dict:
    n = len(coded)
    m = F.lanes_for(n, F.DEFAULT_LANES, None)
    prose = F.looks_like_prose(coded)
    models, alone = (F.MODELS[F.MIXED3], F.MODELS[F.CM3]) if prose else (F.MODELS[F.MIXED4], F.MODELS[F.CM4])
    twelve, eleven = [], []
    t0 = time.process_time()
    size12 = len(F.code_alone(n, True, coded, None, None, models=alone, costs=twelve))
    cpu12 = time.process_time() - t0
    rule11 = F.gives_up(m, n, lambda: (size12, twelve[0]))
    stops11 = []
    t0 = time.process_time()
    size11 = len(F.code_cm(q, m, n, True, data=coded, costs=eleven, models=models,
                           give_up=lambda t, size: bool(rule11(t, size) and stops11.append(t))))
    cpu11 = time.process_time() - t0
    rule12 = F.yields_to(n, eleven[0])
    cost12 = np.concatenate(([0], np.diff(twelve[0])))              # each byte's bits at [i + 1], as the predictor's
    every = max(1, -(-n // F.ALONE_CHECKS))                         # code_alone's checks
    stop12 = next((t for t in range(every, n, every) if rule12(t, cost12)), None)
    stop11 = stops11[0] if stops11 else None
    return {"block": name, "bytes": n, "prose": bool(prose), "size11": size11, "size12": size12,
            "size12/size11": round(size12 / size11, 4), "cpu11_s": round(cpu11, 2), "cpu12_s": round(cpu12, 2),
            "rule11_stops_at": None if stop11 is None else round(stop11 / m, 3),
            "rule11_wrong": stop11 is not None and size11 < size12,
            "rule12_stops_at": None if stop12 is None else round(stop12 / n, 3),
            "rule12_wrong": stop12 is not None and size12 < size11}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("blocks", nargs="+", metavar="FILE[@START:END]")
    ap.add_argument("--json", type=Path, help="write the rows here as JSON")
    args = ap.parse_args()
    q, _ = engines().get(None)
    rows = []
    print("| block | bytes | prose | method 11 | method 12 | 12 / 11 | method 11 stops (12 first) "
          "| method 12 stops (11 first) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for spec in args.blocks:
        row = measure(q, Path(spec.partition("@")[0]).name + (spec[spec.index("@"):] if "@" in spec else ""),
                      read_block(spec))
        rows.append(row)
        at = lambda key: "-" if row[key + "_stops_at"] is None else f"{row[key + '_stops_at']:.2f}" + (
            " (wrong)" if row[key + "_wrong"] else "")
        print(f"| {row['block']} | {row['bytes']:,} | {'yes' if row['prose'] else ''} | {row['size11']:,} | "
              f"{row['size12']:,} | {row['size12/size11']:.3f} | {at('rule11')} | {at('rule12')} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
