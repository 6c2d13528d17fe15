"""The synthesis network: an HM-LSTM (or LSTM) stack with Graves' soft attention window and a mixture
density output; the mixture loss; its model file (hmgen.modelfile).

Wiring (our choice, documented in README/models): the window vector w_{t-1} is part of layer 1's input
(x_t ; w_{t-1}), the window at step t is computed from h^1_t, and the mixture density output sees all
layers and the current window [h^1_t; ...; h^L_t; w_t] (Graves' hidden->output skips). Upper layers take
h below as their bottom-up input, exactly as in the character model: the stack is the project's single
`HMLSTM` cell, advanced with `HMLSTM.step`, unchanged. Unconditional mode (the HM-LSTM paper's handwriting
experiment) drops the window: input x_t only.

Window (Graves §5.1, with the position step of sjvasquez' implementation for robustness):
  (a^, b^, k^) = W h^1_t + b;  alpha = exp(a^), beta = exp(b^), kappa_t = kappa_{t-1} + softplus(k^) * kappa_scale
  phi(t, u) = sum_k alpha_k exp(-beta_k (kappa_k - u)^2),   w_t = sum_u phi(t, u) c_u
Positions u = 0..U: the U characters and an end-of-text slot (index 0 of the one-hot alphabet) used to stop.
kappa only grows (softplus >= 0): the window never moves backwards.

Mixture density output (Graves §4.1): 1 + 6M numbers: eos logit, M mixture logits, M (mu_x, mu_y),
M (log sigma_x, log sigma_y), M rho (tanh). Loss in log space (logsumexp; eos by BCE with logits).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hmgen.bundled import HANDWRITING
from hmgen.cell.reference import StackConfig, count_parameters
from hmgen.handwriting.data import Preprocessing
from hmgen.modelfile import describe, load_weights, write_model_files

LOG_2PI = math.log(2 * math.pi)


@dataclass(kw_only=True)
class HWConfig(Preprocessing, StackConfig):
    """A synthesis network: its stack (StackConfig), how its lines were preprocessed (Preprocessing: stored so that
    style primes and evaluation match training), and its own parts."""
    hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    alphabet: str = ""                    # characters the model can write (conditional mode)
    mixtures: int = 20
    window: int = 10                      # K Gaussians in the attention window
    conditional: bool = True
    kappa_scale: float = 1 / 12           # window step per point = softplus(k^) * kappa_scale
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0])      # the training offsets' (normalise)
    std: list[float] = field(default_factory=lambda: [1.0, 1.0])
    line_height: float = 100.0            # typical vertical extent of a line in whiteboard units (rendering)

    @property
    def n_chars(self) -> int:            # one-hot size: end-of-text slot + alphabet
        return len(self.alphabet) + 1 if self.conditional else 0


def encode_text(text: str, alphabet: str) -> list[int]:
    """Characters -> ids 1..len(alphabet), followed by the end-of-text slot 0."""
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    missing = sorted({c for c in text if c not in index})
    if missing:
        raise ValueError("characters the model never saw: " + " ".join(repr(c) for c in missing))
    return [index[c] for c in text] + [0]


def text_batch(texts: list[list[int]], n_chars: int, device=None):
    """Encoded texts -> one-hot (B, U, C) and a mask (B, U) of real positions."""
    U = max(len(t) for t in texts)
    ids = torch.zeros(len(texts), U, dtype=torch.long, device=device)
    mask = torch.zeros(len(texts), U, device=device)
    for b, t in enumerate(texts):
        ids[b, :len(t)] = torch.tensor(t, device=device)
        mask[b, :len(t)] = 1
    onehot = F.one_hot(ids, n_chars).float() * mask[..., None]
    return onehot, mask


class SynthesisNet(nn.Module):
    def __init__(self, cfg: HWConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.n_chars
        self.rnn = cfg.stack(3 + C)
        if cfg.conditional:
            self.window = nn.Linear(cfg.hidden[0], 3 * cfg.window)
            with torch.no_grad():           # start wide-ish and slow: alpha 1, beta 1/e... kappa step ~ scale*0.69
                self.window.bias.zero_()
                self.window.bias[cfg.window:2 * cfg.window] = -1.0
        self.head = nn.Linear(sum(cfg.hidden) + C, 1 + 6 * cfg.mixtures)
        # learned initial h per layer: with layer norm, an all-zero h_0 makes LN(U h_0) and LN(U_td h_0)
        # normalise a zero vector, whose gradient is 1/sqrt(eps) ~ 316; a layer that COPYs its zero h for
        # many steps then multiplies it up through time (gradients explode: benchmarks/RESULTS.md).
        self.h0 = nn.ParameterList([nn.Parameter(torch.randn(h) * 0.1) for h in cfg.hidden])

    @property
    def num_layers(self) -> int:
        return len(self.cfg.hidden)

    def initial_state(self, batch: int, device=None):
        """(HM-LSTM state, kappa (B, K), w (B, C))."""
        dt = self.head.weight.dtype
        rnn = [(h0.expand(batch, -1), c, z) for h0, (_, c, z) in
               zip(self.h0, self.rnn.initial_state(batch, device=device, dtype=dt))]
        kappa = torch.zeros(batch, self.cfg.window, device=device, dtype=dt)
        w = torch.zeros(batch, self.cfg.n_chars, device=device, dtype=dt)
        return rnn, kappa, w

    def attend(self, h1, kappa, onehot, mask):
        """-> phi (B, U), new kappa (B, K), w (B, C)."""
        K = self.cfg.window
        p = self.window(h1)
        alpha = torch.exp(p[:, :K].clamp(max=10))
        beta = torch.exp(p[:, K:2 * K].clamp(-8, 8))
        kappa = kappa + F.softplus(p[:, 2 * K:]) * self.cfg.kappa_scale
        u = torch.arange(onehot.shape[1], device=h1.device, dtype=h1.dtype)
        phi = (alpha[..., None] * torch.exp(-beta[..., None] * (kappa[..., None] - u) ** 2)).sum(1) * mask
        w = torch.bmm(phi[:, None, :], onehot)[:, 0]
        return phi, kappa, w

    def step(self, x, state, onehot=None, mask=None, a: float = 1.0, pre_z: list | None = None):
        """One point (B, 3) -> mixture parameters (B, 1+6M), new state, phi (B, U) or None, z (B, L).
        pre_z: optional list; the detectors' pre-activations z~ (B, 1) are appended, layer by layer."""
        rnn, kappa, w = state
        inp = torch.cat([x, w], -1) if self.cfg.conditional else x
        rnn = self.rnn.step(self.rnn.project_input(inp), rnn, a, pre_z=pre_z)
        phi = None
        if self.cfg.conditional:
            phi, kappa, w = self.attend(rnn[0][0], kappa, onehot, mask)
        hs = torch.cat([h for h, _, _ in rnn] + ([w] if self.cfg.conditional else []), -1)
        return self.head(hs), (rnn, kappa, w), phi, torch.cat([z for _, _, z in rnn], -1)

    def forward(self, x, state, onehot=None, mask=None, a: float = 1.0, keep_phi: bool = False,
                pre_z: list | None = None):
        """x: (B, T, 3) normalised inputs -> params (B, T, 1+6M), final state, z (B, T, L), [phi (B, T, U)].
        pre_z: optional list; receives the detectors' pre-activations z~ as one (B, T, L-1) tensor."""
        outs, zs, phis, pres = [], [], [], []
        for t in range(x.shape[1]):
            step_pre = [] if pre_z is not None else None
            p, state, phi, z = self.step(x[:, t], state, onehot, mask, a, pre_z=step_pre)
            if step_pre:
                pres.append(torch.cat(step_pre, -1))
            outs.append(p)
            zs.append(z)
            if keep_phi:
                phis.append(phi)
        params = torch.stack(outs, 1)
        if pre_z is not None and pres:
            pre_z.append(torch.stack(pres, 1))                          # (B, T, L-1)
        extra = torch.stack(phis, 1) if keep_phi and phis and phis[0] is not None else None
        return params, state, torch.stack(zs, 1), extra


