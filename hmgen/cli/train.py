"""`hmgen train`: options (flags or a config file) -> TrainConfig -> the training loop."""
from __future__ import annotations

import json
import os
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Optional

import typer

from hmgen.errors import HmgenError, UsageError


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
        raise HmgenError(f"{path}: cannot read config ({e})") from None
    return {k.replace("-", "_"): v for k, v in d.items()}


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
        raise UsageError("no training data: give a corpus (a file or folder, ptb:DIR, text8, enwik8)")
    try:
        cfg = TrainConfig.from_dict(opts)
        cfg.model_config(2)        # validates the architecture options
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    command = "hmgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        summary = run_training(cfg, resume=resume, quiet=quiet, command=command)
    except KeyboardInterrupt:
        typer.echo("hmgen: interrupted (the last checkpoint is kept; continue with --resume)", err=True)
        raise typer.Exit(130) from None
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
