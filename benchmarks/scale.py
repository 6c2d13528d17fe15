"""hmgen compress at scale, end to end through the CLI (issue 28's targets): threads, big inputs it cannot win,
big text. Every archive is decoded and compared; wall and CPU seconds and peak memory are the child's own
(os.wait4), so run it on a quiet machine — it prints the load average before and after.

    python benchmarks/scale.py --text FILE4MB [--big-text FILE20MB] [--random-mb 100] [--threads 1,2] [--json out]

  threads    FILE4MB compressed and decompressed with -T 1 and -T N: speed-up, archives identical
  busy       (--busy) the same file beside one busy process (a Python loop on a core): the default threads
             against -T 1, both ways (the default may not be slower)
  random     N MB of os.urandom (and its .xz, "already compressed") against xz -9e: time and size
  big text   FILE20MB with the default threads: peak memory both ways, size against one block on one thread
             (the coder before independent blocks: hmgen.archive.format with SEGMENT = BLOCK, in-process)
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HMGEN = [sys.executable, "-m", "hmgen"]


def run(cmd: list[str], stdin: Path | None = None, stdout: Path | None = None) -> dict:
    """One child: its wall and CPU seconds and peak RSS (MiB)."""
    t = time.perf_counter()
    with open(stdin or os.devnull, "rb") as i, open(stdout or os.devnull, "wb") as o:
        p = subprocess.Popen(cmd, stdin=i, stdout=o, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
    err = p.stderr.read().decode()
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err}")
    return {"wall": round(time.perf_counter() - t, 2), "cpu": round(usage.ru_utime + usage.ru_stime, 2),
            "rss_mib": round(usage.ru_maxrss / 1024, 1)}


def same(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def threads_row(text: Path, n: int, tmp: Path) -> dict:
    one, many, back = tmp / "t1.hmz", tmp / f"t{n}.hmz", tmp / "back"
    c1 = run(HMGEN + ["compress", "-c", "-T", "1", str(text)], stdout=one)
    cn = run(HMGEN + ["compress", "-c", "-T", str(n), str(text)], stdout=many)
    d1 = run(HMGEN + ["decompress", "-c", "-T", "1", str(one)], stdout=back)
    assert same(back, text)
    dn = run(HMGEN + ["decompress", "-c", "-T", str(n), str(one)], stdout=back)
    assert same(back, text)
    size = text.stat().st_size
    return {"file": text.name, "bytes": size, "threads": n, "identical": same(one, many),
            "archive": one.stat().st_size, "compress_1": c1, f"compress_{n}": cn, "decompress_1": d1,
            f"decompress_{n}": dn, "speedup_compress": round(c1["wall"] / cn["wall"], 2),
            "speedup_decompress": round(d1["wall"] / dn["wall"], 2)}


def busy_row(text: Path, tmp: Path) -> dict:
    """The default thread count against one thread, beside one process that keeps a core busy."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        arc, back = tmp / "busy.hmz", tmp / "back"
        row = {"file": text.name, "bytes": text.stat().st_size}
        for label, extra in (("default", []), ("one", ["-T", "1"])):
            row[f"compress_{label}"] = run(HMGEN + ["compress", "-c", *extra, str(text)], stdout=arc)
            row[f"decompress_{label}"] = run(HMGEN + ["decompress", "-c", *extra, str(arc)], stdout=back)
            assert same(back, text)
    finally:
        spinner.kill()
    for way in ("compress", "decompress"):
        row[f"{way}_default_vs_one"] = round(row[f"{way}_default"]["wall"] / row[f"{way}_one"]["wall"], 2)
    return row


def against_xz(data: Path, tmp: Path) -> dict:
    ours, xz, back = tmp / "r.hmz", tmp / "r.xz", tmp / "back"
    h = run(HMGEN + ["compress", "-c", str(data)], stdout=ours)
    x = run(["xz", "-9e", "-c", "-T1", str(data)], stdout=xz)
    d = run(HMGEN + ["decompress", "-c", str(ours)], stdout=back)
    assert same(back, data)
    bound = xz.stat().st_size * 1.001 + 64
    return {"file": data.name, "bytes": data.stat().st_size, "hmgen": ours.stat().st_size, "xz": xz.stat().st_size,
            "within_bound": ours.stat().st_size <= bound, "hmgen_compress": h, "xz_compress": x,
            "hmgen_decompress": d, "time_vs_xz": round(h["wall"] / x["wall"], 2)}


