"""The Hierarchical Multiscale LSTM (Chung, Ahn & Bengio, ICLR 2017) and the character LM on top of it.

Equation numbers refer to arXiv 1609.01704v7. There is exactly one float implementation of the cell:
`layer_step` advances ONE layer by one time step from its pre-activation products (eq. 2-9).
`HMLSTM.step` calls it layer by layer (training, evaluation, sampling, the boundary view, handwriting);
`hmgen.cell.fast` calls the same function (compiled on CUDA) and only computes the products differently.
The one other implementation is the integer engine for compression (`hmgen.archive.engine`: in torch, and its
compiled CPU twin), tested against
this cell step by step (tests/test_integer.py). `arch="lstm"` is the same cell with the boundary
detectors switched off (every layer UPDATEs at every step, no top-down input), which is the paper's
LN-LSTM baseline with identical input and output modules.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hmgen.cell import ARCHS, HMLSTM_ARCH, LN_EPS

UPDATE, COPY, FLUSH = 0, 1, 2
OPS = ("update", "copy", "flush")


def check_stack(arch: str, hidden) -> list[int]:
    """A stack's architecture and layer sizes, checked (for every model that holds an HMLSTM stack)."""
    hidden = [int(h) for h in hidden]
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r} (expected 'hmlstm' or 'lstm')")
    if not hidden or min(hidden) < 1:
        raise ValueError("need at least one layer, each of size >= 1")
    return hidden


@dataclass(kw_only=True)
class StackConfig:
    """The HM-LSTM (or LSTM) stack of a model, the part of its config every kind of model shares (ModelConfig,
    hmgen.handwriting.model.HWConfig). Keyword arguments only: each kind adds its own fields."""
    arch: str = HMLSTM_ARCH               # or LSTM_ARCH (hmgen.cell.ARCHS)
    hidden: list[int] = field(default_factory=lambda: [512, 512, 512])
    layer_norm: bool = True
    # Layer-normalise each pre-activation term of eq. 5-7 too (Ba et al.'s per-term form), or only c?
    # The field's default is the old behaviour, for model files written before it existed; new models are
    # trained with ln_terms=False (hmgen.training: see HMLSTMLayer for why).
    ln_terms: bool = True

    def __post_init__(self):
        self.hidden = check_stack(self.arch, self.hidden)

    @property
    def hierarchical(self) -> bool:
        return self.arch == HMLSTM_ARCH

    def stack(self, input_size: int) -> "HMLSTM":
        """The stack this config describes, on inputs of `input_size`."""
        return HMLSTM(input_size, self.hidden, self.hierarchical, self.layer_norm, self.ln_terms)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(kw_only=True)
class ModelConfig(StackConfig):
    """The character LM: its stack, and the embeddings around it."""
    vocab_size: int
    embed_dim: int = 128                  # paper §4.1: 128-d input embedding
    out_embed: int = 512                  # output embedding size (eq. 11)


class BoundaryFn(torch.autograd.Function):
    """Boundary detector, eq. 8-9: forward z = 1[hard_sigm(a*s) > 0.5] = 1[s > 0] (a step function);
    backward: the straight-through estimator uses the hard sigmoid's derivative,
    d hard_sigm(a*s)/ds = a/2 for |s| < 1/a and 0 outside.
    The slope a is a float or a 0-dim tensor; a tensor lets the compiled cell and a captured CUDA graph
    read an annealed slope from memory instead of specialising on its value."""

    @staticmethod
    def forward(ctx, s, a):
        if torch.is_tensor(a):
            ctx.save_for_backward(s, a)
        else:
            ctx.save_for_backward(s)
            ctx.a = float(a)
        return (s > 0).to(s.dtype)

    @staticmethod
    def backward(ctx, grad):
        s, *a = ctx.saved_tensors
        a = a[0] if a else ctx.a
        return grad * (a / 2) * (s.abs() < 1 / a).to(grad.dtype), None


def boundary(s: torch.Tensor, a) -> torch.Tensor:
    return BoundaryFn.apply(s, a)


class Norm(nn.Module):
    """Layer normalisation with a gain and no bias (the cell's single bias b is added after the sum)."""

    def __init__(self, n: int, enabled: bool):
        super().__init__()
        self.ln = nn.LayerNorm(n, eps=LN_EPS, bias=False) if enabled else None

    def forward(self, x):
        return self.ln(x) if self.ln is not None else x

    @property
    def gain(self) -> torch.Tensor | None:
        return None if self.ln is None else self.ln.weight


