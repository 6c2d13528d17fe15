"""hmgen compress against the compressors people choose, on a public benchmark set, in one run.

    python benchmarks/compress.py [--cap 131072] [--models english-small-3 ...] [--tools xz -9e,paq8px -9]
                                  [--corpus DIR ...] [--end-to-end] [FILE ...]

Anchors (each skipped, with a note, where it is not installed): gzip -9, bzip2 -9, xz -9e, zstd -19,
brotli -q 11, 7-Zip's PPMd (`7z -m0=PPMd -mx=9`), zpaq -m5 (Debian's zpaq) and paq8px -9 (GPL: built from its
source into an ignored folder, never copied from: `bash benchmarks/anchors.sh`, or $HMGEN_PAQ8PX naming the
binary). Every archive, each tool's and hmgen's, is decoded and compared with its input; times are CPU seconds
(user + system: the tool's as a child process, hmgen's in-process with the CLI's CPU engine on one thread), so
they mean something only on a quiet machine (the load average is printed).

The set is built from what a Debian machine with Python has and from the project's shared data (each file's
source is printed): English prose the models never trained on (the English validation split; licence texts),
PTB test text, man pages in Russian and Japanese (UTF-8), source code, HTML, XML, JSON, a man page, a log; and
structured data made reproducibly from files of the machine: a CSV table and a JSON-lines log (from the ISO
codes and dpkg's log), a SQLite database of the same table, ELF object code (a static library), an x86 binary;
then random bytes, zeros, a repetitive file. Each is capped at --cap bytes (0: whole files). --corpus DIR adds
every file of DIR (e.g. the Canterbury corpus or snappy's test data: held-out material none of the models saw),
FILE arguments single files. A missing source is reported and skipped.

Prints a markdown table (bpc = 8 x compressed bytes / input bytes), the totals of the text files (prose, code,
markup) and of the data files against xz -9e and paq8px -9, and writes benchmarks/results/compress.json. A
hmgen row over the format's bound (xz -9e + 0.1 % + 64 bytes) is marked "OVER BOUND".

--end-to-end adds the command-line figures (start-up included, median of 3): `hmgen compress -c` and
`hmgen decompress -c` of 200,000 and 4,096 bytes of held-out prose, on a quiet machine and beside one busy
process (a Python loop spinning on one core), and the ratio busy / quiet.
"""
from __future__ import annotations

import argparse
import csv
import glob
import gzip
import io
import json
import lzma
import os
import platform
import random
import resource
import shutil
import sqlite3
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
PAQ8PX = Path(os.environ.get("HMGEN_PAQ8PX", ROOT / "build/anchors/paq8px/build/paq8px"))

# name -> (compress argv, archive name, decompress argv, output name); run in a scratch folder holding the input
# as "in"; None as the archive / output name: the command writes it to stdout.
TOOLS = {"gzip -9": (["gzip", "-9", "-c", "in"], None, ["gzip", "-d", "-c", "in.x"], None),
         "bzip2 -9": (["bzip2", "-9", "-c", "in"], None, ["bzip2", "-d", "-c", "in.x"], None),
         "xz -9e": (["xz", "-9e", "-c", "-T1", "in"], None, ["xz", "-d", "-c", "in.x"], None),
         "zstd -19": (["zstd", "-19", "-c", "-q", "-T1", "in"], None, ["zstd", "-d", "-c", "-q", "in.x"], None),
         "brotli -q 11": (["brotli", "-q", "11", "-c", "in"], None, ["brotli", "-d", "-c", "in.x"], None),
         "7z PPMd": (["7z", "a", "-bso0", "-bsp0", "-t7z", "-m0=PPMd", "-mx=9", "-mmt=1", "in.x", "in"], "in.x",
                     ["7z", "e", "-so", "in.x"], None),
         "zpaq -m5": (["zpaq", "a", "in.x", "in", "-m5", "-t1"], "in.x", ["zpaq", "x", "in.x", "-to", "out", "-t1"],
                      "out/in"),
         "paq8px -9": ([str(PAQ8PX), "-9", "in", "in.x"], "in.x", [str(PAQ8PX), "-d", "in.x", "out"], "out")}
TEXT_KINDS = {"prose", "code", "markup", "man page", "log", "text"}       # the rest is data
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


