"""A faster forward for `CharLM`: the same function as `CharLM.forward` (same parameters, same state
format, same outputs, same gradients), with far fewer kernel launches per time step.

`HMLSTM.step` remains the one reference implementation of the cell; this module re-arranges its
arithmetic and tests/test_fast.py checks that the two agree (values and gradients). What changes:

  (a) every term that depends on t-1 — U_l^l h_{t-1}^l (recurrent) and U_{l+1}^l h_{t-1}^{l+1}
      (top-down) for ALL layers (eq. 5-7) — comes out of ONE matrix product per step, over a block
      weight built once per call. Layer norm is per term, so the product is sliced back into terms
      before each LN.
  (b) layer 1's bottom-up term W_0^1 x_t for all steps at once (z_t^0 = 1 never gates it).
  (c) the rest of a layer's step (the LNs, gates, eq. 2-3 masks, boundary eq. 8-9) is one function,
      `cell`, that `torch.compile` fuses on CUDA. Only the cell is compiled, never the unrolled loop
      (compile time grows with the loop length: shared/reference/hmlstm.md §5).
  (d) on CUDA, `GraphedSegment` captures the forward and backward of a whole truncated-BPTT segment as
      CUDA graphs (one replay per segment instead of thousands of launches).

Only the bottom-up products of layers 2..L stay sequential inside a step (h_t^{l-1} is needed first).

    logits, state, z = fast_forward(model, x, state, a)          # drop-in for model(x, state, a)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hmgen.cell.reference import CharLM

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


def _norm(v, gain, eps: float):
    return v if gain is None else F.layer_norm(v, v.shape[-1:], gain, None, eps)


class _Boundary(torch.autograd.Function):
    """Boundary z = 1[s > 0] (eq. 8-9) with the straight-through gradient of hard_sigm(a*s): a/2 inside
    |s| < 1/a, 0 outside — the rule of `hmgen.cell.reference.BoundaryFn`, with `a` a tensor, so that annealing the
    slope neither recompiles the compiled cell nor changes a captured CUDA graph."""

    @staticmethod
    def forward(ctx, s, a):
        ctx.save_for_backward(s, a)
        return (s > 0).to(s.dtype)

    @staticmethod
    def backward(ctx, grad):
        s, a = ctx.saved_tensors
        return grad * (a / 2) * (s.abs() < 1 / a).to(grad.dtype), None


def cell(p_rec, p_td, bu, bias, h_prev, c_prev, z_prev, z_below, z_forced, a,
         g_rec, g_td, g_bu, g_c, hierarchical: bool, has_boundary: bool, eps: float):
    """One layer, one step — the arithmetic of `HMLSTM.step`, in the same order.

    p_rec:   (batch, 4H+1) U_l^l h_{t-1}^l           p_td: same rows, U_{l+1}^l h_{t-1}^{l+1}, or None
    bu:      (batch, 4H+1) W_{l-1}^l h_t^{l-1}       (layer 1: already normalised, g_bu None)
    z_below: (batch, 1) z_t^{l-1}, None for layer 1 and the LSTM     z_forced: (batch, 1) or None
    g_*:     layer-norm gains (None: no LN on that term)             a: 0-dim tensor, the slope
    Returns h, c, z of this layer at t.
    """
    H = h_prev.shape[-1]
    s = _norm(p_rec, g_rec, eps)                                      # (batch, 4H+1)
    if p_td is not None:
        s = s + z_prev * _norm(p_td, g_td, eps)                       # top-down, gated by z_{t-1}^l (eq. 5)
    bu = _norm(bu, g_bu, eps)
    s = s + (bu if z_below is None else z_below * bu) + bias          # bottom-up, gated by z_t^{l-1}
    f = torch.sigmoid(s[:, :H])                                       # eq. 4
    i = torch.sigmoid(s[:, H:2 * H])
    o = torch.sigmoid(s[:, 2 * H:3 * H])
    g = torch.tanh(s[:, 3 * H:4 * H])
    if not hierarchical:                                              # LSTM baseline: always UPDATE
        c = f * c_prev + i * g
        return o * torch.tanh(_norm(c, g_c, eps)), c, z_prev
    zb = torch.ones_like(z_prev) if z_below is None else z_below
    copy = (1 - z_prev) * (1 - zb)                                    # (batch, 1)
    update = (1 - z_prev) * zb
    c = (1 - copy) * (i * g) + update * (f * c_prev) + copy * c_prev  # eq. 2: FLUSH / UPDATE / COPY
    h = (1 - copy) * (o * torch.tanh(_norm(c, g_c, eps))) + copy * h_prev   # eq. 3
    if has_boundary:
        z_hat = z_forced if z_forced is not None else _Boundary.apply(s[:, 4 * H:], a)   # eq. 8-9
        z = (1 - copy) * z_hat
    else:
        z = torch.zeros_like(z_prev)                                  # top layer: no detector
    return h, c, z


_compiled_cell = None


def get_cell(compiled: bool):
    """The eager cell, or (CUDA) the same function through torch.compile — compiled once per process;
    each layer shape is one specialisation."""
    global _compiled_cell
    if not compiled:
        return cell
    if _compiled_cell is None:
        import torch._dynamo.config as dynamo
        dynamo.recompile_limit = max(dynamo.recompile_limit, 64)   # L layer kinds x dtypes x models
        _compiled_cell = torch.compile(cell, fullgraph=True, dynamic=False)
    return _compiled_cell


def _gain(norm):
    return None if norm is None or norm.ln is None else norm.ln.weight


# ----------------------------------------------------------------------------- the forward


def fast_forward(model: CharLM, x: torch.Tensor, state, a=1.0, force_z: torch.Tensor | None = None,
                 compiled: bool | None = None, packed=None):
    """Drop-in for `model(x, state, a, force_z)`: logits (batch, T, vocab), final state, z (batch, T, L).
    a:        float or 0-dim tensor (a tensor lets a CUDA graph read the slope from memory).
    compiled: fuse the cell with torch.compile (default: on CUDA only).
    packed:   t1_weight(model.rnn), to reuse across calls without gradient (one-step inference);
              by default built here, so that gradients reach the layers' own weights."""
    rnn = model.rnn
    layers = rnn.layers
    L = len(layers)
    step = get_cell(x.is_cuda if compiled is None else compiled)
    eps = next((m.ln.eps for m in rnn.modules() if getattr(m, "ln", None) is not None), 1e-5)
    dtype = model.embed.weight.dtype
    a = a if torch.is_tensor(a) else torch.tensor(float(a), dtype=dtype, device=x.device)
    gains = [(_gain(l.ln_rec), _gain(l.ln_td), None if i == 0 else _gain(l.ln_bu), _gain(l.ln_c))
             for i, l in enumerate(layers)]

    x_proj = rnn.project_input(model.embed(x))                       # (b) (batch, T, 4H1+1)
    packed = packed or t1_weight(rnn)                                # (a)
    hs = [h for h, _, _ in state]
    cs = [c for _, c, _ in state]
    zs = [z for _, _, z in state]
    out_h, out_z = [], []
    for t in range(x.shape[1]):
        terms = t1_terms(packed, hs)                                 # one product: every t-1 term
        h_below = z_below = None
        for l, layer in enumerate(layers):
            bu = x_proj[:, t] if l == 0 else F.linear(h_below, layer.bu.weight)   # (batch, 4H+1)
            fz = None if (force_z is None or not layer.has_boundary) else force_z[:, t, l:l + 1].to(dtype)
            hs[l], cs[l], zs[l] = step(*terms[l], bu, layer.bias, hs[l], cs[l], zs[l], z_below, fz, a,
                                       *gains[l], rnn.hierarchical, layer.has_boundary, eps)
            h_below = hs[l]
            z_below = zs[l] if (rnn.hierarchical and l + 1 < L) else None
        out_h.append(torch.cat(hs, dim=-1))                          # (batch, sum H)
        out_z.append(torch.cat(zs, dim=-1))                          # (batch, L)
    logits = model.out(torch.stack(out_h, dim=1))                    # (batch, T, vocab)
    return logits, list(zip(hs, cs, zs)), torch.stack(out_z, dim=1)


class FastForward(nn.Module):
    """`model`'s forward through fast_forward, as a module holding the same parameters — for DDP,
    which must see the forward:  net = DDP(FastForward(model)); logits, state, z = net(x, state, a)."""

    def __init__(self, model: CharLM, compiled: bool | None = None):
        super().__init__()
        self.model, self.compiled = model, compiled

    def forward(self, x, state, a=1.0, force_z=None):
        return fast_forward(self.model, x, state, a, force_z, self.compiled)


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