class CellSpec(NamedTuple):
    """What one layer's cell computes, fixed per layer (the compiled cell specialises on it)."""
    hierarchical: bool      # False: the LSTM baseline (always UPDATE, z ignored)
    has_boundary: bool      # a boundary row z~ (every HM-LSTM layer but the top)
    eps: float              # layer-norm epsilon
    ste: float = 1.0        # scale of the straight-through gradient into the detector (training only; 0 = none)


class CellParams(NamedTuple):
    """One layer's parameters as the cell reads them; a gain is None where that term has no LN."""
    bias: torch.Tensor                  # (4H[+1],) b
    g_rec: torch.Tensor | None          # LN gain of U_l^l h_{t-1}^l
    g_td: torch.Tensor | None           # LN gain of U_{l+1}^l h_{t-1}^{l+1}
    g_bu: torch.Tensor | None           # LN gain of W_{l-1}^l h_t^{l-1} (None on layer 1: project_input normalised it)
    g_c: torch.Tensor | None            # LN gain of c before tanh


def _norm(v: torch.Tensor, gain: torch.Tensor | None, eps: float) -> torch.Tensor:
    """LN over the last axis with a gain and no bias (what Norm computes), or v itself without a gain."""
    return v if gain is None else F.layer_norm(v, v.shape[-1:], gain, None, eps)


def layer_step(p_rec, p_td, p_bu, h_prev, c_prev, z_prev, z_below, z_forced, a,
               params: CellParams, spec: CellSpec):
    """One layer, one time step (eq. 2-9): the only float implementation of the cell.

    p_rec:    (batch, 4H+1) U_l^l h_{t-1}^l               p_td: same rows, U_{l+1}^l h_{t-1}^{l+1}, or None
    p_bu:     (batch, 4H+1) W_{l-1}^l h_t^{l-1}           (layer 1: LN(W_0^1 x_t), params.g_bu None)
    h_prev, c_prev: (batch, H); z_prev: (batch, 1) z_{t-1}^l
    z_below:  (batch, 1) z_t^{l-1}; None for layer 1 (z_t^0 = 1) and for the LSTM
    z_forced: (batch, 1) boundaries to use instead of the detector's (tests, gradcheck), or None
    a:        slope of the hard sigmoid, float or 0-dim tensor (only shapes the straight-through gradient)
    Returns h_t^l, c_t^l, z_t^l, and the detector's pre-activation z~_t^l (batch, 1), or None on a layer
    without one (training diagnostics and the rate regulariser, hmgen.training.boundary).
    """
    H = h_prev.shape[-1]
    eps = spec.eps
    # eq. 5-7 pre-activations: recurrent term never gated; top-down gated by this layer's own
    # z_{t-1}^l; bottom-up gated by the layer below's z_t^{l-1}. Each term normalised before gating.
    s = _norm(p_rec, params.g_rec, eps)                               # (batch, 4H+1)
    if p_td is not None:
        s = s + z_prev * _norm(p_td, params.g_td, eps)
    bu = _norm(p_bu, params.g_bu, eps)
    s = s + (bu if z_below is None else z_below * bu) + params.bias
    f = torch.sigmoid(s[:, :H])                                       # eq. 4
    i = torch.sigmoid(s[:, H:2 * H])
    o = torch.sigmoid(s[:, 2 * H:3 * H])
    g = torch.tanh(s[:, 3 * H:4 * H])
    if not spec.hierarchical:                                         # plain LSTM stack: UPDATE everywhere
        c = f * c_prev + i * g
        return o * torch.tanh(_norm(c, params.g_c, eps)), c, z_prev, None
    # eq. 2-3 in multiplicative form, with z in {0, 1}:
    #   FLUSH  (z_{t-1}^l = 1):                       c = i*g
    #   UPDATE (z_{t-1}^l = 0, z_t^{l-1} = 1):        c = f*c_{t-1} + i*g
    #   COPY   (z_{t-1}^l = 0, z_t^{l-1} = 0):        c, h, z = c_{t-1}, h_{t-1}, z_{t-1}
    # The masks also pass the straight-through gradient to z through the choice of operation.
    zb = torch.ones_like(z_prev) if z_below is None else z_below
    copy = (1 - z_prev) * (1 - zb)                                    # (batch, 1)
    update = (1 - z_prev) * zb
    c = (1 - copy) * (i * g) + update * (f * c_prev) + copy * c_prev
    h = (1 - copy) * (o * torch.tanh(_norm(c, params.g_c, eps))) + copy * h_prev
    if not spec.has_boundary:
        return h, c, torch.zeros_like(z_prev), None                   # top layer: never FLUSHes
    z_hat = z_forced if z_forced is not None else BoundaryFn.apply(s[:, 4 * H:], a)   # eq. 8-9
    if spec.ste != 1.0 and z_forced is None:          # same z forward, ste x the straight-through gradient
        z_hat = spec.ste * z_hat + (1.0 - spec.ste) * z_hat.detach()
    # COPY copies z too: z_{t-1} = 0 there, and no gate is computed in COPY (§3.1).
    return h, c, (1 - copy) * z_hat, s[:, 4 * H:]