def man_pages(lang: str):
    """The troff sources of a language's section-1 man pages, sorted, concatenated (UTF-8)."""
    return lambda cap: b"".join(gzip.open(p).read() for p in sorted(glob.glob(f"/usr/share/man/{lang}/man1/*.gz")))[:cap]


def iso_rows() -> list[dict]:
    return json.loads(Path("/usr/share/iso-codes/json/iso_3166-2.json").read_text())["3166-2"]


def iso_csv(cap: int) -> bytes:
    """ISO 3166-2 subdivisions as a CSV table (code, country, type, name, parent)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["code", "country", "type", "name", "parent"])
    for r in iso_rows():
        w.writerow([r["code"], r["code"][:2], r["type"], r["name"], r.get("parent", "")])
    return out.getvalue().encode()[:cap]


def iso_sqlite(cap: int) -> bytes:
    """The same table as a SQLite database file (page size 4096, no journal), with an index on the country."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp, "t.db"))
        db.executescript("PRAGMA page_size = 4096; PRAGMA journal_mode = OFF;"
                         "CREATE TABLE sub (code TEXT PRIMARY KEY, country TEXT, type TEXT, name TEXT, parent TEXT);"
                         "CREATE INDEX by_country ON sub (country);")
        db.executemany("INSERT INTO sub VALUES (?, ?, ?, ?, ?)",
                       [(r["code"], r["code"][:2], r["type"], r["name"], r.get("parent", "")) for r in iso_rows()])
        db.commit()
        db.close()
        return Path(tmp, "t.db").read_bytes()[:cap]


def dpkg_jsonl(cap: int) -> bytes:
    """/var/log/dpkg.log as JSON lines (date, time, action, and the rest split into fields)."""
    lines = []
    for line in Path("/var/log/dpkg.log").read_text().splitlines():
        f = line.split()
        if len(f) >= 3:
            lines.append(json.dumps({"date": f[0], "time": f[1], "action": f[2], "fields": f[3:]}))
    return ("\n".join(lines) + "\n").encode()[:cap]


# (name, kind, source as recorded, reader(cap) -> bytes)
SET = [
    ("english-valid", "prose", "shared/data/text/english/english.valid.txt.xz (held-out split), from 200 kB in",
     xz_file(SHARED / "text/english/english.valid.txt.xz", 200_000)),
    ("GPL-3", "prose", "/usr/share/common-licenses/GPL-3", plain(Path("/usr/share/common-licenses/GPL-3"))),
    ("Apache-2.0", "prose", "/usr/share/common-licenses/Apache-2.0", plain(Path("/usr/share/common-licenses/Apache-2.0"))),
    ("ptb-test", "prose", "shared/data/text/ptb/ptb.test.txt", plain(SHARED / "text/ptb/ptb.test.txt")),
    ("man-ru", "text", "/usr/share/man/ru/man1/*.gz, troff sources in Russian (UTF-8), sorted, concatenated",
     man_pages("ru")),
    ("man-ja", "text", "/usr/share/man/ja/man1/*.gz, troff sources in Japanese (UTF-8), sorted, concatenated",
     man_pages("ja")),
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
    ("iso_3166-2.csv", "table", "/usr/share/iso-codes/json/iso_3166-2.json as CSV (code, country, type, name, "
     "parent)", iso_csv),
    ("dpkg.jsonl", "table", "/var/log/dpkg.log as JSON lines", dpkg_jsonl),
    ("iso_3166-2.sqlite", "database", "the same table as a SQLite file (sqlite3 module, page size 4096, one index)",
     iso_sqlite),
    ("libX11.a", "object code", "/usr/lib/x86_64-linux-gnu/libX11.a (a static library: ELF objects)",
     plain(Path("/usr/lib/x86_64-linux-gnu/libX11.a"))),
    ("ls", "binary", "/usr/bin/ls", plain(Path("/usr/bin/ls"))),
    ("random", "random", "random.Random(0).randbytes(65536)", lambda cap: random.Random(0).randbytes(min(cap, 65536))),
    ("zeros", "zeros", "20,000 zero bytes", lambda cap: bytes(min(cap, 20_000))),
    ("hello", "repetitive", '"hello world\\n" x 2000', lambda cap: (b"hello world\n" * 2000)[:cap]),
]
# the kinds of the classic corpora's files, for --corpus (others: text or data by their bytes)
KNOWN = {"alice29.txt": "prose", "asyoulik.txt": "prose", "lcet10.txt": "prose", "plrabn12.txt": "prose",
         "bible.txt": "prose", "world192.txt": "prose", "book1": "prose", "book2": "prose", "news": "prose",
         "paper1": "prose", "paper2": "prose", "fields.c": "code", "grammar.lsp": "code", "progc": "code",
         "progl": "code", "progp": "code", "cp.html": "markup", "html": "markup", "xargs.1": "markup",
         "urls.10K": "markup", "kennedy.xls": "table", "ptt5": "binary", "sum": "object code", "obj1": "object code",
         "obj2": "object code", "geo": "table", "geo.protodata": "table", "kppkn.gtb": "table",
         "fireworks.jpeg": "compressed", "paper-100k.pdf": "binary"}


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_self() -> float:
    t = os.times()
    return t.user + t.system


