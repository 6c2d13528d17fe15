"""Make a run's best model a bundled model: evaluate it on a validation file and write models/NAME.*

    python models/bundle.py runs/english-small english-small \
        --valid ../shared/data/text/english/english.valid.txt.xz \
        --description "English prose (Gutenberg, Wikipedia, manuals), byte-level, CPU-trained"

The weights are copied unchanged; the JSON gets the full-validation figures, the training record from the
run's metrics.jsonl (command(s), steps, seconds, hardware) and the description.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import torch

from hmgen.text.data import load_eval_ids
from hmgen.text.evaluate import evaluate
from hmgen.fs import file_sha256
from hmgen.modelio import load_model, read_meta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("name")
    ap.add_argument("--valid", required=True, help="validation file the figure is measured on")
    ap.add_argument("--description", default="")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    here = Path(__file__).resolve().parent
    lm = load_model(args.run / "best")
    r = evaluate(lm.model, load_eval_ids(args.valid, None, lm.vocab))
    events = [json.loads(l) for l in (args.run / "metrics.jsonl").read_text().splitlines()]
    starts = [e for e in events if e.get("event") == "start"]
    stops = [e for e in events if e.get("event") == "stop"]
    resumed = [e for e in events if e.get("event") == "resume"]

    weights = here / f"{args.name}.safetensors"
    shutil.copyfile(args.run / "best.safetensors", weights)
    meta = read_meta(args.run / "best.json")
    meta.update(
        name=args.name,
        description=args.description,
        weights_sha256=file_sha256(weights),
        figures={**meta.get("figures", {}),
                 "valid_bpc": round(r["bpc"], 4), "valid_file": Path(args.valid).name, "valid_symbols": r["symbols"],
                 "valid_layers": r["layers"], "measured_on": f"{platform.machine()} CPU, torch {torch.__version__}"},
    )
    meta["training"].update(
        steps=stops[-1]["step"] if stops else None,
        train_seconds=stops[-1]["train_seconds"] if stops else None,
        invocations=[e.get("command") for e in starts + resumed],
    )
    (here / f"{args.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({"name": args.name, "valid_bpc": meta["figures"]["valid_bpc"], "layers": r["layers"],
                      "steps": meta["training"]["steps"], "train_seconds": meta["training"]["train_seconds"]}))


if __name__ == "__main__":
    main()
