"""The training loop: truncated BPTT with carried state, Adam, gradient-norm clipping, the learning
rate divided on a validation plateau, slope annealing, checkpoints, exact resume, DDP (torchrun).

Checkpoints are safetensors (tensors: weights, Adam moments, carried state, RNG) plus JSON (everything
else) — never pickle. A run folder holds:
  checkpoint.safetensors / checkpoint.json   latest state, rewritten every `ckpt_every` steps
  best.safetensors / best.json               best model by validation BPC (an ordinary model file)
  metrics.jsonl                              one JSON object per log line / evaluation
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from hmgen.text.data import Corpus, DataError, StreamBatches, load_corpus
from hmgen.text.evaluate import evaluate, op_counts, rates_dict
from hmgen.device import pick_device
from hmgen.cell.reference import CharLM, ModelConfig, count_parameters, detach_state
from hmgen.modelio import atomic_write, save_model


@dataclass
class TrainConfig:
    data: str                                   # corpus spec, see hmgen.text.data
    out: str = "runs/hmlstm"                    # run folder
    valid: str | None = None                    # validation file for a PATH corpus
    download: bool = False                      # allow fetching text8 / enwik8
    # model
    arch: str = "hmlstm"
    embed_dim: int = 128
    hidden: list[int] = field(default_factory=lambda: [512, 512, 512])
    out_embed: int = 512
    layer_norm: bool = True
    # optimisation (paper §4.1: Adam 0.002, clip 1, LR / 50 on plateau)
    batch_size: int = 64
    seq_len: int = 100
    lr: float = 0.002
    clip: float = 1.0
    warmup: int = 0                             # linear LR warm-up steps (not in the paper; 0 = off)
    lr_divide: float = 50.0
    patience: int = 0                           # evaluations without improvement before dividing
    max_lr_decays: int | None = None            # stop after this many divisions (paper: after the 2nd plateau)
    # slope annealing a = min(slope_max, slope_start + slope_rate * epoch)   (paper PTB: 1, 0.04, 5)
    slope_start: float = 1.0
    slope_rate: float = 0.04
    slope_max: float = 5.0
    # length and bookkeeping
    steps: int | None = None                    # stop after this many steps in total
    epochs: float | None = None                 # ... or this many epochs
    time_limit: float | None = None             # ... or after this many seconds of this invocation
    eval_every: int = 500
    eval_symbols: int | None = None             # evaluate on at most this many validation symbols
    ckpt_every: int = 500
    log_every: int = 20
    seed: int = 1234
    device: str = "auto"
    threads: int | None = None
    name: str | None = None                     # name recorded in the exported model
    # handwriting only (corpus iam:DIR, see hmgen.handwriting): mixture components, attention window
    # Gaussians, text-conditioned or not, keep every stride-th pen point, longest training line (points)
    mixtures: int = 20
    window: int = 10
    conditional: bool = True
    stride: int = 2
    max_points: int = 600
    fast: bool = False                          # hmgen.cell.fast.fast_forward: the same function, fewer kernels (GPU)

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size, self.arch, self.embed_dim, list(self.hidden), self.out_embed, self.layer_norm)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def slope(cfg: TrainConfig, epoch: float) -> float:
    """Slope annealing (§3.3). The paper's N_epoch is read as epochs done so far, counted fractionally
    (our choice) so that a long epoch does not hold the slope still."""
    return min(cfg.slope_max, cfg.slope_start + cfg.slope_rate * epoch)


def finite(x: float, digits: int = 4) -> float | None:
    """A figure for JSON: rounded, and null rather than Infinity/NaN (strict JSON)."""
    return round(x, digits) if math.isfinite(x) else None


def plateau_step(opt, sched, value: float, schedule: bool) -> int:
    """Step the plateau schedule on a validation figure (unless schedule=False); 1 if it lowered the LR."""
    lr_before = opt.param_groups[0]["lr"]
    if schedule:
        sched.step(value)
    return int(opt.param_groups[0]["lr"] < lr_before)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


# ----------------------------------------------------------------------------- checkpoints (no pickle)

def save_checkpoint(out: Path, model, opt, sched, state, info: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_sd = opt.state_dict()
    for i, st in opt_sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    for l, layer in enumerate(state):
        for name, t in zip("hcz", layer):
            tensors[f"carry.{l}.{name}"] = t.detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {**info, "param_groups": opt_sd["param_groups"], "scheduler": sched.state_dict()}
    atomic_write(out / "checkpoint.safetensors", lambda tmp: save_file(tensors, tmp))
    atomic_write(out / "checkpoint.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))


def load_checkpoint(out: Path, model, opt, sched, device) -> tuple[dict, list]:
    meta = json.loads((out / "checkpoint.json").read_text())
    tensors = load_file(str(out / "checkpoint.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    sched.load_state_dict(meta["scheduler"])
    layers = 1 + max((int(k.split(".")[1]) for k in tensors if k.startswith("carry.")), default=-1)
    state = [tuple(tensors[f"carry.{l}.{n}"].to(device) for n in "hcz") for l in range(layers)]
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta, state


# ----------------------------------------------------------------------------- distributed helpers

def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_state(state, world: int):
    """Per-process carried states -> the global batch's state, streams back in global order."""
    if world == 1:
        return state
    out = []
    for layer in state:
        full = []
        for t in layer:
            parts = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(parts, t.contiguous())
            # process r holds streams r, r+world, ...: interleave them back
            full.append(torch.stack(parts, dim=1).reshape(-1, t.shape[-1]))
        out.append(tuple(full))
    return out


