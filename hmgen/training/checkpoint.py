"""The run folder and its checkpoints: safetensors (weights, Adam moments, a task's carried tensors, RNG)
plus JSON (everything else) — never pickle.

  checkpoint.safetensors / checkpoint.json   latest state, rewritten every `ckpt_every` steps and at a stop; the
                                             JSON is also inside the safetensors header (one file, renamed into
                                             place at once: a stop between the two writes cannot pair new
                                             tensors with an old step); checkpoint.json is its readable copy
  best.safetensors / best.json               best model by validation (an ordinary model file)
  metrics.jsonl                              one JSON object per log line / evaluation / event
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from hmgen.errors import HmgenError, UsageError
from hmgen.fs import atomic_write, write_safetensors
from hmgen.training.config import OLD_RUN_DEFAULTS

RUN_FILES = ("checkpoint.safetensors", "checkpoint.json", "best.safetensors", "best.json", "metrics.jsonl")


class RunError(HmgenError):
    """A run folder that cannot be used as asked (nothing to resume, a run that would be overwritten)."""


def check_run_folder(out: Path, resume: bool, force: bool) -> None:
    """Refuse to lose a run: a new run never writes over an existing one unless `force`."""
    if resume and force:
        raise UsageError("--resume continues the run in --out, --force starts it over: give one of them")
    if resume:
        if not (out / "checkpoint.json").is_file():
            raise RunError(f"{out}: no checkpoint to resume from")
        return
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not force:
        raise RunError(f"{out} holds a run already ({', '.join(held)}): continue it with --resume, "
                       f"or start over with --force (its checkpoint, best model and metrics are then replaced)")


def clear_run_folder(out: Path) -> None:
    """--force: the old run's files go once the new run is ready to start, so that nothing of it mixes in."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


def trim_metrics(path: Path, step: int) -> None:
    """Drop the metrics lines of steps after `step` (the checkpoint a run resumes from): an invocation that failed
    after it logged steps that the resumed run computes again, and each step is to be logged once; so does a last
    line that its failed write cut short (the next line appended to it would be lost with it)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            later = json.loads(line).get("step", 0) > step
        except (ValueError, AttributeError, TypeError):
            later = not line.endswith("\n")   # a last line cut short by a failed write goes; others are not ours
        if not later:
            kept.append(line)
    if len(kept) < len(lines):
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept)))


META_KEY = "hmgen.checkpoint"      # the checkpoint's JSON, in the safetensors header


def read_checkpoint_meta(out: Path) -> dict:
    """The checkpoint's JSON: the copy inside checkpoint.safetensors (written with its tensors), or, for a
    checkpoint saved before it was kept there, checkpoint.json."""
    tensors = out / "checkpoint.safetensors"
    if tensors.is_file():
        try:
            with safe_open(str(tensors), framework="pt") as f:
                embedded = (f.metadata() or {}).get(META_KEY)
        except Exception as e:      # safetensors raises its own error types for a damaged header
            raise RunError(f"{tensors}: not a checkpoint ({e})") from None
        if embedded is not None:
            return json.loads(embedded)
    return json.loads((out / "checkpoint.json").read_text())


def read_run_config(out: Path) -> dict:
    """The configuration recorded in a run's checkpoint."""
    try:
        return {**OLD_RUN_DEFAULTS, **read_checkpoint_meta(out)["config"]}
    except FileNotFoundError:
        raise RunError(f"{out}: no checkpoint to resume from") from None
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"{out}/checkpoint.json: not a checkpoint ({e})") from None


def save_checkpoint(out: Path, model, opt, sched, extra: dict[str, torch.Tensor], info: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_sd = opt.state_dict()
    for i, st in opt_sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    tensors.update({k: v.detach().cpu().contiguous() for k, v in extra.items()})
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {**info, "param_groups": opt_sd["param_groups"], "scheduler": sched.state_dict()}
    text = json.dumps(meta, indent=1)
    write_safetensors(out / "checkpoint.safetensors", tensors, metadata={META_KEY: text})
    atomic_write(out / "checkpoint.json", lambda tmp: Path(tmp).write_text(text))


def load_checkpoint(out: Path, model, opt, sched) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore weights, optimiser, scheduler and RNG; -> (the JSON, all tensors) for the task's own part."""
    meta = read_checkpoint_meta(out)
    tensors = load_file(str(out / "checkpoint.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    sched.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta, tensors


def load_init(model, path: str, description: dict, found: dict, weights: dict[str, torch.Tensor]) -> None:
    """--init: another model file's weights into `model`, when their descriptions (architecture, vocabulary)
    match; `description` is this run's, `found` the file's."""
    for key, want in description.items():
        have = found.get(key)
        if have != want:
            diff = [k for k in want if have is None or have.get(k) != want.get(k)] if isinstance(want, dict) else []
            shown = "; ".join(f"{k} {have.get(k) if have else None!r} there, {want[k]!r} here" for k in diff[:3])
            raise UsageError(f"--init {path}: its {key} does not match this run's ({shown or 'different'})")
    model.load_state_dict(weights)
