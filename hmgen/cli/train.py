"""`hmgen train`: its flags are TrainConfig's fields (hmgen.training.config), declared once there."""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shlex
import sys
import tomllib
import typing
from pathlib import Path
from typing import Optional

import typer

from hmgen.errors import UsageError
from hmgen.training.config import OPTIONS, TYPES, flag, parse_options, show

HELP = """Train an HM-LSTM (or LSTM) language model, or a handwriting model (iam:DIR).

A new run never writes over one: --resume continues it (its model and data options stay), --force starts it over. Ctrl-C or SIGTERM stops after the current step with a checkpoint. Several processes: torchrun --nproc_per_node N -m hmgen train ...

  hmgen train corpus.txt --hidden 256,256 --steps 2000 --out runs/mine
"""


def read_config_file(path: Path) -> dict:
    try:
        text = path.read_text()
        d = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read config ({e})") from None
    if not isinstance(d, dict):
        raise UsageError(f"{path}: a config file holds keys and values")
    return d


def option_parameter(name: str) -> inspect.Parameter:
    """One TrainConfig field as a typer option: None unless given, so that the config file and --resume
    know what the command line set; the help shows the field's default."""
    f, kind = OPTIONS[name], TYPES[name]
    args = typing.get_args(kind)
    base = next(t for t in args if t is not type(None)) if type(None) in args else kind
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    flags = f.metadata["flags"] or (flag(name),)
    if base is bool:        # a two-way flag shows the way it goes by default
        shown = f" (default: {flags[0].split('/')[0 if default else 1]})" if "/" in flags[0] else ""
    else:
        shown = "" if default is None else f" (default: {show(default)})"
    annotation = Optional[base] if base in (int, float, bool, str) else Optional[str]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=typer.Option(
        None, *flags, help=f.metadata["help"] + shown, show_default=False,
        metavar="N,N,..." if base == list[int] else None))


def train(data: Optional[str], config: Optional[Path], resume: bool, force: bool, init: Optional[str], quiet: bool,
          as_json: bool, **options):
    from hmgen.training.checkpoint import read_run_config
    from hmgen.training.config import TrainConfig
    from hmgen.training.loop import train as run_training

    given = parse_options(read_config_file(config), str(config)) if config else {}
    given.update(parse_options({k: v for k, v in options.items() if v is not None}))      # flags win
    if data is not None:
        given["data"] = data
    if resume:       # the run's own options, and those given for this invocation (checked by the loop)
        run = read_run_config(Path(given.get("out", OPTIONS["out"].default)))
        cfg = TrainConfig.from_dict({**run, "time_limit": None, **given})
    else:
        cfg = TrainConfig.from_dict(given)
    out = Path(cfg.run.out)
    if cfg.run.data == "-":
        if resume:
            raise UsageError("--resume trains on the run's own data: leave out -")
        cfg = cfg.replace(data=str(save_stdin(out, force)))
    command = "hmgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        task = task_for(cfg.run.data)
        summary = run_training(cfg, task, resume=resume, quiet=quiet, command=command, force=force, init=init)
    except KeyboardInterrupt:       # before the loop began, or a second Ctrl-C
        kept = (f"the checkpoint in {out} is kept; continue with hmgen train --resume --out {out}"
                if (out / "checkpoint.json").exists() else "nothing was saved")
        from hmgen.training.loop import Interrupted
        raise Interrupted(f"interrupted; {kept}", 2) from None
    if int(os.environ.get("RANK", "0")) != 0:   # under torchrun, one process reports
        return
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        best = summary[task.best_key]
        shown = "-" if best is None else task.best_format.format(best)
        saved = (f"model: {summary['model']}" if summary.get("model") else
                 "no model saved yet (none was validated; --resume continues)")
        typer.echo(f"stopped at step {summary['step']} ({summary['stop']}); best validation {task.best_name} {shown}; "
                   f"{saved}", err=True)


def task_for(data: str):
    """The training task of a corpus: handwriting synthesis for iam:DIR, language modelling for any other."""
    if data.startswith("iam:"):
        from hmgen.handwriting.train import HandwritingTask
        return HandwritingTask
    from hmgen.text.train import TextTask
    return TextTask


def save_stdin(out: Path, force: bool) -> Path:
    """`hmgen train -`: standard input, kept in the run folder as stdin.txt, is the corpus (validation, --resume
    and the record of the run read it again, which a pipe cannot give twice)."""
    from hmgen.fs import atomic_write
    from hmgen.training.checkpoint import check_run_folder

    check_run_folder(out, resume=False, force=force)
    data = sys.stdin.buffer.read()
    if not data:
        raise UsageError("standard input is empty: nothing to train on")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "stdin.txt", lambda tmp: Path(tmp).write_bytes(data))
    return (out / "stdin.txt").resolve()


FIXED_PARAMETERS = [
    ("data", Optional[str], typer.Argument(None, help=OPTIONS["data"].metadata["help"], show_default=False)),
    ("config", Optional[Path], typer.Option(None, "--config", "-c", help="TOML or JSON file of these options "
                                            "(keys as the flag names); flags override it.")),
    ("resume", bool, typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped "
                                  "(its model and data options stay).")),
    ("force", bool, typer.Option(False, "--force", help="Start over in an --out that holds a run (replaces its "
                                 "checkpoint, best model and metrics).")),
    ("init", Optional[str], typer.Option(None, "--init", metavar="MODEL", help="Start from this model file's "
                                         "weights (same architecture and vocabulary; a fresh optimiser).")),
    ("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bar.")),
    ("as_json", bool, typer.Option(False, "--json", help="Print the run's summary as JSON.")),
]
train.__signature__ = inspect.Signature(
    [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind, default=default)
     for name, kind, default in FIXED_PARAMETERS] + [option_parameter(name) for name in OPTIONS if name != "data"])
train.__annotations__ = {p.name: p.annotation for p in train.__signature__.parameters.values()}
train.__doc__ = HELP
