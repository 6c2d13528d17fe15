"""The cheap, exact parts of a block's coding: reversible transforms and the LZMA2 fallback.

Transforms (the block header's `transform` byte), applied before a block is coded, only when the inverse
restores the block exactly:
  0 none
  1 CRLF: every "\\r\\n" becomes "\\n"; the inverse puts "\\r" before every "\\n". Windows line ends then cost the
    model nothing: it was trained on "\\n" and never saw "\\r".
LZMA: raw LZMA2 (no .xz container: its ~60 bytes of headers and index would be wasted) at xz's preset 9e.
"""
from __future__ import annotations

import lzma

NONE, CRLF = 0, 1
LAST = CRLF
LZMAError = lzma.LZMAError
FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def forward(data: bytes) -> tuple[int, bytes]:
    """(transform, transformed bytes): CRLF when the block has CR LF line ends and no bare LF."""
    lf = data.count(b"\n")
    if lf and data.count(b"\r\n") == lf:           # every LF follows a CR: the inverse is exact
        return CRLF, data.replace(b"\r\n", b"\n")
    return NONE, data


def inverse(transform: int, coded: bytes) -> bytes:
    if transform == CRLF:
        return coded.replace(b"\n", b"\r\n")
    return coded


def lzma_compress(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=FILTERS)


def lzma_decompress(payload: bytes, n: int) -> bytes:
    """Exactly n bytes from a raw LZMA2 payload; anything else is a damaged block."""
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=FILTERS)
    out = d.decompress(payload, max_length=n + 1)
    if len(out) != n or not d.eof or d.unused_data:
        raise LZMAError("LZMA2 payload does not hold the block")
    return out