class HMLSTMLayer(nn.Module):
    """Parameters of one layer l: W_{l-1}^l (bottom-up), U_l^l (recurrent), U_{l+1}^l (top-down), b.

    Each has 4*hidden rows (f, i, o, g) plus one row for the boundary pre-activation z~ when the layer
    has a detector (all but the top layer, §3.2: "we do not use the boundary detector for the last layer").

    Layer normalisation — the paper applies it but does not say where (our choice): LN on c before tanh, as
    in PyTorch's LayerNormLSTMCell; with ln_terms also Ba et al.'s per-term form, each term normalised over its
    4H+1 rows *before* it is gated, so a gated-off (all-zero) term never enters LN (clemens33/hmlstm reports
    NaN gradients from LN of zeroed terms). The per-term form was hmgen's first choice; it makes gradients grow
    exponentially through time at initialisation, where LN on c only keeps them flat (benchmarks/hierarchy.py
    --init-grads; figures in benchmarks/RESULTS.md), so clipping to 1 starves every other parameter and the
    detectors swing to saturation. New models: c only.
    """

    def __init__(self, input_size: int, hidden: int, above: int, hierarchical: bool, has_boundary: bool,
                 layer_norm: bool, first: bool, ln_terms: bool = True):
        super().__init__()
        self.hidden = hidden
        self.has_boundary = has_boundary
        self.first = first
        rows = 4 * hidden + int(has_boundary)
        self.bu = nn.Linear(input_size, rows, bias=False)                  # W_{l-1}^l
        self.rec = nn.Linear(hidden, rows, bias=False)                     # U_l^l
        self.td = nn.Linear(above, rows, bias=False) if above else None    # U_{l+1}^l
        self.bias = nn.Parameter(torch.zeros(rows))                         # b
        with torch.no_grad():   # forget-gate bias 1: common practice (lucaslingle), not in the paper
            self.bias[:hidden] = 1.0
        terms = layer_norm and ln_terms
        self.ln_bu, self.ln_rec = Norm(rows, terms), Norm(rows, terms)
        self.ln_td = Norm(rows, terms) if above else None
        self.ln_c = Norm(hidden, layer_norm)
        self.spec = CellSpec(hierarchical, has_boundary, LN_EPS)

    def cell_params(self) -> CellParams:
        """The parameters as layer_step reads them (the same tensors, so gradients reach them)."""
        return CellParams(self.bias, self.ln_rec.gain, None if self.ln_td is None else self.ln_td.gain,
                          None if self.first else self.ln_bu.gain, self.ln_c.gain)


State = list  # [(h, c, z) for each layer]; h, c: (batch, hidden_l), z: (batch, 1)