def scatter_state(state, rank: int, world: int):
    return state if world == 1 else [tuple(t[rank::world] for t in layer) for layer in state]


# ----------------------------------------------------------------------------- the loop

class Reporter:
    """Rich progress bar on stderr (only on a terminal, not with quiet) and the JSON-lines metrics log."""

    def __init__(self, path: Path | None, total: int | None, done: int, quiet: bool, enabled: bool = True):
        self.log = open(path, "a") if (path and enabled) else None
        self.progress = None
        if enabled and not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"), console=Console(stderr=True), transient=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, completed=done, stats="")

    def write(self, record: dict) -> None:
        if self.log:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def update(self, step: int, stats: str) -> None:
        if self.progress:
            self.progress.update(self.task, completed=step, stats=stats)

    def print(self, text: str) -> None:
        if self.progress:
            self.progress.console.print(text)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()
        if self.log:
            self.log.close()


def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False, command: str | None = None,
          corpus: Corpus | None = None) -> dict:
    """Train (or resume) a model; returns a summary of the run. Works under torchrun (DDP)."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = pick_device(cfg.device)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist_info()
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if resume and not (out / "checkpoint.json").exists():
        raise FileNotFoundError(f"{out}: no checkpoint to resume from")
    if resume:   # the run's own configuration wins; only the length and the machine may be given again
        given = {k: getattr(cfg, k) for k in ("steps", "epochs", "device", "threads", "fast") if getattr(cfg, k) is not None}
        cfg = TrainConfig.from_dict({**json.loads((out / "checkpoint.json").read_text())["config"],
                                     **given, "time_limit": cfg.time_limit})   # the time limit is per invocation

    from hmgen.handwriting.train import is_handwriting
    if is_handwriting(cfg.data):   # handwriting synthesis (iam:DIR): its own batches and model, same machinery
        from hmgen.handwriting.data import HandwritingDataError
        from hmgen.handwriting.train import train_handwriting
        try:
            return train_handwriting(cfg, resume=resume, quiet=quiet, command=command)
        except HandwritingDataError as e:
            raise DataError(str(e)) from None
    corpus = corpus or load_corpus(cfg.data, cfg.valid, cfg.download)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)   # only once the data is known to load
    torch.manual_seed(cfg.seed)
    model = CharLM(cfg.model_config(corpus.vocab.size)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=1 / cfg.lr_divide,
                                                       patience=cfg.patience, threshold=1e-3)
    batches = StreamBatches(corpus.split("train"), cfg.batch_size, cfg.seq_len, rank, world)
    valid_ids = corpus.splits.get("valid")

    step, best, decays, elapsed_before = 0, math.inf, 0, 0.0
    state = model.initial_state(cfg.batch_size, device)
    if resume:
        meta, state = load_checkpoint(out, model, opt, sched, device)
        step, decays = meta["step"], meta["lr_decays"]
        best = math.inf if meta["best_valid_bpc"] is None else meta["best_valid_bpc"]
        elapsed_before = meta["train_seconds"]
        state = [tuple(t.to(device) for t in layer) for layer in state]
    state = scatter_state(state, rank, world)
    fwd = model
    if cfg.fast:            # opt-in until benchmarks/gpu/check_fast.py has passed on a GPU (tests/test_fast.py: CPU)
        from hmgen.cell.fast import FastForward
        fwd = FastForward(model)
    net = torch.nn.parallel.DistributedDataParallel(fwd) if distributed else fwd

    total = cfg.steps
    if cfg.epochs is not None:
        total = min(total or 10**18, int(cfg.epochs * len(batches)))
    reporter = Reporter(out / "metrics.jsonl", total, step, quiet, enabled=(rank == 0))
    if rank == 0 and resume:
        reporter.write({"event": "resume", "step": step, "command": command, "device": hardware(device), "world": world})
    if rank == 0 and not resume:
        reporter.write({"event": "start", "config": asdict(cfg), "parameters": count_parameters(model),
                        "vocab": corpus.vocab.size, "train_symbols": len(corpus.split("train")),
                        "device": hardware(device), "world": world, "command": command})

    def run_eval() -> dict:
        r = evaluate(model, valid_ids, max_symbols=cfg.eval_symbols, device=device) if rank == 0 else {}
        if distributed:   # everyone must take the same scheduler decision
            box = [r.get("bpc", 0.0)]
            dist.broadcast_object_list(box, src=0)
            r["bpc"] = box[0]
        model.train()
        return r

    def checkpoint(final_state):
        full = gather_state(final_state, world)
        if rank == 0:
            save_checkpoint(out, model, opt, sched, full, {
                "step": step, "best_valid_bpc": finite(best), "lr_decays": decays, "config": asdict(cfg),
                "train_seconds": elapsed_before + (time.time() - t_start), "vocab": corpus.vocab.to_dict()})

    def export_best(figures: dict):
        save_model(out / "best", model, corpus.vocab, name=cfg.name or out.name, description="",
                   training={"data": corpus.source, "corpus": corpus.name, "command": command,
                             "config": asdict(cfg), "device": hardware(device), "world": world},
                   figures=figures)

    def agree(flag: bool) -> bool:
        """Process 0 decides (clocks differ between processes; all must stop at the same step)."""
        if not distributed:
            return flag
        box = [flag]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def validate(schedule: bool = True) -> bool:
        """Evaluate, step the plateau schedule, export the best model; True when it is time to stop.
        schedule=False (the end of an invocation) leaves the schedule alone so that a resumed run goes on
        exactly as an uninterrupted one would."""
        nonlocal best, decays
        r = run_eval()
        improved = r["bpc"] < best
        if improved:
            best = r["bpc"]
        decays += plateau_step(opt, sched, r["bpc"], schedule)
        if rank == 0:
            reporter.write({"step": step, "valid_bpc": finite(r["bpc"]), "valid_layers": r["layers"],
                            "best_valid_bpc": finite(best), "lr": opt.param_groups[0]["lr"]})
            reporter.print(f"step {step}: valid bpc {r['bpc']:.4f} (best {best:.4f}) lr {opt.param_groups[0]['lr']:.2e}")
            if improved:
                export_best({"valid_bpc": round(best, 4), "valid_symbols": r["symbols"], "step": step,
                             "train_seconds": round(elapsed_before + time.time() - t_start),
                             "valid_layers": r["layers"]})
        return cfg.max_lr_decays is not None and decays > cfg.max_lr_decays

    model.train()
    t_start = time.time()
    t_log, symbols_since, loss_sum, loss_n = time.time(), 0, 0.0, 0
    counts = torch.zeros(model.num_layers, 3, dtype=torch.long, device=device)
    stop_reason = "steps"
    while True:
        if total is not None and step >= total:
            break
        if cfg.time_limit is not None and agree(time.time() - t_start >= cfg.time_limit):
            stop_reason = "time limit"
            break
        x, y, new_epoch = batches.get(step)
        if new_epoch:
            state = model.initial_state(x.shape[0], device)
        x = torch.from_numpy(x.astype(np.int64)).to(device)
        y = torch.from_numpy(y.astype(np.int64)).to(device)
        epoch = step / len(batches)
        a = slope(cfg, epoch)
        z_init = torch.cat([z for _, _, z in state], dim=-1)
        logits, state, z = net(x, state, a)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        if not torch.isfinite(loss):
            raise DataError(f"training diverged at step {step} (loss {loss.item()}); "
                            f"the last checkpoint in {out} is kept: try a lower --lr")
        opt.zero_grad(set_to_none=True)
        if step < cfg.warmup:   # early STE gradients are huge and noisy: ramp the step size up
            for group in opt.param_groups:
                group["lr"] = cfg.lr * (step + 1) / cfg.warmup
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        state = detach_state(state)
        step += 1
        step_loss, step_counts = loss.detach(), op_counts(model, z.detach(), z_init)
        if distributed:   # the log describes the whole global batch, not this process's share
            dist.all_reduce(step_loss)
            dist.all_reduce(step_counts)
            step_loss = step_loss / world
        loss_sum += step_loss.item()
        loss_n += 1
        symbols_since += x.numel() * world
        counts += step_counts

        if step % cfg.log_every == 0 or step == total:
            dt = time.time() - t_log
            bpc = loss_sum / loss_n / math.log(2)
            rates = rates_dict(counts)
            z_rates = [round(1 - r["copy"], 3) for r in rates]   # share of steps a layer computes
            rec = {"step": step, "epoch": round(epoch, 4), "loss": finite(loss_sum / loss_n),
                   "bpc": finite(bpc), "lr": opt.param_groups[0]["lr"], "slope": round(a, 4),
                   "grad_norm": round(float(grad_norm), 4), "symbols_per_s": round(symbols_since / max(dt, 1e-9)),
                   "layers": rates, "seconds": round(elapsed_before + time.time() - t_start, 1)}
            reporter.write(rec)
            fires = "/".join(f"{r['flush']:.2f}" for r in rates[:-1]) if cfg.arch == "hmlstm" else "-"
            reporter.update(step, f"loss {rec['loss']:.3f} bpc {bpc:.3f} {rec['symbols_per_s'] / 1000:.1f}k ch/s "
                                  f"z {fires} upd {'/'.join(f'{u:.2f}' for u in z_rates)}")
            t_log, symbols_since, loss_sum, loss_n = time.time(), 0, 0.0, 0
            counts.zero_()

        if valid_ids is not None and step % cfg.eval_every == 0:
            if validate():
                stop_reason = "plateau"
                break
        if step % cfg.ckpt_every == 0:
            checkpoint(state)

    if valid_ids is not None and step % cfg.eval_every and step > 0:
        validate(schedule=False)   # the last steps count too: export the model if they improved it
    checkpoint(state)
    summary = {"step": step, "best_valid_bpc": finite(best), "stop": stop_reason, "out": str(out),
               "train_seconds": round(elapsed_before + time.time() - t_start, 1)}
    reporter.write({"event": "stop", **summary})
    reporter.close()
    return summary
