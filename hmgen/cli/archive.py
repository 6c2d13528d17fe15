"""`hmgen compress` and `hmgen decompress`: gzip-style files and streams of the .hmz format."""
from __future__ import annotations

import json
import os
import re
import signal
import sys
from contextlib import contextmanager
from typing import Optional

import typer

from hmgen.cli.common import say
from hmgen.cli.options import device_option, json_option, model_option, quiet_option, set_threads
from hmgen.errors import HmgenError, UsageError
from hmgen.fs import one_line
from hmgen.progress import Bar

SKIPPED = 3   # exit status: a file was left alone with a warning (gzip says 2; hmgen's 2 is a usage error)


def archive_summary(path: str, res, decompressing: bool, verbose: bool) -> str:
    st = res.stats
    original, packed = (st.bytes_out, st.bytes_in) if decompressing else (st.bytes_in, st.bytes_out)
    speed = original / st.seconds / 1000 if st.seconds > 0 else 0.0
    sizes = f"{packed:,} -> {original:,}" if decompressing else f"{original:,} -> {packed:,}"
    ratio = f" ({100 * packed / original:.1f}%, {8 * packed / original:.3f} bpc)" if original else ""   # none of 0
    line = f"{path}: {sizes} bytes{ratio}, {speed:.1f} kB/s"
    if verbose:
        line += (f", model {st.model}, {st.blocks} block(s), methods {'/'.join(map(str, st.methods))}, "
                 f"lanes {'/'.join(map(str, st.lanes))}")
    return line + ("" if res.output in ("stdout", "(test)") else f" -> {res.output}") + (" OK" if res.output == "(test)" else "")


class Signals:
    """SIGINT, SIGTERM and SIGHUP while compress or decompress runs (`timeout`, a closed terminal) unwind like
    Ctrl-C, so the temporary output file is removed (hmgen.fs.atomic_write) instead of being left behind by an
    abrupt exit. While numba loads or compiles the coder, a signal is only recorded and acted on right after:
    an exception raised from a handler inside its LLVM callbacks can crash the interpreter (SIGSEGV), and numba
    prints and drops a Python exception there, so check() also runs at every progress tick."""

    def __init__(self):
        self.received: list[int] = []
        self.deferring = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.unwind)

    def unwind(self, signum, frame) -> None:
        self.received.append(signum)
        if not self.deferring:
            self.check()

    def check(self) -> None:
        if self.received:
            raise KeyboardInterrupt if self.received[0] == signal.SIGINT else SystemExit(128 + self.received[0])

    @contextmanager
    def deferred(self):
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        self.check()


def original_size(path: str) -> int | None:
    """What an archive file decodes to, from its headers alone (for the progress bar's time left); None if unknown."""
    from hmgen.archive import files as archive
    from hmgen.archive.format import FormatError
    try:
        return archive.list_path(path).original
    except (FormatError, OSError):
        return None                     # the decoding itself reports what is wrong


def list_archives(files: list[str], as_json: bool) -> None:
    """-l: sizes, ratio, bpc and model(s) of each archive, from its headers; exits."""
    from hmgen.archive import files as archive
    from hmgen.archive.format import FormatError

    rows, status = [], 0
    for path in files:
        try:
            info = archive.list_path(path)
        except archive.Skipped as e:
            say(f"hmgen: {e}")
            status = status or SKIPPED                      # an error (1) outranks a warning
            continue
        except (FormatError, OSError) as e:
            say(f"hmgen: {path}: {e}" if isinstance(e, FormatError) else f"hmgen: {one_line(e)}")
            status = 1
            continue
        rows.append({"file": path, "compressed": info.compressed, "original": info.original,
                     "ratio": round(info.compressed / info.original, 4) if info.original else None,
                     "bpc": round(8 * info.compressed / info.original, 4) if info.original else None,
                     "model": info.name, "weights_sha256": info.weights_hash, "blocks": info.blocks,
                     "lanes": info.lanes, "methods": info.methods, "members": info.members, "models": info.models})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif rows:                                              # as gzip -l: no header without a row under it
        typer.echo(f"{'compressed':>12} {'original':>12} {'ratio':>7} {'bpc':>6}  {'model':<16} file")
        for r in rows:
            bpc = f"{r['bpc']:6.3f}" if r["bpc"] is not None else "     -"
            ratio = f"{100 * r['ratio']:6.1f}%" if r["ratio"] is not None else "      -"
            typer.echo(f"{r['compressed']:>12,} {r['original']:>12,} {ratio} {bpc}  "
                       f"{r['model']:<16} {r['file']}")
    raise typer.Exit(status)


