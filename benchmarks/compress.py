"""hmgen compress against gzip -9, bzip2 -9, xz -9e and zstd -19 on a public benchmark set, in one run.

    python benchmarks/compress.py [--cap 131072] [--models english-small ...] [--end-to-end] [FILE ...]

The set is built from what a Debian machine with Python has, and from the project's shared data (each file's
source is printed): English prose the models never trained on (the English validation split; licence texts),
PTB test text, source code (Python's standard library; this project), HTML, XML, JSON, a man page, a log, a
binary, random bytes, zeros, a repetitive file; each capped at --cap bytes. Files named on the command line
are added. A missing source is reported and skipped.

Prints a markdown table (bpc = 8 x compressed bytes / input bytes; hmgen/xz = size ratio; kB/s = input bytes
per second, in-process for hmgen with the CLI's CPU engine, so without the start-up) and writes
benchmarks/results/compress.json. Every archive is decoded and compared with its input; a row over the format's
bound (xz -9e + 0.1 % + 64 bytes) is marked "OVER BOUND".

--end-to-end adds the command-line figures (start-up included, median of 3): `hmgen compress -c` and
`hmgen decompress -c` of 200,000 and 4,096 bytes of held-out prose, on a quiet machine and beside one busy
process (a Python loop spinning on one core), and the ratio busy / quiet.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import io
import json
import lzma
import os
import platform
import random
import shutil
import subprocess
import sys
import sysconfig
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hmgen.archive import format as C                      # noqa: E402
from hmgen.archive.files import Engines                     # noqa: E402
from hmgen.modelio import list_models                       # noqa: E402

TORCH = Path(importlib.util.find_spec("torch").origin).parent if importlib.util.find_spec("torch") else Path("/nonexistent")

TOOLS = {"gzip -9": (["gzip", "-9", "-c"], ["gzip", "-d", "-c"]),
         "bzip2 -9": (["bzip2", "-9", "-c"], ["bzip2", "-d", "-c"]),
         "xz -9e": (["xz", "-9e", "-c", "-T1"], ["xz", "-d", "-c"]),
         "zstd -19": (["zstd", "-19", "-c", "-q", "-T1"], ["zstd", "-d", "-c", "-q"])}
SHARED = ROOT.parent / "shared" / "data" if (ROOT.parent / "shared").exists() else Path("/work/shared/data")
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def xz_file(path: Path, offset: int = 0):
    return lambda cap: lzma.open(path).read(offset + cap)[offset:]


def plain(path: Path):
    return lambda cap: path.read_bytes()[:cap]


def gz(path: Path):
    return lambda cap: gzip.open(path).read(cap)


def joined(paths: list[Path]):
    return lambda cap: b"".join(p.read_bytes() for p in paths)[:cap]


# (name, kind, source as recorded, reader(cap) -> bytes)
SET = [
    ("english-valid", "prose", "shared/data/text/english/english.valid.txt.xz (held-out split), from 200 kB in",
     xz_file(SHARED / "text/english/english.valid.txt.xz", 200_000)),
    ("GPL-3", "prose", "/usr/share/common-licenses/GPL-3", plain(Path("/usr/share/common-licenses/GPL-3"))),
    ("Apache-2.0", "prose", "/usr/share/common-licenses/Apache-2.0", plain(Path("/usr/share/common-licenses/Apache-2.0"))),
    ("ptb-test", "prose", "shared/data/text/ptb/ptb.test.txt", plain(SHARED / "text/ptb/ptb.test.txt")),
    ("argparse.py", "code", f"{STDLIB}/argparse.py (Python standard library)", plain(STDLIB / "argparse.py")),
    ("hmgen-src", "code", "this project's hmgen/**/*.py, sorted, concatenated",
     joined(sorted(Path(p) for p in glob.glob(str(ROOT / "hmgen/**/*.py"), recursive=True)))),
    ("python-policy.html", "markup", "/usr/share/doc/python3/python-policy.html",
     plain(Path("/usr/share/doc/python3/python-policy.html"))),
    ("iso_3166-1.xml", "markup", "/usr/share/xml/iso-codes/iso_3166-1.xml", plain(Path("/usr/share/xml/iso-codes/iso_3166-1.xml"))),
    ("graph_break_registry.json", "markup", "torch/_dynamo/graph_break_registry.json (installed torch)",
     plain(TORCH / "_dynamo/graph_break_registry.json")),
    ("bash.1", "man page", "/usr/share/man/man1/bash.1.gz (troff source)", gz(Path("/usr/share/man/man1/bash.1.gz"))),
    ("dpkg.log", "log", "/var/log/dpkg.log", plain(Path("/var/log/dpkg.log"))),
    ("ls", "binary", "/usr/bin/ls", plain(Path("/usr/bin/ls"))),
    ("random", "random", "random.Random(0).randbytes(65536)", lambda cap: random.Random(0).randbytes(min(cap, 65536))),
    ("zeros", "zeros", "20,000 zero bytes", lambda cap: bytes(min(cap, 20_000))),
    ("hello", "repetitive", '"hello world\\n" x 2000', lambda cap: (b"hello world\n" * 2000)[:cap]),
]


def run_tool(name: str, data: bytes) -> dict:
    enc, dec = TOOLS[name]
    t = time.perf_counter()
    packed = subprocess.run(enc, input=data, capture_output=True, check=True).stdout
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    back = subprocess.run(dec, input=packed, capture_output=True, check=True).stdout
    t_dec = time.perf_counter() - t
    assert back == data, name
    return {"bytes": len(packed), "enc_s": t_enc, "dec_s": t_dec}


def run_hmgen(q, name: str, data: bytes) -> dict:
    out = io.BytesIO()
    t = time.perf_counter()
    st = C.compress(io.BytesIO(data), out, q, name)
    t_enc = time.perf_counter() - t
    back = io.BytesIO()
    t = time.perf_counter()
    C.decompress(io.BytesIO(out.getvalue()), back, q, name)
    t_dec = time.perf_counter() - t
    assert back.getvalue() == data, "hmgen round trip"
    return {"bytes": len(out.getvalue()), "enc_s": t_enc, "dec_s": t_dec, "methods": st.methods, "lanes": st.lanes}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="more files to add to the set")
    ap.add_argument("--models", nargs="*", default=None, help="default: every bundled byte-level model")
    ap.add_argument("--cap", type=int, default=128 << 10, help="bytes per file at most")
    ap.add_argument("--end-to-end", action="store_true", help="also time the commands, quiet and beside a busy process")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/compress.json"))
    args = ap.parse_args()
    names = args.models or [m["name"] for m in list_models() if m["kind"] == "text" and m["vocab"] == "bytes"]
    models = {}
    engines = Engines("cpu")
    for n in names:
        q, name = engines.get(n)
        models[name] = q
    tools = [t for t in TOOLS if shutil.which(TOOLS[t][0][0])]
    inputs = SET + [(Path(f).name, "given", f, plain(Path(f))) for f in args.files]
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
              "engine": "hmgen.archive.engine.cpu_engine (the CLI's CPU engine, 1 thread)", "cap": args.cap, "files": {}}
    cols = tools + [f"hmgen {m}" for m in models]
    print(f"{report['date']}; {report['machine']}; hmgen's CPU engine (1 thread); bytes of output, and bpc\n")
    print("| file | kind | bytes | " + " | ".join(cols) + " | " +
          " | ".join(f"{m} / xz | {m} kB/s c / d | {m} methods" for m in models) + " |")
    print("|---|---|---:|" + "---:|" * len(cols) + "---:|---:|---|" * len(models))
    for name, kind, source, read in inputs:
        try:
            data = read(args.cap)
        except OSError as e:
            print(f"<!-- {name}: skipped, {e} -->", flush=True)
            continue
        rows = {t: run_tool(t, data) for t in tools}
        for m, q in models.items():
            rows[f"hmgen {m}"] = run_hmgen(q, m, data)
        xz = rows.get("xz -9e", {}).get("bytes")
        report["files"][name] = {"kind": kind, "source": source, "bytes": len(data), "tools": rows}
        cells = [f"{rows[c]['bytes']:,} ({8 * rows[c]['bytes'] / max(1, len(data)):.2f})" for c in cols]
        extra = []
        for m in models:
            r = rows[f"hmgen {m}"]
            over = xz is not None and r["bytes"] > xz * 1.001 + 64
            extra += [(f"{r['bytes'] / xz:.3f}" if xz else "-") + (" OVER BOUND" if over else ""),
                      f"{len(data) / r['enc_s'] / 1e3:.1f} / {len(data) / r['dec_s'] / 1e3:.1f}",
                      ", ".join(sorted(set(r["methods"])))]
        print(f"| {name} | {kind} | {len(data):,} | " + " | ".join(cells + extra) + " |", flush=True)
    print("\nSources:")
    for name, info in report["files"].items():
        print(f"- {name}: {info['source']}")
    if args.end_to_end:
        report["end_to_end"] = end_to_end(next(iter(models)))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def timed(cmd: list[str], stdin: Path, stdout: Path) -> float:
    with open(stdin, "rb") as i, open(stdout, "wb") as o:
        t = time.perf_counter()
        subprocess.run(cmd, stdin=i, stdout=o, check=True)
        return time.perf_counter() - t


def end_to_end(model: str) -> list[dict]:
    """Median of 3 wall times of `hmgen compress -c` / `decompress -c` (start-up included), quiet and busy."""
    hmgen = [sys.executable, "-m", "hmgen"]
    prose = xz_file(SHARED / "text/english/english.valid.txt.xz", 400_000)(200_000)
    rows = []
    print("\nEnd to end (median of 3 runs; busy = beside one Python process spinning on a core):\n")
    print("| input | compress quiet | decompress quiet | kB/s c / d quiet | compress busy | decompress busy | busy / quiet c / d |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        src, arc, back = Path(tmp, "in"), Path(tmp, "in.hmz"), Path(tmp, "back")
        for size in (200_000, 4_096):
            src.write_bytes(prose[:size])
            row = {"bytes": size, "model": model}
            for mode in ("quiet", "busy"):
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if mode == "busy" else None
                try:
                    c = statistics.median(timed(hmgen + ["compress", "-c", "-m", model], src, arc) for _ in range(3))
                    d = statistics.median(timed(hmgen + ["decompress", "-c"], arc, back) for _ in range(3))
                finally:
                    if spinner:
                        spinner.kill()
                assert back.read_bytes() == src.read_bytes(), "end-to-end round trip"
                row[mode] = {"compress_s": c, "decompress_s": d}
            q, b = row["quiet"], row["busy"]
            print(f"| {size:,} bytes of held-out prose | {q['compress_s']:.2f} s | {q['decompress_s']:.2f} s | "
                  f"{size / q['compress_s'] / 1e3:.1f} / {size / q['decompress_s'] / 1e3:.1f} | {b['compress_s']:.2f} s | "
                  f"{b['decompress_s']:.2f} s | {b['compress_s'] / q['compress_s']:.2f} / "
                  f"{b['decompress_s'] / q['decompress_s']:.2f} |", flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
