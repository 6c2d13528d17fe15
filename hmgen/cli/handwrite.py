"""`hmgen handwrite`: text -> pen strokes (the handwriting model) -> SVG (and PNG)."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from hmgen.cli.common import check_output, read_utf8, save_output
from hmgen.cli.options import model_option, seed_option, set_threads
from hmgen.handwriting.defaults import BIAS, LINE_HEIGHT, MARGIN, STROKE_WIDTH
from hmgen.errors import HmgenError, UsageError
from hmgen.bundled import DEFAULT, HANDWRITING


def same_file(a: str, b: str) -> bool:
    import os
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def handwrite(
    text: Optional[str] = typer.Argument(None, help='Text to write; "-" reads it from stdin. Newlines start new lines.'),
    output: Optional[str] = typer.Option(None, "--output", "-o", help='SVG file to write; "-" writes the SVG to stdout.'),
    model: Optional[str] = model_option(f"Handwriting model: a bundled name or a path (default: {DEFAULT[HANDWRITING]})."),
    bias: float = typer.Option(BIAS, "--bias", "-b", min=0.0, max=100.0, help="0 = unbiased, varied, harder to read; higher = neater, more alike (Graves 2013 §5.4)."),
    seed: Optional[int] = seed_option("Same seed, same SVG."),
    style: Optional[int] = typer.Option(None, "--style", min=0, help="Write in the hand of line N of the model's style bank (--list-styles): the network reads that real line first, then writes."),
    list_styles: bool = typer.Option(False, "--list-styles", help="Print the model's style bank (number, text, IAM-OnDB line) and exit."),
    width: int = typer.Option(40, "--width", "-w", min=1, help="Wrap lines longer than this many characters."),
    line_height: float = typer.Option(LINE_HEIGHT, "--line-height", min=1.0, max=10000.0, help="Pixels per line of handwriting."),
    margin: float = typer.Option(MARGIN, "--margin", min=0.0, max=10000.0, help="Margin around the text, pixels."),
    color: str = typer.Option("black", "--color", help="Ink colour (SVG colour: a name, #rrggbb, rgb(...))."),
    stroke_width: float = typer.Option(STROKE_WIDTH, "--stroke-width", min=0.01, max=1000.0, help="Pen width, pixels."),
    background: str = typer.Option("white", "--background", help='Background colour, or "none" for transparent.'),
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="Smooth the strokes (Savitzky-Golay) when drawing."),
    png: Optional[str] = typer.Option(None, "--png", help='Also write a PNG (black ink on white) to this file; "-" writes it to stdout.'),
    max_steps_per_char: int = typer.Option(25, "--max-steps-per-char", min=1, max=1000, help="Hard cap on pen points per character."),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="Drop characters the model cannot write instead of failing."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Report each line's steps and why it stopped, on stderr."),
):
    """Write TEXT in synthetic handwriting as an SVG (HM-LSTM + attention window + mixture density output).

    hmgen handwrite "hello world" -o out.svg --seed 1

    hmgen sample -n 60 | hmgen handwrite - -o out.svg --style 2
    """
    import re
    import time

    from hmgen.modelio import load_hw_model
    from hmgen.handwriting.render import to_png, to_svg
    from hmgen.handwriting.sample import style_prime, wrap, write_lines

    set_threads(None)          # one line at a time, small matrices: extra threads only add overhead
    hm = load_hw_model(model)
    if list_styles:
        for i, s in enumerate(hm.styles):
            typer.echo(f"{i}\t{s['text']}\t{s.get('line_id', '')}")       # N, its text, its IAM-OnDB line
        return
    if text is None or text == "":
        raise UsageError(f"{'no' if text is None else 'empty'} text: give TEXT, or - to read it from stdin")
    style_prime(hm, style)                  # a style the bank lacks is refused before any work
    if output is None and png is None:
        raise UsageError("no output: give -o FILE.svg (- for stdout), or --png FILE.png")
    if output == "-" and png == "-":
        raise UsageError("-o - and --png - both write to stdout; choose one")
    if output not in (None, "-") and png not in (None, "-") and same_file(output, png):
        raise UsageError(f"-o and --png name the same file ({png}): the PNG would replace the SVG")
    if png == "-" and sys.stdout.isatty():
        raise HmgenError("PNG data not written to a terminal (redirect stdout, or give --png FILE.png)")
    for name, value in (("--color", color), ("--background", background)):
        if not re.fullmatch(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]+|rgba?\([0-9., %]+\)", value):
            raise UsageError(f"{name}: not an SVG colour: {value!r}")
    check_output(output)
    check_output(png)
    if text == "-":
        text = read_utf8("-")
    if skip_unknown:
        known = set(hm.cfg.alphabet) | {"\n"}
        dropped = sorted({c for c in text if c not in known and not c.isspace()})
        text = "".join(c if c in known else (" " if c.isspace() else "") for c in text)
        if dropped and verbose:
            typer.echo("skipped characters the model never saw: " + " ".join(repr(c) for c in dropped), err=True)
    lines = wrap(text, width)
    if not lines:
        raise HmgenError("nothing to write: the text is empty")
    t0 = time.time()
    written = write_lines(hm, lines, bias=bias, seed=seed, style=style, max_steps_per_char=max_steps_per_char)
    if verbose:
        for i, ln in enumerate(written, 1):
            why = {"end of text": "window passed the last character", "blank": "a blank line"}.get(
                ln.stop, f"hard cap of {max_steps_per_char} points per character")
            typer.echo(f"line {i}: {ln.steps} points for {len(ln.text)} characters, window peaked on "
                       f"{ln.coverage:.0%} of them; stopped: {ln.stop} ({why}); draws: {ln.tries}", err=True)
        typer.echo(f"{len(written)} line(s) in {time.time() - t0:.2f} s (model {hm.name}, bias {bias}, "
                   f"style {style if style is not None else '-'}, seed {seed if seed is not None else '-'})", err=True)
    offsets = [ln.offsets for ln in written]
    svg = to_svg(offsets, hm.cfg.line_height, line_height, margin, color, stroke_width, background,
                 title=" / ".join(lines)[:200], smooth=smooth) + "\n"
    image = to_png(offsets, hm.cfg.line_height, line_height, margin, stroke_width, smooth) if png else None
    # both drawn (a PNG too large is refused) before either is written; a failed write leaves no partial file
    for where, data in ((output, svg.encode()), (png, image)):
        if where == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        elif where is not None:
            save_output(where, data)