def split_params(params: torch.Tensor, M: int, bias: float = 0.0):
    """-> eos_logit, log_pi, mu (..., M, 2), log_sigma (..., M, 2), rho (..., M). Bias per Graves §5.4."""
    e = params[..., 0]
    pi = params[..., 1:1 + M]
    mu = params[..., 1 + M:1 + 3 * M].unflatten(-1, (M, 2))
    ls = params[..., 1 + 3 * M:1 + 5 * M].unflatten(-1, (M, 2)).clamp(-8, 6) - bias
    rho = torch.tanh(params[..., 1 + 5 * M:1 + 6 * M]).clamp(-1 + 1e-5, 1 - 1e-5)
    log_pi = F.log_softmax(pi * (1 + bias), -1)
    return e, log_pi, mu, ls, rho


def mixture_nll(params: torch.Tensor, target: torch.Tensor, M: int) -> torch.Tensor:
    """-log p(target) per point, (B, T): bivariate Gaussian mixture for (dx, dy) plus Bernoulli eos,
    computed in log space."""
    e, log_pi, mu, ls, rho = split_params(params, M)
    d = (target[..., None, :2] - mu) * torch.exp(-ls)               # (B, T, M, 2) standardised
    z1, z2 = d[..., 0], d[..., 1]
    one_m = 1 - rho ** 2
    log_n = -LOG_2PI - ls.sum(-1) - 0.5 * torch.log(one_m) - (z1 ** 2 + z2 ** 2 - 2 * rho * z1 * z2) / (2 * one_m)
    xy = -torch.logsumexp(log_pi + log_n, -1)
    eos = F.binary_cross_entropy_with_logits(e, target[..., 2], reduction="none")
    return xy + eos


