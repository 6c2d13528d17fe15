"""hmgen compress against gzip -9, bzip2 -9, xz -9e and zstd -19 on the same files, in the same run.

    python benchmarks/compress.py FILE... [--model english-small] [--threads 2] [--slice 131072]

Prints markdown tables and writes benchmarks/results/compress.json:
  1. size (bpc = 8 x compressed bytes / input bytes) and speed (input kB/s) both ways, per file and tool;
     every hmgen archive is decoded and compared with its input.
  2. on the first --slice bytes of the first file: what the integer inference costs (ideal bpc of the float
     model vs the integer model on the same lanes, and the bytes actually written), and what COPY saves
     (engine time with copied rows skipped vs computed densely, and the share of layer rows computed).
"""
from __future__ import annotations

import argparse
import io
import json
import lzma
import math
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hmgen.archive import format as C                      # noqa: E402
from hmgen.modelio import load_model                  # noqa: E402
from hmgen.cell.integer import QuantLM                       # noqa: E402

TOOLS = {"gzip -9": (["gzip", "-9", "-c"], ["gzip", "-d", "-c"]),
         "bzip2 -9": (["bzip2", "-9", "-c"], ["bzip2", "-d", "-c"]),
         "xz -9e": (["xz", "-9e", "-c", "-T1"], ["xz", "-d", "-c"]),
         "zstd -19": (["zstd", "-19", "-c", "-q", "-T1"], ["zstd", "-d", "-c", "-q"])}


def read_input(path: str) -> bytes:
    p = Path(path)
    return lzma.open(p).read() if p.suffix == ".xz" else p.read_bytes()


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


def run_hmgen(q: QuantLM, name: str, data: bytes, lanes: int) -> dict:
    out = io.BytesIO()
    t = time.perf_counter()
    st = C.compress(io.BytesIO(data), out, q, name, lanes)
    t_enc = time.perf_counter() - t
    back = io.BytesIO()
    t = time.perf_counter()
    C.decompress(io.BytesIO(out.getvalue()), back, q, name)
    t_dec = time.perf_counter() - t
    assert back.getvalue() == data, "hmgen round trip"
    return {"bytes": len(out.getvalue()), "enc_s": t_enc, "dec_s": t_dec, "lanes": st.lanes}


def lane_grid(data: bytes, lanes: int) -> np.ndarray:
    m = len(data) // lanes
    return np.frombuffer(data[:m * lanes], dtype=np.uint8).reshape(lanes, m).astype(np.int64)


def costs(lm, q: QuantLM, name: str, data: bytes, lanes: int) -> dict:
    """Ideal bpc of the float and the integer model on the same lanes; bytes the coder wrote; COPY saving."""
    x = torch.from_numpy(lane_grid(data, lanes))                      # (lanes, m)
    n = x.numel()
    with torch.no_grad():
        prev = torch.cat([torch.full((lanes, 1), C.START), x[:, :-1]], 1)
        state, bits = lm.initial_state(lanes), 0.0
        for t0 in range(0, x.shape[1], 200):                          # segments, state carried
            logits, state, _ = lm(prev[:, t0:t0 + 200], state)
            lp = torch.log_softmax(logits.double(), -1).gather(2, x[:, t0:t0 + 200, None])
            bits -= lp.sum().item() / math.log(2)
    timings, int_bits, computed = {}, 0.0, None
    for dense in (False, True):
        st, prev = q.initial_state(lanes), torch.full((lanes,), C.START)
        rows = np.zeros(len(q.hidden))
        t = time.perf_counter()
        for step in range(x.shape[1]):
            if not dense:                                             # layer rows that are not COPY
                zb = torch.ones(lanes, dtype=torch.bool)
                for l in range(len(q.hidden)):
                    active = zb | st.z[l] if q.hierarchical else zb
                    rows[l] += active.sum().item()
                    zb = st.z[l]
            f, st = q.step(prev, st, dense=dense)
            if not dense:
                p = f.gather(1, x[:, step:step + 1]).squeeze(1) / f.sum(1)
                int_bits -= torch.log2(p).sum().item()
            prev = x[:, step]
        timings["dense" if dense else "sparse"] = time.perf_counter() - t
        if not dense:
            computed = rows / n
    archive = io.BytesIO()
    C.compress(io.BytesIO(bytes(x.numpy().astype(np.uint8).reshape(-1))), archive, q, name, lanes,
               min_lane=x.shape[1])
    return {"bytes": n, "lanes": lanes, "float_bpc": bits / n, "int_bpc": int_bits / n,
            "coded_bpc": 8 * len(archive.getvalue()) / n,
            "rows_computed": [round(float(r), 4) for r in computed],
            "sparse_s": timings["sparse"], "dense_s": timings["dense"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--model", default="english-small")
    ap.add_argument("--lanes", type=int, default=C.DEFAULT_LANES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slice", type=int, default=1 << 17, help="bytes for the quantisation and COPY measurements")
    ap.add_argument("--slice-lanes", type=int, default=64)
    ap.add_argument("--json", default="benchmarks/results/compress.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    q = QuantLM(loaded.model)
    tools = [t for t in TOOLS if shutil.which(TOOLS[t][0][0])]
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
              "torch": torch.__version__, "model": loaded.name, "files": {}}
    print(f"| file | bytes | tool | bpc | ratio vs xz | compress kB/s | decompress kB/s |")
    print(f"|---|---:|---|---:|---:|---:|---:|")
    for path in args.files:
        data = read_input(path)
        rows = {t: run_tool(t, data) for t in tools}
        rows["hmgen " + loaded.name] = run_hmgen(q, loaded.name, data, args.lanes)
        report["files"][path] = {"bytes": len(data), "tools": rows}
        xz = rows.get("xz -9e", {}).get("bytes")
        for tool, r in rows.items():
            rel = f"{r['bytes'] / xz:.3f}" if xz else "-"
            print(f"| {Path(path).name} | {len(data):,} | {tool} | {8 * r['bytes'] / len(data):.3f} | {rel} | "
                  f"{len(data) / r['enc_s'] / 1e3:,.1f} | {len(data) / r['dec_s'] / 1e3:,.1f} |", flush=True)
    data = read_input(args.files[0])[:args.slice]
    c = costs(loaded.model, q, loaded.name, data, args.slice_lanes)
    report["slice"] = {"file": args.files[0], **c}
    print(f"\nFirst {c['bytes']:,} bytes of {Path(args.files[0]).name}, {c['lanes']} lanes:\n")
    print("| float model, ideal bpc | integer model, ideal bpc | bytes written, bpc | rows computed per layer | "
          "engine time, COPY skipped | engine time, dense | saving |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    print(f"| {c['float_bpc']:.4f} | {c['int_bpc']:.4f} | {c['coded_bpc']:.4f} | "
          f"{' / '.join(f'{r:.0%}' for r in c['rows_computed'])} | {c['sparse_s']:.1f} s | {c['dense_s']:.1f} s | "
          f"{c['dense_s'] / c['sparse_s']:.2f}x |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