class HMLSTM(nn.Module):
    """A stack of HM-LSTM layers advanced together, one time step at a time (eq. 1-10)."""

    def __init__(self, input_size: int, hidden: list[int], hierarchical: bool = True, layer_norm: bool = True,
                 ln_terms: bool = True):
        super().__init__()
        self.hierarchical = hierarchical
        n = len(hidden)
        sizes = [input_size] + list(hidden)
        self.layers = nn.ModuleList(
            HMLSTMLayer(
                input_size=sizes[l],
                hidden=hidden[l],
                above=hidden[l + 1] if (hierarchical and l + 1 < n) else 0,   # no top-down on the top layer
                hierarchical=hierarchical,
                has_boundary=hierarchical and l + 1 < n,                        # no detector on the top layer
                layer_norm=layer_norm,
                first=l == 0,
                ln_terms=ln_terms,
            )
            for l in range(n)
        )

    def set_ste(self, scale: float) -> None:
        """Scale the straight-through gradient into every boundary detector by `scale` (training only: 0 = the
        loss never moves the detectors); the forward is unchanged."""
        for layer in self.layers:
            layer.spec = layer.spec._replace(ste=scale)

    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> State:
        """h, c, z = 0 for every layer."""
        return [
            (
                torch.zeros(batch, layer.hidden, device=device, dtype=dtype),
                torch.zeros(batch, layer.hidden, device=device, dtype=dtype),
                torch.zeros(batch, 1, device=device, dtype=dtype),
            )
            for layer in self.layers
        ]

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        """Layer 1's bottom-up term LN(W_0^1 x_t), for any leading shape: (..., embed) -> (..., 4H+1).
        z_t^0 = 1 for all t, so it is never gated and can be computed for a whole sequence in one product."""
        first = self.layers[0]
        return first.ln_bu(first.bu(x))

    def step(self, x_proj: torch.Tensor, state: State, a: float = 1.0, force_z: torch.Tensor | None = None,
             pre_z: list | None = None) -> State:
        """Advance all layers by one time step.

        x_proj:  (batch, 4*H1+1) from project_input — layer 1's input h_t^0 = x_t, already projected.
        state:   [(h_{t-1}^l, c_{t-1}^l, z_{t-1}^l)] for l = 1..L.
        a:       slope of the hard sigmoid (only shapes the straight-through gradient).
        force_z: optional (batch, L-1) boundaries to use instead of the detectors' (tests, gradcheck).
        pre_z:   optional list; each detector's pre-activation z~_t^l (batch, 1) is appended, layer by layer.
        Returns  [(h_t^l, c_t^l, z_t^l)]; the top layer's z is always 0.
        """
        new_state = []
        h_below = z_below = None             # layer 1: h_t^0 = x_t (already projected), z_t^0 = 1
        for l, layer in enumerate(self.layers):
            h_prev, c_prev, z_prev = state[l]
            p_td = layer.td(state[l + 1][0]) if layer.td is not None else None      # U_{l+1}^l h_{t-1}^{l+1}
            p_bu = x_proj if l == 0 else layer.bu(h_below)                         # W_{l-1}^l h_t^{l-1}
            fz = force_z[:, l:l + 1].to(x_proj.dtype) if (force_z is not None and layer.has_boundary) else None
            h, c, z, z_pre = layer_step(layer.rec(h_prev), p_td, p_bu, h_prev, c_prev, z_prev, z_below, fz, a,
                                        layer.cell_params(), layer.spec)
            if pre_z is not None and z_pre is not None:
                pre_z.append(z_pre)
            new_state.append((h, c, z))
            # the LSTM baseline has no boundaries: every layer always takes its input (z = 1 everywhere)
            h_below, z_below = h, (z if layer.has_boundary else None)
        return new_state


class OutputModule(nn.Module):
    """Gated output embedding and softmax (eq. 11-12).

    g_t^l = sigm(w^l · [h_t^1; ...; h_t^L])                (one scalar gate per layer)
    h_t^e = ReLU(sum_l g_t^l W_l^e h_t^l)                  (no bias in the paper; none here)
    p     = softmax(V h_t^e + c)
    sum_l g^l W_l^e h^l is computed as one product W^e [g^1 h^1; ...; g^L h^L], W^e = [W_1^e ... W_L^e].
    """

    def __init__(self, hidden: list[int], out_embed: int, vocab_size: int):
        super().__init__()
        self.hidden = list(hidden)
        self.gate = nn.Linear(sum(hidden), len(hidden), bias=False)   # rows are w^l
        self.embed = nn.Linear(sum(hidden), out_embed, bias=False)    # column blocks are W_l^e
        self.head = nn.Linear(out_embed, vocab_size)                  # V, c

    def forward(self, hs: torch.Tensor) -> torch.Tensor:
        """hs: (..., sum hidden), the layers' h concatenated -> logits (..., vocab)."""
        g = torch.sigmoid(self.gate(hs))                               # (..., L)
        g = torch.repeat_interleave(g, torch.tensor(self.hidden, device=hs.device), dim=-1)
        return self.head(F.relu(self.embed(g * hs)))


