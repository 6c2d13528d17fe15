"""The `hmgen` command: parses, calls the library, prints. Errors are one line on stderr, exit code 1
(2 for bad usage), never a traceback."""
from __future__ import annotations

import json
import os
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Optional

import typer

from hmgen import __version__

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="""HM-LSTM models: train, evaluate, sample, compress, show boundaries, write by hand.

Examples:

  hmgen sample --prime "the" -n 300          continue a text with the bundled model

  hmgen sample -n 1000 --seed 1 | wc -c      everything writes to stdout, progress to stderr

  hmgen train ptb:data/ptb --hidden 512,512,512 --out runs/ptb

  hmgen eval ptb:data/ptb --split test --model runs/ptb/best --json

  hmgen models                                bundled models with their figures

  hmgen compress notes.txt                    notes.txt.hmz (gzip-style: -d -c -k -f -t -l)

  hmgen boundaries "the quick brown fox" -o b.svg     where each layer's segments end

  hmgen handwrite "hello world" -o out.svg    synthetic handwriting as SVG
""",
)


def fail(message: str, code: int = 1):
    typer.echo(f"hmgen: {message}", err=True)
    raise typer.Exit(code)


def version_callback(value: bool):
    if value:
        typer.echo(f"hmgen {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                      help="Print the version and exit.")):
    pass


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def read_config_file(path: Path) -> dict:
    try:
        text = path.read_text()
        d = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as e:
        fail(f"{path}: cannot read config ({e})")
    return {k.replace("-", "_"): v for k, v in d.items()}


@app.command()
def train(
    data: Optional[str] = typer.Argument(None, help="Corpus: a file or folder (.xz ok), ptb:DIR, text8[:DIR] or enwik8[:DIR]; iam:DIR for handwriting (IAM-OnDB)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Run folder (checkpoints, best model, metrics.jsonl)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML or JSON file of these options; flags override it."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    valid: Optional[str] = typer.Option(None, help="Validation file for a file/folder corpus (default: its valid split, or the last 1%)."),
    download: Optional[bool] = typer.Option(None, "--download", help="Fetch text8/enwik8 if they are not in DIR."),
    arch: Optional[str] = typer.Option(None, help="hmlstm (default) or lstm (the baseline: same modules, no boundaries)."),
    hidden: Optional[str] = typer.Option(None, help="Layer sizes, e.g. 512,512,512."),
    embed_dim: Optional[int] = typer.Option(None, help="Input embedding size (paper: 128)."),
    out_embed: Optional[int] = typer.Option(None, help="Output embedding size (paper: 512 on PTB)."),
    layer_norm: Optional[bool] = typer.Option(None, "--layer-norm/--no-layer-norm"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
    seq_len: Optional[int] = typer.Option(None, help="Truncated-BPTT length."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate (paper: 0.002)."),
    clip: Optional[float] = typer.Option(None, help="Gradient-norm clip (paper: 1)."),
    warmup: Optional[int] = typer.Option(None, help="Linear learning-rate warm-up over this many steps (not in the paper)."),
    lr_divide: Optional[float] = typer.Option(None, help="Divide the LR by this on a validation plateau (paper: 50)."),
    patience: Optional[int] = typer.Option(None, help="Evaluations without improvement before dividing."),
    max_lr_decays: Optional[int] = typer.Option(None, help="Stop at the plateau after this many divisions."),
    slope_start: Optional[float] = typer.Option(None),
    slope_rate: Optional[float] = typer.Option(None, help="Slope a = min(slope_max, slope_start + rate*epoch)."),
    slope_max: Optional[float] = typer.Option(None),
    steps: Optional[int] = typer.Option(None, help="Total steps to train for."),
    epochs: Optional[float] = typer.Option(None, help="Total epochs to train for."),
    time_limit: Optional[float] = typer.Option(None, help="Stop (with a checkpoint) after this many seconds."),
    eval_every: Optional[int] = typer.Option(None),
    eval_symbols: Optional[int] = typer.Option(None, help="Evaluate on at most this many validation symbols."),
    ckpt_every: Optional[int] = typer.Option(None),
    log_every: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help="auto (CUDA when present), cpu, cuda, cuda:1 ..."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    name: Optional[str] = typer.Option(None, help="Name recorded in the exported model."),
    mixtures: Optional[int] = typer.Option(None, help="Handwriting (iam:DIR): mixture components (Graves: 20)."),
    window: Optional[int] = typer.Option(None, help="Handwriting: Gaussians in the attention window (Graves: 10)."),
    conditional: Optional[bool] = typer.Option(None, "--conditional/--unconditional",
                                               help="Handwriting: text-conditioned synthesis (default) or the paper's unconditional model."),
    stride: Optional[int] = typer.Option(None, help="Handwriting: keep every N-th pen point (default 2)."),
    max_points: Optional[int] = typer.Option(None, help="Handwriting: skip training lines longer than this (after --stride)."),
    fast: Optional[bool] = typer.Option(None, "--fast/--no-fast", help="Text models: the fused forward of hmgen.cell.fast (same function, fewer kernels; for GPUs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the run's summary as JSON."),
):
    """Train an HM-LSTM (or LSTM) language model. Multi-process: torchrun --nproc_per_node N -m hmgen train ..."""
    from hmgen.text.data import DataError
    from hmgen.training.loop import TrainConfig
    from hmgen.training.loop import train as run_training

    opts = read_config_file(config) if config else {}
    given = dict(data=data, out=out, valid=valid, download=download, arch=arch,
                 hidden=int_list(hidden) if hidden else None, embed_dim=embed_dim, out_embed=out_embed,
                 layer_norm=layer_norm, batch_size=batch_size, seq_len=seq_len, lr=lr, clip=clip, warmup=warmup,
                 lr_divide=lr_divide, patience=patience, max_lr_decays=max_lr_decays, slope_start=slope_start,
                 slope_rate=slope_rate, slope_max=slope_max, steps=steps, epochs=epochs, time_limit=time_limit,
                 eval_every=eval_every, eval_symbols=eval_symbols, ckpt_every=ckpt_every, log_every=log_every,
                 seed=seed, device=device, threads=threads, name=name, mixtures=mixtures, window=window,
                 conditional=conditional, stride=stride, max_points=max_points, fast=fast)
    opts.update({k: v for k, v in given.items() if v is not None})
    if resume and "data" not in opts:
        opts["data"] = ""          # taken from the checkpoint
    if "data" not in opts:
        fail("no training data: give a corpus (a file or folder, ptb:DIR, text8, enwik8)", 2)
    try:
        cfg = TrainConfig.from_dict(opts)
        cfg.model_config(2)        # validates the architecture options
    except (ValueError, TypeError) as e:
        fail(str(e), 2)
    command = "hmgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        summary = run_training(cfg, resume=resume, quiet=quiet, command=command)
    except (DataError, FileNotFoundError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted (the last checkpoint is kept; continue with --resume)", 130)
    if int(os.environ.get("RANK", "0")) != 0:   # under torchrun, one process reports
        return
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet and "best_valid_nll" in summary:
        best = summary["best_valid_nll"]
        typer.echo(f"stopped at step {summary['step']} ({summary['stop']}); best validation NLL "
                   f"{'-' if best is None else f'{best:.1f} nats/line'}; model: {summary['out']}/best", err=True)
    elif not quiet:
        best = summary["best_valid_bpc"]
        typer.echo(f"stopped at step {summary['step']} ({summary['stop']}); best validation BPC "
                   f"{'-' if best is None else f'{best:.4f}'}; model: {summary['out']}/best", err=True)


def open_model(model: Optional[str], device: str = "cpu"):
    from hmgen.modelio import ModelError, load_model
    try:
        return load_model(model, device=device)
    except ModelError as e:
        fail(str(e))


@app.command()
def sample(
    prime: str = typer.Option("", "--prime", "-p", help="Text to continue (printed first unless --no-echo)."),
    length: int = typer.Option(500, "--length", "-n", min=0, help="Characters to generate after the prime."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", min=0.0, help="0 = greedy; <1 safer, >1 wilder."),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Sample among the k likeliest symbols."),
    top_p: Optional[float] = typer.Option(None, "--top-p", min=0.0, max=1.0, help="Nucleus sampling: the smallest set with this much probability."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Same seed, same bytes."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A bundled model's name or a model path (default: english-small)."),
    echo: bool = typer.Option(True, "--echo/--no-echo", help="Print the prime before the continuation."),
    device: str = typer.Option("cpu", help="cpu, cuda, ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (shown only when stdout is not a terminal)."),
):
    """Generate text, streaming to stdout as it is produced.

    hmgen sample --prime "the" -n 300 --temperature 0.8 --seed 1
    """
    from hmgen.text.data import VocabError
    from hmgen.text.sample import generate

    lm = open_model(model, device)
    out = sys.stdout.buffer
    try:
        chunks = generate(lm, prime, length, temperature, top_k, top_p, seed, device)
        first = next(chunks, b"")       # the prime is checked before anything is printed
        if echo and prime:
            out.write(prime.encode("utf-8"))
        out.write(first)
        out.flush()
        # the text is the progress on a terminal; into a pipe or a file, show a bar on stderr instead
        with progress_bar(quiet or sys.stdout.isatty(), "sample") as advance:
            for done, chunk in enumerate(chunks, 2):
                out.write(chunk)
                out.flush()
                if advance and done % 50 == 0:
                    advance(done, length)
        if sys.stdout.isatty():
            out.write(b"\n")
        out.flush()
    except VocabError as e:
        fail(f"cannot use this prime with model {lm.name!r}: {e}")


@app.command("eval")
def evaluate_cmd(
    data: str = typer.Argument(..., help="A file or folder, or a corpus (ptb:DIR, text8[:DIR], enwik8[:DIR], a folder with splits)."),
    split: Optional[str] = typer.Option(None, help="Split of a corpus: train, valid or test (default: test; a plain file is used whole)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A bundled model's name or a model path."),
    max_symbols: Optional[int] = typer.Option(None, help="Evaluate on the first N symbols only."),
    streams: int = typer.Option(16, min=1, help="Pieces of the data evaluated side by side (each starts from a zero state)."),
    device: str = typer.Option("cpu", help="cpu, cuda, ..."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Bits per character of a model on a file or a named split, with per-layer UPDATE/COPY/FLUSH rates.

    hmgen eval ptb:data/ptb --split test --model runs/ptb/best --json
    """
    import torch

    from hmgen.text.data import DataError, load_eval_ids
    from hmgen.text.evaluate import evaluate

    if threads:
        torch.set_num_threads(threads)
    lm = open_model(model, device)
    try:
        ids = load_eval_ids(data, split, lm.vocab)
    except DataError as e:
        fail(str(e))
    if len(ids) < 2:
        fail(f"{data}: need at least 2 symbols to evaluate")
    with progress_bar(quiet, "eval") as advance:
        r = evaluate(lm.model, ids, streams=streams, max_symbols=max_symbols, device=device, progress=advance)
    r = {"model": lm.name, "data": data, "split": split, **r}
    if as_json:
        typer.echo(json.dumps(r))
        return
    typer.echo(f"{lm.name} on {data}{' (' + split + ')' if split else ''}: {r['bpc']:.4f} bpc over {r['symbols']:,} symbols "
               f"({r['symbols_per_s']:,} symbols/s)")
    for l, layer in enumerate(r["layers"], 1):
        typer.echo(f"  layer {l}: update {layer['update']:.3f}  copy {layer['copy']:.3f}  flush {layer['flush']:.3f}")


@app.command()
def boundaries(
    text: Optional[str] = typer.Argument(None, help="The text to read; - reads standard input."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read the text from this UTF-8 file instead."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A bundled model's name or a model path (default: english-small)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Also draw the hierarchy as SVG into this file (- = to stdout)."),
    width: Optional[int] = typer.Option(None, "--width", "-w", min=20, help="Columns per row (default: the terminal's; SVG: 100 characters)."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw z matrix, operations and counts as JSON."),
    device: str = typer.Option("cpu", help="cpu, cuda, ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No terminal picture (with -o) and no progress bar."),
):
    """Show where each layer's boundary detector fires on a text: one row per layer under the text.

    hmgen boundaries "the quick brown fox jumps over the lazy dog" -o fox.svg
    """
    if text is None and file is None:
        fail("no text: give it as an argument, - for standard input, or --file PATH", 2)
    if text is not None and file is not None:
        fail("give the text or --file PATH, not both", 2)
    if output == "-" and as_json:
        fail("--json and -o - both write to stdout; choose one", 2)
    try:
        raw = file.read_bytes() if file else sys.stdin.buffer.read() if text == "-" else None
        if raw is not None:
            text = raw.decode("utf-8")
    except OSError as e:
        fail(f"{file}: cannot read ({e.strerror or e})")
    except UnicodeDecodeError as e:
        fail(f"{file or 'standard input'}: not UTF-8 text ({e.reason} at byte {e.start})")
    if not text:
        fail("the text is empty: nothing to show")
    from hmgen.text.boundaries import analyse, render_svg, render_terminal
    from hmgen.text.data import VocabError
    from hmgen.modelio import atomic_write

    lm = open_model(model, device)
    try:
        with progress_bar(quiet or len(text) < 2000, "boundaries") as advance:
            b = analyse(lm, text, progress=advance)
    except VocabError as e:
        fail(f"cannot read this text with model {lm.name!r}: {e}")
    if output:
        svg = render_svg(b, width or 100)
        if output == "-":
            typer.echo(svg)
        else:
            try:
                atomic_write(Path(output), lambda tmp: Path(tmp).write_text(svg, encoding="utf-8"))
            except OSError as e:
                fail(f"{output}: cannot write ({e.strerror or e})")
    if as_json:
        typer.echo(json.dumps(b.to_dict()))
    elif not quiet and output != "-":
        from rich.console import Console
        console = Console(width=width, highlight=False)
        for line in render_terminal(b, console.width):
            console.print(line, no_wrap=True, overflow="ignore", crop=False)


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """List the bundled models with their size and figures."""
    from hmgen.modelio import list_models

    found = list_models()
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no bundled models found")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for col in ("name", "arch", "layers", "parameters", "file", "valid bpc"):   # descriptions: --json
        table.add_column(col, no_wrap=True)
    for m in found:
        f = m["figures"]
        table.add_row(m["name"], m["arch"], "x".join(map(str, m["hidden"])), f"{m['parameters'] / 1e6:.2f}M",
                      f"{(m['file_bytes'] or 0) / 2**20:.1f} MiB", f"{f['valid_bpc']:.3f}" if "valid_bpc" in f else "-")
    Console().print(table)


@app.command()
def handwrite(
    text: Optional[str] = typer.Argument(None, help='Text to write; "-" reads it from stdin. Newlines start new lines.'),
    output: Optional[str] = typer.Option(None, "--output", "-o", help='SVG file to write; "-" writes the SVG to stdout.'),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Handwriting model: a bundled name or a path (default: handwriting-small)."),
    bias: float = typer.Option(0.75, "--bias", "-b", min=0.0, help="0 = unbiased, wild; higher = sharper, neater, less varied (Graves 2013 §5.4)."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Same seed, same SVG."),
    style: Optional[int] = typer.Option(None, "--style", min=0, help="Write in the hand of line N of the model's style bank (--list-styles)."),
    list_styles: bool = typer.Option(False, "--list-styles", help="Print the model's style bank and exit."),
    width: int = typer.Option(40, "--width", "-w", min=1, help="Wrap lines longer than this many characters."),
    line_height: float = typer.Option(60.0, "--line-height", min=1.0, help="Pixels per line of handwriting."),
    margin: float = typer.Option(20.0, "--margin", min=0.0, help="Margin around the text, pixels."),
    color: str = typer.Option("black", "--color", help="Ink colour (SVG colour: a name, #rrggbb, rgb(...))."),
    stroke_width: float = typer.Option(2.0, "--stroke-width", min=0.01, help="Pen width, pixels."),
    background: str = typer.Option("white", "--background", help='Background colour, or "none" for transparent.'),
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="Smooth the strokes (Savitzky-Golay) when drawing."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also write a PNG rendering (black ink on white) to this file."),
    max_steps_per_char: int = typer.Option(25, "--max-steps-per-char", min=1, help="Hard cap on pen points per character."),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="Drop characters the model cannot write instead of failing."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Report each line's steps and why it stopped, on stderr."),
):
    """Write TEXT in synthetic handwriting as an SVG (HM-LSTM + attention window + mixture density output).

    hmgen handwrite "hello world" -o out.svg --seed 1

    hmgen sample -n 60 | hmgen handwrite - -o out.svg --style 2
    """
    import re
    import time

    import torch

    from hmgen.handwriting.model import HandwritingModelError, load_hw_model
    from hmgen.handwriting.render import to_png, to_svg
    from hmgen.handwriting.sample import SynthesisError, wrap, write_lines

    torch.set_num_threads(1)   # one line at a time, small matrices: extra threads only add overhead
    try:
        hm = load_hw_model(model)
    except HandwritingModelError as e:
        fail(str(e))
    if list_styles:
        for i, s in enumerate(hm.styles):
            typer.echo(f"{i}\t{s['text']}")
        return
    if text is None:
        fail("no text: give TEXT, or - to read it from stdin", 2)
    if output is None:
        fail("no output: give -o FILE.svg, or -o - for stdout", 2)
    for name, value in (("--color", color), ("--background", background)):
        if not re.fullmatch(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]+|rgba?\([0-9., %]+\)", value):
            fail(f"{name}: not an SVG colour: {value!r}", 2)
    if text == "-":
        text = sys.stdin.read()
    if skip_unknown:
        known = set(hm.cfg.alphabet) | {"\n"}
        dropped = sorted({c for c in text if c not in known and not c.isspace()})
        text = "".join(c if c in known else (" " if c.isspace() else "") for c in text)
        if dropped and verbose:
            typer.echo("skipped characters the model never saw: " + " ".join(repr(c) for c in dropped), err=True)
    lines = wrap(text, width)
    if not lines:
        fail("nothing to write: the text is empty")
    t0 = time.time()
    try:
        written = write_lines(hm, lines, bias=bias, seed=seed, style=style, max_steps_per_char=max_steps_per_char)
    except SynthesisError as e:
        fail(str(e))
    if verbose:
        for i, ln in enumerate(written, 1):
            typer.echo(f"line {i}: {ln.steps} points for {len(ln.text)} characters, window peaked on "
                       f"{ln.coverage:.0%} of them; stopped: {ln.stop} "
                       f"({'window passed the last character' if ln.stop == 'end of text' else f'hard cap of {max_steps_per_char} points per character'})",
                       err=True)
        typer.echo(f"{len(written)} line(s) in {time.time() - t0:.2f} s (model {hm.name}, bias {bias}, "
                   f"style {style if style is not None else '-'}, seed {seed if seed is not None else '-'})", err=True)
    offsets = [ln.offsets for ln in written]
    svg = to_svg(offsets, hm.cfg.line_height, line_height, margin, color, stroke_width, background,
                 title=" / ".join(lines)[:200], smooth=smooth)
    try:
        if output == "-":
            sys.stdout.write(svg + "\n")
            sys.stdout.flush()
        else:
            Path(output).write_text(svg + "\n")
        if png is not None:
            png.write_bytes(to_png(offsets, hm.cfg.line_height, line_height, margin, stroke_width, smooth))
    except OSError as e:
        fail(f"cannot write: {e}")


def archive_summary(path: str, res, decompressing: bool, verbose: bool) -> str:
    st = res.stats
    original, packed = (st.bytes_out, st.bytes_in) if decompressing else (st.bytes_in, st.bytes_out)
    speed = original / st.seconds / 1000 if st.seconds > 0 else 0.0
    bpc = 8 * packed / original if original else 0.0
    sizes = f"{packed:,} -> {original:,}" if decompressing else f"{original:,} -> {packed:,}"
    line = (f"{path}: {sizes} bytes ({100 * packed / max(1, original):.1f}%, {bpc:.3f} bpc), "
            f"{speed:.1f} kB/s")
    if verbose:
        line += f", model {st.model}, {st.blocks} block(s), lanes {st.lanes}"
    return line + ("" if res.output in ("stdout", "(test)") else f" -> {res.output}") + (" OK" if res.output == "(test)" else "")


def archive_command(files: list[str], decompress: bool, stdout: bool, keep: bool, force: bool, test: bool,
                    list_: bool, verbose: bool, quiet: bool, model: Optional[str], device: str, lanes: int,
                    threads: Optional[int], as_json: bool):
    from hmgen.archive import files as archive
    from hmgen.archive.format import FormatError, MAX_LANES
    from hmgen.modelio import ModelError

    if threads:
        torch_threads(threads)
    if not 1 <= lanes <= MAX_LANES:
        fail(f"--lanes must be between 1 and {MAX_LANES}", 2)
    files = files or ["-"]
    if list_:
        rows, status = [], 0
        for path in files:
            try:
                info = archive.list_path(path)
            except (FormatError, OSError) as e:
                typer.echo(f"hmgen: {path}: {e}" if isinstance(e, FormatError) else f"hmgen: {e}", err=True)
                status = 1
                continue
            rows.append({"file": path, "compressed": info.compressed, "original": info.original,
                         "ratio": round(info.compressed / max(1, info.original), 4),
                         "bpc": round(8 * info.compressed / info.original, 4) if info.original else None,
                         "model": info.name, "weights_sha256": info.weights_hash, "blocks": info.blocks,
                         "lanes": info.lanes})
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            typer.echo(f"{'compressed':>12} {'original':>12} {'ratio':>7} {'bpc':>6}  {'model':<16} file")
            for r in rows:
                bpc = f"{r['bpc']:6.3f}" if r["bpc"] is not None else "     -"
                typer.echo(f"{r['compressed']:>12,} {r['original']:>12,} {100 * r['ratio']:6.1f}% {bpc}  "
                           f"{r['model']:<16} {r['file']}")
        raise typer.Exit(status)
    decompress = decompress or test
    to_stdout = stdout or files == ["-"]
    if not decompress and to_stdout and sys.stdout.isatty() and not force:
        fail("compressed data not written to a terminal (use -f to force, or redirect stdout)")
    if decompress and "-" in files and sys.stdin.isatty() and not force:
        fail("compressed data not read from a terminal (redirect stdin)")
    try:
        engines = archive.Engines(archive.pick_device(device))
    except ModelError as e:
        fail(str(e))
    status = 0
    for path in files:
        size = os.path.getsize(path) if path != "-" and os.path.isfile(path) else None
        try:
            with progress_bar(quiet or (size or 0) < (1 << 16) and path != "-", path if path != "-" else "stdin") as bar:
                done = [0]

                def advance(k: int):
                    done[0] += k
                    if bar is not None:
                        bar(done[0], size if not decompress else None)

                if decompress:
                    res = archive.decompress_path(path, engines, model, keep=keep or stdout, force=force,
                                                  to_stdout=stdout, test=test, progress=advance)
                else:
                    res = archive.compress_path(path, engines, model, keep=keep or stdout, force=force,
                                                to_stdout=stdout, lanes=lanes, progress=advance)
        except archive.Skipped as e:
            typer.echo(f"hmgen: {e}", err=True)
            status = max(status, 2)
            continue
        except (FormatError, ModelError, OSError, ValueError) as e:
            shown = f"{path}: {e}" if isinstance(e, FormatError) and not str(e).startswith(path) else str(e)
            typer.echo(f"hmgen: {shown}", err=True)
            status = 1
            continue
        if not quiet and (verbose or test or not to_stdout or sys.stderr.isatty()):
            typer.echo(archive_summary(path, res, decompress, verbose), err=True)
    raise typer.Exit(status)


ARCHIVE_HELP = """

Examples:

  hmgen compress notes.txt              writes notes.txt.hmz, removes notes.txt once the archive is verified

  hmgen compress -k -v *.txt            keep the inputs, print sizes, bpc and speed

  cat f | hmgen compress | hmgen decompress | cmp - f

  hmgen decompress notes.txt.hmz        (also: hmgen compress -d), -t tests, -l lists

Exit status: 0 success, 1 error, 2 warning (a file skipped)."""


def archive_options(files, stdout, keep, force, test, list_, verbose, quiet, model, device, lanes, threads, as_json):
    return dict(files=files, stdout=stdout, keep=keep, force=force, test=test, list_=list_, verbose=verbose,
                quiet=quiet, model=model, device=device, lanes=lanes, threads=threads, as_json=as_json)


FILES = typer.Argument(None, help="Files; none or - means stdin to stdout.")
STDOUT = typer.Option(False, "--stdout", "-c", help="Write to stdout; keep the input files.")
KEEP = typer.Option(False, "--keep", "-k", help="Keep (do not delete) the input files.")
FORCE = typer.Option(False, "--force", "-f", help="Overwrite existing output; write compressed data to a terminal.")
TEST = typer.Option(False, "--test", "-t", help="Decompress and verify, write nothing.")
LIST = typer.Option(False, "--list", "-l", help="List archive contents: sizes, ratio, bpc, model.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="More detail in the summary line.")
QUIET = typer.Option(False, "--quiet", "-q", help="No summary line, no progress bar.")
MODEL = typer.Option(None, "--model", "-m", help="Byte-level model (name or path). Decompression uses the archive's own by default.")
DEVICE = typer.Option("cpu", "--device", help="cpu, cuda or auto. Archives decode on any device.")
LANES = typer.Option(256, "--lanes", help="At most this many lanes coded in parallel (more: faster, slightly larger).")
THREADS = typer.Option(None, "--threads", help="torch CPU threads (default: all cores).")
JSON = typer.Option(False, "--json", help="With -l: print JSON.")


@app.command(help="Compress files with the model's next-byte probabilities and a range coder (.hmz)." + ARCHIVE_HELP)
def compress(files: Optional[list[str]] = FILES,
             decompress: bool = typer.Option(False, "--decompress", "-d", help="Decompress instead."),
             stdout: bool = STDOUT, keep: bool = KEEP, force: bool = FORCE, test: bool = TEST, list_: bool = LIST,
             verbose: bool = VERBOSE, quiet: bool = QUIET, model: Optional[str] = MODEL, device: str = DEVICE,
             lanes: int = LANES, threads: Optional[int] = THREADS, as_json: bool = JSON):
    archive_command(decompress=decompress, **archive_options(files, stdout, keep, force, test, list_, verbose, quiet,
                                                             model, device, lanes, threads, as_json))


@app.command(help="Restore files compressed by `hmgen compress`, byte for byte (checked by CRC32)." + ARCHIVE_HELP)
def decompress(files: Optional[list[str]] = FILES, stdout: bool = STDOUT, keep: bool = KEEP, force: bool = FORCE,
               test: bool = TEST, list_: bool = LIST, verbose: bool = VERBOSE, quiet: bool = QUIET,
               model: Optional[str] = MODEL, device: str = DEVICE, lanes: int = LANES,
               threads: Optional[int] = THREADS, as_json: bool = JSON):
    archive_command(decompress=True, **archive_options(files, stdout, keep, force, test, list_, verbose, quiet,
                                                       model, device, lanes, threads, as_json))


def torch_threads(n: int):
    import torch
    torch.set_num_threads(n)


class progress_bar:
    """A rich progress bar on stderr when it is a terminal and not quiet; otherwise nothing."""

    def __init__(self, quiet: bool, label: str):
        self.enabled = not quiet and sys.stderr.isatty()
        self.label = label

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.progress.start()
        task = self.progress.add_task(self.label, total=None)
        return lambda done, total: self.progress.update(task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()
        return False


def main():
    if os.environ.get("HMGEN_DEBUG"):
        return app()
    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except BrokenPipeError:                      # `hmgen sample | head`: the reader left; not an error
        sys.stderr.close()
        raise SystemExit(0)
    except Exception as e:                       # never a traceback for the user
        typer.echo(f"hmgen: internal error: {type(e).__name__}: {e} (HMGEN_DEBUG=1 shows the traceback)", err=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
