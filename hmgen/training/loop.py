"""The training loop, one for every task (hmgen.training.task): truncated BPTT, Adam, gradient-norm
clipping, linear warm-up, the learning rate divided on a validation plateau, slope annealing, checkpoints
and exact resume, a checkpoint on SIGINT/SIGTERM, time limits, DDP (torchrun). Only process 0 writes the
run folder (hmgen.training.checkpoint).
"""
from __future__ import annotations

import atexit
import json
import math
import os
import platform
import signal
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from hmgen.cell.reference import count_parameters
from hmgen.device import pick_device
from hmgen.progress import Bar
from hmgen.errors import HmgenError, UsageError
from hmgen.training.checkpoint import (check_run_folder, clear_run_folder, load_checkpoint, read_run_config,
                                       save_checkpoint, trim_metrics)
from hmgen.training.config import TrainConfig, absolute_data, resume_changes
from hmgen.training.task import Task, json_figure


class TrainingDiverged(HmgenError):
    """The loss became NaN or infinite."""


class Interrupted(HmgenError):
    """SIGINT or SIGTERM: the run stopped after saving a checkpoint. Exit status 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def slope(cfg: TrainConfig, epoch: float) -> float:
    """Slope annealing (§3.3). The paper's N_epoch is read as epochs done so far, counted fractionally
    (our choice) so that a long epoch does not hold the slope still."""
    d = cfg.detectors
    return min(d.slope_max, d.slope_start + d.slope_rate * epoch)


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


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module):
    """Adam and the plateau schedule (paper §4.1)."""
    o = cfg.optim
    opt = torch.optim.Adam(model.parameters(), lr=o.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=1 / o.lr_divide,
                                                       patience=o.patience, threshold=1e-3)
    return opt, sched


# ----------------------------------------------------------------------------- processes and signals

def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree(value, world: int):
    """Process 0 decides (clocks and signals differ between processes; all must stop at the same step)."""
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class StopSignals:
    """SIGINT / SIGTERM ask the loop to stop at the next step boundary with a checkpoint; a second SIGINT
    interrupts at once (KeyboardInterrupt)."""

    def __init__(self):
        self.signum = None
        self.previous = {}

    def handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():    # only there can Python catch signals
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self.handle)
        return self

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)
        return False


class Reporter:
    """The progress bar (hmgen.progress: stderr, on a terminal, not with quiet) and the JSON-lines metrics log."""

    def __init__(self, path: Path | None, total: int | None, done: int, quiet: bool, enabled: bool = True):
        self.log = open(path, "a") if (path and enabled) else None
        self.bar = Bar("train", quiet or not enabled, total=total, done=done, keep=True)

    def write(self, record: dict) -> None:
        if self.log:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def update(self, step: int, stats: str) -> None:
        self.bar.update(step, note=stats)

    def print(self, text: str) -> None:
        self.bar.print(text)

    def close(self) -> None:
        self.bar.close()
        if self.log:
            self.log.close()


# ----------------------------------------------------------------------------- the loop

def train(cfg: TrainConfig, task: type[Task], resume: bool = False, quiet: bool = False, command: str | None = None,
          force: bool = False, init: str | None = None, data=None) -> dict:
    """Train a new run in cfg.run.out, or continue it (`resume`), on `task` (a class: hmgen.text.train.TextTask,
    hmgen.handwriting.train.HandwritingTask; the loop knows none of them); returns a summary of the run.

    A new run refuses a folder that holds one unless `force`; `init` starts from another model file's weights
    (fresh optimiser). On resume, cfg may change only what may change (hmgen.training.config); what changed
    is recorded. `data` is an already loaded corpus for the task. Works under torchrun (DDP).

    A new run that fails before its first checkpoint leaves nothing that would block the next one (what it
    wrote is removed); a failure after it leaves the run as its last checkpoint has it: resumable.
    The detector options left None take the task's defaults (recorded so)."""
    out = Path(cfg.run.out)
    check_run_folder(out, resume, force)
    cfg = cfg.with_defaults(task.detector_defaults)
    if not resume:           # recorded as absolute paths, so that --resume works from any folder
        cfg = cfg.replace(data=absolute_data(cfg.run.data), valid=absolute_data(cfg.run.valid))
    fresh = not out.exists()
    try:
        return run(cfg, task, out, resume, quiet, command, force, init, data)
    except BaseException:
        if not resume and dist_info()[0] == 0 and not (out / "checkpoint.safetensors").exists():
            clear_run_folder(out)
            if fresh and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise


