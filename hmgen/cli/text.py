"""The text-model commands: `sample`, `eval`, `boundaries`, `models`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import typer

from hmgen.bundled import DEFAULT, HANDWRITING, TEXT
from hmgen.cli.common import check_output, console, read_utf8, save_output
from hmgen.cli.options import (device_option, json_option, model_option, quiet_option, seed_option, set_threads,
                               threads_option)
from hmgen.errors import HmgenError, UsageError
from hmgen.progress import Bar

# eval's default: pieces side by side, but none shorter than this many symbols (hmgen's choice: the state
# carries context over a few hundred symbols, so a cut this far apart costs little, where tiny pieces cost a lot;
# benchmarks/RESULTS.md)
MIN_PIECE = 10_000


def open_model(model: Optional[str], device: str = "cpu"):
    from hmgen.modelio import load_model
    return load_model(model, device=device)


def sample(
    prime: str = typer.Option("", "--prime", "-p", help="Text to continue (printed first unless --no-echo)."),
    length: int = typer.Option(500, "--length", "-n", min=0, help="Characters to generate after the prime."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", min=0.0, help="0 = greedy; <1 safer, >1 wilder."),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Sample among the k likeliest symbols."),
    top_p: Optional[float] = typer.Option(None, "--top-p", min=0.0, max=1.0, help="Nucleus sampling: the smallest set with this much probability."),
    seed: Optional[int] = seed_option("Same seed, same bytes."),
    model: Optional[str] = model_option(),
    echo: bool = typer.Option(True, "--echo/--no-echo", help="Print the prime before the continuation."),
    device: str = device_option(),
    threads: Optional[int] = threads_option(),
    quiet: bool = quiet_option("No progress bar (shown only when stdout is not a terminal)."),
):
    """Generate text, streaming to stdout as it is produced.

    hmgen sample --prime "the" -n 300 --temperature 0.8 --seed 1
    """
    from hmgen.text.sample import generate

    set_threads(threads)
    lm = open_model(model, device)
    out = sys.stdout.buffer
    chunks = generate(lm, prime, length, temperature, top_k, top_p, seed, device)
    first = next(chunks, b"")       # the prime is checked before anything is printed
    if echo and prime:
        out.write(prime.encode("utf-8"))
    out.write(first)
    out.flush()
    # the text is the progress on a terminal; into a pipe or a file, show a bar on stderr instead
    with Bar("sample", quiet or sys.stdout.isatty(), total=length) as bar:
        for done, chunk in enumerate(chunks, 2):
            out.write(chunk)
            out.flush()
            if done % 50 == 0:
                bar.update(done)
    if sys.stdout.isatty():
        out.write(b"\n")
    out.flush()


def default_streams(symbols: int) -> int:
    """Up to 16 pieces side by side, none shorter than MIN_PIECE symbols."""
    return max(1, min(16, symbols // MIN_PIECE))


def evaluate_cmd(
    data: str = typer.Argument(..., help="A plain file or folder (evaluated whole), or a corpus with splits: ptb:DIR, text8[:DIR], enwik8[:DIR], a folder with *train*/*valid*/*test* files; iam:DIR for a handwriting model."),
    split: Optional[Literal["train", "valid", "test"]] = typer.Option(
        None, help="Split of a corpus: train, valid or test (default: test). A plain file or folder has no splits."),
    model: Optional[str] = model_option(f"A bundled model's name or a model path (default: {DEFAULT[TEXT]}; "
                                        f"for iam:DIR {DEFAULT[HANDWRITING]})."),
    max_symbols: Optional[int] = typer.Option(None, min=1, help="Evaluate on the first N symbols only."),
    streams: Optional[int] = typer.Option(None, min=1, help=f"Pieces of the data run side by side: faster, but each starts from a zero state, so the context before it is lost and the figure is a little worse than with 1 (default: up to 16 pieces of at least {MIN_PIECE:,} symbols)."),
    device: str = device_option(),
    threads: Optional[int] = threads_option(),
    as_json: bool = json_option(),
    quiet: bool = quiet_option("No progress bar and no note."),
):
    """Bits per character of a model on a file or a named split, with per-layer UPDATE/COPY/FLUSH rates.

    hmgen eval ptb:data/ptb --split test --model runs/ptb/best --json

    hmgen eval iam:data/iamondb --split test -m handwriting-small-3 --json   (a handwriting model: nats per line)
    """
    if data.startswith("iam:"):                 # handwriting: hmgen.handwriting.evaluate
        from hmgen.handwriting.evaluate import eval_command
        set_threads(threads)
        return eval_command(data, split, model, max_symbols, streams, device, as_json, quiet)
    from hmgen.text.data import load_eval_ids
    from hmgen.text.evaluate import evaluate

    set_threads(threads)
    lm = open_model(model, device)
    ids = load_eval_ids(data, split, lm.vocab)[: None if max_symbols is None else max_symbols + 1]
    if len(ids) < 2:
        raise HmgenError(f"{data}: need at least 2 symbols to evaluate")
    streams = streams or default_streams(len(ids) - 1)
    if streams > 1 and not quiet:
        typer.echo(f"note: {streams} pieces side by side, each from a zero state (the context before each cut "
                   f"is lost); --streams 1 gives the figure with full context", err=True)
    with Bar("eval", quiet) as bar:
        r = evaluate(lm.model, ids, streams=streams, device=device, progress=bar.update)
    r = {"model": lm.name, "data": data, "split": split, "streams": streams, **r}
    if as_json:
        typer.echo(json.dumps(r))
        return
    typer.echo(f"{lm.name} on {data}{' (' + split + ')' if split else ''}: {r['bpc']:.4f} bpc over {r['symbols']:,} symbols "
               f"({r['symbols_per_s']:,} symbols/s)")
    for l, layer in enumerate(r["layers"], 1):
        typer.echo(f"  layer {l}: update {layer['update']:.3f}  copy {layer['copy']:.3f}  flush {layer['flush']:.3f}")


def boundaries(
    text: Optional[str] = typer.Argument(None, help="The text to read; - reads standard input."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read the text from this UTF-8 file instead."),
    model: Optional[str] = model_option(),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Also draw the hierarchy as SVG into this file (- = to stdout)."),
    width: Optional[int] = typer.Option(None, "--width", "-w", min=20, help="Columns per row (default: the terminal's; SVG: 100 characters)."),
    as_json: bool = json_option("Print the raw z matrix, operations and counts as JSON."),
    device: str = device_option(),
    threads: Optional[int] = threads_option(),
    quiet: bool = quiet_option("No terminal picture (with -o) and no progress bar."),
):
    """Show where each layer's boundary detector fires on a text: one row per layer under the text.

    hmgen boundaries "the quick brown fox jumps over the lazy dog" -o fox.svg
    """
    if text is None and file is None:
        raise UsageError("no text: give it as an argument, - for standard input, or --file PATH")
    if text is not None and file is not None:
        raise UsageError("give the text or --file PATH, not both")
    if output == "-" and as_json:
        raise UsageError("--json and -o - both write to stdout; choose one")
    if text == "":
        raise UsageError("the text is empty: give some text, - for standard input, or --file PATH")
    check_output(output)
    if file is not None or text == "-":
        text = read_utf8(file or "-")
    if not text:
        raise HmgenError(f"{file or 'standard input'} is empty: nothing to show")
    from hmgen.text.boundaries import analyse, render_svg, render_terminal

    set_threads(threads)
    lm = open_model(model, device)
    with Bar("boundaries", quiet or len(text) < 2000) as bar:
        b = analyse(lm, text, progress=bar.update)
    if output:
        svg = render_svg(b, width or 100)
        if output == "-":
            typer.echo(svg)
        else:
            save_output(output, svg)
    if as_json:
        typer.echo(json.dumps(b.to_dict()))
    elif not quiet and output != "-":
        screen = console(width=width or terminal_width(), highlight=False)
        for line in render_terminal(b, screen.width):
            screen.print(line, no_wrap=True, overflow="ignore", crop=False)


def terminal_width() -> int:
    """The terminal's columns; 80 where COLUMNS says nothing usable (COLUMNS=0 drew nothing)."""
    import shutil
    columns = shutil.get_terminal_size((80, 24)).columns
    return columns if columns > 0 else 80


def models(as_json: bool = json_option("Print as JSON.")):
    """List the bundled models, text and handwriting, with their size and figures; marks the default of each kind
    (the model a command uses without -m)."""
    from hmgen.modelio import list_models

    found = list_models()
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no bundled models found")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("name", "kind", "model", "parameters", "file", "figure", ""):   # descriptions: --json
        table.add_column(col, no_wrap=True)
    for m in found:
        f, hidden = m["figures"], m["hidden"]
        layers = f"{len(hidden)}x{hidden[0]}" if len(set(hidden)) == 1 else "+".join(map(str, hidden))
        if "valid_bpc" in f:
            figure = f"{f['valid_bpc']:.3f} bpc valid"
        elif "test_nll_line" in f:
            figure = f"{f['test_nll_line']:.1f} nats/line test"
        else:
            figure = "-"
        table.add_row(m["name"], m["kind"], f"{m['arch']} {layers}", f"{m['parameters'] / 1e6:.2f}M",
                      f"{(m['file_bytes'] or 0) / 2**20:.1f} MiB", figure, "default" if m.get("default") else "")
    console(width=None if sys.stdout.isatty() else 200).print(table)   # a pipe gets whole rows
