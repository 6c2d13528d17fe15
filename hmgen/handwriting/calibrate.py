"""Calibrating a trained model's boundary detectors: each detector's bias b_z set once, on many training lines,
where the rate controller (hmgen.training.boundary.RateControl) kept it batch by batch during training.

The controller moves b_z after every update so that the batch just seen would have fired at the target rate;
what a trained model's detectors do on other lines then depends on the last batches (a pen model's layer 2 fired
at a fraction to nearly twice its target on validation at successive evaluations: benchmarks/RESULTS.md).
Calibration replaces that last-batch bias by the one that hits the target over `lines` training lines, from the
zero state, whole lines, as the model is used: layer by layer from the bottom (a layer's threshold changes which
steps the layer above computes), a few rounds. hmgen's choice; the paper has no controller. Used when bundling a
model.
"""
from __future__ import annotations

import numpy as np
import torch

from hmgen.cell.reference import COPY, operations
from hmgen.handwriting.model import SynthesisNet


@torch.no_grad()
def detector_values(net: SynthesisNet, batches) -> tuple[list[torch.Tensor], int]:
    """Per detector, its pre-activations z~ at the points where it was computed, over every batch; and the number
    of real points. batches: [(x, y, mask, onehot, tmask)] as hmgen.handwriting.train.tensors_for makes them."""
    L = net.num_layers
    values, points = [[] for _ in range(L - 1)], 0
    for x, _, m, onehot, tmask in batches:
        state = net.initial_state(x.shape[0])
        pre = []
        _, _, z, _ = net(x, state, onehot, tmask, pre_z=pre)
        ops = operations(z, torch.cat([zl for _, _, zl in state[0]], -1))       # (B, T, L)
        real = m > 0
        points += int(real.sum())
        for l in range(L - 1):
            values[l].append(pre[0][..., l][real & (ops[..., l] != COPY)])
    return [torch.cat(v) for v in values], points


def threshold(values: torch.Tensor, target: float, points: int) -> float:
    """The z~ above which `target` of all points fire (at most half of the computed ones, as the controller)."""
    v = torch.sort(values, descending=True).values
    k = max(min(int(round(target * points)), v.numel() // 2), 1)
    return float((v[k - 1] + v[k]) / 2) if k < v.numel() else float(v[k - 1] - 1e-3)


@torch.no_grad()
def calibrate(net: SynthesisNet, batches, targets: list[float], rounds: int = 3) -> list[float]:
    """Move each detector's bias so that it fires on `targets` of the points of `batches`; -> the total moves."""
    moved = [0.0] * len(targets)
    rows = [(layer.bias, 4 * layer.hidden) for layer in net.rnn.layers if layer.has_boundary]
    net.eval()
    for _ in range(rounds):
        for l, (bias, r) in enumerate(rows):
            values, points = detector_values(net, batches)
            q = threshold(values[l], targets[l], points)
            bias[r] -= q                                  # z = 1[z~ > 0]: the threshold moves to 0
            moved[l] += -q
    return [round(m, 4) for m in moved]


def rates(net: SynthesisNet, batches) -> list[float]:
    """Each detector's firing rate, a share of all real points."""
    values, points = detector_values(net, batches)
    return [round(float((v > 0).sum()) / max(points, 1), 4) for v in values]


def training_batches(lines, hw, n: int = 256, batch_size: int = 64, seed: int = 0):
    """`n` random prepared training lines as whole-line batches."""
    from hmgen.handwriting.train import tensors_for
    idx = np.random.default_rng(seed).choice(len(lines), min(n, len(lines)), replace=False)
    idx = sorted(idx.tolist(), key=lambda i: len(lines[i].offsets))
    return [tensors_for(lines, idx[i:i + batch_size], hw, "cpu") for i in range(0, len(idx), batch_size)]
