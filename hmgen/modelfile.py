"""Model files, text and handwriting, as files: safetensors weights beside a JSON description. Loading never
unpickles. What a file holds is built by its kind's module (hmgen.text.model, hmgen.handwriting.model); this one
knows only the files, so it sits at the bottom and every package may use it.

  NAME.safetensors   the weights
  NAME.json          {"format": ..., "version": 1, "name": ..., "model": {config}, "parameters": ...,
                      "weights_sha256": "...", "figures": {...}, "description": ..., ...}

The JSON's "format" says which kind of model the pair holds:
  "hmgen-model"               a character LM (CharLM state_dict; "model" is a ModelConfig, plus "vocab")
  "hmgen-handwriting-model"   a synthesis network (SynthesisNet state_dict as net.*, the style bank as
                              style.N tensors; "model" is an HWConfig, plus "styles": the bank's texts)
`describe` finds a file and checks its kind, naming the command that takes the other kind. A file whose
weights do not match the sha256 its JSON records is refused.

Bundled models live in the repository's models/ folder; a built wheel carries them as hmgen/models/.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hmgen.bundled import DEFAULT, HANDWRITING, TEXT
from hmgen.errors import HmgenError
from hmgen.fs import atomic_write, file_sha256, write_safetensors

# torch and the modules built on it are imported where a function needs them: `hmgen compress` on a CPU reads
# a model's weights as numpy arrays (load_arrays) and never imports torch (most of a small file's time).

FORMATS = {"hmgen-model": TEXT, "hmgen-handwriting-model": HANDWRITING}       # the JSON's "format" -> kind
FORMAT = {kind: fmt for fmt, kind in FORMATS.items()}                         # kind -> "format"
COMMAND = {TEXT: "hmgen sample", HANDWRITING: "hmgen handwrite"}             # what each kind is used with


class ModelError(HmgenError):
    """A model that cannot be found or loaded: reported as one line."""


def bundled_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [d for d in (here / "models", here.parent / "models") if d.is_dir()]


def write_model_files(stem: str | os.PathLike, kind: str, tensors: dict, fields: dict, **meta) -> Path:
    """STEM.safetensors (tensors), then STEM.json: format, version, name, the kind's fields, the weights'
    sha256 and meta. Returns the JSON path."""
    stem = Path(stem)
    weights = stem.with_suffix(".safetensors")
    write_safetensors(weights, tensors)
    info = {"format": FORMAT[kind], "version": 1, "name": meta.pop("name", stem.name), **fields,
            "weights_sha256": file_sha256(weights), **meta}
    desc = stem.with_suffix(".json")
    atomic_write(desc, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2) + "\n"))
    return desc


def resolve(name_or_path: str | None, kind: str | None = None) -> Path:
    """A model name (bundled) or a path (STEM, STEM.json or STEM.safetensors) -> the JSON path.
    kind ("text", "handwriting") only words the error."""
    name_or_path = name_or_path or DEFAULT[kind or TEXT]
    p = Path(name_or_path)
    for cand in (p, p.with_suffix(".json"), Path(str(p) + ".json")):
        if cand.suffix == ".json" and cand.is_file():
            return cand
    if p.suffix == ".safetensors" and p.with_suffix(".json").is_file():
        return p.with_suffix(".json")
    for d in bundled_dirs():
        if (d / f"{name_or_path}.json").is_file():
            return d / f"{name_or_path}.json"
    if p.is_file():
        raise ModelError(f"{name_or_path}: not a model file (a model is NAME.json beside NAME.safetensors)")
    known = ", ".join(m["name"] + (" (default)" if m["default"] else "")
                      for m in list_models() if kind is None or m["kind"] == kind) or "none"
    raise ModelError(f"no {kind + ' ' if kind else ''}model {name_or_path!r}: not a file, and not a bundled "
                     f"{kind + ' ' if kind else ''}model (bundled: {known})")


def read_meta(desc: Path) -> dict:
    """The JSON description of a text or handwriting model (its "format" checked)."""
    try:
        meta = json.loads(desc.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{desc}: not a model description ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS:
        raise ModelError(f"{desc}: not an hmgen model file")
    return meta


def load_weights(desc: Path, build, arrays: bool = False):
    """build(tensors) over the safetensors file beside desc (torch tensors, or numpy arrays with `arrays`);
    any failure is one ModelError line."""
    weights = desc.with_suffix(".safetensors")
    if not weights.is_file():
        raise ModelError(f"{weights}: weights missing")
    recorded = read_meta(desc).get("weights_sha256")
    if recorded and file_sha256(weights) != recorded:      # a damaged or replaced file never loads silently
        raise ModelError(f"{weights}: damaged (its sha256 is not the {recorded[:16]}… that {desc.name} records)")
    try:
        if arrays:
            from safetensors.numpy import load_file
        else:
            from safetensors.torch import load_file
        return build(load_file(str(weights)))
    except Exception as e:   # corrupt or mismatched files: one clear line, not a traceback
        raise ModelError(f"{weights}: cannot load ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def describe(name_or_path: str | None, kind: str) -> tuple[Path, dict]:
    """(JSON path, description) of a model of `kind` (default name: that kind's bundled model); a model of the
    other kind is refused, naming the command that takes it."""
    name_or_path = name_or_path or DEFAULT[kind]
    desc = resolve(name_or_path, kind)
    meta = read_meta(desc)
    found = FORMATS[meta["format"]]
    if found != kind:
        raise ModelError(f"{name_or_path} is a {found} model: use {COMMAND[found]}")
    return desc, meta


def kind_of(name_or_path: str | None) -> str:
    """Which kind of model a name or path holds (no name: the default text model)."""
    return FORMATS[read_meta(resolve(name_or_path))["format"]]


def load_arrays(name_or_path: str | None = None) -> tuple[str, dict, dict[str, np.ndarray]]:
    """A character LM's (name, JSON description, weights as numpy arrays by state_dict name), without torch."""
    desc, meta = describe(name_or_path, TEXT)
    try:
        arrays = load_weights(desc, lambda t: t, arrays=True)
    except ModelError:      # e.g. bfloat16 weights, which numpy cannot hold: torch reads them, as float32
        arrays = load_weights(desc, lambda t: {k: v.float().numpy() for k, v in t.items()})
    return meta.get("name") or desc.stem, meta, arrays


def list_models() -> list[dict]:
    """Bundled models, text and handwriting, with their sizes and recorded figures."""
    out, seen = [], set()
    for d in bundled_dirs():
        for desc in sorted(d.glob("*.json")):
            try:
                meta = read_meta(desc)
            except ModelError:
                continue
            if meta["name"] in seen:
                continue
            seen.add(meta["name"])
            w = desc.with_suffix(".safetensors")
            kind = FORMATS[meta["format"]]
            out.append({
                "name": meta["name"],
                "kind": kind,
                "path": str(desc),
                "arch": meta["model"]["arch"],
                "hidden": meta["model"]["hidden"],
                "parameters": meta.get("parameters"),
                "file_bytes": w.stat().st_size if w.exists() else None,
                # what the model reads: a text vocabulary's kind, or how many characters a hand can write
                "vocab": meta["vocab"]["kind"] if kind == TEXT else f"{len(meta['model']['alphabet'])} characters",
                "figures": meta.get("figures", {}),
                "description": meta.get("description", ""),
                "default": meta["name"] == DEFAULT[kind],     # what a command uses without -m
            })
    return out