class CharLM(nn.Module):
    """Input embedding -> HM-LSTM (or LSTM) stack -> gated output module."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)      # linear lookup, no non-linearity
        self.rnn = cfg.stack(cfg.embed_dim)
        self.out = OutputModule(cfg.hidden, cfg.out_embed, cfg.vocab_size)

    @property
    def num_layers(self) -> int:
        return len(self.cfg.hidden)

    def initial_state(self, batch: int, device=None) -> State:
        return self.rnn.initial_state(batch, device=device, dtype=self.embed.weight.dtype)

    def forward(self, x: torch.Tensor, state: State, a: float = 1.0, force_z: torch.Tensor | None = None,
                pre_z: list | None = None):
        """x: (batch, T) symbol ids; state from initial_state or a previous call.
        force_z: optional (batch, T, L-1) boundaries.
        pre_z:   optional list; receives the detectors' pre-activations z~ as one (batch, T, L-1) tensor.
        Returns logits (batch, T, vocab), the final state, and z (batch, T, L) with the top column 0."""
        x_proj = self.rnn.project_input(self.embed(x))                # (batch, T, 4H1+1)
        hs, zs, pres = [], [], []
        for t in range(x.shape[1]):
            step_pre = [] if pre_z is not None else None
            state = self.rnn.step(x_proj[:, t], state, a, None if force_z is None else force_z[:, t], step_pre)
            hs.append(torch.cat([h for h, _, _ in state], dim=-1))    # (batch, sum hidden)
            zs.append(torch.cat([z for _, _, z in state], dim=-1))    # (batch, L)
            if step_pre:
                pres.append(torch.cat(step_pre, dim=-1))               # (batch, L-1)
        logits = self.out(torch.stack(hs, dim=1))                      # (batch, T, vocab)
        if pres:
            pre_z.append(torch.stack(pres, dim=1))                     # (batch, T, L-1)
        return logits, state, torch.stack(zs, dim=1)

    def step_logits(self, symbol: torch.Tensor, state: State, a: float = 1.0):
        """One symbol per sequence (batch,) -> logits (batch, vocab) for the next, and the new state.
        The incremental path used by sampling; it calls the same HMLSTM.step as forward."""
        state = self.rnn.step(self.rnn.project_input(self.embed(symbol)), state, a)
        return self.out(torch.cat([h for h, _, _ in state], dim=-1)), state


def detach_state(state: State) -> State:
    """Carry (h, c, z) across truncated-BPTT segments without carrying the graph."""
    return [tuple(t.detach() for t in layer) for layer in state]


def operations(z: torch.Tensor, z_init: torch.Tensor, hierarchical: bool = True) -> torch.Tensor:
    """Which operation each layer performed at each step, from the boundary sequence (eq. 2).

    z:      (batch, T, L) boundaries z_t^l as returned by CharLM.forward (top column 0).
    z_init: (batch, L) z_{-1}^l, the boundaries carried in from before the segment.
    Returns (batch, T, L) int codes UPDATE / COPY / FLUSH.
    """
    z_prev = torch.cat([z_init[:, None, :], z[:, :-1, :]], dim=1)     # z_{t-1}^l
    ones = torch.ones_like(z[..., :1])
    z_below = torch.cat([ones, z[..., :-1]], dim=-1)                   # z_t^{l-1}, z^0 = 1
    op = torch.full_like(z, UPDATE, dtype=torch.long)
    if not hierarchical:                                               # plain LSTM: always UPDATE
        return op
    op[(z_prev == 0) & (z_below == 0)] = COPY
    op[z_prev == 1] = FLUSH
    return op


def op_counts(model: nn.Module, z: torch.Tensor, z_init: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(layers, 3) counts of UPDATE / COPY / FLUSH over a segment (only where mask is true), for any model with a
    `cfg.arch` (the character LM, the handwriting network)."""
    op = operations(z, z_init, model.cfg.hierarchical)                # (batch, T, L)
    onehot = F.one_hot(op, 3)                                           # (batch, T, L, 3)
    if mask is not None:
        onehot = onehot * mask[..., None, None]
    return onehot.sum(dim=(0, 1))


def rates_dict(counts: torch.Tensor) -> list[dict]:
    """(layers, 3) counts -> [{"update": .., "copy": .., "flush": ..}] per layer, as fractions."""
    total = counts.sum(dim=1, keepdim=True).clamp(min=1)
    r = (counts / total).tolist()
    return [{name: round(v, 4) for name, v in zip(OPS, row)} for row in r]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
