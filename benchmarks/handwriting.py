"""Handwriting benchmark: NLL per line on the IAM-OnDB test split (testset_f), synthesis completion,
legibility (an OCR engine reads the output), speed.

  python benchmarks/handwriting.py --data ../shared/data/handwriting/iamondb \\
      --nll runs/hw-bench/conditional-hmlstm/best runs/hw-bench/conditional-lstm/best ... \\
      --complete handwriting-small --time handwriting-small --test-lines 300 --json benchmarks/results/handwriting.json
  nice -n 10 python benchmarks/handwriting.py --data ../shared/data/handwriting/iamondb \\
      --legibility handwriting-small --biases 0 0.75 2 4 --seeds 3 --stroke-widths 2 3 --line-heights 60 100
  python benchmarks/handwriting.py --styles handwriting-small-2 --seeds 2 --first-seed 10 --json FILE
  python benchmarks/handwriting.py --sheet examples/handwriting-styles.png

NLL: every model is scored by the same harness (hmgen.handwriting.train.evaluate_lines) on the same test lines,
each line preprocessed with the model's own stored settings (all models here share them: stride 2, alignment,
clipping) and normalised with its stored training statistics; nats per line and per point (normalised
offsets), comparable only between models with identical preprocessing and statistics.
Completion: the share of 50 random test transcriptions whose synthesis stops because the window passed the
last character (not by the hard cap of max_steps_per_char points per character), after redrawing stalled
lines as `hmgen handwrite` does (first_try: without a redraw); coverage = the share of a
line's characters on which the window's maximum sat at some step (1.0: no character skipped).
Legibility (needs `tesseract` 5 and `rsvg-convert`: apt-get install tesseract-ocr librsvg2-bin): every phrase
of benchmarks/handwriting_phrases.txt (50 public-domain pangrams and proverbs, none an IAM-OnDB transcription) is
written --seeds times per bias, as one line; each line is laid out by hmgen's own SVG writer with the stroke
width and line height under test, rendered 120 px high by rsvg-convert and read by Tesseract (`--psm 7`: one
text line, English model). Real IAM-OnDB test lines (testset_f, --real-lines random ones, never trained on)
are preprocessed as the model's training data was and drawn the same way: the reference a perfect model would
reach. Scores over all lines of a row: CER = character edit distance / reference characters (case-sensitive,
after collapsing white space and the IAM transcripts' spaces before punctuation), word accuracy = reference
words in the longest common word subsequence / reference words. Completed = the window passed the last
character (see Completion).
Styles (--styles MODEL): for every style of the model's bank (or --style-ids lines), the features of its primer
and the mean features of the phrases written in it as `hmgen handwrite --style N` writes them (hmgen.handwriting.
styles: slant, width per character, letter height, pen-up share), Tesseract's CER of those phrases and of the same
phrases without a style (same seeds), their ratio, and per feature the correlation across styles between primer
and output. --choose-styles MODEL picks a bank from real test lines (see choose_styles; it reads only the first
half of the phrases, so the second half stays held out); --sheet FILE draws every style's primer and a text
written in it (--sheet-model, default: the default handwriting model; needs no data).
Time: wall-clock of the real command `hmgen handwrite "hello" -o FILE` (interpreter start-up, model load,
synthesis, SVG), median of --repeat runs.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hmgen.handwriting.data import load_iam, prepare_lines, select, to_strokes
from hmgen.handwriting.defaults import BIAS, LINE_HEIGHT, MARGIN, STROKE_WIDTH
from hmgen.handwriting.model import denormalise, normalise
from hmgen.handwriting.render import to_png, to_svg
from hmgen.handwriting.sample import PIECE, space_words, synthesize, write_lines
from hmgen.handwriting.styles import FEATURES, features
from hmgen.modelio import load_hw_model
from hmgen.handwriting.train import evaluate_lines


def test_lines(data: str, n: int | None, seed: int = 0):
    raw = select(load_iam(data), "test")
    if n is not None and n < len(raw):
        idx = np.sort(np.random.default_rng(seed).choice(len(raw), n, replace=False))
        raw = [raw[i] for i in idx]
    return raw


def nll(model_path: str, raw) -> dict:
    m = load_hw_model(model_path)
    c = m.cfg
    lines = prepare_lines(raw, c)
    if c.conditional:   # a line with a character the model never saw cannot be scored by a conditional model
        lines = [p for p in lines if set(p.text) <= set(c.alphabet)]
    t0 = time.time()
    r = evaluate_lines(m.net, lines)
    return {"model": model_path, "arch": c.arch, "hidden": c.hidden, "conditional": c.conditional,
            "parameters": m.meta.get("parameters"), "train_steps": m.meta.get("figures", {}).get("step"),
            "train_seconds": m.meta.get("figures", {}).get("train_seconds"),
            "nll_line": round(r["nll_line"], 2), "nll_point": round(r["nll_point"], 4), "lines": r["lines"],
            "points": r["points"], "z_rates": r["z_rates"], "seconds": round(time.time() - t0, 1)}


def completion(model_path: str, raw, n: int = 50, bias: float = BIAS, seed: int = 0, cap: int = 25) -> dict:
    m = load_hw_model(model_path)
    alpha = set(m.cfg.alphabet)
    texts = [ln.text for ln in raw if set(ln.text) <= alpha]
    rng = np.random.default_rng(seed)
    texts = [texts[i] for i in rng.choice(len(texts), n, replace=False)]
    t0 = time.time()
    out = []
    for i in range(0, n, 10):                 # batches of 10 lines
        out += synthesize(m, texts[i:i + 10], bias=bias, seed=seed + i, max_steps_per_char=cap)
    done = [ln.stop == "end of text" for ln in out]
    return {"model": model_path, "texts": n, "completed": int(sum(done)), "share": round(sum(done) / n, 3),
            "first_try": int(sum(ln.tries == 1 and ok for ln, ok in zip(out, done))),
            "bias": bias, "max_steps_per_char": cap,
            "points_per_char": round(float(np.mean([ln.steps / len(ln.text) for ln in out])), 2),
            "mean_coverage": round(float(np.mean([ln.coverage for ln in out])), 4),
            "full_coverage_share": round(float(np.mean([ln.coverage == 1.0 for ln in out])), 3),
            "seconds": round(time.time() - t0, 1),
            "failed": [ln.text for ln, ok in zip(out, done) if not ok][:10]}


PHRASES = Path(__file__).with_name("handwriting_phrases.txt")


def clean_text(s: str) -> str:
    """Collapse white space; drop the IAM transcripts' spaces before punctuation ("Mr . X" -> "Mr. X")."""
    s = " ".join(s.split())
    s = re.sub(r" ([.,;:!?])", r"\1", s)
    return re.sub(r" ' ?s\b", "'s", s)


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences (characters or words)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def common_words(ref: list[str], hyp: list[str]) -> int:
    """Length of the longest common subsequence of two word lists."""
    row = [0] * (len(hyp) + 1)
    for r in ref:
        prev = 0
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], prev + 1 if r == h else max(row[j], row[j - 1])
    return row[-1]


