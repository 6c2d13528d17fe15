"""Pen offsets -> SVG (one <g> per line with one <path>) and a small PNG rasteriser (numpy + zlib).

Layout: every line is scaled by the same factor (line_height pixels per model line height, so one style keeps
one size), levelled (rotated so that the least-squares line through its points is horizontal, as the training
lines were: one straight baseline per line), vertically centred in its band (the median height of its points),
left-aligned at the margin. A blank line keeps its band.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from hmgen.handwriting.data import level_rotation, smooth_stroke, to_strokes
from hmgen.errors import HmgenError
from hmgen.handwriting.defaults import LINE_HEIGHT, MARGIN, STROKE_WIDTH

MAX_PNG_PIXELS = 1 << 26        # 67M pixels (268M drawn, supersampled): a page of lines 1,000 px high


def layout(lines_offsets: list[np.ndarray], units_per_line: float, line_height: float = LINE_HEIGHT,
           margin: float = MARGIN, smooth: bool = True):
    """-> (width, height, [[stroke (k, 2) in SVG pixels, y down] per line])."""
    scale = 0.75 * line_height / max(units_per_line, 1e-6)
    placed, width = [], 0.0
    for i, off in enumerate(lines_offsets):
        strokes = to_strokes(off) if len(off) else []
        if smooth:
            strokes = [smooth_stroke(s) for s in strokes]
        if not strokes:
            placed.append([])
            continue
        rot = level_rotation(np.concatenate(strokes))
        strokes = [s @ rot.T for s in strokes]
        allp = np.concatenate(strokes)
        x0, ymid = allp[:, 0].min(), np.median(allp[:, 1])
        band = margin + (i + 0.5) * line_height
        line = [np.stack([margin + (s[:, 0] - x0) * scale, band - (s[:, 1] - ymid) * scale], 1) for s in strokes]
        width = max(width, max(float(s[:, 0].max()) for s in line) - margin)
        placed.append(line)
    W = 2 * margin + max(width, line_height)
    H = 2 * margin + line_height * max(len(lines_offsets), 1)
    return W, H, placed


def path_d(strokes: list[np.ndarray]) -> str:
    parts = []
    for s in strokes:
        pts = s if len(s) > 1 else np.concatenate([s, s + [0.01, 0]])   # a dot: a tiny segment
        parts.append("M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in pts))
    return " ".join(parts)


def to_svg(lines_offsets: list[np.ndarray], units_per_line: float, line_height: float = LINE_HEIGHT,
           margin: float = MARGIN, color: str = "black", stroke_width: float = STROKE_WIDTH, background: str | None = "white",
           title: str | None = None, smooth: bool = True) -> str:
    """The SVG text, written directly (a handful of elements: a library would only add import time)."""
    from xml.sax.saxutils import escape, quoteattr
    W, H, placed = layout(lines_offsets, units_per_line, line_height, margin, smooth)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{W:.0f}" height="{H:.0f}" '
           f'viewBox="0 0 {W:.0f} {H:.0f}">']
    if title:
        out.append(f"<title>{escape(title)}</title>")
    if background and background != "none":
        out.append(f'<rect x="0" y="0" width="100%" height="100%" fill={quoteattr(background)} />')
    for i, strokes in enumerate(placed, 1):
        path = (f'<path d="{path_d(strokes)}" fill="none" stroke={quoteattr(color)} stroke-width="{stroke_width:g}" '
                'stroke-linecap="round" stroke-linejoin="round" />') if strokes else ""
        out.append(f'<g id="line-{i}" class="line">{path}</g>')
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------- PNG (no extra dependency)

def _png(gray: np.ndarray) -> bytes:
    h, w = gray.shape
    raw = b"".join(b"\x00" + gray[r].tobytes() for r in range(h))
    chunk = lambda tag, data: struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def to_png(lines_offsets: list[np.ndarray], units_per_line: float, line_height: float = LINE_HEIGHT,
           margin: float = MARGIN, stroke_width: float = STROKE_WIDTH, smooth: bool = True, supersample: int = 2) -> bytes:
    """Grey-scale PNG of the same layout as to_svg (black ink on white), antialiased by supersampling."""
    W, H, placed = layout(lines_offsets, units_per_line, line_height, margin, smooth)
    if stroke_width > min(W, H):
        raise HmgenError(f"a {stroke_width:g}-pixel pen is wider than the PNG it would draw ({W:,.0f} x {H:,.0f} "
                         f"pixels): lower --stroke-width, or raise --line-height")
    if W * H > MAX_PNG_PIXELS:
        raise HmgenError(f"a PNG of {W:,.0f} x {H:,.0f} pixels is too large to draw (at most {MAX_PNG_PIXELS:,} "
                         f"pixels): lower --line-height or --margin")
    k = supersample
    w, h = int(np.ceil(W)) * k, int(np.ceil(H)) * k
    ink = np.zeros((h, w), bool)
    r = max(stroke_width * k / 2, 0.5)
    dy, dx = np.mgrid[-int(np.ceil(r)):int(np.ceil(r)) + 1, -int(np.ceil(r)):int(np.ceil(r)) + 1]
    disc = np.stack([dy[dx ** 2 + dy ** 2 <= r * r], dx[dx ** 2 + dy ** 2 <= r * r]], 1)
    for line in placed:
        for s in line:
            p = s * k
            seg = [p[:1]]
            for a_, b_ in zip(p[:-1], p[1:]):
                n = max(int(np.ceil(np.hypot(*(b_ - a_)) / max(r / 2, 0.5))), 1)
                seg.append(a_ + (b_ - a_) * (np.arange(1, n + 1)[:, None] / n))
            pts = np.round(np.concatenate(seg)).astype(int)             # (n, 2) x, y
            yy = (pts[:, None, 1] + disc[None, :, 0]).ravel()
            xx = (pts[:, None, 0] + disc[None, :, 1]).ravel()
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            ink[yy[ok], xx[ok]] = True
    cov = ink.reshape(h // k, k, w // k, k).mean((1, 3))
    return _png((255 * (1 - cov)).round().astype(np.uint8))
