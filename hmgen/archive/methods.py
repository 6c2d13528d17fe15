"""The cheap, exact parts of a block's coding: reversible transforms and the LZMA2 fallback.

Transforms (the block header's `transform` byte), applied before a block is coded, only when the inverse
restores the block exactly:
  0 none
  1 CRLF: every "\\r\\n" becomes "\\n"; the inverse puts "\\r" before every "\\n". Windows line ends then cost the
    model nothing: it was trained on "\\n" and never saw "\\r".
LZMA: raw LZMA2 (no .xz container: its ~60 bytes of headers and index would be wasted) at xz's preset 9e; for
blocks that look like x86 machine code, also xz's x86 branch filter (BCJ) before LZMA2 (`xz --x86`): calls and
jumps become absolute addresses, which repeat (smaller than `xz -9e` on a program: benchmarks/RESULTS.md).
"""
from __future__ import annotations

import lzma

NONE, CRLF = 0, 1
LAST = CRLF
LZMAError = lzma.LZMAError
BEST = 9 | lzma.PRESET_EXTREME
FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": BEST}]
X86_FILTERS = [{"id": lzma.FILTER_X86}] + FILTERS


def filters(x86: bool = False, preset: int = BEST) -> list[dict]:
    """The LZMA2 chain at a preset (the decoder takes BEST's: its dictionary holds any smaller one's)."""
    return ([{"id": lzma.FILTER_X86}] if x86 else []) + [{"id": lzma.FILTER_LZMA2, "preset": preset}]


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


def lzma_compress(data: bytes, x86: bool = False, preset: int = BEST) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters(x86, preset))


def looks_like_x86(data: bytes) -> bool:
    """Worth trying the x86 filter: E8 (call) bytes at over 0.5 % of the block, as in machine code; text has
    almost none. (Only a cost question: the encoder keeps whichever payload is smallest.)"""
    return data.count(b"\xe8") * 200 > len(data)


def lzma_decompress(payload: bytes, n: int, x86: bool = False) -> bytes:
    """Exactly n bytes from a raw LZMA2 payload; anything else is a damaged block."""
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=X86_FILTERS if x86 else FILTERS)
    out = d.decompress(payload, max_length=n + 1)
    if len(out) != n or not d.eof or d.unused_data:
        raise LZMAError("LZMA2 payload does not hold the block")
    return out
