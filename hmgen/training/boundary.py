"""Keeping the boundary detectors alive during training, and watching them.

With the step function forward and the hard-sigmoid straight-through backward (eq. 8-9), a detector whose
pre-activation z~ leaves the window |z~| < 1/a gets no gradient from the language-model loss at all; in
hmgen's first runs every detector soon left it (a layer that never fires, or fires at every step) and never
came back (benchmarks/RESULTS.md, "Hierarchy"). The paper adds no term for this (its FLUSH reset is the only
cost of firing).

Here:
  boundary_rows   where the detector's parameters live (one row of each term's weight, of b, of the LN gains);
  group_grad_norms  gradient norms per parameter group, each layer's boundary rows apart from its gate rows;
  detector_stats  per detector: firing rate and share of computed steps inside the STE window;
  rate_loss       a regulariser pulling each layer's firing rate toward a target (H-Net's ratio loss,
                  Hwang, Wang & Gu 2025), which also gives a saturated detector a gradient again;
  RateControl     a controller outside the gradient: after each update it moves each detector's bias b_z
                  toward its target rate, so a detector that stopped firing (or fires always) comes back
                  whatever its gradients are;
  Detectors       all of it for one task's stack, from the run's options (what the tasks and the loop call).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from hmgen.cell.reference import COPY, HMLSTM
from hmgen.training.config import DetectorOptions


def boundary_rows(rnn: HMLSTM) -> list[list[tuple[nn.Parameter, int]]]:
    """Per detector layer: the (parameter, row) pairs that compute z~ (eq. 5-7's extra row)."""
    out = []
    for layer in rnn.layers:
        if not layer.has_boundary:
            continue
        r = 4 * layer.hidden
        rows = [(lin.weight, r) for lin in (layer.bu, layer.rec, layer.td) if lin is not None]
        rows.append((layer.bias, r))
        for norm in (layer.ln_bu, layer.ln_rec, layer.ln_td):
            if norm is not None and norm.ln is not None and norm.ln.weight.shape[0] > r:
                rows.append((norm.ln.weight, r))
        out.append(rows)
    return out


@torch.no_grad()
def group_grad_norms(rnn: HMLSTM, model: nn.Module) -> dict[str, float]:
    """Gradient norms (call before clipping) of a model holding the HM-LSTM stack `rnn`: each layer's gate rows
    ("L1.gates"), each detector's rows ("L1.boundary"), and everything else ("other": embeddings, output module,
    attention window)."""
    inside = {id(p) for p in rnn.parameters()}
    other = [p.grad for p in model.parameters() if id(p) not in inside and p.grad is not None]
    out = {}
    detectors = iter(boundary_rows(rnn))
    for l, layer in enumerate(rnn.layers):
        grads = {id(p): p.grad for p in layer.parameters() if p.grad is not None}
        if layer.has_boundary:
            rows = [(p, r) for p, r in next(detectors) if p.grad is not None]
            out[f"L{l + 1}.boundary"] = sum(float(p.grad[r].norm()) ** 2 for p, r in rows) ** 0.5
            for p, r in rows:                      # the gate rows: the same tensors without the boundary row
                grads[id(p)] = torch.cat([p.grad[:r], p.grad[r + 1:]])
        out[f"L{l + 1}.gates"] = sum(float(g.norm()) ** 2 for g in grads.values()) ** 0.5
    out["other"] = sum(float(g.norm()) ** 2 for g in other) ** 0.5
    return out


def computed(ops: torch.Tensor) -> torch.Tensor:
    """(batch, T, L) op codes -> (batch, T, L-1) float mask of the steps where a detector was evaluated
    (a COPY step computes nothing and keeps z = z_{t-1} = 0)."""
    return (ops[..., :-1] != COPY).to(torch.float32)


@torch.no_grad()
def detector_stats(pre_z: torch.Tensor, z: torch.Tensor, ops: torch.Tensor, a: float) -> torch.Tensor:
    """(3, L-1) sums for one segment: boundaries fired, steps inside the STE window |z~| < 1/a among the
    computed steps, and computed steps. pre_z: (batch, T, L-1); z, ops: (batch, T, L)."""
    live = computed(ops)
    inside = (pre_z.abs() < 1 / a).to(torch.float32) * live
    return torch.stack([z[..., :-1].sum((0, 1)), inside.sum((0, 1)), live.sum((0, 1))]).float()


def rate_loss(pre_z: torch.Tensor, z: torch.Tensor, ops: torch.Tensor, targets: list[float],
              fired: torch.Tensor | None = None, leak: float = 0.0) -> torch.Tensor:
    """H-Net's ratio loss per detector, summed over layers: N/(N-1) * ((N-1) F G + (1-F)(1-G)), N = 1/target,
    F = the share of steps that fired (hard, no gradient), G = the mean firing probability sigm(z~) over the
    same steps (COPY steps count as 0). It is minimised at F = G = target; the gradient reaches z~ through the
    sigmoid everywhere, so a detector outside the STE window is pulled back (hmgen's choice of soft proxy:
    the hard sigmoid would have no gradient exactly where it is needed).
    leak: added to sigm'(z~) in G's gradient (G's value is unchanged). sigm' vanishes far outside the window
    (below Adam's epsilon once scaled by the loss weight), so a detector that ran off stays off; with a leak the
    pull back never falls below leak per step (hmgen's choice).
    pre_z: (batch, T, L-1); z, ops: (batch, T, L); fired: F given (the whole batch's under DDP: the loss is
    linear in G for a given F, so averaging the processes' gradients then gives the one-process gradient)."""
    live = computed(ops)
    F_ = z[..., :-1].detach().float().mean((0, 1)) if fired is None else fired      # (L-1,)
    p = torch.sigmoid(pre_z.float())                                     # (batch, T, L-1)
    if leak:
        p = p + leak * (pre_z.float() - pre_z.float().detach())         # same value, gradient sigm' + leak
    G = (p * live).mean((0, 1))                                          # (L-1,)
    N = 1.0 / torch.tensor(targets, dtype=G.dtype, device=G.device)
    return (N / (N - 1) * ((N - 1) * F_ * G + (1 - F_) * (1 - G))).sum()


class RateControl:
    """After each optimiser step, b_z[l] -= clip(gain * q_l, ±s_l), q_l the threshold at which detector l would
    have fired at its target rate on the step just taken (`threshold_offsets`). z = 1[z~ > 0] (eq. 8), so
    moving b_z moves the threshold directly: the loss still decides *where* a layer fires, the controller keeps
    *how often* near the target, whatever the detector's gradients (none outside the STE window). hmgen's
    choice (the paper has no such term).

    The step limit s_l adapts as in Rprop: doubled while q keeps its sign, halved when it flips. Unlimited
    moves flipped a self-exciting layer (fire -> FLUSH -> fire again: a gap in its z~ between the steps that
    chain and those that do not) between rarely and very often firing on alternate updates; a small fixed limit
    settled it but left another layer firing at every step for many updates while its gradients exploded
    (benchmarks/RESULTS.md). Measured in pre-activation units, the controller cannot wind up as one on the rate
    itself does (a detector whose z~ all sit in a narrow band jumps from never to nearly always firing).
    state: (2, L-1) step limits and the previous sign of q, saved in checkpoints (exact resume)."""

    START, SMALLEST, LARGEST = 1.0, 1e-3, 10.0

    def __init__(self, rnn: HMLSTM, gain: float):
        self.rows = [(layer.bias, 4 * layer.hidden) for layer in rnn.layers if layer.has_boundary]
        self.gain = gain
        self.state = torch.tensor([[self.START] * len(self.rows), [0.0] * len(self.rows)])

    @torch.no_grad()
    def after(self, offsets: torch.Tensor) -> None:
        """offsets: (L-1,) from threshold_offsets (NaN: no evidence this step, no change; 0: inside the band,
        no move, and the next move starts from the current limit)."""
        for l, ((bias, r), q) in enumerate(zip(self.rows, offsets.tolist())):
            if q != q:
                continue
            limit, last = float(self.state[0, l]), float(self.state[1, l])
            sign = (q > 0) - (q < 0)
            if sign * last > 0:
                limit = min(2 * limit, self.LARGEST)
            elif sign * last < 0:
                limit = max(limit / 2, self.SMALLEST)
            bias[r] -= max(-limit, min(limit, self.gain * q))
            self.state[0, l], self.state[1, l] = limit, float(sign)


@torch.no_grad()
def threshold_offsets(pre_z: torch.Tensor, ops: torch.Tensor, targets: list[float],
                      mask: torch.Tensor | None = None, band: float = 1.0) -> torch.Tensor:
    """(L-1,) per detector: how far the threshold 1[z~ > q] must move (from 0, where eq. 8 puts it) for the
    detector to fire at a share of all time steps inside [target / band, target * band]: 0 while it already
    does, else the threshold at the nearer edge (band 1: at the target itself). mask: (batch, T) steps that
    count, e.g. not padding; NaN where the layer computed nothing (a COPY step evaluates no detector).
    pre_z: (batch, T, L-1); ops: (batch, T, L)."""
    live = computed(ops) > 0                                            # (batch, T, L-1)
    counted = torch.ones_like(live[..., 0]) if mask is None else mask > 0   # (batch, T)
    steps = int(counted.sum())
    out = torch.full((pre_z.shape[-1],), float("nan"))
    for l, target in enumerate(targets):
        values = pre_z[..., l][live[..., l] & counted].float()
        if values.numel() == 0:
            continue
        values = torch.sort(values, descending=True).values

        def threshold(rate: float) -> float:
            # how many should fire: the share of all steps, but at most half of the steps it computed (a
            # layer below that fires rarely must not make this one fire at every chance it gets)
            k = max(min(int(round(rate * steps)), values.numel() // 2), 1)
            return float((values[k - 1] + values[k]) / 2 if k < values.numel() else values[k - 1] - 1e-3)

        low, high = threshold(target * band), threshold(target / band)   # low <= high: more fire above low
        out[l] = min(max(0.0, low), high)                               # to the CPU, as a plain float
    return out


class BoundaryRowsLR:
    """A smaller learning rate for the detectors' rows: after the optimiser's step, each boundary row moves
    only `scale` times as far. (Adam is invariant to a gradient's scale, so scaling the gradient would not
    do it; the rows share their tensors with the gate rows, so a separate parameter group cannot either.)"""

    def __init__(self, rnn: HMLSTM, scale: float):
        self.rows = [pr for layer in boundary_rows(rnn) for pr in layer]
        self.scale = scale
        self.saved: list[torch.Tensor] = []

    @torch.no_grad()
    def before(self):
        self.saved = [p[r].clone() for p, r in self.rows]

    @torch.no_grad()
    def after(self):
        for (p, r), old in zip(self.rows, self.saved):
            p[r] = old + self.scale * (p[r] - old)


@torch.no_grad()
def glorot_boundary_rows(rnn: HMLSTM) -> None:
    """Glorot-uniform init of each term's boundary row, bias 0: the initialisation in what appears to be the
    authors' TensorFlow code (a separate in x 1 kernel for z~)."""
    for layer in rnn.layers:
        if not layer.has_boundary:
            continue
        r = 4 * layer.hidden
        for lin in (layer.bu, layer.rec, layer.td):
            if lin is not None:
                bound = (6.0 / (lin.weight.shape[1] + 1)) ** 0.5
                lin.weight[r].uniform_(-bound, bound)
        layer.bias[r] = 0.0


class Detectors:
    """What training does to an HM-LSTM's boundary detectors besides the loss, and what it watches of them, from the
    run's DetectorOptions (hmgen's choices; the paper has none of them): the boundary rows' initialisation
    (--boundary-init), the straight-through gradient's scale (--boundary-grad), the rows' learning rate
    (--boundary-lr), the rate controller (--rate-control) and the rate regulariser (--rate-reg).

    A task builds one for its stack right after building the model (`of`: None for a stack without detectors). In
    each loss it hands over what the detectors did (`watch`), where their thresholds should have been (`aim`) and
    adds `regulariser` (counting it with `count_regulariser`); `log_fields` reports the figures since the last log
    line. The loop calls grad_groups before clipping, before_step / after_step around the optimiser's step, and
    keeps `state()` in the checkpoint."""

    KEY = "rate_control.state"            # the controller's tensor in checkpoints

    def __init__(self, rnn: HMLSTM, options: DetectorOptions, targets: list[float], device=None):
        """options: the run's DetectorOptions, none left None (TrainConfig.with_defaults); targets: each
        detector's firing rate (DetectorDefaults.targets)."""
        if options.boundary_init == "glorot":
            glorot_boundary_rows(rnn)
        if options.boundary_grad != 1.0:
            rnn.set_ste(options.boundary_grad)
        self.rnn, self.options, self.targets = rnn, options, targets
        self.rows_lr = BoundaryRowsLR(rnn, options.boundary_lr) if options.boundary_lr != 1.0 else None
        self.control = RateControl(rnn, options.rate_control) if options.rate_control > 0 else None
        self.offsets: torch.Tensor | None = None          # set by aim: where this step's thresholds should have been
        self.stats = torch.zeros(3, len(targets), device=device)   # fired, inside the STE window, computed
        self.reg_sum = 0.0                                 # the regulariser times the symbols (points) it covered

    @classmethod
    def of(cls, rnn: HMLSTM, options: DetectorOptions, targets, device=None) -> "Detectors | None":
        """The stack's Detectors, targets(layers) their rates; None where it has no detector (the LSTM, one layer)."""
        return cls(rnn, options, targets(len(rnn.layers)), device) if boundary_rows(rnn) else None

    def grad_groups(self, model: nn.Module) -> dict[str, float]:
        return group_grad_norms(self.rnn, model)

    def watch(self, pre_z: torch.Tensor, z: torch.Tensor, ops: torch.Tensor, a: float, reduce=None) -> torch.Tensor:
        """Count a segment's detector_stats for the next log line; `reduce` (e.g. an all_reduce) makes them the
        whole batch's first. Returns them."""
        stats = detector_stats(pre_z.detach(), z.detach(), ops, a)
        if reduce:
            reduce(stats)
        self.stats += stats.to(self.stats.device)
        return stats

    def aim(self, pre_z: torch.Tensor, ops: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Where this step's thresholds should have been (threshold_offsets), for the controller after the step."""
        if self.control:
            self.offsets = threshold_offsets(pre_z.detach(), ops, self.targets, mask, self.options.rate_band)

    def regulariser(self, pre_z: torch.Tensor, z: torch.Tensor, ops: torch.Tensor,
                    fired: torch.Tensor | None = None) -> torch.Tensor | None:
        """The weighted rate regulariser to add to the loss (rate_loss); None when it is off."""
        o = self.options
        return o.rate_reg * rate_loss(pre_z, z, ops, self.targets, fired, o.rate_leak) if o.rate_reg else None

    def count_regulariser(self, value: float, weight: int) -> None:
        """The regulariser's value over `weight` symbols (points), for log_fields."""
        self.reg_sum += value * weight

    def log_fields(self, weight: int) -> tuple[dict, float]:
        """Per detector since the last call: the share of all `weight` steps it fired ("fire") and the share of its
        computed steps inside the STE window |z~| < 1/a ("window"); and the regulariser's mean. Then reset."""
        fields = {"fire": [round(float(f), 4) for f in self.stats[0] / max(weight, 1)],
                  "window": [round(float(w), 4) for w in self.stats[1] / self.stats[2].clamp(min=1)]}
        reg = self.reg_sum / max(weight, 1)
        self.stats.zero_()
        self.reg_sum = 0.0
        return fields, reg

    def before_step(self) -> None:
        if self.rows_lr:
            self.rows_lr.before()

    def after_step(self) -> None:
        if self.rows_lr:
            self.rows_lr.after()
        if self.control and self.offsets is not None:   # where this step's thresholds should have been
            self.control.after(self.offsets)

    def state(self) -> dict[str, torch.Tensor]:
        return {self.KEY: self.control.state} if self.control else {}

    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.control and self.KEY in tensors:
            self.control.state = tensors[self.KEY].clone()
