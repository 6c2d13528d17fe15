"""A binary arithmetic coder inside the compiled loop (methods 8 and 9): each bit is coded where it is predicted,
so the predictor learns from a lane's bit before it predicts the next one, and a block's bits cost no call
into Python (constriction, which codes methods 2-4, is called from Python per batch of symbols).

Carry-less range coding of one bit at a time (hmgen's own code of the textbook scheme): the interval [low, high]
of 32-bit integers is split at mid = low + (high - low) * p1 / 4096, the 1 taking [low, mid] and the 0
[mid + 1, high]; whenever low and high agree in their top byte, that byte is final and is written. P(1) is a
12-bit integer in [1, 4095], so mid < high and both parts are never empty: any bit sequence decodes exactly.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hmgen.jit import njit

TOP = 0xFFFFFFFF


class Coder(NamedTuple):
    buf: np.ndarray              # (capacity,) uint8: the payload written (encoding) or read (decoding)
    regs: np.ndarray             # (4,) int64: low, high, position in buf, the code word read (decoding)


def encoder(n: int) -> Coder:
    """An encoder for about n input bytes (its buffer grows when needed: grown())."""
    return Coder(np.zeros(max(64, n + n // 8 + 64), np.uint8), np.array([0, TOP, 0, 0], np.int64))


def decoder(payload: bytes) -> Coder:
    """A decoder reading payload; past its end it reads zeros (a damaged payload decodes to bytes whose CRC
    the block check rejects)."""
    buf = np.zeros(len(payload) + 8, np.uint8)
    buf[:len(payload)] = np.frombuffer(payload, np.uint8)
    regs = np.array([0, TOP, 4, 0], np.int64)
    regs[3] = (int(buf[0]) << 24) | (int(buf[1]) << 16) | (int(buf[2]) << 8) | int(buf[3])
    return Coder(buf, regs)


@njit(cache=True, nogil=True, inline="always")
def encode(c, p1, y):
    """Code bit y with P(1) = p1 / 4096. The caller keeps at least 4 free bytes in c.buf (room())."""
    regs, buf = c.regs, c.buf
    low, high = regs[0], regs[1]
    mid = low + (((high - low) * p1) >> 12)
    if y:
        high = mid
    else:
        low = mid + 1
    pos = regs[2]
    while ((low ^ high) >> 24) == 0:
        buf[pos] = np.uint8(high >> 24)
        pos += 1
        low = (low << 8) & TOP
        high = ((high << 8) & TOP) | 255
    regs[0], regs[1], regs[2] = low, high, pos


@njit(cache=True, nogil=True, inline="always")
def decode(c, p1):
    """The bit coded with P(1) = p1 / 4096."""
    regs, buf = c.regs, c.buf
    low, high, x = regs[0], regs[1], regs[3]
    mid = low + (((high - low) * p1) >> 12)
    y = 1 if x <= mid else 0
    if y:
        high = mid
    else:
        low = mid + 1
    pos = regs[2]
    last = buf.shape[0] - 1
    while ((low ^ high) >> 24) == 0:
        low = (low << 8) & TOP
        high = ((high << 8) & TOP) | 255
        x = ((x << 8) & TOP) | np.int64(buf[min(pos, last)])
        pos += 1
    regs[0], regs[1], regs[2], regs[3] = low, high, pos, x
    return y


@njit(cache=True, nogil=True)
def room(c, need):
    """Whether the encoder's buffer has `need` more bytes free (else the caller grows it: grown())."""
    return c.regs[2] + need <= c.buf.shape[0]


def grown(c: Coder) -> Coder:
    """The same encoder with twice the buffer."""
    buf = np.zeros(2 * c.buf.shape[0], np.uint8)
    buf[:c.buf.shape[0]] = c.buf
    return Coder(buf, c.regs)


@njit(cache=True, nogil=True)
def finish(c):
    """Write the last bytes: enough of low that any continuation decodes to the same bits. -> bytes written."""
    regs, buf = c.regs, c.buf
    low, pos = regs[0], regs[2]
    for k in range(4):
        buf[pos] = np.uint8((low >> (24 - 8 * k)) & 255)
        pos += 1
    regs[2] = pos
    return pos
