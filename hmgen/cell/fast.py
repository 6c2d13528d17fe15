"""A faster forward for `CharLM`: the same function as `CharLM.forward` (same parameters, same state
format, same outputs, same gradients), with far fewer kernel launches per time step.

The cell itself is not re-implemented: both paths call `hmgen.cell.reference.layer_step`, one layer
for one step from its pre-activation products. This module only computes those products differently,
and tests/test_fast.py checks that the two forwards agree (values and gradients). What changes:

  (a) every term that depends on t-1 — U_l^l h_{t-1}^l (recurrent) and U_{l+1}^l h_{t-1}^{l+1}
      (top-down) for ALL layers (eq. 5-7) — comes out of ONE matrix product per step, over a block
      weight built once per call. Layer norm is per term, so the product is sliced back into terms
      before each LN.
  (b) layer 1's bottom-up term W_0^1 x_t for all steps at once (z_t^0 = 1 never gates it).
  (c) the rest of a layer's step (the LNs, gates, eq. 2-3 masks, boundary eq. 8-9) is `layer_step`,
      which `torch.compile` fuses on CUDA. Only the cell is compiled, never the unrolled loop
      (compiling an unrolled loop takes time that grows with its length).
  (d) on CUDA, `GraphedSegment` captures the forward and backward of a whole truncated-BPTT segment as
      CUDA graphs (one replay per segment instead of thousands of launches).

Only the bottom-up products of layers 2..L stay sequential inside a step (h_t^{l-1} is needed first).

    logits, state, z = fast_forward(model, x, state, a)          # drop-in for model(x, state, a)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hmgen.cell.reference import CharLM, layer_step

# ----------------------------------------------------------------------------- (a) the t-1 product


def t1_weight(rnn):
    """One weight for all t-1 terms, built (differentiably) from the layers' own parameters.

    h_{t-1}^l is read by rec_l (U_l^l) and by td_{l-1} (U_l^{l-1}, the top-down weight of the layer below).
    Equal layer sizes — "stacked": block l = [rec_l; td_{l-1}] zero-padded to the same rows, (L, H, rows),
    used in one batched product over h stacked as (L, batch, H); little padding (layer 1 has no td block).
    Unequal sizes — "dense": rows [rec_1; td_1; rec_2; ...] over columns [h^1 .. h^L], zero off the blocks
    (one product, but L times the useful multiply-adds).
    Returns (kind, weight, where): where[l] = ((block, row) of rec_l, (block, row) of td_l or None, rows).
    """
    layers = rnn.layers
    sizes = [layer.hidden for layer in layers]
    R = [layer.rec.weight.shape[0] for layer in layers]                     # 4H+1 (4H on the top layer)
    if len(set(sizes)) == 1:
        blocks, where = [], []
        for l, layer in enumerate(layers):
            below = layers[l - 1].td if l > 0 else None
            blocks.append(layer.rec.weight if below is None else torch.cat([layer.rec.weight, below.weight]))
        rows = max(b.shape[0] for b in blocks)
        W = torch.stack([F.pad(b, (0, 0, 0, rows - b.shape[0])) for b in blocks]).transpose(1, 2)  # (L, H, rows)
        for l, layer in enumerate(layers):
            where.append(((l, 0), None if layer.td is None else (l + 1, R[l + 1]), R[l]))
        return "stacked", W, where
    starts = [sum(sizes[:l]) for l in range(len(sizes))]
    total, blocks, where, row = sum(sizes), [], [], 0
    for l, layer in enumerate(layers):
        blocks.append(F.pad(layer.rec.weight, (starts[l], total - starts[l] - sizes[l])))          # U_l^l
        rec_at, row = (0, row), row + R[l]
        td_at = None
        if layer.td is not None:
            blocks.append(F.pad(layer.td.weight, (starts[l + 1], total - starts[l + 1] - sizes[l + 1])))   # U_{l+1}^l
            td_at, row = (0, row), row + R[l]
        where.append((rec_at, td_at, R[l]))
    return "dense", torch.cat(blocks).T, where                             # (sum H, rows)


def t1_product(kind: str, W: torch.Tensor, hs: list) -> torch.Tensor:
    """All t-1 pre-activations in one product: (blocks, batch, rows)."""
    if kind == "stacked":
        return torch.bmm(torch.stack(hs), W)                               # (L, batch, H) @ (L, H, rows)
    return (torch.cat(hs, dim=-1) @ W)[None]                                # (1, batch, rows)


def t1_terms(packed, hs: list) -> list:
    """[(U_l^l h_{t-1}^l, U_{l+1}^l h_{t-1}^{l+1} or None)], each (batch, 4H+1), sliced from one product."""
    kind, W, where = packed
    P = t1_product(kind, W, hs)
    return [(P[rb, :, ra:ra + R], None if td is None else P[td[0], :, td[1]:td[1] + R]) for (rb, ra), td, R in where]


# ----------------------------------------------------------------------------- (c) the per-step cell


_compiled_cell = None


def get_cell(compiled: bool):
    """layer_step itself, or (CUDA) the same function through torch.compile — compiled once per process;
    each layer shape and CellSpec is one specialisation."""
    global _compiled_cell
    if not compiled:
        return layer_step
    if _compiled_cell is None:
        import torch._dynamo.config as dynamo
        dynamo.recompile_limit = max(dynamo.recompile_limit, 64)   # L layer kinds x dtypes x models
        _compiled_cell = torch.compile(layer_step, fullgraph=True, dynamic=False)
    return _compiled_cell


# ----------------------------------------------------------------------------- the forward


def fast_forward(model: CharLM, x: torch.Tensor, state, a=1.0, force_z: torch.Tensor | None = None,
                 compiled: bool | None = None, packed=None, pre_z: list | None = None):
    """Drop-in for `model(x, state, a, force_z)`: logits (batch, T, vocab), final state, z (batch, T, L).
    a:        float or 0-dim tensor (a tensor lets a CUDA graph read the slope from memory).
    compiled: fuse the cell with torch.compile (default: on CUDA only).
    packed:   t1_weight(model.rnn), to reuse across calls without gradient (one-step inference);
              by default built here, so that gradients reach the layers' own weights.
    pre_z:    optional list; receives the detectors' pre-activations as one (batch, T, L-1) tensor."""
    rnn = model.rnn
    layers = rnn.layers
    step = get_cell(x.is_cuda if compiled is None else compiled)
    dtype = model.embed.weight.dtype
    a = a if torch.is_tensor(a) else torch.tensor(float(a), dtype=dtype, device=x.device)
    params = [layer.cell_params() for layer in layers]

    x_proj = rnn.project_input(model.embed(x))                       # (b) (batch, T, 4H1+1)
    packed = packed or t1_weight(rnn)                                # (a)
    hs = [h for h, _, _ in state]
    cs = [c for _, c, _ in state]
    zs = [z for _, _, z in state]
    out_h, out_z, out_pre = [], [], []
    for t in range(x.shape[1]):
        terms = t1_terms(packed, hs)                                 # one product: every t-1 term
        h_below = z_below = None
        pres = []
        for l, layer in enumerate(layers):
            bu = x_proj[:, t] if l == 0 else F.linear(h_below, layer.bu.weight)   # (batch, 4H+1)
            fz = None if (force_z is None or not layer.has_boundary) else force_z[:, t, l:l + 1].to(dtype)
            hs[l], cs[l], zs[l], z_pre = step(*terms[l], bu, hs[l], cs[l], zs[l], z_below, fz, a, params[l],
                                              layer.spec)
            if z_pre is not None:
                pres.append(z_pre)
            h_below = hs[l]
            z_below = zs[l] if layer.has_boundary else None
        out_h.append(torch.cat(hs, dim=-1))                          # (batch, sum H)
        out_z.append(torch.cat(zs, dim=-1))                          # (batch, L)
        if pres:
            out_pre.append(torch.cat(pres, dim=-1))                  # (batch, L-1)
    logits = model.out(torch.stack(out_h, dim=1))                    # (batch, T, vocab)
    if pre_z is not None and out_pre:
        pre_z.append(torch.stack(out_pre, dim=1))                    # (batch, T, L-1)
    return logits, list(zip(hs, cs, zs)), torch.stack(out_z, dim=1)


