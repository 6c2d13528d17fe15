"""The `hmgen` command: parses, calls the library, prints. One module per command group (train, text,
handwrite, archive); errors are caught once, here: an `HmgenError` is one line on stderr and its exit code
(1, or 2 for bad usage), never a traceback."""
from __future__ import annotations

import os
import sys

import typer
from typer.core import TyperGroup

from hmgen import __version__
from hmgen.cli import archive, handwrite, text, train
from hmgen.errors import HmgenError

HELP = """HM-LSTM models: train, evaluate, sample, compress, show boundaries, write by hand.

Examples:

  hmgen sample --prime "the" -n 300          continue a text with the bundled model

  hmgen sample -n 1000 --seed 1 | wc -c      everything writes to stdout, progress to stderr

  hmgen train ptb:data/ptb --hidden 512,512,512 --out runs/ptb

  hmgen eval ptb:data/ptb --split test --model runs/ptb/best --json

  hmgen models                                bundled models with their figures

  hmgen compress notes.txt                    notes.txt.hmz (gzip-style: -d -c -k -f -t -l)

  hmgen boundaries "the quick brown fox" -o b.svg     where each layer's segments end

  hmgen handwrite "hello world" -o out.svg    synthetic handwriting as SVG
"""


def one_line(e: OSError) -> str:
    """An OSError as the one line a user reads: "PATH: reason"."""
    reason = e.strerror or str(e)
    return f"{e.filename}: {reason}" if e.filename else reason


class Commands(TyperGroup):
    """The one place where a failure the user can act on becomes one line on stderr and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise
        except (HmgenError, OSError) as e:
            if os.environ.get("HMGEN_DEBUG"):
                raise
            typer.echo(f"hmgen: {e if isinstance(e, HmgenError) else one_line(e)}", err=True)
            raise typer.Exit(getattr(e, "exit_code", 1)) from None


app = typer.Typer(
    cls=Commands,
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=HELP,
)


def version_callback(value: bool):
    if value:
        typer.echo(f"hmgen {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                      help="Print the version and exit.")):
    pass


app.command()(train.train)
app.command()(text.sample)
app.command("eval")(text.evaluate_cmd)
app.command()(text.boundaries)
app.command()(text.models)
app.command()(handwrite.handwrite)
app.command(help=archive.COMPRESS_HELP)(archive.compress)
app.command(help=archive.DECOMPRESS_HELP)(archive.decompress)


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
    except Exception as e:                       # a bug in hmgen: never a traceback for the user
        typer.echo(f"hmgen: internal error: {type(e).__name__}: {e} (HMGEN_DEBUG=1 shows the traceback)", err=True)
        raise SystemExit(1)