def run(cfg: TrainConfig, make_task: type[Task], out: Path, resume: bool, quiet: bool, command: str | None,
        force: bool, init: str | None, data) -> dict:
    """train()'s work, once the run folder was checked."""
    changes = resume_changes(read_run_config(out), cfg, out) if resume else {}
    if resume and init:
        raise UsageError("--init starts a new run from a model file; it cannot be combined with --resume")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = pick_device(cfg.run.device)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # torch asks for an explicit destroy: a process group left to the interpreter's teardown can abort a
        # process ("terminate called without an active exception", seen once in CI on the two-process test)
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    rank, world = dist_info()
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)

    torch.manual_seed(cfg.run.seed)                 # the task builds its model before drawing anything else
    task = make_task(cfg, device, rank, world, data)
    model, detectors = task.model, task.detectors
    opt, sched = make_optimizer(cfg, model)
    if init:
        task.init_from(init)
    if rank == 0:                               # only once the data is known to load
        out.mkdir(parents=True, exist_ok=True)
        if force:
            clear_run_folder(out)

    step, best, decays, elapsed_before, history = 0, math.inf, 0, 0.0, []
    if resume:
        meta, tensors = load_checkpoint(out, model, opt, sched)
        task.restore(tensors, meta)
        if detectors:
            detectors.restore(tensors)
        step, decays, elapsed_before = meta["step"], meta["lr_decays"], meta["train_seconds"]
        best = math.inf if meta[task.best_key] is None else meta[task.best_key]
        history = meta.get("history", [])
        sched.factor, sched.patience = 1 / cfg.optim.lr_divide, cfg.optim.patience   # these may change on resume
        if rank == 0:        # lines a failed invocation logged after this checkpoint: its steps are run again
            trim_metrics(out / "metrics.jsonl", step)
    history = history + [{"step": step, "command": command, **({"changed": changes} if changes else {})}]
    net = task.forward_module()
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(net)

    total = cfg.run.steps
    if cfg.run.epochs is not None and task.steps_per_epoch:
        total = min(total or 10**18, math.ceil(cfg.run.epochs * task.steps_per_epoch))
    reporter = Reporter(out / "metrics.jsonl", total, step, quiet, enabled=(rank == 0))
    common = {"device": hardware(device), "world": world, "command": command}
    if resume:
        reporter.write({"event": "resume", "step": step, **common, "changed": changes})
    else:
        reporter.write({"event": "start", **task.start_fields(), "config": cfg.to_dict(),
                        "parameters": count_parameters(model), **common, **({"init": init} if init else {})})
    t_start = time.time()
    seconds = lambda: elapsed_before + time.time() - t_start

    def checkpoint():
        tensors, meta = task.checkpoint_state()     # a collective under DDP: every process takes part
        if detectors:
            tensors = {**tensors, **detectors.state()}
        if rank == 0:
            save_checkpoint(out, model, opt, sched, tensors, {
                "task": task.kind, "step": step, task.best_key: json_figure(best, task.best_digits),
                "lr_decays": decays, "config": cfg.to_dict(), "train_seconds": seconds(), "history": history, **meta})

    def validate(schedule: bool = True) -> bool:
        """Evaluate, step the plateau schedule, export the best model; True when it is time to stop.
        schedule=False (the end of an invocation) leaves the schedule alone so that a resumed run goes on
        exactly as an uninterrupted one would."""
        nonlocal best, decays
        v = task.validate() if rank == 0 else None
        model.train()
        figure = agree(v.figure if v else None, world)
        if figure is None:
            return False
        improved = figure < best
        if improved:
            best = figure
        decays += plateau_step(opt, sched, figure, schedule)
        lr = opt.param_groups[0]["lr"]
        if rank == 0:
            reporter.write({"step": step, **v.fields, task.best_key: json_figure(best, task.best_digits), "lr": lr})
            reporter.print(f"step {step}: {v.text} (best {best:.{task.best_digits}f}) lr {lr:.2e}")
            if improved:
                task.export(out / "best", cfg.run.name or out.name,
                            {"command": history[0]["command"], "resumes": history[1:], "config": cfg.to_dict(),
                             "device": common["device"], "world": world, **({"init": init} if init else {})},
                            {**v.figures, "step": step, "train_seconds": round(seconds())})
        return cfg.optim.max_lr_decays is not None and decays > cfg.optim.max_lr_decays

    model.train()
    t_log, weight_since, loss_sum = time.time(), 0, 0.0
    eval_every, ckpt_every, log_every = cfg.run.eval_every, cfg.run.ckpt_every, cfg.run.log_every
    next_eval = (step // eval_every + 1) * eval_every
    next_ckpt = (step // ckpt_every + 1) * ckpt_every
    last_eval, stop_reason = None, "steps"
    grad_max = 0.0                              # the largest pre-clip gradient norm since the last log line
    with StopSignals() as signals:
        while True:
            if total is not None and step >= total:
                break
            if task.resumable_here:
                if cfg.run.epochs is not None and task.epoch >= cfg.run.epochs:
                    stop_reason = "epochs"
                    break
                timeout = cfg.run.time_limit is not None and time.time() - t_start >= cfg.run.time_limit
                reason = agree(signal.Signals(signals.signum).name if signals.signum
                               else "time limit" if timeout else None, world)
                if reason:
                    stop_reason = reason
                    break
            epoch = task.epoch
            a = slope(cfg, epoch)
            loss, weight = task.loss(net, step, a)
            if not torch.isfinite(loss):
                saved = f"the checkpoint in {out} is kept" if (out / "checkpoint.json").exists() else "no checkpoint was saved"
                raise TrainingDiverged(f"training diverged at step {step} (loss {loss.item()}); {saved}: try a lower --lr")
            opt.zero_grad(set_to_none=True)
            if step < cfg.optim.warmup:   # early STE gradients are huge and noisy: ramp the step size up
                for group in opt.param_groups:
                    group["lr"] = cfg.optim.lr * (step + 1) / cfg.optim.warmup
            loss.backward()
            log_now = (step + 1) % log_every == 0 or step + 1 == total
            groups = detectors.grad_groups(model) if detectors and log_now and rank == 0 else {}   # before clipping
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip)
            grad_max = max(grad_max, float(grad_norm))
            if detectors:
                detectors.before_step()
            opt.step()
            if detectors:
                detectors.after_step()
            step += 1
            step_loss = loss.detach()
            if distributed:   # the log describes the whole global batch, not this process's share
                dist.all_reduce(step_loss)
                step_loss = step_loss / world
            loss_sum += step_loss.item() * weight
            weight_since += weight

            if log_now:
                fields, stats = task.log_fields(loss_sum / weight_since, weight_since, time.time() - t_log)
                rec = {"step": step, "epoch": round(epoch, 4), "loss": json_figure(loss_sum / weight_since),
                       "lr": opt.param_groups[0]["lr"], "slope": round(a, 4), "grad_norm": round(float(grad_norm), 4),
                       "grad_norm_max": round(grad_max, 4), "grad_groups": {k: round(v, 4) for k, v in groups.items()},
                       **fields, "seconds": round(seconds(), 1)}
                reporter.write(rec)
                reporter.update(step, stats)
                t_log, weight_since, loss_sum, grad_max = time.time(), 0, 0.0, 0.0
            if not task.resumable_here:
                continue
            if step >= next_eval:
                next_eval = (step // eval_every + 1) * eval_every
                last_eval = step
                if validate():
                    stop_reason = "plateau"
                    break
            if step >= next_ckpt:
                next_ckpt = (step // ckpt_every + 1) * ckpt_every
                checkpoint()

        interrupted = stop_reason in ("SIGINT", "SIGTERM")
        if step > 0 and last_eval != step and not interrupted:
            validate(schedule=False)   # the last steps count too: export the model if they improved it
        checkpoint()
    summary = {"step": step, task.best_key: json_figure(best, task.best_digits), "stop": stop_reason, "out": str(out),
               "model": str(out / "best") if (out / "best.json").is_file() else None,
               "train_seconds": round(seconds(), 1)}
    reporter.write({"event": "stop", **summary})
    reporter.close()
    if interrupted:
        raise Interrupted(f"{stop_reason} at step {step}: checkpoint saved in {out}; continue with "
                          f"hmgen train --resume --out {out}", signal.Signals[stop_reason].value)
    return summary