def archive_command(files: list[str], decompress: bool, stdout: bool, keep: bool, force: bool, test: bool,
                    list_: bool, verbose: bool, quiet: bool, model: Optional[str], device: str, lanes: Optional[int],
                    threads: Optional[int], as_json: bool, level: Optional[int] = None):
    import dataclasses

    from hmgen.archive import files as archive
    from hmgen.archive.format import DEFAULT_LEVEL, LEVELS, FormatError, MAX_LANES

    signals = Signals()
    # On the CPU the compiled engine codes on one thread and torch is never imported. Elsewhere torch's engine,
    # one CPU thread by default: its steps are many small operations, which gain little from a second thread on
    # a quiet machine and lose many times over beside another busy process (benchmarks/RESULTS.md).
    if device != "cpu":
        set_threads(1)
    workers = threads or len(os.sched_getaffinity(0))     # 0 or none given: every core this process may use
    if lanes is not None and not 1 <= lanes <= MAX_LANES:
        raise UsageError(f"--lanes must be between 1 and {MAX_LANES}")
    chosen = LEVELS[level or DEFAULT_LEVEL]
    if lanes is not None:
        chosen = dataclasses.replace(chosen, max_lanes=lanes)
    files = files or ["-"]
    reads_stdin = "-" in files
    if (decompress or test or list_) and reads_stdin and sys.stdin.isatty() and not force:
        raise HmgenError("compressed data not read from a terminal (redirect stdin)")
    if list_:
        list_archives(files, as_json)
    decompress = decompress or test
    if not decompress and (stdout or reads_stdin) and sys.stdout.isatty() and not force:
        raise HmgenError("compressed data not written to a terminal (use -f to force, or redirect stdout)")
    engines = archive.Engines(device, guard=signals.deferred)
    if not quiet and sys.stderr.isatty() and not archive.coder_compiled():
        say("hmgen: first run: compiling the coder for this CPU (once, about 15 s)")
    status = 0
    for path in files:
        to_stdout = stdout or path == "-"
        size = os.path.getsize(path) if path != "-" and os.path.isfile(path) else None
        total = original_size(path) if decompress and size else size        # what the bar counts: input bytes
        try:
            with Bar(path if path != "-" else "stdin", quiet or (total or 0) < (1 << 16) and path != "-",
                     total=total, unit="bytes") as bar:
                done = [0]

                def advance(k: int):
                    signals.check()
                    done[0] += k
                    bar.update(done[0])

                if decompress:
                    res = archive.decompress_path(path, engines, model, keep=keep or stdout, force=force,
                                                  to_stdout=stdout, test=test, progress=advance, threads=workers)
                else:
                    res = archive.compress_path(path, engines, model, keep=keep or stdout, force=force,
                                                to_stdout=stdout, level=chosen, progress=advance, threads=workers)
        except archive.Skipped as e:
            say(f"hmgen: {e}")
            status = status or SKIPPED                      # an error (1) outranks a warning
            continue
        except BrokenPipeError:
            raise                                           # the reader left: stop (README "Exit status")
        except (HmgenError, OSError, ValueError) as e:      # reported per file; the next file is tried
            shown = (f"{path}: {e}" if isinstance(e, FormatError) and not str(e).startswith(path)
                     else one_line(e) if isinstance(e, OSError) else str(e))
            say(f"hmgen: {shown}")
            status = 1
            continue
        if not quiet and (verbose or test or not to_stdout or sys.stderr.isatty()):
            say(archive_summary(path, res, decompress, verbose))
    raise typer.Exit(status)


ARCHIVE_HELP = """

\b
Examples:
  hmgen compress notes.txt          notes.txt.hmz (then removes notes.txt)
  hmgen compress -k -v *.txt        keep the inputs; print sizes, bpc, speed
  cat f | hmgen compress | hmgen decompress | cmp - f
  hmgen decompress notes.txt.hmz    (or compress -d); -t tests, -l lists

Exit status: 0 success; 1 error (the other files are still done); 2 usage
error (nothing done); 3 warning: a file was skipped (gzip says 2); 141 the
reader of standard output left."""


def archive_options(files, stdout, keep, force, test, list_, verbose, quiet, model, device, lanes, threads, as_json,
                    level=None):
    return dict(files=files, stdout=stdout, keep=keep, force=force, test=test, list_=list_, verbose=verbose,
                quiet=quiet, model=model, device=device, lanes=lanes, threads=threads, as_json=as_json, level=level)


LEVEL_FLAG = re.compile(r"^-([A-Za-z]*)([1-9])([A-Za-z]*\d*)$")