def available(name: str) -> bool:
    exe = TOOLS[name][0][0]
    return Path(exe).is_file() if "/" in exe else shutil.which(exe) is not None


def run_tool(name: str, data: bytes) -> dict:
    """One tool both ways in a scratch folder: its archive's size and CPU seconds; the output is checked."""
    enc, arc, dec, out = TOOLS[name]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "in").write_bytes(data)
        t = cpu_children()
        r = subprocess.run(enc, cwd=tmp, capture_output=True, check=True)
        t_enc = cpu_children() - t
        packed = Path(tmp, arc).read_bytes() if arc else r.stdout
        if not arc:
            Path(tmp, "in.x").write_bytes(packed)
        os.remove(Path(tmp, "in"))
        t = cpu_children()
        r = subprocess.run(dec, cwd=tmp, capture_output=True, check=True)
        t_dec = cpu_children() - t
        back = Path(tmp, out).read_bytes() if out else r.stdout
    assert back == data, f"{name} round trip"
    return {"bytes": len(packed), "enc_s": t_enc, "dec_s": t_dec}


def run_hmgen(q, name: str, data: bytes) -> dict:
    out = io.BytesIO()
    t = cpu_self()
    st = C.compress(io.BytesIO(data), out, q, name)
    t_enc = cpu_self() - t
    back = io.BytesIO()
    t = cpu_self()
    C.decompress(io.BytesIO(out.getvalue()), back, q, name)
    t_dec = cpu_self() - t
    assert back.getvalue() == data, "hmgen round trip"
    return {"bytes": len(out.getvalue()), "enc_s": t_enc, "dec_s": t_dec, "methods": st.methods, "lanes": st.lanes}


def corpus(folder: str) -> list:
    """Every regular file of a folder, sorted, with its kind (KNOWN, else text or data by its bytes)."""
    rows = []
    for p in sorted(Path(folder).iterdir()):
        if p.is_file():
            kind = KNOWN.get(p.name) or ("text" if C.looks_like_text(p.read_bytes()[:1 << 16]) else "data")
            rows.append((p.name, kind, str(p), plain(p)))
    return rows


