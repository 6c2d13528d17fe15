"""Bundle a handwriting run's best model into models/ with its test-split figures.

  python -m hmgen.handwriting.bundle runs/hw/best models/handwriting-small --test-json runs/hw/test.json \
      [--styles runs/hw/styles.json --data DIR]

--test-json: the JSON written by benchmarks/handwriting.py --nll runs/hw/best --json FILE.
--styles: the style bank, IAM-OnDB line ids: a JSON list, or the JSON of benchmarks/handwriting.py
--choose-styles (its "chosen"); the lines are read from --data and preprocessed and normalised as the model's
training data. Without it the run's own bank (training lines) is kept.
"""
from __future__ import annotations

import argparse
import json

import torch

from hmgen.handwriting.data import load_iam
from hmgen.handwriting.model import load_hw_model, normalise, save_hw_model

DESCRIPTION = ("English handwriting from text: {arch} {hidden} + Graves attention window + {M}-component mixture, "
               "trained on IAM-OnDB (non-commercial research only; see models/README.md)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("--test-json", required=True)
    ap.add_argument("--name", default=None)
    ap.add_argument("--styles", default=None, help="JSON: a list of IAM-OnDB line ids, or --choose-styles output")
    ap.add_argument("--data", default=None, help="IAM-OnDB (a folder or .npz): where --styles' lines are")
    args = ap.parse_args()
    if args.styles is not None and args.data is None:
        ap.error("--styles needs --data: where its lines are")
    torch.set_num_threads(1)
    m = load_hw_model(args.src)
    rows = [r for r in json.loads(open(args.test_json).read())["nll"] if r["model"] == args.src]
    if not rows:
        raise SystemExit(f"{args.test_json}: no figures for {args.src}")
    t = rows[0]
    figures = {**m.meta.get("figures", {}), "test_nll_line": t["nll_line"], "test_nll_point": t["nll_point"],
               "test_lines": t["lines"], "test_split": "IAM-OnDB testset_f, lines whose characters the model knows"}
    skip = {"format", "version", "name", "model", "parameters", "styles", "weights_sha256", "figures", "description"}
    meta = {k: v for k, v in m.meta.items() if k not in skip}
    c = m.cfg
    desc = DESCRIPTION.format(arch="HM-LSTM" if c.hierarchical else "LSTM", hidden="x".join(map(str, c.hidden)),
                              M=c.mixtures)
    name = args.name or args.dest.rstrip("/").split("/")[-1]
    styles = m.styles if args.styles is None else bank(m, args.styles, args.data)
    print(save_hw_model(args.dest, m.net, styles, name=name, description=desc, figures=figures, **meta))


def bank(m, styles_json: str, data: str) -> list[dict]:
    """The style bank from line ids: [{"text", "line_id", "offsets": normalised (N, 3)}]."""
    got = json.loads(open(styles_json).read())
    ids = got["chosen"] if isinstance(got, dict) else got
    lines = {ln.line_id: ln for ln in load_iam(data)}
    c = m.cfg
    missing = [i for i in ids if i not in lines]
    if missing:
        raise SystemExit(f"{data}: no lines {missing}")
    return [{"text": lines[i].text, "line_id": i,
             "offsets": normalise(c.offsets(lines[i].points), c)}
            for i in ids]


if __name__ == "__main__":
    main()