def scores(refs: list[str], hyps: list[str]) -> dict:
    refs, hyps = [clean_text(r) for r in refs], [clean_text(h) for h in hyps]
    chars = sum(len(r) for r in refs)
    words = sum(len(r.split()) for r in refs)
    return {"cer": round(sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / chars, 4),
            "word_acc": round(sum(common_words(r.split(), h.split()) for r, h in zip(refs, hyps)) / words, 4),
            "lines": len(refs)}


class Reader:
    """SVG -> PNG `height` px high (rsvg-convert) -> Tesseract's reading of it as one line (--psm 7)."""

    def __init__(self, workdir: Path, height: int = 120, keep: Path | None = None):
        for tool in ("rsvg-convert", "tesseract"):
            if shutil.which(tool) is None:
                raise SystemExit(f"legibility needs {tool}: apt-get install tesseract-ocr librsvg2-bin")
        self.dir, self.height, self.keep, self.n = workdir, height, keep, 0
        self.env = {**os.environ, "OMP_THREAD_LIMIT": "1"}      # one core: the benchmark runs niced beside others

    def read(self, svgs: list[str], tag: str = "") -> list[str]:
        pngs = []
        for svg in svgs:
            self.n += 1
            src, png = self.dir / f"{self.n}.svg", self.dir / f"{self.n}.png"
            src.write_text(svg)
            subprocess.run(["rsvg-convert", "-h", str(self.height), "-o", str(png), str(src)], check=True)
            pngs.append(png)
        listing = self.dir / "list.txt"
        listing.write_text("".join(f"{p}\n" for p in pngs))
        r = subprocess.run(["tesseract", str(listing), "stdout", "--psm", "7", "-l", "eng"], capture_output=True,
                           text=True, env=self.env)
        pages = r.stdout.split("\f")          # Tesseract ends every page but the last with a form feed
        if r.returncode or len(pages) != len(pngs):
            raise SystemExit(f"tesseract: {r.returncode}, {len(pages)} pages for {len(pngs)} images: {r.stderr[-300:]}")
        if self.keep is not None:              # the first few PNGs of every row, to look at
            self.keep.mkdir(parents=True, exist_ok=True)
            for i, p in enumerate(pngs[:4]):
                shutil.copy(p, self.keep / f"{tag}-{i}.png")
        return [t.strip() for t in pages]


