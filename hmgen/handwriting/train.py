"""Training the synthesis network: `hmgen train iam:DIR ...` (hmgen.training.loop.train dispatches here).

Same machinery as the text trainer: TrainConfig, the Reporter (progress on stderr, metrics.jsonl),
safetensors + JSON checkpoints, exact --resume, time limits, best-by-validation export.

Batches: training lines bucketed by length (sorted with a per-epoch jitter, cut into batches, batch order
shuffled per epoch; all deterministic from the seed), padded, with masks. Each batch is cut into
truncated-BPTT segments of seq_len points; the state (HM-LSTM state, window position, window vector) is
carried across the segments of a batch, detached. One optimiser step per segment; the loss is the mean
NLL per real point. Validation: NLL per line (nats, normalised offsets) on the valid split.
A time limit stops at a batch boundary, and checkpoints are written at batch boundaries, so --resume after
--time-limit or --epochs continues exactly (batch order depends only on the seed and the epoch); --steps
may stop inside a batch, and a resumed run then restarts that batch.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from hmgen.handwriting.data import (HandwritingDataError, load_iam, line_height_units, norm_stats, prepare_lines,
                                    select)
from hmgen.handwriting.model import HWConfig, SynthesisNet, encode_text, mixture_nll, normalise, text_batch
from hmgen.modelio import save_hw_model
from hmgen.cell.reference import count_parameters


def is_handwriting(spec: str | None) -> bool:
    return bool(spec) and spec.startswith("iam:")


def hw_config_from(cfg, alphabet: str, stats, line_height: float) -> HWConfig:
    return HWConfig(alphabet=alphabet, arch=cfg.arch, hidden=list(cfg.hidden), layer_norm=cfg.layer_norm,
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
    t0 = time.time()
    for bi in range(0, len(order), batch_size):
        idx = order[bi:bi + batch_size].tolist()
        x, y, m, onehot, tmask = tensors_for(lines, idx, hw, device)
        params, _, z, _ = net(x, net.initial_state(len(idx), device), onehot, tmask)
        nll = mixture_nll(params, y, hw.mixtures) * m
        total += float(nll.sum())
        points += int(m.sum())
        zr = (z * m[..., None]).sum((0, 1))
        zsum = zr if zsum is None else zsum + zr
        if progress:
            progress(min(bi + batch_size, len(order)), len(order))
    net.train()
    return {"nll_line": total / max(len(lines), 1), "nll_point": total / max(points, 1), "lines": len(lines),
            "points": points, "z_rates": [round(float(v) / max(points, 1), 4) for v in zsum[:-1]] if zsum is not None else [],
            "points_per_s": round(points / max(time.time() - t0, 1e-9))}


def train_handwriting(cfg, resume: bool = False, quiet: bool = False, command: str | None = None,
                      data: HWData | None = None) -> dict:
    from hmgen.training.loop import (Reporter, finite, hardware, load_checkpoint, plateau_step,
                             save_checkpoint, slope)

    from hmgen.device import pick_device
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    data = data or HWData(cfg.data, cfg.stride, cfg.max_points, cfg.conditional, cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    hw = hw_config_from(cfg, data.alphabet if cfg.conditional else "", data.stats, data.line_height)
    net = SynthesisNet(hw).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=1 / cfg.lr_divide,
                                                       patience=cfg.patience, threshold=1e-3)
    styles = [{"text": p.text, "line_id": p.line_id, "offsets": normalise(p.offsets, hw)} for p in data.styles]
    n_batches = math.ceil(len(data.train) / cfg.batch_size)
    step, batch_no, best, decays, elapsed_before = 0, 0, math.inf, 0, 0.0
    if resume:
        meta, _ = load_checkpoint(out, net, opt, sched, device)
        step, batch_no, decays = meta["step"], meta["batch_no"], meta["lr_decays"]
        best = math.inf if meta["best_valid_nll"] is None else meta["best_valid_nll"]
        elapsed_before = meta["train_seconds"]
    total = cfg.steps
    if cfg.epochs is not None:    # steps per epoch are known only roughly (segments per batch vary): count batches
        total_batches = int(cfg.epochs * n_batches)
    else:
        total_batches = None
    reporter = Reporter(out / "metrics.jsonl", total, step, quiet)
    if resume:
        reporter.write({"event": "resume", "step": step, "command": command, "device": hardware(device)})
    else:
        reporter.write({"event": "start", "task": "handwriting", "config": asdict(cfg), "model": hw.to_dict(),
                        "parameters": count_parameters(net), "train_lines": len(data.train),
                        "valid_lines": len(data.valid), "device": hardware(device), "command": command})

    def checkpoint():
        save_checkpoint(out, net, opt, sched, [], {
            "task": "handwriting", "step": step, "batch_no": batch_no, "best_valid_nll": finite(best),
            "lr_decays": decays, "config": asdict(cfg),
            "train_seconds": elapsed_before + (time.time() - t_start)})

    def validate(schedule: bool = True) -> bool:
        nonlocal best, decays
        r = evaluate_lines(net, data.valid, cfg.eval_symbols, device=device)
        improved = r["nll_line"] < best
        if improved:
            best = r["nll_line"]
        decays += plateau_step(opt, sched, r["nll_line"], schedule)
        reporter.write({"step": step, "valid_nll_line": finite(r["nll_line"], 2), "valid_nll_point": finite(r["nll_point"]),
                        "valid_lines": r["lines"], "valid_z_rates": r["z_rates"], "best_valid_nll": finite(best, 2),
                        "lr": opt.param_groups[0]["lr"]})
        reporter.print(f"step {step}: valid NLL {r['nll_line']:.1f} nats/line, {r['nll_point']:.4f}/point "
                       f"(best {best:.1f}) lr {opt.param_groups[0]['lr']:.2e}")
        if improved:
            save_hw_model(out / "best", net, styles, name=cfg.name or out.name,
                          description=f"{'text-conditioned' if hw.conditional else 'unconditional'} handwriting, "
                                      f"{hw.arch} {'x'.join(map(str, hw.hidden))}",
                          training={"data": data.source, "command": command, "config": asdict(cfg),
                                    "device": hardware(device),
                                    "terms": "trained on IAM-OnDB (non-commercial research only; cite Liwicki & "
                                             "Bunke, ICDAR 2005); the style bank holds real IAM-OnDB lines"},
                          figures={"valid_nll_line": round(best, 2), "valid_nll_point": round(r["nll_point"], 4),
                                   "valid_lines": r["lines"], "step": step,
                                   "train_seconds": round(elapsed_before + time.time() - t_start)})
        return cfg.max_lr_decays is not None and decays > cfg.max_lr_decays

    net.train()
    t_start = time.time()
    t_log, pts_since, loss_sum, loss_n, z_sum, z_n = time.time(), 0, 0.0, 0, None, 0
    stop_reason, next_eval, next_ckpt = "steps", (step // cfg.eval_every + 1) * cfg.eval_every, \
        (step // cfg.ckpt_every + 1) * cfg.ckpt_every
    stop = False
    while not stop:
        if total_batches is not None and batch_no >= total_batches:
            stop_reason = "epochs"
            break
        if cfg.time_limit is not None and time.time() - t_start >= cfg.time_limit:
            stop_reason = "time limit"      # at a batch boundary: --resume continues exactly
            break
        epoch, k = divmod(batch_no, n_batches)
        idx = make_batches(data.train, cfg.batch_size, epoch, cfg.seed)[k]
        x, y, m, onehot, tmask = tensors_for(data.train, idx, hw, device)
        state = net.initial_state(len(idx), device)
        a = slope(cfg, batch_no / n_batches)
        for s0 in range(0, x.shape[1], cfg.seq_len):
            if total is not None and step >= total:   # mid-batch: a resumed run restarts this batch
                stop, stop_reason = True, "steps"
                break
            seg = slice(s0, s0 + cfg.seq_len)
            params, state, z, _ = net(x[:, seg], state, onehot, tmask, a)
            msk = m[:, seg]
            npts = msk.sum()
            loss = (mixture_nll(params, y[:, seg], hw.mixtures) * msk).sum() / npts
            if not torch.isfinite(loss):
                raise HandwritingDataError(f"training diverged at step {step} (loss {loss.item()}); "
                                           f"the last checkpoint in {out} is kept: try a lower --lr")
            opt.zero_grad(set_to_none=True)
            if step < cfg.warmup:
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * (step + 1) / cfg.warmup
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            opt.step()
            state = (tuple(tuple(t.detach() for t in layer) for layer in state[0]), state[1].detach(), state[2].detach())
            state = ([tuple(layer) for layer in state[0]], state[1], state[2])
            step += 1
            loss_sum += loss.item() * float(npts)
            loss_n += float(npts)
            pts_since += int(npts)
            zr = (z.detach() * msk[..., None]).sum((0, 1))
            z_sum = zr if z_sum is None else z_sum + zr
            if step % cfg.log_every == 0:
                dt = time.time() - t_log
                rec = {"step": step, "epoch": round(batch_no / n_batches, 4), "loss": finite(loss_sum / loss_n),
                       "lr": opt.param_groups[0]["lr"], "slope": round(a, 4), "grad_norm": round(float(grad_norm), 4),
                       "points_per_s": round(pts_since / max(dt, 1e-9)),
                       "z_rates": [round(float(v) / loss_n, 4) for v in z_sum[:-1]],
                       "seconds": round(elapsed_before + time.time() - t_start, 1)}
                reporter.write(rec)
                zs = "/".join(f"{v:.2f}" for v in rec["z_rates"]) or "-"
                reporter.update(step, f"nll/pt {rec['loss']:.3f} {rec['points_per_s']} pt/s z {zs}")
                t_log, pts_since, loss_sum, loss_n, z_sum = time.time(), 0, 0.0, 0, None
        else:
            batch_no += 1
        if step >= next_eval and not stop:
            next_eval = (step // cfg.eval_every + 1) * cfg.eval_every
            if validate():
                stop_reason = "plateau"
                break
        if step >= next_ckpt and not stop:     # at batch boundaries only: resume restarts a whole batch
            next_ckpt = (step // cfg.ckpt_every + 1) * cfg.ckpt_every
            checkpoint()
    if step > 0:
        validate(schedule=False)
    checkpoint()
    summary = {"step": step, "best_valid_nll": finite(best, 2), "stop": stop_reason, "out": str(out),
               "train_seconds": round(elapsed_before + time.time() - t_start, 1)}
    reporter.write({"event": "stop", **summary})
    reporter.close()
    return summary
