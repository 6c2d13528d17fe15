"""Character-level language modelling as a training task (hmgen.training.task) for the one loop.

Batches: the corpus cut into batch_size contiguous streams (hmgen.text.data.StreamBatches); the HM-LSTM
state is carried from one segment to the next (detached: truncated BPTT) and reset at each epoch. Loss: the
cross-entropy of the next symbol, plus the firing-rate regulariser of hmgen.training.boundary (weight
--rate-reg; the metrics' loss and bpc are the cross-entropy alone, rate_loss the regulariser). Validation: BPC on the valid split. Under DDP process r takes streams
r, r+world, ... and the carried state is gathered back into stream order for a checkpoint.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from hmgen.cell.reference import CharLM, detach_state, op_counts, operations, rates_dict
from hmgen.device import build_trainable
from hmgen.errors import DataError, UsageError
from hmgen.text.model import load_model, save_model
from hmgen.text.data import Corpus, StreamBatches, load_corpus
from hmgen.text.evaluate import evaluate
from hmgen.training.boundary import Detectors
from hmgen.training.checkpoint import load_init
from hmgen.training.config import DetectorDefaults
from hmgen.training.task import Validation, json_figure


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


def train(cfg, **kw) -> dict:
    """hmgen.training.loop.train on a text corpus (the keyword arguments are the loop's)."""
    from hmgen.training.loop import train as loop_train
    return loop_train(cfg, TextTask, **kw)


class TextTask:
    kind = "text"
    best_key, best_digits, best_name, best_format = "best_valid_bpc", 4, "BPC", "{:.4f}"
    # hmgen's choices for text (benchmarks/RESULTS.md, "Hierarchy"): the paper's full straight-through estimator,
    # and a band of 2 that lets the loss pick each detector's rate within [target / 2, target * 2] (English
    # layer 1 then found word starts better than when held at the target, at the same BPC)
    detector_defaults = DetectorDefaults(boundary_lr=1.0, boundary_grad=1.0, rate_band=2.0)

    def __init__(self, cfg, device, rank: int = 0, world: int = 1, corpus: Corpus | None = None):
        cfg = cfg.with_defaults(self.detector_defaults)
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        run, optim = cfg.run, cfg.optim
        self.corpus = corpus or load_corpus(run.data, run.valid, run.download)
        if not 0 <= optim.cold_starts <= 1:
            raise UsageError(f"--cold-starts is a share of segments, between 0 and 1 (got {optim.cold_starts:g})")
        vocab = self.corpus.vocab
        self.newline = int(vocab.encode("\n")[0]) if vocab.kind == "bytes" or "\n" in vocab.symbols else 0
        valid = self.corpus.splits.get("valid")
        if valid is not None and len(valid) < 2:          # found now, not after the first updates
            raise DataError(f"{run.valid or run.data}: the validation data holds {len(valid)} symbol(s); "
                            f"it needs at least 2")
        self.model = build_trainable(lambda: CharLM(cfg.model.text_config(self.corpus.vocab.size)), device)
        self.detectors = Detectors.of(self.model.rnn, cfg.detectors, self.detector_defaults.targets, device)
        self.batches = StreamBatches(self.corpus.split("train"), optim.batch_size, optim.seq_len, rank, world)
        self.steps_per_epoch = len(self.batches)
        self.state = scatter_state(self.model.initial_state(optim.batch_size, device), rank, world)
        self.step = 0
        self.counts = torch.zeros(self.model.num_layers, 3, dtype=torch.long, device=device)

    @property
    def epoch(self) -> float:
        return self.step / len(self.batches)

    resumable_here = True          # every step: the state is in the checkpoint

    def start_fields(self) -> dict:
        return {"vocab": self.corpus.vocab.size, "train_symbols": len(self.corpus.split("train"))}

    def forward_module(self):
        if self.cfg.model.fast:     # opt-in until benchmarks/gpu/check_fast.py has passed on a GPU (tests/test_fast.py: CPU)
            from hmgen.cell.fast import FastForward
            return FastForward(self.model)
        return self.model

    def cold_start(self, x: np.ndarray, step: int) -> np.ndarray:
        """--cold-starts P: each stream of the global batch starts this segment from the zero state with
        probability P, its first input the newline a compression lane starts after (hmgen.archive.format START),
        so the model learns to predict well from the very first bytes of a lane. Drawn from (seed, step): the
        same streams on resume and under DDP (process r takes streams r, r+world, ... of the global draw)."""
        gen = np.random.default_rng([self.cfg.run.seed, step])
        cold = (gen.random(self.cfg.optim.batch_size) < self.cfg.optim.cold_starts)[self.rank::self.world]   # (B,)
        if not cold.any():
            return x
        keep = torch.from_numpy(~cold).to(self.device, torch.float32)[:, None]                    # (B, 1)
        self.state = [tuple(t * keep.to(t.dtype) for t in layer) for layer in self.state]
        x = x.copy()
        x[cold, 0] = self.newline
        return x

    def loss(self, net, step: int, a: float):
        x, y, new_epoch = self.batches.get(step)                               # (batch/world, T) each
        if new_epoch:
            self.state = self.model.initial_state(x.shape[0], self.device)
        elif self.cfg.optim.cold_starts:
            x = self.cold_start(x, step)
        x = torch.from_numpy(x.astype(np.int64)).to(self.device)
        y = torch.from_numpy(y.astype(np.int64)).to(self.device)
        z_init = torch.cat([z for _, _, z in self.state], dim=-1)
        detectors = self.detectors                                             # watched from step 1
        pre = [] if detectors else None
        logits, state, z = net(x, self.state, a, pre_z=pre) if detectors else net(x, self.state, a)   # (B, T, vocab)
        self.state = detach_state(state)
        self.step = step + 1
        counts = op_counts(self.model, z.detach(), z_init)
        if self.world > 1:
            dist.all_reduce(counts)
        self.counts += counts
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        if detectors:                           # pre[0]: (B, T, L-1) detector pre-activations z~
            ops = operations(z.detach(), z_init)
            # the log describes the whole global batch
            det = detectors.watch(pre[0], z, ops, a, dist.all_reduce if self.world > 1 else None)
            if detectors.control:               # every process must move the biases alike: the whole batch's
                p_z, o = pre[0].detach().contiguous(), ops.contiguous()                 # thresholds
                if self.world > 1:
                    parts = [[torch.empty_like(t) for _ in range(self.world)] for t in (p_z, o)]
                    dist.all_gather(parts[0], p_z)
                    dist.all_gather(parts[1], o)
                    p_z, o = torch.cat(parts[0]), torch.cat(parts[1])
                detectors.aim(p_z, o)
            reg = detectors.regulariser(pre[0], z, ops, fired=det[0] / (x.numel() * self.world))   # F, whole batch
            if reg is not None:
                part = reg.detach().clone()                                        # all_reduce is in place
                if self.world > 1:
                    dist.all_reduce(part)
                    part = part / self.world
                detectors.count_regulariser(float(part), x.numel() * self.world)
                loss = loss + reg
        return loss, x.numel() * self.world

    def log_fields(self, loss: float, symbols: int, seconds: float):
        rates = rates_dict(self.counts)
        self.counts.zero_()
        watched, reg = self.detectors.log_fields(symbols) if self.detectors else ({}, 0.0)
        loss -= reg                                  # the loop's loss is the objective: report its two parts
        bpc = loss / math.log(2)
        fields = {"loss": json_figure(loss), "bpc": json_figure(bpc), "symbols_per_s": round(symbols / max(seconds, 1e-9)),
                  "layers": rates}
        fires = "/".join(f"{r['flush']:.2f}" for r in rates[:-1]) if self.model.cfg.hierarchical else "-"
        updates = "/".join(f"{1 - r['copy']:.2f}" for r in rates)            # share of steps a layer computes
        text = f"loss {loss:.3f} bpc {bpc:.3f} {fields['symbols_per_s'] / 1000:.1f}k ch/s z {fires} upd {updates}"
        if self.detectors:
            fields.update(watched, rate_loss=json_figure(reg, 5))
            text += " win " + "/".join(f"{w:.2f}" for w in fields["window"])
        return fields, text

    def validate(self) -> Validation | None:
        ids = self.corpus.splits.get("valid")
        if ids is None:
            return None
        r = evaluate(self.model, ids, max_symbols=self.cfg.run.eval_symbols, device=self.device)
        return Validation(r["bpc"], {"valid_bpc": json_figure(r["bpc"]),
                                     "valid_layers": r["layers"]},
                          f"valid bpc {r['bpc']:.4f}", {"valid_bpc": round(r["bpc"], 4), "valid_symbols": r["symbols"],
                                                        "valid_layers": r["layers"]})

    def export(self, stem, name: str, training: dict, figures: dict) -> None:
        save_model(stem, self.model, self.corpus.vocab, name=name, description="",
                   training={"data": self.corpus.source, "corpus": self.corpus.name, **training}, figures=figures)

    def checkpoint_state(self):
        full = gather_state(self.state, self.world)
        tensors = {f"carry.{l}.{n}": t for l, layer in enumerate(full) for n, t in zip("hcz", layer)}
        return tensors, {"vocab": self.corpus.vocab.to_dict()}

    def restore(self, tensors, meta) -> None:
        layers = 1 + max((int(k.split(".")[1]) for k in tensors if k.startswith("carry.")), default=-1)
        state = [tuple(tensors[f"carry.{l}.{n}"].to(self.device) for n in "hcz") for l in range(layers)]
        self.state = scatter_state(state, self.rank, self.world)
        self.step = meta["step"]

    def init_from(self, path: str) -> None:
        lm = load_model(path)
        load_init(self.model, path, {"model": self.model.cfg.to_dict(), "vocab": self.corpus.vocab.to_dict()},
                  {"model": lm.model.cfg.to_dict(), "vocab": lm.vocab.to_dict()}, lm.model.state_dict())