def legibility(models: list[str], data: str, biases: list[float], seeds: int, stroke_widths: list[float],
               line_heights: list[float], spacings: list[str], real_lines: int, phrases: list[str],
               height: int = 120, margin: float = MARGIN, keep: Path | None = None, first_seed: int = 0) -> list[dict]:
    """Rows: (model, bias or "real IAM", line height, stroke width, word spacing) -> CER, word accuracy,
    completed share. Spacing "training": words moved into the training data's gap range (what
    `hmgen handwrite` draws); "model": as the network wrote them."""
    rows = []
    with tempfile.TemporaryDirectory() as d:
        reader = Reader(Path(d), height, keep)
        for mp in models:
            m = load_hw_model(mp)
            c = m.cfg

            def read(texts, offsets, tag, **row):
                for lh, sw in itertools.product(line_heights, stroke_widths):
                    t0 = time.time()
                    svgs = [to_svg([o], c.line_height, lh, margin, stroke_width=sw) for o in offsets]
                    hyps = reader.read(svgs, f"{Path(mp).name}-{tag}-lh{lh:g}-sw{sw:g}")
                    r = {"model": mp, **row, "line_height": lh, "stroke_width": sw, **scores(texts, hyps),
                         "ocr_seconds": round(time.time() - t0, 1), "examples": list(zip(texts, hyps))[:3]}
                    rows.append(r)
                    print(json.dumps(r), flush=True)

            if real_lines:
                raw = [ln for ln in select(load_iam(data), "test") if set(ln.text) <= set(c.alphabet) and "#" not in ln.text]
                pick = np.random.default_rng(0).choice(len(raw), min(real_lines, len(raw)), replace=False)
                read([raw[i].text for i in pick],
                     [c.offsets(raw[i].points) for i in pick],
                     "real", bias="real IAM", spacing="as written", completed=None, first_try=None)
            for bias in biases:
                t0 = time.time()
                written = [ln for seed in range(first_seed, first_seed + seeds) for ln in synthesize(m, phrases, bias=bias, seed=seed)]
                stats = {"completed": round(float(np.mean([ln.stop == "end of text" for ln in written])), 3),
                         "first_try": round(float(np.mean([ln.tries == 1 for ln in written])), 3),
                         "synth_seconds": round(time.time() - t0, 1)}
                for spacing in spacings:
                    offsets = [space_words(ln, c.line_height) if spacing == "training" else ln.offsets for ln in written]
                    read([ln.text for ln in written], offsets, f"b{bias:g}-{spacing}", bias=bias, spacing=spacing, **stats)
    return rows


# ----------------------------------------------------------------------------- styles

