"""Model files: safetensors weights beside a JSON description. Loading never unpickles.

  NAME.safetensors   the weights (state_dict of CharLM)
  NAME.json          {"format": "hmgen-model", "model": {...}, "vocab": {...}, "training": {...},
                      "figures": {...}, "weights_sha256": "..."}

Bundled models live in the repository's models/ folder; a built wheel carries them as hmgen/models/.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hmgen.text.data import Vocab
from hmgen.cell.reference import CharLM, ModelConfig, count_parameters
from hmgen.errors import HmgenError

FORMAT = "hmgen-model"
DEFAULT_MODEL = "english-small"


class ModelError(HmgenError):
    """A model that cannot be found or loaded: reported as one line."""


@dataclass
class LoadedModel:
    model: CharLM
    vocab: Vocab
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.meta.get("name") or (self.path.stem if self.path else "model")


def bundled_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [d for d in (here / "models", here.parent / "models") if d.is_dir()]


def atomic_write(path: Path, write, like: Path | None = None) -> None:
    """Write through a temporary file in the same folder, renamed into place only on success.
    The file gets the permissions and times of `like` (as gzip gives its output the input's), or else those
    a plain open() would give — not mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        try:
            if like is not None:
                shutil.copystat(like, tmp)
        except OSError:             # a file system without the metadata: the defaults below
            like = None
        if like is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(stem: str | os.PathLike, model: CharLM, vocab: Vocab, **meta) -> Path:
    """Write STEM.safetensors and STEM.json; returns the JSON path."""
    stem = Path(stem)
    weights = stem.with_suffix(".safetensors")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    info = {
        "format": FORMAT,
        "version": 1,
        "name": meta.pop("name", stem.name),
        "model": model.cfg.to_dict(),
        "vocab": vocab.to_dict(),
        "parameters": count_parameters(model),
        "weights_sha256": file_sha256(weights),
        **meta,
    }
    desc = stem.with_suffix(".json")
    atomic_write(desc, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2) + "\n"))
    return desc


def resolve(name_or_path: str | None) -> Path:
    """A model name (bundled) or a path (STEM, STEM.json or STEM.safetensors) -> the JSON path."""
    name_or_path = name_or_path or DEFAULT_MODEL
    p = Path(name_or_path)
    for cand in (p, p.with_suffix(".json"), Path(str(p) + ".json")):
        if cand.suffix == ".json" and cand.is_file():
            return cand
    if p.suffix == ".safetensors" and p.with_suffix(".json").is_file():
        return p.with_suffix(".json")
    for d in bundled_dirs():
        if (d / f"{name_or_path}.json").is_file():
            return d / f"{name_or_path}.json"
    known = ", ".join(m["name"] for m in list_models()) or "none"
    raise ModelError(f"no model {name_or_path!r}: not a file, and not a bundled model (bundled: {known})")


def read_meta(desc: Path) -> dict:
    try:
        meta = json.loads(desc.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{desc}: not a model description ({e})") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{desc}: not an hmgen model file")
    return meta


def load_model(name_or_path: str | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    desc = resolve(name_or_path)
    meta = read_meta(desc)
    weights = desc.with_suffix(".safetensors")
    if not weights.is_file():
        raise ModelError(f"{weights}: weights missing")
    try:
        cfg = ModelConfig(**meta["model"])
        model = CharLM(cfg)
        state = load_file(str(weights), device="cpu")
        model.load_state_dict(state)
    except Exception as e:   # corrupt or mismatched files: one clear line, not a traceback
        raise ModelError(f"{weights}: cannot load ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    model.to(device).eval()
    return LoadedModel(model, Vocab.from_dict(meta["vocab"]), meta, desc)


def list_models() -> list[dict]:
    """Bundled models with their sizes and recorded figures."""
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
            out.append({
                "name": meta["name"],
                "path": str(desc),
                "arch": meta["model"]["arch"],
                "hidden": meta["model"]["hidden"],
                "parameters": meta.get("parameters"),
                "file_bytes": w.stat().st_size if w.exists() else None,
                "vocab": meta["vocab"]["kind"],
                "figures": meta.get("figures", {}),
                "description": meta.get("description", ""),
            })
    return out
