"""The Hierarchical Multiscale LSTM (Chung, Ahn & Bengio, ICLR 2017) and the character LM on top of it.

Equation numbers refer to arXiv 1609.01704v7. There is exactly one implementation of the cell:
`HMLSTM.step` advances every layer by one time step. Training, evaluation, sampling (and later
compression and the boundary view) all go through it. `arch="lstm"` is the same cell with the
boundary detectors switched off (every layer UPDATEs at every step, no top-down input), which is the
paper's LN-LSTM baseline with identical input and output modules.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

UPDATE, COPY, FLUSH = 0, 1, 2
OPS = ("update", "copy", "flush")


@dataclass
class ModelConfig:
    vocab_size: int
    arch: str = "hmlstm"                  # "hmlstm" | "lstm"
    embed_dim: int = 128                  # paper §4.1: 128-d input embedding
    hidden: list[int] = field(default_factory=lambda: [512, 512, 512])
    out_embed: int = 512                  # output embedding size (eq. 11)
    layer_norm: bool = True

    def __post_init__(self):
        self.hidden = [int(h) for h in self.hidden]
        if self.arch not in ("hmlstm", "lstm"):
            raise ValueError(f"unknown architecture {self.arch!r} (expected 'hmlstm' or 'lstm')")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError("need at least one layer, each of size >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


class BoundaryFn(torch.autograd.Function):
    """Boundary detector, eq. 8-9: forward z = 1[hard_sigm(a*s) > 0.5] = 1[s > 0] (a step function);
    backward: the straight-through estimator uses the hard sigmoid's derivative,
    d hard_sigm(a*s)/ds = a/2 for |s| < 1/a and 0 outside."""

    @staticmethod
    def forward(ctx, s, a):
        ctx.save_for_backward(s)
        ctx.a = float(a)
        return (s > 0).to(s.dtype)

    @staticmethod
    def backward(ctx, grad):
        (s,) = ctx.saved_tensors
        a = ctx.a
        return grad * (a / 2) * (s.abs() < 1 / a).to(grad.dtype), None


def boundary(s: torch.Tensor, a: float) -> torch.Tensor:
    return BoundaryFn.apply(s, a)


class Norm(nn.Module):
    """Layer normalisation with a gain and no bias (the cell's single bias b is added after the sum)."""

    def __init__(self, n: int, enabled: bool):
        super().__init__()
        self.ln = nn.LayerNorm(n, bias=False) if enabled else None

    def forward(self, x):
        return self.ln(x) if self.ln is not None else x


class HMLSTMLayer(nn.Module):
    """Parameters of one layer l: W_{l-1}^l (bottom-up), U_l^l (recurrent), U_{l+1}^l (top-down), b.

    Each has 4*hidden rows (f, i, o, g) plus one row for the boundary pre-activation z~ when the layer
    has a detector (all but the top layer, §3.2: "we do not use the boundary detector for the last layer").

    Layer normalisation — the paper applies it but does not say where (our choice): Ba et al.'s per-term
    form, each term normalised over its 4H+1 rows *before* it is gated, so a gated-off (all-zero) term never
    enters LN (clemens33/hmlstm reports NaN gradients from LN of zeroed terms); plus LN on c before tanh,
    as in PyTorch's LayerNormLSTMCell.
    """

    def __init__(self, input_size: int, hidden: int, above: int, has_boundary: bool, layer_norm: bool):
        super().__init__()
        self.hidden = hidden
        self.has_boundary = has_boundary
        rows = 4 * hidden + int(has_boundary)
        self.bu = nn.Linear(input_size, rows, bias=False)                  # W_{l-1}^l
        self.rec = nn.Linear(hidden, rows, bias=False)                     # U_l^l
        self.td = nn.Linear(above, rows, bias=False) if above else None    # U_{l+1}^l
        self.bias = nn.Parameter(torch.zeros(rows))                         # b
        with torch.no_grad():   # forget-gate bias 1: common practice (lucaslingle), not in the paper
            self.bias[:hidden] = 1.0
        self.ln_bu, self.ln_rec = Norm(rows, layer_norm), Norm(rows, layer_norm)
        self.ln_td = Norm(rows, layer_norm) if above else None
        self.ln_c = Norm(hidden, layer_norm)


State = list  # [(h, c, z) for each layer]; h, c: (batch, hidden_l), z: (batch, 1)


class HMLSTM(nn.Module):
    """A stack of HM-LSTM layers advanced together, one time step at a time (eq. 1-10)."""

    def __init__(self, input_size: int, hidden: list[int], hierarchical: bool = True, layer_norm: bool = True):
        super().__init__()
        self.hierarchical = hierarchical
        n = len(hidden)
        sizes = [input_size] + list(hidden)
        self.layers = nn.ModuleList(
            HMLSTMLayer(
                input_size=sizes[l],
                hidden=hidden[l],
                above=hidden[l + 1] if (hierarchical and l + 1 < n) else 0,   # no top-down on the top layer
                has_boundary=hierarchical and l + 1 < n,                        # no detector on the top layer
                layer_norm=layer_norm,
            )
            for l in range(n)
        )

    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> State:
        """h, c, z = 0 for every layer (§7 of the reference notes)."""
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

    def step(self, x_proj: torch.Tensor, state: State, a: float = 1.0, force_z: torch.Tensor | None = None) -> State:
        """Advance all layers by one time step.

        x_proj:  (batch, 4*H1+1) from project_input — layer 1's input h_t^0 = x_t, already projected.
        state:   [(h_{t-1}^l, c_{t-1}^l, z_{t-1}^l)] for l = 1..L.
        a:       slope of the hard sigmoid (only shapes the straight-through gradient).
        force_z: optional (batch, L-1) boundaries to use instead of the detectors' (tests, gradcheck).
        Returns  [(h_t^l, c_t^l, z_t^l)]; the top layer's z is always 0.
        """
        new_state = []
        z_below = None                       # z_t^0 = 1: layer 1 never COPYs
        h_below = None
        n = len(self.layers)
        for l, layer in enumerate(self.layers):
            h_prev, c_prev, z_prev = state[l]
            H = layer.hidden
            # eq. 5-7 pre-activations: recurrent term never gated; top-down gated by this layer's own
            # z_{t-1}^l; bottom-up gated by the layer below's z_t^{l-1}.
            s = layer.ln_rec(layer.rec(h_prev))                              # (batch, 4H+1)
            if layer.td is not None:
                h_above_prev = state[l + 1][0]
                s = s + z_prev * layer.ln_td(layer.td(h_above_prev))
            bu = x_proj if l == 0 else layer.ln_bu(layer.bu(h_below))
            s = s + (bu if z_below is None else z_below * bu) + layer.bias
            f = torch.sigmoid(s[:, :H])
            i = torch.sigmoid(s[:, H:2 * H])
            o = torch.sigmoid(s[:, 2 * H:3 * H])
            g = torch.tanh(s[:, 3 * H:4 * H])
            if not self.hierarchical:        # plain LSTM stack: UPDATE everywhere
                c = f * c_prev + i * g
                h = o * torch.tanh(layer.ln_c(c))
                z = z_prev
            else:
                # eq. 2-3 in multiplicative form, with z in {0, 1}:
                #   FLUSH  (z_{t-1}^l = 1):                       c = i*g
                #   UPDATE (z_{t-1}^l = 0, z_t^{l-1} = 1):        c = f*c_{t-1} + i*g
                #   COPY   (z_{t-1}^l = 0, z_t^{l-1} = 0):        c, h, z = c_{t-1}, h_{t-1}, z_{t-1}
                # The masks also pass the straight-through gradient to z through the choice of operation.
                zb = torch.ones_like(z_prev) if z_below is None else z_below
                copy = (1 - z_prev) * (1 - zb)                               # (batch, 1)
                update = (1 - z_prev) * zb
                c = (1 - copy) * (i * g) + update * (f * c_prev) + copy * c_prev
                h = (1 - copy) * (o * torch.tanh(layer.ln_c(c))) + copy * h_prev
                if layer.has_boundary:
                    if force_z is not None:
                        z_hat = force_z[:, l:l + 1].to(s.dtype)
                    else:
                        z_hat = boundary(s[:, 4 * H:], a)                    # eq. 8-9
                    # COPY copies z too: z_{t-1} = 0 there, and no gate is computed in COPY (§3.1).
                    z = (1 - copy) * z_hat
                else:
                    z = torch.zeros_like(z_prev)                              # top layer: never FLUSHes
            new_state.append((h, c, z))
            # the LSTM baseline has no boundaries: every layer always takes its input (z = 1 everywhere)
            h_below, z_below = h, (z if self.hierarchical and l + 1 < n else None)
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
        self.rnn = HMLSTM(cfg.embed_dim, cfg.hidden, cfg.arch == "hmlstm", cfg.layer_norm)
        self.out = OutputModule(cfg.hidden, cfg.out_embed, cfg.vocab_size)

    @property
    def num_layers(self) -> int:
        return len(self.cfg.hidden)

    def initial_state(self, batch: int, device=None) -> State:
        return self.rnn.initial_state(batch, device=device, dtype=self.embed.weight.dtype)

    def forward(self, x: torch.Tensor, state: State, a: float = 1.0, force_z: torch.Tensor | None = None):
        """x: (batch, T) symbol ids; state from initial_state or a previous call.
        force_z: optional (batch, T, L-1) boundaries.
        Returns logits (batch, T, vocab), the final state, and z (batch, T, L) with the top column 0."""
        x_proj = self.rnn.project_input(self.embed(x))                # (batch, T, 4H1+1)
        hs, zs = [], []
        for t in range(x.shape[1]):
            state = self.rnn.step(x_proj[:, t], state, a, None if force_z is None else force_z[:, t])
            hs.append(torch.cat([h for h, _, _ in state], dim=-1))    # (batch, sum hidden)
            zs.append(torch.cat([z for _, _, z in state], dim=-1))    # (batch, L)
        logits = self.out(torch.stack(hs, dim=1))                      # (batch, T, vocab)
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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
