"""What a cut costs the file's models, and how much of it learning a primer first wins back (format 6's method 10).

Method 9 (the file's models alone, one lane) codes one piece of a file cold, then after each primer: the primer's
bytes run through the models uncoded, as method 10 does with a block's head. Payload bytes of the piece, in-process.

    python benchmarks/prime_cut.py --file F --start 5000000 --length 5000000 \\
        --primer F:0:1000000 --primer OTHER:0:1000000 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hmgen.archive import format as C


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", type=Path, required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--length", type=int, required=True)
    ap.add_argument("--primer", action="append", default=[], help="FILE:START:LENGTH, repeatable")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with open(args.file, "rb") as f:
        f.seek(args.start)
        piece = f.read(args.length)
    rows = []
    for spec in [None] + args.primer:
        primer = b""
        if spec:
            path, start, length = spec.rsplit(":", 2)
            with open(path, "rb") as f:
                f.seek(int(start))
                primer = f.read(int(length))
        t = time.perf_counter()
        size = len(C.code_alone(len(piece), True, piece, None, None, primer))
        rows.append({"primer": spec or "none (cold)", "primer_bytes": len(primer), "payload": size,
                     "seconds": round(time.perf_counter() - t, 1)})
        cold = rows[0]["payload"]
        print(f"{rows[-1]['primer']:<50} {size:>12,} B {100 * (size / cold - 1):+6.2f} %  {rows[-1]['seconds']} s",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"file": str(args.file), "start": args.start, "length": len(piece),
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