def style_lines(model, data: str | None, ids: list[str] | None = None) -> list[dict]:
    """The styles to measure: the model's own bank, or IAM-OnDB lines by id (preprocessed as the model's data):
    [{"line_id", "text", "offsets": (N, 3) whiteboard units, "writer"}]."""
    c = model.cfg
    if not ids:
        return [{"line_id": s.get("line_id", f"style {i}"), "text": s["text"], "writer": s.get("writer", -1),
                 "offsets": denormalise(np.asarray(s["offsets"], np.float32), c)} for i, s in enumerate(model.styles)]
    by_id = {ln.line_id: ln for ln in load_iam(data)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise SystemExit(f"no such lines in {data}: {missing[:5]}")
    return [{"line_id": i, "text": by_id[i].text, "writer": by_id[i].writer,
             "offsets": c.offsets(by_id[i].points)} for i in ids]


def mean_features(lines) -> dict:
    f = [features(ln.offsets, ln.text) for ln in lines]
    return {k: round(float(np.nanmean([x[k] for x in f])), 4) for k in FEATURES}


def write_styled(m, phrases: list[str], seeds: range, bias: float, style: dict | None, piece: int | None = PIECE):
    """Every phrase once per seed, as `hmgen handwrite` writes one line (hmgen.handwriting.sample.write_lines:
    word gaps as drawn, with a style in primed pieces of `piece` characters), in the style given (a primer)."""
    bank = m.styles
    m.styles = [] if style is None else [{"text": style["text"], "offsets": normalise(style["offsets"], m.cfg)}]
    try:
        return [ln for seed in seeds for ln in write_lines(m, phrases, bias=bias, seed=seed,
                                                           style=None if style is None else 0, piece=piece)]
    finally:
        m.styles = bank


def correlation(a: list[float], b: list[float]) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return None
    return round(float(np.corrcoef(a[ok], b[ok])[0, 1]), 3)


def style_benchmark(model_path: str, data: str, phrases: list[str], seeds: range, bias: float,
                    ids: list[str] | None = None, keep: Path | None = None, piece: int | None = PIECE) -> dict:
    """Per style: its primer's features and Tesseract's reading of the primer, the mean features of the phrases
    written in it, their CER and word accuracy, and CER / the same phrases' CER without a style; across styles,
    per feature, the correlation between primer and output."""
    m = load_hw_model(model_path)
    c = m.cfg
    styles = style_lines(m, data, ids)
    texts = [p for _ in seeds for p in phrases]
    svg = lambda offsets: [to_svg([o], c.line_height) for o in offsets]
    with tempfile.TemporaryDirectory() as d:
        reader = Reader(Path(d), keep=keep)
        t0 = time.time()
        plain = write_styled(m, phrases, seeds, bias, None)
        base = {**scores(texts, reader.read(svg([ln.offsets for ln in plain]), "no-style")),
                "features": mean_features(plain), "seconds": round(time.time() - t0, 1)}
        print(json.dumps({"no_style": base}), flush=True)
        rows = []
        for i, st in enumerate(styles):
            t0 = time.time()
            primer = scores([st["text"]], reader.read(svg([st["offsets"]]), f"primer{i}"))
            written = write_styled(m, phrases, seeds, bias, st, piece)
            r = scores(texts, reader.read(svg([ln.offsets for ln in written]), f"style{i}"))
            row = {"style": i, "line_id": st["line_id"], "text": st["text"], "writer": st["writer"],
                   "primer_cer": primer["cer"], "primer": features(st["offsets"], st["text"]),
                   "output": mean_features(written), "cer": r["cer"], "word_acc": r["word_acc"],
                   "cer_ratio": round(r["cer"] / max(base["cer"], 1e-9), 3),
                   "completed": round(float(np.mean([ln.stop == "end of text" for ln in written])), 3),
                   "primer_lag": round(float(np.mean([ln.primer_lag for ln in written])), 2),
                   "seconds": round(time.time() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    corr = {k: correlation([r["primer"][k] for r in rows], [r["output"][k] for r in rows]) for k in FEATURES}
    return {"model": model_path, "bias": bias, "piece": piece, "seeds": [seeds.start, seeds.stop - 1], "phrases": len(phrases),
            "no_style": base, "styles": rows, "correlation": corr,
            "worst_cer_ratio": max(r["cer_ratio"] for r in rows), "mean_cer_ratio":
            round(float(np.mean([r["cer_ratio"] for r in rows])), 3)}


def choose_styles(model_path: str, data: str, phrases: list[str], seed: int, bias: float, n: int = 12,
                  candidates: int = 40, chars: tuple[int, int] = (14, 30), max_points: int = 350,
                  primer_cer: float = 0.25, piece: int | None = PIECE, max_ratio: float = 1.0) -> dict:
    """A style bank from real test lines (testset_f: writers never trained on): one line per writer, 14-30
    characters, that Tesseract reads with CER <= primer_cer; of `candidates` of them (random), those whose
    phrases (written once each, seed `seed`) read at most max_ratio x as badly as without a style; of these, n
    spread over slant and width per character (pick_styles)."""
    m = load_hw_model(model_path)
    c = m.cfg
    rng = np.random.default_rng(0)
    raw = [ln for ln in select(load_iam(data), "test") if chars[0] <= len(ln.text) <= chars[1] and "#" not in ln.text
           and set(ln.text) <= set(c.alphabet) and ln.writer >= 0]
    rng.shuffle(raw)
    per_writer = {}
    for ln in raw:
        off = c.offsets(ln.points)
        if ln.writer not in per_writer and 2 <= len(off) <= max_points:
            per_writer[ln.writer] = {"line_id": ln.line_id, "text": ln.text, "writer": ln.writer, "offsets": off}
    pool = list(per_writer.values())
    svg = lambda offsets: [to_svg([o], c.line_height) for o in offsets]
    texts = list(phrases)
    with tempfile.TemporaryDirectory() as d:
        reader = Reader(Path(d))
        read = reader.read(svg([st["offsets"] for st in pool]))
        for st, hyp in zip(pool, read):
            st["primer_cer"] = scores([st["text"]], [hyp])["cer"]
        legible = [st for st in pool if st["primer_cer"] <= primer_cer][:candidates]
        base = scores(texts, reader.read(svg([ln.offsets for ln in write_styled(m, phrases, range(seed, seed + 1),
                                                                               bias, None)])))["cer"]
        for st in legible:
            st["cer"] = scores(texts, reader.read(svg([ln.offsets for ln in write_styled(
                m, phrases, range(seed, seed + 1), bias, st, piece)])))["cer"]
            st["cer_ratio"] = round(st["cer"] / max(base, 1e-9), 3)
            st["features"] = features(st["offsets"], st["text"])
            print(json.dumps({k: v for k, v in st.items() if k != "offsets"}), flush=True)
    keep = lambda st: {k: v for k, v in st.items() if k != "offsets"}
    good, chosen = pick_styles(legible, n, max_ratio)
    return {"model": model_path, "bias": bias, "piece": piece, "seed": seed, "phrases": len(phrases), "no_style_cer": base,
            "pool": len(pool), "legible": len(legible), "max_cer_ratio": max_ratio, "good": good,
            "chosen": chosen, "candidates": [keep(st) for st in legible]}


def pick_styles(candidates: list[dict], n: int, max_ratio: float) -> tuple[int, list[str]]:
    """Of the candidates whose phrases read at most max_ratio x as badly as without a style, n spread over slant
    and width per character: farthest points in standardised features, from the best-read one.
    -> (how many qualified, the chosen line ids)."""
    good = sorted([st for st in candidates if st["cer_ratio"] <= max_ratio], key=lambda st: st["cer"])
    if not good:
        return 0, []
    f = np.array([[st["features"]["slant"], st["features"]["width_per_char"]] for st in good])
    f = (f - f.mean(0)) / np.maximum(f.std(0), 1e-9)
    chosen = [0]
    while len(chosen) < min(n, len(good)):
        dist = np.min(np.linalg.norm(f[:, None] - f[chosen][None], axis=-1), axis=1)
        chosen.append(int(np.argmax(dist)))
    return len(good), [good[i]["line_id"] for i in chosen]


def style_table(res: dict) -> str:
    out = [f"model {res['model']}, bias {res['bias']}, {res['phrases']} phrases x seeds {res['seeds']}; without a "
           f"style: CER {res['no_style']['cer']:.3f}, word acc. {res['no_style']['word_acc']:.3f}",
           "| style | primer (line) | primer CER | slant primer / output | width/char | letter height | pen-up share "
           "| CER | / no style | word acc. |", "|---:|---|---:|---|---|---|---|---:|---:|---:|"]
    for r in res["styles"]:
        f = lambda k, d: f"{r['primer'][k]:.{d}f} / {r['output'][k]:.{d}f}"
        out.append(f"| {r['style']} | {r['text']} ({r['line_id']}) | {r['primer_cer']:.2f} | {f('slant', 1)} | "
                   f"{f('width_per_char', 0)} | {f('letter_height', 0)} | {f('pen_up_share', 3)} | {r['cer']:.3f} | "
                   f"{r['cer_ratio']:.2f} | {r['word_acc']:.3f} |")
    cr = res["correlation"]
    out.append(f"| r | primer vs output across styles | | {cr['slant']} | {cr['width_per_char']} | {cr['letter_height']} "
               f"| {cr['pen_up_share']} | | worst {res['worst_cer_ratio']:.2f} | |")
    return "\n".join(out)


def style_sheet(model_path: str, data: str, text: str, path: str, seed: int, bias: float,
                ids: list[str] | None = None, piece: int | None = PIECE) -> None:
    """A PNG of every style: the primer (a real line), then `text` written in it."""
    m = load_hw_model(model_path)
    rows = []
    for st in style_lines(m, data, ids):
        ln = write_styled(m, [text], range(seed, seed + 1), bias, st, piece)[0]
        rows += [st["offsets"], ln.offsets]
    Path(path).write_bytes(to_png(rows, m.cfg.line_height, line_height=45, margin=12, stroke_width=2))


def widest_gaps(offsets: np.ndarray, n: int) -> list[float]:
    """The n widest gaps between a stroke and all ink before it (a line with n spaces: its word gaps)."""
    gaps, right = [], None
    for s in to_strokes(offsets):
        if right is not None and s[:, 0].min() > right:
            gaps.append(float(s[:, 0].min() - right))
        right = s[:, 0].max() if right is None else max(right, s[:, 0].max())
    return (sorted(gaps, reverse=True) + [0.0] * n)[:n]


def word_gaps(model: str, data: str, phrases: list[str], bias: float, lines: int = 300) -> dict:
    """Quartiles of word gaps (line heights) in IAM-OnDB training lines, and in the model's lines before and
    after space_words."""
    m = load_hw_model(model)
    c = m.cfg
    q = lambda g: np.percentile(np.asarray(g) / c.line_height, [25, 50, 75]).round(3).tolist()
    real = [ln for ln in select(load_iam(data), "train")[:lines]]
    out = {"model": model, "bias": bias, "quartiles": "25/50/75 %, line heights",
           "training": q([g for ln in real for g in
                          widest_gaps(c.offsets(ln.points), ln.text.count(" "))])}
    written = synthesize(m, phrases, bias=bias, seed=0)
    out["model_as_written"] = q([g for ln in written for g in widest_gaps(ln.offsets, ln.text.count(" "))])
    out["model_spaced"] = q([g for ln in written for g in widest_gaps(space_words(ln, c.line_height), ln.text.count(" "))])
    return out


def legibility_table(rows: list[dict]) -> str:
    out = ["| model | bias | word spacing | line height | stroke width | CER | word acc. | completed (first try) | lines |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        done = "-" if r["completed"] is None else f"{r['completed']:.0%} ({r['first_try']:.0%})"
        out.append(f"| {Path(r['model']).name} | {r['bias']} | {r['spacing']} | {r['line_height']:g} | "
                   f"{r['stroke_width']:g} | {r['cer']:.3f} | {r['word_acc']:.3f} | {done} | {r['lines']} |")
    return "\n".join(out)


def handwrite_time(model: str, repeat: int = 5) -> dict:
    times = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(repeat):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "hmgen", "handwrite", "hello", "-m", model, "-o",
                                str(Path(d) / "hello.svg"), "--seed", str(i)], capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if r.returncode:
                raise SystemExit(r.stderr)
    return {"model": model, "runs": repeat, "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3), "max_s": round(max(times), 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/handwriting/iamondb")
    ap.add_argument("--nll", nargs="*", default=[], help="models to score on the test split")
    ap.add_argument("--test-lines", type=int, default=None, help="a random subset of the test split (default: all)")
    ap.add_argument("--complete", default=None, help="model for the completion share")
    ap.add_argument("--bias", type=float, default=BIAS, help="bias for --complete and --word-gaps")
    ap.add_argument("--legibility", nargs="*", default=[], help="models whose output Tesseract reads")
    ap.add_argument("--biases", type=float, nargs="+", default=[0.0, 0.75, 2.0, 4.0])
    ap.add_argument("--seeds", type=int, default=3, help="samples of every phrase per bias")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1 (fresh "
                    "seeds confirm a setting chosen on others)")
    ap.add_argument("--stroke-widths", type=float, nargs="+", default=[STROKE_WIDTH])
    ap.add_argument("--line-heights", type=float, nargs="+", default=[LINE_HEIGHT])
    ap.add_argument("--spacings", nargs="+", default=["training"], choices=["training", "model"],
                    help="word gaps: moved into the training data's range (as hmgen handwrite draws) or as written")
    ap.add_argument("--word-gaps", default=None, help="model whose word gaps are compared with the training data's")
    ap.add_argument("--real-lines", type=int, default=50, help="real IAM-OnDB test lines read as the reference (0: none)")
    ap.add_argument("--phrases", default=str(PHRASES), help="one phrase per line")
    ap.add_argument("--keep-png", default=None, help="copy the first PNGs of every row to this folder")
    ap.add_argument("--styles", default=None, help="model whose style bank is measured (features, CER with a style)")
    ap.add_argument("--style-ids", nargs="*", default=None, help="IAM-OnDB line ids to measure instead of the bank")
    ap.add_argument("--style-bias", type=float, default=BIAS, help="bias for --styles and --sheet")
    ap.add_argument("--choose-styles", default=None, help="model for which a style bank is chosen from test lines "
                    "(on the first half of the phrases, --first-seed)")
    ap.add_argument("--bank-size", type=int, default=12)
    ap.add_argument("--max-ratio", type=float, default=1.0, help="--choose-styles keeps candidates whose phrases "
                    "read at most this x as badly as without a style (1.05 let a style through that read at 1.20 on "
                    "fresh seeds: one seed of 25 phrases is noisy)")
    ap.add_argument("--piece", type=int, default=PIECE, help="with a style, characters per primed piece (0: whole lines)")
    ap.add_argument("--candidates", type=int, default=40)
    ap.add_argument("--sheet", default=None, help="PNG of every style: its primer and --sheet-text written in it")
    ap.add_argument("--sheet-text", default="The quick brown fox jumps over the lazy dog")
    ap.add_argument("--sheet-model", default=None, help="model for --sheet (default: the --styles model, or the "
                    "default handwriting model)")
    ap.add_argument("--time", default=None, help="model for the handwrite timing")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"hardware": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
           "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    raw = test_lines(args.data, args.test_lines) if (args.nll or args.complete) else None
    res["nll"] = []
    for mp in args.nll:
        r = nll(mp, raw)
        res["nll"].append(r)
        print(json.dumps(r), flush=True)
    if args.complete:
        res["completion"] = completion(args.complete, select(load_iam(args.data), "test"), bias=args.bias)
        print(json.dumps(res["completion"]), flush=True)
    phrases = [p.strip() for p in Path(args.phrases).read_text().splitlines() if p.strip()]
    if args.legibility:
        res["legibility"] = legibility(args.legibility, args.data, args.biases, args.seeds, args.stroke_widths,
                                       args.line_heights, args.spacings, args.real_lines, phrases,
                                       keep=Path(args.keep_png) if args.keep_png else None, first_seed=args.first_seed)
        print(legibility_table(res["legibility"]), flush=True)
    if args.choose_styles:
        res["choose_styles"] = choose_styles(args.choose_styles, args.data, phrases[:len(phrases) // 2],
                                             args.first_seed, args.style_bias, args.bank_size, args.candidates,
                                             piece=args.piece or None, max_ratio=args.max_ratio)
        print(json.dumps({k: v for k, v in res["choose_styles"].items() if k != "candidates"}), flush=True)
    if args.styles:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        res["styles"] = style_benchmark(args.styles, args.data, phrases, seeds, args.style_bias, args.style_ids,
                                        keep=Path(args.keep_png) if args.keep_png else None, piece=args.piece or None)
        print(style_table(res["styles"]), flush=True)
    if args.sheet:       # the model's own bank needs no data (its primers are in the model file)
        style_sheet(args.sheet_model or args.styles, args.data, args.sheet_text, args.sheet, args.first_seed,
                    args.style_bias, args.style_ids, args.piece or None)
    if args.word_gaps:
        res["word_gaps"] = word_gaps(args.word_gaps, args.data, phrases, args.bias)
        print(json.dumps(res["word_gaps"]), flush=True)
    if args.time:
        res["time"] = handwrite_time(args.time, args.repeat)
        print(json.dumps(res["time"]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
