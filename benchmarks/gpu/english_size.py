"""Which English model size still compresses at >= 25 kB/s on this CPU? Untrained weights, real text.

    python benchmarks/gpu/english_size.py FILE [--sizes 160,192,224,256,320] [--bytes 100000] [--threads 1]
        [--reference english-small]

For each width H: an untrained byte-level LN HM-LSTM 3 x H (input embedding 128, output embedding H) is
written as a model file, then `hmgen compress -c` and `hmgen decompress -c` run on the first --bytes of FILE
as subprocesses, and once more on 1 byte (start-up: interpreter, torch, model load, integer tables).
Prints kB/s both ways from CPU time (user+sys of the child; on a shared machine that is what says what the
model costs; with --threads 1 it is also the wall time of a quiet machine), end to end and marginal
(start-up subtracted), and the wall-clock figure. The boundary detectors of an untrained model fire at
other rates than a trained one's (COPY rows cost nothing in the integer engine), so --reference adds a
trained model of known size as a calibration row.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from hmgen.cell.reference import CharLM, ModelConfig, count_parameters  # noqa: E402
from hmgen.modelio import save_model  # noqa: E402
from hmgen.text.data import Vocab  # noqa: E402


def timed_child(cmd: list[str], stdin: bytes) -> tuple[bytes, float, float]:
    """Run cmd; (stdout, wall seconds, child CPU seconds user+sys)."""
    before = os.times()
    t = time.perf_counter()
    out = subprocess.run(cmd, input=stdin, capture_output=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    wall = time.perf_counter() - t
    after = os.times()
    return out, wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--sizes", default="160,192,224,256,320")
    ap.add_argument("--bytes", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference", help="also measure this (trained) model, e.g. english-small")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()
    p = Path(args.file)
    data = (lzma.open(p).read() if p.suffix == ".xz" else p.read_bytes())[:args.bytes]
    hm = [sys.executable, "-m", "hmgen"]
    rows = []
    print(f"{len(data):,} bytes of {p.name}, --threads {args.threads}; kB/s from child CPU time (user+sys) "
          f"unless marked wall; marginal = start-up (a 1-byte file) subtracted")
    print("| model | parameters | compress kB/s | compress marginal | decompress kB/s | decompress marginal "
          "| compress kB/s wall | start-up CPU s | bpc |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        models = [(f"untrained 3x{H}", H) for H in (int(s) for s in args.sizes.split(","))]
        if args.reference:
            models.append((args.reference, None))
        for label, H in models:
            if H is None:
                spec, params = args.reference, None
            else:
                torch.manual_seed(0)
                model = CharLM(ModelConfig(vocab_size=256, arch="hmlstm", embed_dim=128, hidden=[H, H, H], out_embed=H))
                spec, params = str(Path(tmp) / f"u{H}"), count_parameters(model)
                save_model(spec, model, Vocab("bytes"), name=f"untrained-3x{H}")
            m = ["--model", spec, "--threads", str(args.threads), "-q"]
            _, _, c0 = timed_child(hm + ["compress", "-c"] + m, data[:1])
            packed, cw, cc = timed_child(hm + ["compress", "-c"] + m, data)
            back, dw, dc = timed_child(hm + ["decompress", "-c"] + m, packed)
            assert back == data, f"{label}: round trip failed"
            kb = len(data) / 1000
            r = {"model": label, "hidden": [H] * 3 if H else None, "parameters": params, "bytes": len(data),
                 "compress_kBps_cpu": round(kb / cc, 1), "compress_kBps_cpu_marginal": round(kb / max(cc - c0, 1e-9), 1),
                 "decompress_kBps_cpu": round(kb / dc, 1), "decompress_kBps_cpu_marginal": round(kb / max(dc - c0, 1e-9), 1),
                 "compress_kBps_wall": round(kb / cw, 1), "startup_cpu_s": round(c0, 2),
                 "bpc": round(8 * len(packed) / len(data), 3), "threads": args.threads}
            rows.append(r)
            print(f"| {label} | {f'{params:,}' if params else '-'} | {r['compress_kBps_cpu']} | {r['compress_kBps_cpu_marginal']} | "
                  f"{r['decompress_kBps_cpu']} | {r['decompress_kBps_cpu_marginal']} | {r['compress_kBps_wall']} | "
                  f"{r['startup_cpu_s']} | {r['bpc']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
