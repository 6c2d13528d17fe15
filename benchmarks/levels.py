"""The speed/size curve behind `hmgen compress -1 .. -9`: every level on the given files, in-process, one
thread, each archive decoded and compared; sizes beside `xz -9e`. Prints a table (and --json).

    python benchmarks/levels.py FILE [FILE ...] [--levels 1,2,3,6,9] [--json out.json]

Speeds are CPU seconds of this process (user + system), so they mean something only on a quiet machine; the
table says how loaded the machine was (os.getloadavg) when it ran.
"""
from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import time
from pathlib import Path

from hmgen.archive import format as C
from hmgen.archive.files import Engines


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def kB_s(n: int, seconds: float) -> float | None:
    """kB per CPU second, or None where the CPU clock (10 ms ticks) saw too little to say (LZMA2 decoding)."""
    return round(n / 1000 / seconds, 1) if seconds >= 0.05 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--levels", default="1,2,3,4,5,6,7,8,9")
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    q, name = Engines().get(args.model)
    rows = []
    print(f"model {name}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"{'file':<24} {'level':>5} {'bytes':>10} {'bpc':>6} {'/ xz':>6} {'c kB/s':>8} {'d kB/s':>8}  methods")
    for path in args.files:
        data = path.read_bytes()
        xz = len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
        for level in map(int, args.levels.split(",")):
            out = io.BytesIO()
            t = cpu()
            st = C.compress(io.BytesIO(data), out, q, name, level=C.LEVELS[level])
            tc = cpu() - t
            back = io.BytesIO()
            t = cpu()
            C.decompress(io.BytesIO(out.getvalue()), back, q, name)
            td = cpu() - t
            assert back.getvalue() == data, f"{path} level {level} does not round-trip"
            size = len(out.getvalue())
            row = {"file": path.name, "bytes_in": len(data), "level": level, "bytes": size,
                   "bpc": round(8 * size / len(data), 3), "xz": xz, "ratio_xz": round(size / xz, 3),
                   "compress_kBps": kB_s(len(data), tc), "decompress_kBps": kB_s(len(data), td),
                   "methods": st.methods}
            rows.append(row)
            print(f"{path.name[:24]:<24} {level:>5} {size:>10,} {row['bpc']:>6.3f} {row['ratio_xz']:>6.3f} "
                  f"{row['compress_kBps'] or '-':>8} {row['decompress_kBps'] or '-':>8}  {'/'.join(st.methods)}",
                  flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"model": name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