def level_flags(args: list[str]) -> list[str]:
    """gzip's and xz's level flags for compress and decompress: -1 .. -9 (also inside a group, as in -9k),
    --fast (-1) and --best (-9) become --level N; arguments after "--" are names, left alone, and so is the value
    of an option that takes one (`-T -1` is -T's value, refused as such), and so is a group in which such an option's
    letter comes before the digit (`-T2`, `-kT4`: xz's thread counts, the rest of the group is the value); after the
    level such a letter takes the digits that follow it (`-9T2`: level 9, -T 2)."""
    if not args or args[0] not in ("compress", "decompress"):
        return args
    out = [args[0]]
    for i, a in enumerate(args[1:], 1):
        if a == "--":
            return out + args[i:]
        m = LEVEL_FLAG.match(a)
        if out[-1] in TAKE_VALUES or (m and any(f"-{c}" in TAKE_VALUES for c in m.group(1))):
            out.append(a)
        elif a in ("--fast", "--best"):
            out.append(f"--level={1 if a == '--fast' else 9}")
        elif m:
            out += [f"--level={m.group(2)}"] + ([f"-{m.group(1)}{m.group(3)}"] if m.group(1) + m.group(3) else [])
        else:
            out.append(a)
    return out


FILES = typer.Argument(None, help="Files; none or - means stdin to stdout.")
STDOUT = typer.Option(False, "--stdout", "-c", help="Write to stdout; keep the input files.")
KEEP = typer.Option(False, "--keep", "-k", help="Keep (do not delete) the input files.")
FORCE = typer.Option(False, "--force", "-f", help="Overwrite existing output; write compressed data to a terminal.")
TEST = typer.Option(False, "--test", "-t", help="Decompress and verify, write nothing.")
LIST = typer.Option(False, "--list", "-l", help="List archive contents: sizes, ratio, bpc, model.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="More detail in the summary line.")
QUIET = quiet_option("No summary line, no progress bar.")
MODEL = model_option("Byte-level model (name or path). Decompression uses the archive's own by default.")
DEVICE = device_option()
LANES = typer.Option(None, "--lanes", help="At most this many lanes coded in parallel (default: the level's; "
                     "more: larger archives).")
LEVEL = typer.Option(None, "--level", min=1, max=9, help="1 (fastest: LZMA2 alone, preset 6), 2 (LZMA2 at xz -9e's "
                     "preset), 3..9 (the model, fewer and longer lanes: smaller); default 6. -1 .. -9, --fast and "
                     "--best say the same. Decompression needs no level.")
THREADS = typer.Option(None, "--threads", "-T", min=0, max=1024, help="Blocks coded side by side (0 or none: one "
                       "per core); the archive is the same for any number.")
JSON = json_option("With -l: print JSON.")
TAKE_VALUES = frozenset(name for option in (MODEL, DEVICE, LANES, LEVEL, THREADS) for name in option.param_decls)


COMPRESS_HELP = "Compress files with the model's next-byte probabilities and a range coder (.hmz)." + ARCHIVE_HELP
DECOMPRESS_HELP = "Restore files compressed by `hmgen compress`, byte for byte (checked by CRC32)." + ARCHIVE_HELP


def compress(files: Optional[list[str]] = FILES,
             decompress: bool = typer.Option(False, "--decompress", "-d", help="Decompress instead."),
             stdout: bool = STDOUT, keep: bool = KEEP, force: bool = FORCE, test: bool = TEST, list_: bool = LIST,
             verbose: bool = VERBOSE, quiet: bool = QUIET, model: Optional[str] = MODEL, device: str = DEVICE,
             lanes: Optional[int] = LANES, threads: Optional[int] = THREADS, as_json: bool = JSON,
             level: Optional[int] = LEVEL):
    archive_command(decompress=decompress, **archive_options(files, stdout, keep, force, test, list_, verbose, quiet,
                                                             model, device, lanes, threads, as_json, level))


def decompress(files: Optional[list[str]] = FILES, stdout: bool = STDOUT, keep: bool = KEEP, force: bool = FORCE,
               test: bool = TEST, list_: bool = LIST, verbose: bool = VERBOSE, quiet: bool = QUIET,
               model: Optional[str] = MODEL, device: str = DEVICE, lanes: Optional[int] = LANES,
               threads: Optional[int] = THREADS, as_json: bool = JSON, level: Optional[int] = LEVEL):
    archive_command(decompress=True, **archive_options(files, stdout, keep, force, test, list_, verbose, quiet,
                                                       model, device, lanes, threads, as_json, level))