class FastForward(nn.Module):
    """`model`'s forward through fast_forward, as a module holding the same parameters — for DDP,
    which must see the forward:  net = DDP(FastForward(model)); logits, state, z = net(x, state, a)."""

    def __init__(self, model: CharLM, compiled: bool | None = None):
        super().__init__()
        self.model, self.compiled = model, compiled

    def forward(self, x, state, a=1.0, force_z=None, pre_z=None):
        return fast_forward(self.model, x, state, a, force_z, self.compiled, pre_z=pre_z)


# ----------------------------------------------------------------------------- (d) CUDA graphs


class _Segment(nn.Module):
    """fast_forward over one segment with the state as flat tensors, for make_graphed_callables.
    The slope lives in a buffer so that annealing only writes memory the graph reads."""

    def __init__(self, model: CharLM, compiled: bool):
        super().__init__()
        self.model, self.compiled = model, compiled
        self.register_buffer("a", torch.ones((), dtype=model.embed.weight.dtype, device=model.embed.weight.device))

    def forward(self, x, *flat):
        state = [tuple(flat[3 * l:3 * l + 3]) for l in range(len(flat) // 3)]
        logits, state, z = fast_forward(self.model, x, state, self.a, compiled=self.compiled)
        return (logits, z) + tuple(t for layer in state for t in layer)


class GraphedSegment:
    """A training segment (batch, T) captured as two CUDA graphs, forward and backward.

        seg = GraphedSegment(model, batch, T)            # captures (after 3 warm-up runs)
        logits, state, z = seg(x, state, a)              # then loss.backward() as usual

    Shapes are fixed (a last, shorter segment must use fast_forward). Outputs live in static buffers
    that the next call overwrites: use (or clone) them before calling again. The state going in is
    taken without gradient (truncated BPTT: callers detach it anyway).
    """

    def __init__(self, model: CharLM, batch: int, seq_len: int, compiled: bool = False, warmup: int = 3):
        if not model.embed.weight.is_cuda:
            raise RuntimeError("GraphedSegment needs the model on a CUDA device")
        self.L = model.num_layers
        self.segment = _Segment(model, compiled)
        device = model.embed.weight.device
        x = torch.zeros(batch, seq_len, dtype=torch.long, device=device)
        flat = [t for layer in model.initial_state(batch, device) for t in layer]
        self.segment = torch.cuda.make_graphed_callables(
            self.segment, (x, *flat), num_warmup_iters=warmup, allow_unused_input=True)

    def __call__(self, x, state, a=1.0):
        self.segment.a.fill_(float(a))                 # a device write, captured reads see it
        out = self.segment(x, *[t.detach() for layer in state for t in layer])
        logits, z, flat = out[0], out[1], out[2:]
        return logits, [tuple(flat[3 * l:3 * l + 3]) for l in range(self.L)], z
