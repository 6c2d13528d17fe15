"""Bundle a handwriting run's best model into models/ with its test-split figures.

  python -m hmgen.handwriting.bundle runs/hw/best models/handwriting-small --test-json runs/hw/test.json

--test-json: the JSON written by benchmarks/handwriting.py --nll runs/hw/best --json FILE.
"""
from __future__ import annotations

import argparse
import json

import torch

from hmgen.modelio import load_hw_model, save_hw_model

DESCRIPTION = ("English handwriting from text: {arch} {hidden} + Graves attention window + {M}-component mixture, "
               "trained on IAM-OnDB (non-commercial research only; see models/README.md)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("--test-json", required=True)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
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
    desc = DESCRIPTION.format(arch="HM-LSTM" if c.arch == "hmlstm" else "LSTM", hidden="x".join(map(str, c.hidden)),
                              M=c.mixtures)
    name = args.name or args.dest.rstrip("/").split("/")[-1]
    print(save_hw_model(args.dest, m.net, m.styles, name=name, description=desc, figures=figures, **meta))


if __name__ == "__main__":
    main()
