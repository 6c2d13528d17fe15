"""The `hmgen` command: parses, calls the library, prints. One module per command group (train, text,
handwrite, archive); errors are caught once, here: an `HmgenError` is one line on stderr and its exit code
(1, or 2 for bad usage), never a traceback."""
from __future__ import annotations

import inspect
import os
import re
import shutil
import sys
import textwrap
from contextlib import contextmanager

import typer
from typer.core import TyperCommand, TyperGroup

from hmgen import __version__
from hmgen.cli import archive, handwrite, text, train
from hmgen.cli.options import check_values
from hmgen.cli.common import READER_LEFT, debugging, say, silence_stdout, standard_streams
from hmgen.errors import HmgenError
from hmgen.fs import one_line

HELP = """HM-LSTM models: train, evaluate, sample, compress, show boundaries, write by hand.

\b
Examples:
  hmgen sample --prime "the" -n 300        continue a text (bundled model)
  hmgen sample -n 1000 --seed 1 | wc -c    text to stdout, progress to stderr
  hmgen train ptb:data/ptb --hidden 512,512,512 --out runs/ptb
  hmgen eval ptb:data/ptb --split test --model runs/ptb/best --json
  hmgen models                             bundled models with their figures
  hmgen compress notes.txt                 notes.txt.hmz (like gzip: -dcktfl)
  hmgen boundaries "the quick fox" -o b.svg    where each layer's segments end
  hmgen handwrite "hello world" -o out.svg     synthetic handwriting as SVG
"""

EXIT_STATUS = """Exit status: 0 success; 1 error; 2 usage error (a bad option or argument: nothing was done);
141 the reader of standard output left (`hmgen sample | head`), quietly, as gzip and xz."""


# click's UsageError: typer re-exports only its subclass BadParameter (and vendors click in recent versions)
ClickUsageError = typer.BadParameter.__bases__[0]


@contextmanager
def one_line_errors():
    """The one place where a failure the user can act on becomes one line on stderr and its exit status
    (README "Exit status"); a reader that left stops every command the same way."""
    try:
        yield
    except BrokenPipeError:                      # `hmgen sample | head -c 10`: quietly, like gzip and xz
        silence_stdout()
        raise typer.Exit(READER_LEFT) from None
    except ClickUsageError as e:                 # a bad option or argument, found by typer (type, min, callback)
        if type(e).__name__ == "NoArgsIsHelpError":         # `hmgen` alone: the help, as asked
            raise
        where = e.ctx.command_path if e.ctx is not None else "hmgen"
        say(f"hmgen: {e.format_message()} (see {where} -h)")
        raise typer.Exit(2) from None
    except (HmgenError, OSError) as e:
        if debugging():
            raise
        silence_stdout()
        say(f"hmgen: {e if isinstance(e, HmgenError) else one_line(e)}")
        raise typer.Exit(getattr(e, "exit_code", 1)) from None


def help_width() -> int:
    """Columns for --help: the terminal's (click would never go below 50, so a narrow terminal cut lines
    wherever it ran out), at most 80."""
    return max(20, min(shutil.get_terminal_size((80, 24)).columns, 80) - 2)


EXAMPLE = re.compile(r"^(\s*)((?:hmgen|cat) \S.*?)(?:\s{2,}(\S.*))?$")


def fit_examples(text: str, width: int) -> str:
    """An example line ("  hmgen sample -n 300     what it does") wider than `width` becomes the command, cut at
    spaces into lines that end in " \\" (the shell reads them as one), then its description, indented; its
    paragraph is marked for click not to wrap it again (a line of its own holding "\\b")."""
    paragraphs = []
    for para in text.split("\n\n"):
        out, changed = [], False
        for line in para.splitlines():
            m = EXAMPLE.match(line)
            if not m or len(line) <= width:
                out.append(line)
                continue
            changed = True
            indent, command, what = m.groups()
            parts = [indent]
            for word in command.split(" "):
                if len(parts[-1]) + len(word) + 3 > width and parts[-1].strip():
                    parts[-1] += " \\"
                    parts.append(indent + "    ")
                parts[-1] += ("" if not parts[-1].strip() else " ") + word
            out += parts
            if what:
                out += textwrap.wrap(what, width, initial_indent=indent + "    ", subsequent_indent=indent + "    ")
        if changed and (not out or out[0] != "\b"):
            out.insert(0, "\b")
        paragraphs.append("\n".join(out))
    return "\n\n".join(paragraphs)


class NarrowHelp:
    """--help that fits the terminal: examples are never cut in the middle of a command."""

    def fitted(self, attr: str, formatter, write) -> None:
        """write() with the help text in `attr` fitted to the formatter's width, then the text as it was."""
        saved = getattr(self, attr)
        if saved:
            setattr(self, attr, fit_examples(inspect.cleandoc(saved), formatter.width - formatter.current_indent))
        try:
            write()
        finally:
            setattr(self, attr, saved)

    def format_help_text(self, ctx, formatter):
        self.fitted("help", formatter, lambda: super(NarrowHelp, self).format_help_text(ctx, formatter))

    def format_epilog(self, ctx, formatter):
        self.fitted("epilog", formatter, lambda: super(NarrowHelp, self).format_epilog(ctx, formatter))


class Commands(NarrowHelp, TyperGroup):
    """Parsing (make_context: options, --help, --version) and running (invoke) both under one_line_errors."""

    def make_context(self, *args, **kwargs):
        with one_line_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with one_line_errors():
            return super().invoke(ctx)


class Command(NarrowHelp, TyperCommand):
    """Every command: its values checked once, at the edge, after typer parsed them (hmgen.cli.options.check_values)."""

    def parse_args(self, ctx, args):
        rest = super().parse_args(ctx, args)
        check_values(ctx)
        return rest


app = typer.Typer(
    cls=Commands,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "terminal_width": help_width()},
    help=HELP,
    epilog=EXIT_STATUS,
)


def version_callback(value: bool):
    if value:
        typer.echo(f"hmgen {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                      help="Print the version and exit.")):
    pass


app.command(cls=Command)(train.train)
app.command(cls=Command)(text.sample)
app.command("eval", cls=Command)(text.evaluate_cmd)
app.command(cls=Command)(text.boundaries)
app.command(cls=Command)(text.models)
app.command(cls=Command)(handwrite.handwrite)
app.command(help=archive.COMPRESS_HELP, cls=Command)(archive.compress)
app.command(help=archive.DECOMPRESS_HELP, cls=Command)(archive.decompress)


def main():
    if debugging():
        return app(args=archive.level_flags(sys.argv[1:]), prog_name="hmgen")
    standard_streams()
    status = run()
    try:                                         # what is still buffered must reach its reader, or the
        sys.stdout.flush()                       # status must say that it did not
    except BrokenPipeError:
        status = status or READER_LEFT
    except OSError as e:
        if not status:
            say(f"hmgen: {one_line(e)}")
        status = status or 1
    silence_stdout()
    raise SystemExit(status)


def run() -> int:
    """The command's exit status."""
    try:
        app(args=archive.level_flags(sys.argv[1:]), prog_name="hmgen")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except BrokenPipeError:
        return READER_LEFT
    except Exception as e:                       # a bug in hmgen: never a traceback for the user
        say(f"hmgen: internal error: {type(e).__name__}: {e} (HMGEN_DEBUG=1 shows the traceback)")
        return 1
    return 0
