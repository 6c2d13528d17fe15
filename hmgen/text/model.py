"""A character language model as the commands use it: the network, its vocabulary and its description, saved to
and loaded from a model file (hmgen.modelfile: safetensors + JSON)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hmgen.bundled import TEXT
from hmgen.cell.reference import CharLM, ModelConfig, count_parameters
from hmgen.modelfile import describe, load_weights, write_model_files
from hmgen.text.data import Vocab


@dataclass
class LoadedModel:
    model: CharLM
    vocab: Vocab
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.meta.get("name") or (self.path.stem if self.path else "model")


def save_model(stem: str | os.PathLike, model: CharLM, vocab: Vocab, **meta) -> Path:
    """Write a character LM as STEM.safetensors and STEM.json; returns the JSON path."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fields = {"model": model.cfg.to_dict(), "vocab": vocab.to_dict(), "parameters": count_parameters(model)}
    return write_model_files(stem, TEXT, tensors, fields, **meta)


def load_model(name_or_path: str | os.PathLike | None = None, device: str = "cpu") -> LoadedModel:
    """A character LM (default: hmgen.bundled.DEFAULT[TEXT])."""
    desc, meta = describe(name_or_path, TEXT)

    def build(tensors):
        model = CharLM(ModelConfig(**meta["model"]))
        model.load_state_dict(tensors)
        return model, Vocab.from_dict(meta["vocab"])
    model, vocab = load_weights(desc, build)
    return LoadedModel(model.to(device).eval(), vocab, meta, desc)
