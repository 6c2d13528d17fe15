"""What a task (text language modelling, handwriting synthesis) supplies to the one training loop,
hmgen.training.loop.train: its model, its batches and loss, its validation and its model file. The loop
owns everything else (optimiser, warm-up, clipping, plateau schedule, slope annealing, checkpoints, resume,
signals, time limits, metrics, DDP, which process writes).

Implementations: hmgen.text.train.TextTask, hmgen.handwriting.train.HandwritingTask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch

from hmgen.training.boundary import Detectors
from hmgen.training.config import DetectorDefaults, TrainConfig


def json_figure(x: float, digits: int = 4) -> float | None:
    """A figure for JSON: rounded, and null rather than Infinity/NaN (strict JSON)."""
    return round(x, digits) if math.isfinite(x) else None


@dataclass
class Validation:
    """One evaluation on the validation data; lower `figure` is better."""
    figure: float                                   # what the plateau schedule and "best" follow
    fields: dict                                    # its part of the metrics line, e.g. valid_bpc, valid_layers
    text: str                                       # shown on the terminal, e.g. "valid bpc 1.2345"
    figures: dict = field(default_factory=dict)     # recorded in the exported model besides step and time


class Task(Protocol):
    kind: str                     # "text" | "handwriting": recorded in checkpoints
    model: torch.nn.Module        # the weights trained, checkpointed and exported
    best_key: str                 # name of the best figure in metrics, checkpoint and summary
    best_digits: int              # ... and its rounding
    best_name: str                # ... and how `hmgen train` shows it: e.g. "BPC" and "{:.4f}"
    best_format: str
    steps_per_epoch: int | None   # for the progress bar's total when --epochs is given (None: not known)
    detector_defaults: DetectorDefaults   # the task's choices for the detector options a run leaves None
    detectors: Detectors | None   # what training does to its boundary detectors (None: the stack has none)

    def __init__(self, cfg: TrainConfig, device: torch.device, rank: int, world: int, data) -> None:
        """Build the model (first: the loop seeded torch for it), the batches and the Detectors. rank, world: this
        process under DDP; data: an already loaded corpus of the task's kind, or None to load cfg.run.data."""

    @property
    def epoch(self) -> float: ...             # epochs done, fractional (slope annealing, --epochs)

    @property
    def resumable_here(self) -> bool: ...     # a checkpoint, evaluation or stop here resumes exactly

    def start_fields(self) -> dict: ...       # the task's part of the "start" event (data sizes, model)

    def forward_module(self) -> torch.nn.Module: ...   # what loss() runs through (the loop wraps it for DDP)

    def loss(self, net, step: int, a: float) -> tuple[torch.Tensor, int]:
        """One step: the mean loss to minimise and how many symbols/points it averages over (all processes).
        Carries state to the next step (detached) and keeps the counts log_fields reports."""

    def log_fields(self, loss: float, weight: int, seconds: float) -> tuple[dict, str]:
        """The task's part of a metrics line over the `weight` symbols/points of the last `seconds` (then
        reset), and the progress-bar text."""

    def validate(self) -> Validation | None: ...        # None: no validation data

    def export(self, stem, name: str, training: dict, figures: dict) -> None: ...   # the best model file

    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict]: ...   # for a checkpoint; all processes call

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None: ...

    def init_from(self, path: str) -> None: ...         # --init: another model file's weights, if they fit
