"""`hmgen eval iam:DIR`: a handwriting model's NLL on a split of IAM-OnDB, with each layer's UPDATE / COPY / FLUSH
rates, as `hmgen eval` gives BPC for a text model.

Every line of the split is preprocessed with the model's own stored settings (stride, alignment, glitch split,
clipping; hmgen.handwriting.data) and normalised with its stored training statistics, then scored from the
model's initial state, whole (hmgen.handwriting.train.evaluate_lines). A conditional model skips the lines with a
character it never saw (it cannot score them); the count is reported. NLL in nats per line and per point of the
normalised offsets plus the end-of-stroke bits: comparable only between models with the same preprocessing and
statistics (all of hmgen's IAM-OnDB models share them).
"""
from __future__ import annotations

import json
import time

from hmgen.errors import HmgenError, UsageError
from hmgen.handwriting.data import load_iam, prepare_lines, select
from hmgen.handwriting.model import HandwritingModel, load_hw_model


def evaluate_iam(model: HandwritingModel, data: str, split: str = "test", max_points: int | None = None,
                 device="cpu", progress=None) -> dict:
    """NLL (nats per line and per point) and per-layer operation rates of `model` on a split of IAM-OnDB.
    data: "iam:DIR", a DIR, or an .npz (hmgen.handwriting.data.load_iam); max_points: the first lines of the split
    up to this many points."""
    from hmgen.handwriting.train import evaluate_lines

    path = data[4:] if data.startswith("iam:") else data
    raw = select(load_iam(path), split)
    if not raw:
        raise HmgenError(f"{data}: no lines in the {split} split")
    c = model.cfg
    lines = prepare_lines(raw, c)
    skipped = 0
    if c.conditional:
        known = set(c.alphabet)
        kept = [p for p in lines if set(p.text) <= known]
        skipped, lines = len(lines) - len(kept), kept
    if not lines:
        raise HmgenError(f"{data}: no line of the {split} split that model {model.name!r} can score")
    t0 = time.time()
    r = evaluate_lines(model.net, lines, max_points, device=device, progress=progress)
    return {"model": model.name, "data": data, "split": split, "arch": c.arch, "hidden": c.hidden,
            "conditional": c.conditional, "lines": r["lines"], "skipped_lines": skipped, "points": r["points"],
            "nll_line": round(r["nll_line"], 4), "nll_point": round(r["nll_point"], 5), "layers": r["layers"],
            "points_per_s": r["points_per_s"], "seconds": round(time.time() - t0, 1)}


def eval_command(data: str, split: str | None, model: str | None, max_symbols: int | None, streams: int | None,
                 device: str, as_json: bool, quiet: bool) -> None:
    """What `hmgen eval iam:DIR` prints: one JSON object (--json) or a few lines."""
    import typer

    from hmgen.device import pick_device
    from hmgen.progress import Bar

    if streams is not None:
        raise UsageError("--streams applies to text models; a handwriting model scores every line whole")
    hm = load_hw_model(model, str(pick_device(device)))
    with Bar("eval", quiet) as bar:
        r = evaluate_iam(hm, data, split or "test", max_symbols, hm.net.head.weight.device,
                         progress=lambda done, total: bar.update(done, total))
    if as_json:
        typer.echo(json.dumps(r))
        return
    typer.echo(f"{r['model']} on {data} ({r['split']}): {r['nll_line']:.2f} nats per line, {r['nll_point']:.4f} per "
               f"point over {r['lines']:,} lines ({r['points']:,} points"
               + (f"; {r['skipped_lines']} lines with characters the model never saw skipped)" if r['skipped_lines']
                  else ")"))
    for l, layer in enumerate(r["layers"], 1):
        typer.echo(f"  layer {l}: update {layer['update']:.3f}  copy {layer['copy']:.3f}  flush {layer['flush']:.3f}")
