"""Styles: simple measurements of a hand, and the choice of a style bank from real lines.

A style is a real line (its pen offsets and its transcription) that `hmgen handwrite --style N` runs the network
over before it writes the new text (Graves 2013 §5.5, priming). The features below say how a hand looks, on the
offsets [dx, dy-up, eos] of one line in whiteboard units (the same for a primer and for what the model wrote):

  slant         mean angle of the down-strokes from the vertical, degrees, positive leaning right (/): every
                pen-down step that goes down by more than it goes sideways, weighted by its length
  width_per_char  the line's inked width / its characters (spaces included), whiteboard units
  letter_height   the 10-90 % range of the heights of the pen-down points, after levelling the line
  pen_up_share    the share of points that end a stroke (a hand that lifts the pen often: print-like)
"""
from __future__ import annotations

import numpy as np

from hmgen.handwriting.data import level_rotation, to_strokes

FEATURES = ("slant", "width_per_char", "letter_height", "pen_up_share")


def features(offsets: np.ndarray, text: str) -> dict[str, float]:
    """The FEATURES of one line: offsets (N, 3) [dx, dy-up, eos], whiteboard units; text its characters."""
    strokes = to_strokes(offsets)
    if not strokes or len(offsets) < 2:
        return {k: float("nan") for k in FEATURES}
    rot = level_rotation(np.concatenate(strokes))
    strokes = [s @ rot.T for s in strokes]
    ink = np.concatenate(strokes)                                         # (n, 2) pen-down points
    steps = np.concatenate([np.diff(s, axis=0) for s in strokes if len(s) > 1] or [np.zeros((0, 2))])
    down = steps[(steps[:, 1] < 0) & (-steps[:, 1] > np.abs(steps[:, 0]))]   # going down, steeper than 45 degrees
    length = np.hypot(down[:, 0], down[:, 1])
    # a down-stroke leaning right (/) goes down and to the left: dx < 0 while dy < 0
    angle = np.degrees(np.arctan2(-down[:, 0], -down[:, 1]))
    slant = float(np.sum(angle * length) / length.sum()) if length.sum() > 0 else float("nan")
    lo, hi = np.percentile(ink[:, 1], [10, 90])
    return {"slant": slant, "width_per_char": float(np.ptp(ink[:, 0]) / max(len(text), 1)),
            "letter_height": float(hi - lo), "pen_up_share": float(np.mean(offsets[:, 2] > 0.5))}
