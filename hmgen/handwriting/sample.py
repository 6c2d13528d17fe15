"""Synthesis: text -> pen offsets, with bias (Graves §5.4), priming (§5.5) and termination.

Lines are sampled side by side as one batch. Each line stops on its own:
  * "end of text": the window has moved onto the end-of-text slot (phi there is the largest) and the pen
    is lifted, or the window has sat on that slot for `linger` steps, or its centre has passed it;
  * "step cap": after max_steps_per_char * (characters + 1) points (hard cap).
A line stopped by the cap is one whose window stalled (the network writes minims "iiii" while the window creeps
on, short of the end when the cap comes; an example in benchmarks/RESULTS.md): it is drawn again with a new
seed, up to `retries` times (our choice; sampling alone cannot un-stall it). Line.tries counts the draws.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hmgen.handwriting.defaults import BIAS
from hmgen.handwriting.model import HandwritingModel, denormalise, encode_text, split_params, text_batch
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
    tries: int = 1               # draws until the window passed the last character (or the retries ran out)
    position: np.ndarray | None = None   # (N,) the character the window is on (argmax phi) at each point
    primer_lag: float = 0.0      # characters of the primer's text the window had not reached when its strokes ended


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


def window_position(phi: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """(B,) the character the window is on: the argmax of phi (B, U); where phi has vanished everywhere (the window
    ran past the text, or has not reached it) the nearest slot to the mean of kappa (B, K)."""
    top = phi.argmax(1)
    near = kappa.mean(1).round().clamp(0, phi.shape[1] - 1).long()
    return torch.where(phi.max(1).values > 1e-12, top, near)


def run_primer(net, seq: torch.Tensor, state, onehot, tmask, a: float = 1.0):
    """Run the network over a primer's points (T, 3) for every row, clamped (Graves §5.5): the inputs are the
    null pen-up point, then the primer's points; -> the state after its last point (window position, both
    kinds of recurrent state), the input for the next step (the primer's last point) and phi (B, U) there."""
    B = onehot.shape[0]
    x = torch.zeros(B, 3)
    x[:, 2] = 1.0
    phi = None
    for t in range(len(seq)):
        _, state, phi, _ = net.step(x, state, onehot, tmask, a)
        x = seq[t].expand(B, 3).clone()
    return state, x, phi


@torch.no_grad()
def synthesize(model: HandwritingModel, texts: list[str], bias: float = BIAS, seed: int | None = None,
               prime: tuple[np.ndarray, str] | None = None, max_steps_per_char: int = 25, linger: int = 6,
               a: float = 1.0, retries: int = 2) -> list[Line]:
    """Write each text. prime: (normalised offsets (N, 3), its text) to clamp first (a style).

    With a primer the network reads "primer text + space + this text": it is run over the primer's points (its
    window, both states and the last point carried over), then writes. Where the primer's strokes end, the
    window has sometimes not quite reached the end of the primer's text (benchmarks/RESULTS.md): the network
    then first writes the rest of the primer's text. Those points are not this line's: the line starts at the
    first stroke that the pen begins to the right of all ink so far once the window is on the separating space
    (our choice; the step cap counts from there)."""
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
    own = len(ptext)                                          # where each row's own text starts
    state = net.initial_state(B)
    x = torch.zeros(B, 3)
    x[:, 2] = 1.0
    lag, xabs, right = 0.0, torch.zeros(B), torch.zeros(B)   # the pen's x and the rightmost ink so far (units)
    if prime is not None and len(prime[0]):
        seq = np.asarray(prime[0], np.float32)
        state, x, phi = run_primer(net, torch.from_numpy(seq), state, onehot, tmask, a)
        lag = max(0.0, own - 1 - float(window_position(phi, state[1])[0]))   # characters before the space
        px = np.cumsum(denormalise(seq, cfg)[:, 0])
        xabs[:], right[:] = float(px[-1]), float(px.max())
    sx, mx = float(cfg.std[0]), float(cfg.mean[0])
    cap = torch.tensor([max_steps_per_char * (len(t) + 1) for t in texts])
    lead = int(max_steps_per_char * (lag + 2)) if prime is not None else 0   # steps allowed to reach own text
    total = int(cap.max()) + lead
    out = torch.zeros(total, B, 3)
    kap = torch.zeros(total, B)
    pos = torch.zeros(total, B)
    begun = torch.full((B,), prime is None)
    begin = torch.zeros(B, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    length = torch.zeros(B, dtype=torch.long)
    stop = ["step cap"] * B
    on_end = torch.zeros(B, dtype=torch.long)
    visited = torch.zeros(B, onehot.shape[1], dtype=torch.bool)
    rows = torch.arange(B)
    for t in range(total):
        pen_up = x[:, 2] > 0.5                               # the point before this one ended a stroke
        params, state, phi, _ = net.step(x, state, onehot, tmask, a)
        x = sample_point(params, cfg.mixtures, bias, gen)
        top = window_position(phi, state[1])
        out[t], kap[t], pos[t] = x, state[1].mean(1), top.to(pos.dtype)
        xabs += x[:, 0] * sx + mx
        # this line's first stroke: the window is on the separating space or beyond, and the pen came down to the
        # right of all ink so far (an i-dot or t-bar of the primer's last word lands inside it)
        starts = ~begun & ~done & (((top >= own - 1) & pen_up & (xabs > right)) | (top >= own + 1))
        right = torch.maximum(right, xabs)
        begin[starts] = t
        begun |= starts
        done |= ~begun & (t + 1 >= lead)                     # never reached its own text: a stall
        live = begun & ~done
        length[live] += 1
        visited[rows[live], top[live]] = True
        at_end = top == end_slot
        on_end = torch.where(at_end, on_end + 1, torch.zeros_like(on_end))
        passed = kap[t] > end_slot.to(kap.dtype) + 0.5
        finished = live & ((at_end & (x[:, 2] > 0.5)) | (on_end >= linger) | passed)
        for b in torch.nonzero(finished)[:, 0].tolist():
            stop[b] = "end of text"
        done |= finished
        done |= live & (length >= cap)
        if bool(done.all()):
            break
    lines = []
    for b in range(B):
        n, t0 = int(length[b]), int(begin[b])
        seq = out[t0:t0 + n, b].numpy().copy()
        if n:
            seq[-1, 2] = 1.0
        mine = visited[b, own:own + len(texts[b])]
        lines.append(Line(texts[b], denormalise(seq, cfg), stop[b], n, kap[t0:t0 + n, b].numpy().copy(), own,
                          round(float(mine.float().mean()), 4), position=pos[t0:t0 + n, b].numpy().copy(),
                          primer_lag=round(lag, 2)))
    stalled = [b for b, ln in enumerate(lines) if ln.stop != "end of text"]
    if stalled and retries > 0:
        again = synthesize(model, [texts[b] for b in stalled], bias, int(torch.randint(2**62, (1,), generator=gen)),
                           prime, max_steps_per_char, linger, a, retries - 1)
        for b, ln in zip(stalled, again):
            ln.tries += 1
            lines[b] = ln
    return lines


def wrap(text: str, width: int) -> list[str]:
    """Split on newlines, then greedily wrap each paragraph at `width` characters (words kept whole;
    a word longer than width is cut). A blank input line stays a blank line ""; blank lines before and
    after the text are dropped."""
    out = []
    for para in text.replace("\r\n", "\n").split("\n"):
        words = para.split()
        if not words:
            out.append("")
            continue
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
    while out and not out[-1]:
        out.pop()
    while out and not out[0]:
        out.pop(0)
    return out


# Word gaps of real handwriting, in line heights (HWConfig.line_height): quartiles over 300 IAM-OnDB training
# lines, preprocessed as for training; a line with n spaces contributes its n widest gaps between a stroke and
# all ink before it (benchmarks/handwriting.py --word-gaps measures them, and the model's own).
WORD_GAP = (0.47, 0.80)


def space_words(line: Line, units_per_line: float, gap: tuple[float, float] = WORD_GAP) -> np.ndarray:
    """The line's offsets with every gap between two words moved into the `gap` range (line heights), so words
    are spaced as in the training data: neither run together nor far apart. A stroke belongs to the word the
    window is on (its argmax: the mean of kappa lags it by ~3 characters mid-line; a space counting with the word
    before it) when the stroke starts; the pen-up move
    to a word's first stroke is lengthened or shortened, which moves everything after it."""
    off = line.offsets.copy()
    spaces = np.flatnonzero(np.frombuffer(line.text.encode("utf-32-le"), np.uint32) == ord(" "))
    if not len(spaces) or len(off) < 2:
        return off
    char = np.clip(np.round(line.position).astype(int) - line.prime_chars, 0, len(line.text) - 1)   # (N,)
    word = np.maximum.accumulate(np.searchsorted(spaces, char, side="left"))      # spaces strictly before
    starts = np.flatnonzero(np.r_[True, off[:-1, 2] > 0.5])                        # first point of every stroke
    lo, hi = gap[0] * units_per_line, gap[1] * units_per_line
    for t in starts[1:]:
        if word[t] == word[t - 1]:
            continue
        x = np.cumsum(off[:, 0])                                                   # after the moves so far
        stroke_end = starts[starts > t][0] if (starts > t).any() else len(off)
        g = x[t:stroke_end].min() - x[:t].max()
        off[t, 0] += np.clip(g, lo, hi) - g
    return off


def style_prime(model: HandwritingModel, style: int | None):
    if style is None:
        return None
    if not model.styles:
        raise SynthesisError(f"model {model.name!r} has no style bank")
    if not 0 <= style < len(model.styles):
        raise SynthesisError(f"no style {style}: model {model.name!r} has styles 0..{len(model.styles) - 1}")
    s = model.styles[style]
    return np.asarray(s["offsets"], np.float32), s["text"]


# With a style, a line is written in pieces of at most this many characters (whole words), each primed with the
# style line, and the pieces are joined into the line (our choice: handwriting-small-2 forgets a primer's slant
# within a piece's length or so, its slant following the primer's in the first half of a phrase and not in the
# second; benchmarks/RESULTS.md).
PIECE = 16


def pieces_of(text: str, width: int) -> list[str]:
    """Whole words, greedily grouped into pieces of at most `width` characters (a longer word is a piece)."""
    out = []
    for w in text.split():
        if out and len(out[-1]) + 1 + len(w) <= width:
            out[-1] += " " + w
        else:
            out.append(w)
    return out


def join_pieces(pieces: list[np.ndarray], units_per_line: float, gap: tuple[float, float] = WORD_GAP) -> np.ndarray:
    """Offsets of a line's pieces, one after the other: each piece begins a word gap (the middle of the training
    data's range) right of all ink before it, with the median height of its points at the line's so far."""
    out = pieces[0].copy()
    for nxt in pieces[1:]:
        if not len(nxt):
            continue
        if not len(out):
            out = nxt.copy()
            continue
        xy = np.cumsum(out[:, :2], 0)                                  # (n, 2) the line so far, its own origin
        xn = np.cumsum(nxt[:, :2], 0)                                  # the piece, from its origin
        origin = np.array([xy[:, 0].max() + np.mean(gap) * units_per_line - xn[:, 0].min(),
                           np.median(xy[:, 1]) - np.median(xn[:, 1])])
        moved = nxt.copy()
        moved[0, :2] = origin + nxt[0, :2] - xy[-1]                    # from the last point to the piece's first
        out[-1, 2] = 1.0
        out = np.concatenate([out, moved])
    return out


def write_lines(model: HandwritingModel, lines: list[str], bias: float = BIAS, seed: int | None = None,
                style: int | None = None, max_steps_per_char: int = 25, piece: int | None = PIECE) -> list[Line]:
    """Several lines, sampled side by side. With a style from the bank every line is written in pieces of at most
    `piece` characters (whole words; None: whole lines), each primed with the style line, joined (join_pieces).
    Without one, every line is written whole from the model's own start (our choice: priming lines 2.. with line
    1, as X-rayLaser's txt2script does, made them far less legible with handwriting-small and did not even keep
    the size; benchmarks/RESULTS.md); at the default bias the lines share the model's one neat hand.
    Blank lines ("") come back as empty Lines (stop "blank") in their places."""
    todo = [t for t in lines if t.strip()]
    if not todo:
        raise SynthesisError("nothing to write (empty text)")
    prime = style_prime(model, style)
    parts = [pieces_of(t, piece) if prime is not None and piece else [t] for t in todo]
    flat = [p for ps in parts for p in ps]
    written = synthesize(model, flat, bias, seed, prime, max_steps_per_char)
    for ln in written:
        ln.offsets = space_words(ln, model.cfg.line_height)
    it, joined = iter(written), []
    for text, ps in zip(todo, parts):
        got = [next(it) for _ in ps]
        if len(got) == 1:
            joined.append(got[0])
            continue
        stop = next((ln.stop for ln in got if ln.stop != "end of text"), "end of text")
        joined.append(Line(text, join_pieces([ln.offsets for ln in got], model.cfg.line_height), stop,
                           sum(ln.steps for ln in got), np.concatenate([ln.kappa for ln in got]), got[0].prime_chars,
                           round(float(np.mean([ln.coverage for ln in got])), 4), max(ln.tries for ln in got),
                           None, round(float(np.mean([ln.primer_lag for ln in got])), 2)))
    it = iter(joined)
    return [next(it) if t.strip() else Line("", np.zeros((0, 3), np.float32), "blank", 0, np.zeros(0, np.float32))
            for t in lines]