def kB_s(n: int, seconds: float) -> str:
    return f"{n / seconds / 1e3:.1f}" if seconds > 0 else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="more files to add to the set")
    ap.add_argument("--models", nargs="*", default=None, help="default: the default text model")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated anchors (default: all installed)")
    ap.add_argument("--corpus", action="append", default=[], help="add every file of this folder")
    ap.add_argument("--only-corpus", action="store_true", help="leave out the built-in set")
    ap.add_argument("--cap", type=int, default=128 << 10, help="bytes per file at most (0: whole files)")
    ap.add_argument("--end-to-end", action="store_true", help="also time the commands, quiet and beside a busy process")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/compress.json"))
    args = ap.parse_args()
    cap = args.cap or 1 << 40
    names = args.models or [next(m["name"] for m in list_models() if m["kind"] == "text" and m.get("default"))]
    models = {}
    engines = Engines("cpu")
    for n in names:
        q, name = engines.get(n)
        models[name] = q
    tools = []
    for t in args.tools.split(","):
        if t not in TOOLS:
            raise SystemExit(f"unknown tool {t!r}; known: {', '.join(TOOLS)}")
        if available(t):
            tools.append(t)
        else:
            print(f"<!-- {t}: not installed, left out -->")
    inputs = ([] if args.only_corpus else SET) + [r for d in args.corpus for r in corpus(d)] + \
        [(Path(f).name, "given", f, plain(Path(f))) for f in args.files]
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
              "engine": "hmgen.archive.engine.cpu_engine (the CLI's CPU engine, 1 thread)", "cap": args.cap,
              "tools": tools, "files": {}}
    cols = tools + [f"hmgen {m}" for m in models]
    print(f"{report['date']}; {report['machine']}; CPU seconds; hmgen's CPU engine (1 thread); bytes of output, "
          f"and bpc\n")
    print("| file | kind | bytes | " + " | ".join(cols) + " | " +
          " | ".join(f"{m} / xz | {m} kB/s c / d | {m} methods" for m in models) + " |")
    print("|---|---|---:|" + "---:|" * len(cols) + "---:|---:|---|" * len(models))
    for name, kind, source, read in inputs:
        try:
            data = read(cap)
        except OSError as e:
            print(f"<!-- {name}: skipped, {e} -->", flush=True)
            continue
        if not data:
            print(f"<!-- {name}: skipped, empty -->", flush=True)
            continue
        rows = {t: run_tool(t, data) for t in tools}
        for m, q in models.items():
            rows[f"hmgen {m}"] = run_hmgen(q, m, data)
        xz = rows.get("xz -9e", {}).get("bytes")
        report["files"][name] = {"kind": kind, "source": source, "bytes": len(data), "tools": rows}
        cells = [f"{rows[c]['bytes']:,} ({8 * rows[c]['bytes'] / len(data):.2f})" for c in cols]
        extra = []
        for m in models:
            r = rows[f"hmgen {m}"]
            over = xz is not None and r["bytes"] > xz * 1.001 + 64
            extra += [(f"{r['bytes'] / xz:.3f}" if xz else "-") + (" OVER BOUND" if over else ""),
                      f"{kB_s(len(data), r['enc_s'])} / {kB_s(len(data), r['dec_s'])}",
                      ", ".join(sorted(set(r["methods"])))]
        print(f"| {name} | {kind} | {len(data):,} | " + " | ".join(cells + extra) + " |", flush=True)
    report["totals"] = totals(report["files"], cols)
    print("\nSources:")
    for name, info in report["files"].items():
        print(f"- {name}: {info['source']}")
    if args.end_to_end:
        report["end_to_end"] = end_to_end(next(iter(models)))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def totals(files: dict, cols: list[str]) -> dict:
    """Per group (text: prose, code, markup, man pages, logs; data: the rest but random, zeros and repetition,
    which only test the bound): each column's total bytes and CPU seconds both ways, against xz and paq8px."""
    groups = {"text": [f for f in files.values() if f["kind"] in TEXT_KINDS],
              "data": [f for f in files.values() if f["kind"] not in TEXT_KINDS
                       and f["kind"] not in ("random", "zeros", "repetitive", "compressed")]}
    out = {}
    print("\nTotals (bytes; CPU seconds compress / decompress; size / xz -9e; size / paq8px -9):\n")
    print("| group | files | bytes in | " + " | ".join(cols) + " |")
    print("|---|---:|---:|" + "---:|" * len(cols))
    for g, rows in groups.items():
        if not rows:
            continue
        sums = {c: {k: sum(r["tools"][c][k] for r in rows) for k in ("bytes", "enc_s", "dec_s")} for c in cols}
        out[g] = {"files": len(rows), "bytes": sum(r["bytes"] for r in rows), "columns": sums}
        cells = []
        for c in cols:
            s = sums[c]
            rel = [f"{s['bytes'] / sums[a]['bytes']:.3f} × {a.split()[0]}" for a in ("xz -9e", "paq8px -9")
                   if a in sums and a != c]
            cells.append(f"{s['bytes']:,}; {s['enc_s']:.1f} / {s['dec_s']:.1f} s" + (f"; {', '.join(rel)}" if rel else ""))
        print(f"| {g} | {len(rows)} | {out[g]['bytes']:,} | " + " | ".join(cells) + " |")
    return out


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
