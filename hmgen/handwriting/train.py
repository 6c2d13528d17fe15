"""Handwriting synthesis as a training task (hmgen.training.task) for the one loop: `hmgen train iam:DIR`.

Batches: training lines bucketed by length (sorted with a per-epoch jitter, cut into batches, batch order
shuffled per epoch; all deterministic from the seed), padded, with masks. Each batch is cut into
truncated-BPTT segments of seq_len points; the state (HM-LSTM state, window position, window vector) is
carried across the segments of a batch, detached. One optimiser step per segment; the loss is the mean
NLL per real point. Validation: NLL per line (nats, normalised offsets) on the valid split.
Batch boundaries are the task's step boundaries: evaluations, checkpoints, time limits and signals act
there, so --resume after them continues exactly (batch order depends only on the seed and the epoch);
--steps may stop inside a batch, and a resumed run then restarts that batch. One process only (no DDP).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from hmgen.device import build_trainable
from hmgen.errors import UsageError
from hmgen.handwriting.data import (HandwritingDataError, load_iam, line_height_units, norm_stats, prepare_lines,
                                    select)
from hmgen.handwriting.model import (HWConfig, SynthesisNet, encode_text, load_hw_model, mixture_nll, normalise,
                                     save_hw_model, text_batch)
from hmgen.cell.reference import COPY, op_counts, operations, rates_dict
from hmgen.training.boundary import Detectors, default_rate_targets, detector_stats, rate_loss, threshold_offsets
from hmgen.training.checkpoint import load_init
from hmgen.training.task import Validation, json_figure


def hw_config_from(cfg, alphabet: str, stats, line_height: float) -> HWConfig:
    return HWConfig(alphabet=alphabet, arch=cfg.arch, hidden=list(cfg.hidden), layer_norm=cfg.layer_norm,
                    ln_terms=cfg.ln_terms,
                    mixtures=cfg.mixtures, window=cfg.window, conditional=cfg.conditional, stride=cfg.stride,
                    mean=stats[0], std=stats[1], line_height=round(line_height, 2))


class HWData:
    """Prepared, normalised lines of the three splits, the alphabet and the style bank."""

    def __init__(self, spec: str, stride: int, max_points: int, conditional: bool, seed: int = 0):
        path = spec[4:] if spec.startswith("iam:") else spec
        raw = load_iam(path)
        self.source = path
        kw = dict(stride=stride, align=True, smooth=False, glitch=300.0, clip=500.0)
        train_raw = select(raw, "train")
        if not train_raw:
            raise HandwritingDataError(f"{path}: no training lines (official trainset)")
        self.train = [p for p in prepare_lines(train_raw, **kw) if len(p.offsets) <= max_points]
        self.valid = prepare_lines(select(raw, "valid"), **kw)
        self.test = prepare_lines(select(raw, "test"), **kw)
        self.alphabet = "".join(sorted({c for p in self.train for c in p.text}))
        if conditional:   # a line with a character never seen in training cannot be scored (rare: '*' once)
            known = set(self.alphabet)
            self.valid = [p for p in self.valid if set(p.text) <= known]
            self.test = [p for p in self.test if set(p.text) <= known]
        self.stats = norm_stats(self.train)
        self.line_height = line_height_units(self.train)
        self.alphabet = "".join(sorted({c for p in self.train for c in p.text}))
        # the style bank: real training lines of moderate length from different writers
        writers = {ln.line_id: ln.writer for ln in train_raw}
        rng = np.random.default_rng(seed)
        cand = [p for p in self.train if 20 <= len(p.text) <= 40 and 120 <= len(p.offsets) <= 400
                and "#" not in p.text]
        rng.shuffle(cand)
        seen, self.styles = set(), []
        for p in cand:
            w = writers.get(p.line_id, -1)
            if w in seen:
                continue
            seen.add(w)
            self.styles.append(p)
            if len(self.styles) == 8:
                break


def make_batches(lines, batch_size: int, epoch: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed * 1000003 + epoch)
    keys = np.array([len(p.offsets) for p in lines]) + rng.uniform(0, 40, len(lines))
    order = np.argsort(keys, kind="stable")
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def tensors_for(lines, idx, hw: HWConfig, device):
    """-> x (B, T, 3) inputs, y (B, T, 3) targets, mask (B, T), onehot, text mask."""
    seqs = [normalise(lines[i].offsets, hw) for i in idx]
    T = max(len(s) for s in seqs)
    B = len(seqs)
    y = np.zeros((B, T, 3), np.float32)
    m = np.zeros((B, T), np.float32)
    for b, s in enumerate(seqs):
        y[b, :len(s)] = s
        m[b, :len(s)] = 1
    x = np.zeros_like(y)
    x[:, 1:] = y[:, :-1]
    x[:, 0, 2] = 1.0                   # the first input: a pen-up at the origin
    onehot = tmask = None
    if hw.conditional:
        onehot, tmask = text_batch([encode_text(lines[i].text, hw.alphabet) for i in idx], hw.n_chars, device)
    to = lambda a: torch.from_numpy(a).to(device)
    return to(x), to(y), to(m), onehot, tmask


@torch.no_grad()
def evaluate_lines(net: SynthesisNet, lines, max_points: int | None = None, batch_size: int = 64,
                   device="cpu", progress=None) -> dict:
    """NLL per line and per point (nats; normalised offsets) over lines (up to max_points points)."""
    net.eval()
    hw = net.cfg
    if max_points is not None:
        keep, n = [], 0
        for p in lines:
            if n >= max_points:
                break
            keep.append(p)
            n += len(p.offsets)
        lines = keep
    order = np.argsort([len(p.offsets) for p in lines], kind="stable")
    total, points, zsum = 0.0, 0, None
    counts = torch.zeros(net.num_layers, 3, dtype=torch.long)
    t0 = time.time()
    for bi in range(0, len(order), batch_size):
        idx = order[bi:bi + batch_size].tolist()
        x, y, m, onehot, tmask = tensors_for(lines, idx, hw, device)
        state = net.initial_state(len(idx), device)
        params, _, z, _ = net(x, state, onehot, tmask)
        nll = mixture_nll(params, y, hw.mixtures) * m
        counts += op_counts(net, z, torch.cat([zl for _, _, zl in state[0]], -1), m > 0).cpu()
        total += float(nll.sum())
        points += int(m.sum())
        zr = (z * m[..., None]).sum((0, 1))
        zsum = zr if zsum is None else zsum + zr
        if progress:
            progress(min(bi + batch_size, len(order)), len(order))
    net.train()
    return {"nll_line": total / max(len(lines), 1), "nll_point": total / max(points, 1), "lines": len(lines),
            "points": points, "z_rates": [round(float(v) / max(points, 1), 4) for v in zsum[:-1]] if zsum is not None else [],
            "layers": rates_dict(counts), "points_per_s": round(points / max(time.time() - t0, 1e-9))}


def train(cfg, **kw) -> dict:
    """hmgen.training.loop.train on IAM-OnDB (iam:DIR; the keyword arguments are the loop's)."""
    from hmgen.training.loop import train as loop_train
    return loop_train(cfg, HandwritingTask, **kw)


class HandwritingTask:
    kind = "handwriting"
    best_key, best_digits = "best_valid_nll", 2
    steps_per_epoch = None          # segments per batch vary with the lines' lengths

    def __init__(self, cfg, device, rank: int = 0, world: int = 1, data: HWData | None = None):
        if world > 1:
            raise UsageError("handwriting training (iam:) runs in one process; torchrun shards text corpora only")
        if cfg.fast:
            raise UsageError("--fast applies to text models only; handwriting (iam:) has no fused forward")
        self.cfg, self.device = cfg, device
        self.data = data or HWData(cfg.data, cfg.stride, cfg.max_points, cfg.conditional, cfg.seed)
        self.hw = hw_config_from(cfg, self.data.alphabet if cfg.conditional else "", self.data.stats,
                                 self.data.line_height)
        self.model = build_trainable(lambda: SynthesisNet(self.hw), device)
        self.detectors = Detectors(self.model.rnn, cfg) if self.hw.hierarchical else None
        self.styles = [{"text": p.text, "line_id": p.line_id, "offsets": normalise(p.offsets, self.hw)}
                       for p in self.data.styles]
        self.n_batches = math.ceil(len(self.data.train) / cfg.batch_size)
        self.batch_no, self.batch, self.z_sum, self.reg_sum = 0, None, 0.0, 0.0
        # the firing-rate regulariser (hmgen.training.boundary), as for text: live detectors (issue 14)
        L = len(self.hw.hidden)
        self.watch = self.hw.hierarchical and L > 1          # the detectors, watched from step 1
        self.regularise = cfg.rate_reg > 0 and self.watch
        self.control = cfg.rate_control > 0 and self.watch
        self.targets = default_rate_targets(L)
        self.det = torch.zeros(3, max(L - 1, 1))                  # fired, inside the STE window, computed
        self.counts = torch.zeros(L, 3, dtype=torch.long)         # UPDATE / COPY / FLUSH per layer

    @property
    def epoch(self) -> float:
        return self.batch_no / self.n_batches

    @property
    def resumable_here(self) -> bool:
        return self.batch is None

    def start_fields(self) -> dict:
        return {"task": "handwriting", "model": self.hw.to_dict(), "train_lines": len(self.data.train),
                "valid_lines": len(self.data.valid)}

    def forward_module(self):
        return self.model

    def loss(self, net, step: int, a: float):
        if self.batch is None:
            epoch, k = divmod(self.batch_no, self.n_batches)
            idx = make_batches(self.data.train, self.cfg.batch_size, epoch, self.cfg.seed)[k]
            self.batch = tensors_for(self.data.train, idx, self.hw, self.device)
            self.state, self.s0 = self.model.initial_state(len(idx), self.device), 0
        x, y, m, onehot, tmask = self.batch                                  # x, y (B, T, 3), m (B, T)
        seg = slice(self.s0, self.s0 + self.cfg.seq_len)
        z_init = torch.cat([zl for _, _, zl in self.state[0]], -1)            # (B, L): z carried in
        pre = [] if self.watch else None
        params, state, z, _ = net(x[:, seg], self.state, onehot, tmask, a, pre_z=pre)
        layers, kappa, w = state
        self.state = ([tuple(t.detach() for t in layer) for layer in layers], kappa.detach(), w.detach())
        msk = m[:, seg]
        points = msk.sum()
        self.z_sum = self.z_sum + (z.detach() * msk[..., None]).sum((0, 1))
        self.s0 += self.cfg.seq_len
        if self.s0 >= x.shape[1]:
            self.batch, self.batch_no = None, self.batch_no + 1
        loss = (mixture_nll(params, y[:, seg], self.hw.mixtures) * msk).sum() / points
        ops = operations(z.detach(), z_init, self.watch)                         # (B, T, L)
        self.counts += op_counts(self.model, z.detach(), z_init, msk > 0).cpu()
        if self.watch:                          # padding steps are not counted
            live = (msk > 0)[..., None]
            self.det += detector_stats(pre[0].detach() * live, z.detach() * live[..., :1], torch.where(
                live, ops, torch.full_like(ops, COPY)), a).cpu()
        if self.control:                        # where this step's thresholds should have been (no padding)
            self.detectors.offsets = threshold_offsets(pre[0].detach(), ops, self.targets, msk, self.cfg.rate_band)
        if self.regularise:                     # pre[0]: (B, T, L-1); padding steps count like the others
            reg = self.cfg.rate_reg * rate_loss(pre[0], z, ops, self.targets, leak=self.cfg.rate_leak)
            self.reg_sum += float(reg.detach()) * int(points)
            loss = loss + reg
        return loss, int(points)

    def log_fields(self, loss: float, points: int, seconds: float):
        z_rates = [round(float(v) / points, 4) for v in self.z_sum[:-1]]
        reg = self.reg_sum / max(points, 1)
        self.z_sum, self.reg_sum = 0.0, 0.0
        fields = {"points_per_s": round(points / max(seconds, 1e-9)), "z_rates": z_rates,
                  "layers": rates_dict(self.counts)}
        self.counts.zero_()
        if self.watch:   # per detector: share of all points it fired; share of its computed points inside |z~| < 1/a
            fields["fire"] = [round(float(f), 4) for f in self.det[0] / max(points, 1)]
            fields["window"] = [round(float(w), 4) for w in self.det[1] / self.det[2].clamp(min=1)]
            self.det.zero_()
        if self.regularise:                     # the loop's loss is NLL + this; both parts reported
            fields["rate_loss"] = json_figure(reg, 5)
            loss -= reg
            fields["loss"] = json_figure(loss)
        zs = "/".join(f"{v:.2f}" for v in z_rates) or "-"
        win = " win " + "/".join(f"{w:.2f}" for w in fields["window"]) if self.watch else ""
        return fields, f"nll/pt {loss:.3f} {fields['points_per_s']} pt/s z {zs}{win}"

    def validate(self) -> Validation:
        r = evaluate_lines(self.model, self.data.valid, self.cfg.eval_symbols, device=self.device)
        return Validation(r["nll_line"],
                          {"valid_nll_line": json_figure(r["nll_line"], 2), "valid_nll_point": json_figure(r["nll_point"]),
                           "valid_lines": r["lines"], "valid_z_rates": r["z_rates"]},
                          f"valid NLL {r['nll_line']:.1f} nats/line, {r['nll_point']:.4f}/point",
                          {"valid_nll_line": round(r["nll_line"], 2), "valid_nll_point": round(r["nll_point"], 4),
                           "valid_lines": r["lines"]})

    def export(self, stem, name: str, training: dict, figures: dict) -> None:
        hw = self.hw
        save_hw_model(stem, self.model, self.styles, name=name,
                      description=f"{'text-conditioned' if hw.conditional else 'unconditional'} handwriting, "
                                  f"{hw.arch} {'x'.join(map(str, hw.hidden))}",
                      training={"data": self.data.source, **training,
                                "terms": "trained on IAM-OnDB (non-commercial research only; cite Liwicki & "
                                         "Bunke, ICDAR 2005); the style bank holds real IAM-OnDB lines"},
                      figures=figures)

    def checkpoint_state(self):
        return {}, {"batch_no": self.batch_no}    # inside a batch: a resumed run restarts it

    def restore(self, tensors, meta) -> None:
        self.batch_no, self.batch = meta["batch_no"], None

    def init_from(self, path: str) -> None:
        """The architecture must match; the normalisation (mean, std, line height) is this run's data's."""
        hm = load_hw_model(path)
        def arch(cfg) -> dict:                  # ln_terms says nothing where there is no layer norm
            skip = {"mean", "std", "line_height"} | (set() if cfg.layer_norm else {"ln_terms"})
            return {k: v for k, v in cfg.to_dict().items() if k not in skip}
        load_init(self.model, path, {"model": arch(self.hw)}, {"model": arch(hm.cfg)}, hm.net.state_dict())