def one_block_size(text: Path) -> int:
    """The archive the coder made before independent blocks (one block per 64 MiB, one thread), in-process."""
    from hmgen.archive import format as C
    from hmgen.archive.files import Engines
    C.SEGMENT = C.BLOCK
    q, name = Engines().get(None)
    out = io.BytesIO()
    with open(text, "rb") as f:
        C.compress(f, out, q, name)
    return len(out.getvalue())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", type=Path, help="a text of a few MB (threads)")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--busy", action="store_true", help="also --text beside a busy process: default vs -T 1")
    ap.add_argument("--random-mb", type=int, default=0, help="random input of this many MB (and its .xz)")
    ap.add_argument("--big-text", type=Path, help="a text of ~20 MB (memory, size against one block)")
    ap.add_argument("--one-block", type=int, help="the one-block archive's size of --big-text, measured before "
                    "(its in-process run takes ~15 minutes; the code of one block has not changed since)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
              "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.text:
            report["threads"] = [threads_row(args.text, int(n), tmp) for n in args.threads.split(",")]
            for r in report["threads"]:
                n = r["threads"]
                print(f"{r['file']} ({r['bytes']:,} bytes) -T {n}: identical {r['identical']}; compress "
                      f"{r['compress_1']['wall']} s -> {r[f'compress_{n}']['wall']} s (x{r['speedup_compress']}); "
                      f"decompress {r['decompress_1']['wall']} s -> {r[f'decompress_{n}']['wall']} s "
                      f"(x{r['speedup_decompress']})", flush=True)
        if args.text and args.busy:
            r = report["busy"] = busy_row(args.text, tmp)
            print(f"{r['file']} beside a busy process: default threads / -T 1 wall time: compress "
                  f"{r['compress_default']['wall']} / {r['compress_one']['wall']} s (x{r['compress_default_vs_one']}), "
                  f"decompress {r['decompress_default']['wall']} / {r['decompress_one']['wall']} s "
                  f"(x{r['decompress_default_vs_one']})", flush=True)
        if args.random_mb:
            rnd = tmp / "random.bin"
            with open(rnd, "wb") as f:
                for _ in range(args.random_mb):
                    f.write(os.urandom(1 << 20))
            rows = [against_xz(rnd, tmp)]
            subprocess.run(["xz", "-0", "-k", "-T1", str(rnd)], check=True)
            rnd.unlink()
            rows.append(against_xz(tmp / "random.bin.xz", tmp))
            report["incompressible"] = rows
            for r in rows:
                print(f"{r['file']} ({r['bytes']:,} bytes): hmgen {r['hmgen']:,} ({r['hmgen_compress']['wall']} s), "
                      f"xz -9e {r['xz']:,} ({r['xz_compress']['wall']} s): time x{r['time_vs_xz']}, "
                      f"within xz + 0.1 % + 64: {r['within_bound']}", flush=True)
        if args.big_text:
            ours, back = tmp / "b.hmz", tmp / "back"
            c = run(HMGEN + ["compress", "-c", str(args.big_text)], stdout=ours)
            dd = run(HMGEN + ["decompress", "-c", str(ours)], stdout=back)
            assert same(back, args.big_text)
            before = args.one_block or one_block_size(args.big_text)
            report["big_text"] = {"file": args.big_text.name, "bytes": args.big_text.stat().st_size,
                                  "archive": ours.stat().st_size, "one_block_one_thread": before,
                                  "change": round(ours.stat().st_size / before - 1, 4), "compress": c, "decompress": dd}
            r = report["big_text"]
            print(f"{r['file']} ({r['bytes']:,} bytes): {r['archive']:,} bytes vs {before:,} as one block "
                  f"({100 * r['change']:+.2f} %); compress {c['wall']} s, peak {c['rss_mib']} MiB; decompress "
                  f"{dd['wall']} s, peak {dd['rss_mib']} MiB", flush=True)
    report["load_after"] = os.getloadavg()[0]
    print(f"load average {report['load_before']:.2f} before, {report['load_after']:.2f} after")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
