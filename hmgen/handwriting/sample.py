"""Synthesis: text -> pen offsets, with bias (Graves §5.4), priming (§5.5) and termination.

Lines are sampled side by side as one batch. Each line stops on its own:
  * "end of text": the window has moved onto the end-of-text slot (phi there is the largest) and the pen
    is lifted, or the window has sat on that slot for `linger` steps, or its centre has passed it;
  * "step cap": after max_steps_per_char * (characters + 1) points (hard cap).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hmgen.handwriting.model import denormalise, encode_text, split_params, text_batch
from hmgen.modelio import HandwritingModel
from hmgen.errors import HmgenError


class SynthesisError(HmgenError):
    """Text the model cannot write (unknown characters, empty text): one line for the user."""


@dataclass
class Line:
    text: str
    offsets: np.ndarray          # (N, 3) whiteboard units [dx, dy-up, eos] of the generated part
    stop: str                    # "end of text" | "step cap"
    steps: int
    kappa: np.ndarray            # (N,) mean window position per generated step (characters of the full text)
    prime_chars: int = 0         # characters of the priming text before this line's own text
    coverage: float = 1.0        # share of the line's characters that held the window's maximum at some step


def check_text(model: HandwritingModel, text: str) -> None:
    alpha = set(model.cfg.alphabet)
    missing = sorted({c for c in text if c not in alpha})
    if missing:
        shown = " ".join(repr(c) for c in missing)
        raise SynthesisError(f"characters the model never saw: {shown} (it can write: {model.cfg.alphabet.strip()})")


def sample_point(params: torch.Tensor, M: int, bias: float, gen: torch.Generator) -> torch.Tensor:
    """Mixture parameters (B, 1+6M) -> one point (B, 3) per row, normalised units."""
    e, log_pi, mu, ls, rho = split_params(params, M, bias)
    B = params.shape[0]
    k = torch.multinomial(log_pi.exp(), 1, generator=gen)[:, 0]
    r = torch.arange(B)
    m, s, p = mu[r, k], ls[r, k].exp(), rho[r, k]
    n = torch.randn(B, 2, generator=gen, dtype=params.dtype)
    x1 = m[:, 0] + s[:, 0] * n[:, 0]
    x2 = m[:, 1] + s[:, 1] * (p * n[:, 0] + torch.sqrt(1 - p ** 2) * n[:, 1])
    eos = (torch.rand(B, generator=gen, dtype=params.dtype) < torch.sigmoid(e)).to(params.dtype)
    return torch.stack([x1, x2, eos], -1)


@torch.no_grad()
def synthesize(model: HandwritingModel, texts: list[str], bias: float = 0.5, seed: int | None = None,
               prime: tuple[np.ndarray, str] | None = None, max_steps_per_char: int = 25, linger: int = 6,
               a: float = 1.0) -> list[Line]:
    """Write each text. prime: (normalised offsets (N, 3), its text) to clamp first (a style)."""
    net, cfg = model.net, model.cfg
    if not cfg.conditional:
        raise SynthesisError(f"model {model.name!r} is unconditional: it cannot write a given text")
    for t in texts:
        check_text(model, t)
    if any(not t.strip() for t in texts):
        raise SynthesisError("nothing to write (empty line)")
    gen = torch.Generator().manual_seed(seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63))
    B = len(texts)
    ptext = (prime[1] + " ") if prime is not None else ""
    full = [ptext + t for t in texts]
    onehot, tmask = text_batch([encode_text(t, cfg.alphabet) for t in full], cfg.n_chars)
    end_slot = torch.tensor([len(t) for t in full])          # index of the end-of-text slot per row
    state = net.initial_state(B)
    x = torch.zeros(B, 3)
    x[:, 2] = 1.0
    if prime is not None and len(prime[0]):
        seq = torch.from_numpy(np.asarray(prime[0], np.float32))
        for t in range(len(seq)):
            params, state, phi, _ = net.step(x, state, onehot, tmask, a)
            x = seq[t].expand(B, 3).clone()
    cap = torch.tensor([max_steps_per_char * (len(t) + 1) for t in texts])
    out = torch.zeros(int(cap.max()), B, 3)
    kap = torch.zeros(int(cap.max()), B)
    done = torch.zeros(B, dtype=torch.bool)
    length = torch.zeros(B, dtype=torch.long)
    stop = ["step cap"] * B
    on_end = torch.zeros(B, dtype=torch.long)
    visited = torch.zeros(B, onehot.shape[1], dtype=torch.bool)
    for t in range(int(cap.max())):
        params, state, phi, _ = net.step(x, state, onehot, tmask, a)
        x = sample_point(params, cfg.mixtures, bias, gen)
        out[t], kap[t] = x, state[1].mean(1)
        live = ~done
        length[live] += 1
        top = phi.argmax(1)
        visited[torch.arange(B)[live], top[live]] = True
        at_end = top == end_slot
        on_end = torch.where(at_end, on_end + 1, torch.zeros_like(on_end))
        passed = kap[t] > end_slot.to(kap.dtype) + 0.5
        finished = live & ((at_end & (x[:, 2] > 0.5)) | (on_end >= linger) | passed)
        for b in torch.nonzero(finished)[:, 0].tolist():
            stop[b] = "end of text"
        done |= finished
        done |= length >= cap
        if bool(done.all()):
            break
    lines = []
    for b in range(B):
        n = int(length[b])
        seq = out[:n, b].numpy().copy()
        if n:
            seq[-1, 2] = 1.0
        own = visited[b, len(ptext):len(ptext) + len(texts[b])]
        lines.append(Line(texts[b], denormalise(seq, cfg), stop[b], n, kap[:n, b].numpy().copy(), len(ptext),
                          round(float(own.float().mean()), 4)))
    return lines


def wrap(text: str, width: int) -> list[str]:
    """Split on newlines, then greedily wrap each paragraph at `width` characters (words kept whole;
    a word longer than width is cut)."""
    out = []
    for para in text.replace("\r\n", "\n").split("\n"):
        words = para.split()
        cur = ""
        for w in words:
            while len(w) > width:
                if cur:
                    out.append(cur)
                    cur = ""
                out.append(w[:width])
                w = w[width:]
            if not cur:
                cur = w
            elif len(cur) + 1 + len(w) <= width:
                cur += " " + w
            else:
                out.append(cur)
                cur = w
        if cur:
            out.append(cur)
    return out


def style_prime(model: HandwritingModel, style: int | None):
    if style is None:
        return None
    if not model.styles:
        raise SynthesisError(f"model {model.name!r} has no style bank")
    if not 0 <= style < len(model.styles):
        raise SynthesisError(f"no style {style}: model {model.name!r} has styles 0..{len(model.styles) - 1}")
    s = model.styles[style]
    return np.asarray(s["offsets"], np.float32), s["text"]


def write_lines(model: HandwritingModel, lines: list[str], bias: float = 0.5, seed: int | None = None,
                style: int | None = None, max_steps_per_char: int = 25) -> list[Line]:
    """Several lines in one style: with a style from the bank every line is primed with it; without one the
    first line is written freely and primes the others (its strokes and text), so they share its hand."""
    prime = style_prime(model, style)
    if prime is not None or len(lines) == 1:
        return synthesize(model, lines, bias, seed, prime, max_steps_per_char)
    first = synthesize(model, lines[:1], bias, seed, None, max_steps_per_char)[0]
    from hmgen.handwriting.model import normalise
    p = (normalise(first.offsets, model.cfg), first.text) if first.stop == "end of text" else None
    rest = synthesize(model, lines[1:], bias, None if seed is None else seed + 1, p, max_steps_per_char)
    return [first] + rest