# ----------------------------------------------------------------------------- normalisation

def normalise(offsets: np.ndarray, cfg: HWConfig) -> np.ndarray:
    out = offsets.astype(np.float32).copy()
    out[:, :2] = (out[:, :2] - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return out


def denormalise(seq: np.ndarray, cfg: HWConfig) -> np.ndarray:
    out = seq.astype(np.float32).copy()
    out[:, :2] = out[:, :2] * np.asarray(cfg.std, np.float32) + np.asarray(cfg.mean, np.float32)
    return out


# ----------------------------------------------------------------------------- its model file (hmgen.modelfile)

@dataclass
class HandwritingModel:
    net: SynthesisNet
    cfg: HWConfig
    styles: list[dict]              # [{"text": str, "offsets": (M, 3) normalised float32, "line_id": str}]
    meta: dict
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.meta.get("name") or (self.path.stem if self.path else "model")


def save_hw_model(stem: str | os.PathLike, net: SynthesisNet, styles: list[dict] | None = None, **meta) -> Path:
    """Write a synthesis network and its style bank: net.* weights and style.N (points, 3) offsets."""
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    bank = []
    for i, s in enumerate(styles or []):
        tensors[f"style.{i}"] = torch.as_tensor(np.asarray(s["offsets"], np.float32)).contiguous()
        bank.append({"text": s["text"], "line_id": s.get("line_id", ""), "points": int(len(s["offsets"]))})
    fields = {"model": net.cfg.to_dict(), "parameters": count_parameters(net), "styles": bank}
    return write_model_files(stem, HANDWRITING, tensors, fields, **meta)


def load_hw_model(name_or_path: str | os.PathLike | None = None, device: str = "cpu") -> HandwritingModel:
    """A handwriting synthesis model (default: hmgen.bundled.DEFAULT[HANDWRITING])."""
    desc, meta = describe(None if name_or_path is None else str(name_or_path), HANDWRITING)

    def build(tensors):
        net = SynthesisNet(HWConfig(**meta["model"]))
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        styles = [{**s, "offsets": tensors[f"style.{i}"].numpy()} for i, s in enumerate(meta.get("styles", []))]
        return net, styles
    net, styles = load_weights(desc, build)
    return HandwritingModel(net.to(device).eval(), net.cfg, styles, meta, desc)
