"""Sampling: continue a prime one symbol at a time, streaming the text as it is generated.

A byte-level model can propose any byte, and most byte sequences are not UTF-8. Instead of repairing
the output afterwards, the sampler only offers the model bytes that keep the stream valid UTF-8
(RFC 3629, table 3-7 of the Unicode standard), so every chunk it yields is whole characters, and the
text ends on a complete character.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch

from hmgen.text.model import LoadedModel
from hmgen.text.data import VocabError

# --- UTF-8 as a small automaton: state = (continuation bytes still due, allowed range of the next byte)
START = (0, 0x00, 0xFF)
_LEAD = {  # lead byte ranges -> (continuations, range of the first continuation byte)
    range(0xC2, 0xE0): (1, 0x80, 0xBF),
    range(0xE0, 0xE1): (2, 0xA0, 0xBF),
    range(0xE1, 0xED): (2, 0x80, 0xBF),
    range(0xED, 0xEE): (2, 0x80, 0x9F),   # no UTF-16 surrogates
    range(0xEE, 0xF0): (2, 0x80, 0xBF),
    range(0xF0, 0xF1): (3, 0x90, 0xBF),   # no overlong 4-byte forms
    range(0xF1, 0xF4): (3, 0x80, 0xBF),
    range(0xF4, 0xF5): (3, 0x80, 0x8F),   # nothing above U+10FFFF
}


def utf8_next(state: tuple, byte: int) -> tuple:
    """The automaton's state after `byte` (which must be allowed in `state`)."""
    due = state[0]
    if due:
        return (due - 1, 0x80, 0xBF) if due > 1 else START
    if byte < 0x80:
        return START
    for lead, nxt in _LEAD.items():
        if byte in lead:
            return nxt
    raise ValueError(f"byte {byte:#x} cannot start a UTF-8 character")


def utf8_allowed(state: tuple) -> torch.Tensor:
    """(256,) bool: the bytes that may come next."""
    allowed = torch.zeros(256, dtype=torch.bool)
    if state[0]:
        allowed[state[1]:state[2] + 1] = True
    else:
        allowed[:0x80] = True
        allowed[0xC2:0xF5] = True
    return allowed


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """(vocab,) logits -> probabilities after temperature, top-k and nucleus (top-p) filtering. Temperature 0, or
    one so small that logits / temperature leave float64's range, is greedy; top-p 0 keeps the likeliest symbol."""
    greedy = torch.zeros(logits.shape, dtype=torch.float64)
    greedy[int(torch.argmax(logits))] = 1.0
    if temperature <= 0:
        return greedy
    # in float64 where float32 would overflow (a temperature of 1e-45 or 1e300: greedy or uniform, not NaN)
    logits = logits / temperature if 1e-30 < temperature < 1e30 else logits.double() / temperature
    if not torch.isfinite(logits.max()):
        return greedy
    if top_k is not None and 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.double(), dim=-1)
    if top_p is not None and top_p < 1:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < top_p      # the smallest set reaching top_p
        keep[0] = True                                           # ... and never empty
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[order[keep]] = True
        probs = torch.where(mask, probs, torch.zeros_like(probs))
        probs = probs / probs.sum()
    return probs


@torch.no_grad()
def generate(lm: LoadedModel, prime: str = "", length: int = 500, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             device: str | torch.device = "cpu") -> Iterator[bytes]:
    """Yield the continuation of `prime`, `length` characters in all, as UTF-8 chunks of whole characters.
    The same seed gives the same bytes (on the same machine and torch version).
    Raises hmgen.text.data.VocabError if the prime uses symbols the model cannot encode."""
    model, vocab = lm.model, lm.vocab
    model.to(device).eval()
    try:
        ids = vocab.encode(prime)
    except VocabError as e:
        raise VocabError(f"cannot use this prime with model {lm.name!r}: {e}") from None
    if len(ids) == 0:   # no prime: start as if after a line break
        start = "\n" if (vocab.kind == "bytes" or "\n" in vocab.symbols) else vocab.symbols[0]
        ids = vocab.encode(start)
    gen = torch.Generator().manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
    state = model.initial_state(1, device)
    logits, state, _ = model(torch.from_numpy(ids.astype(np.int64))[None].to(device), state)
    logits = logits[0, -1]
    utf8 = START if vocab.kind == "bytes" else None
    pending: list[int] = []
    chars = 0
    while chars < length:
        logits = logits.float().cpu()
        if utf8 is not None:
            logits = logits.masked_fill(~utf8_allowed(utf8), float("-inf"))
        probs = filter_logits(logits, temperature, top_k, top_p)
        symbol = int(torch.multinomial(probs, 1, generator=gen))
        pending.append(symbol)
        if utf8 is not None:
            utf8 = utf8_next(utf8, symbol)
        if utf8 is None or utf8 == START:     # a whole character: emit it
            yield vocab.decode(pending)
            pending.clear()
            chars += 1
        if chars < length or pending:
            logits, state = model.step_logits(torch.tensor([symbol], device=device), state)
            logits = logits[0]
