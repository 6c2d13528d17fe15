"""Model files of either kind, in one place for the commands and for library users: `load` gives whichever kind a
file holds. Above text/ and handwriting/ (it imports both), so nothing inside the package imports it but the CLI;
the parts live in hmgen.modelfile (the files), hmgen.text.model and hmgen.handwriting.model (what they hold).

    from hmgen.modelio import load_model
    lm = load_model("english-small-3")
"""
from __future__ import annotations

from hmgen.bundled import TEXT
from hmgen.handwriting.model import HandwritingModel, load_hw_model, save_hw_model
from hmgen.modelfile import (COMMAND, FORMAT, FORMATS, ModelError, bundled_dirs, describe, kind_of, list_models,
                             load_arrays, load_weights, read_meta, resolve, write_model_files)
from hmgen.text.model import LoadedModel, load_model, save_model

__all__ = ["load", "load_model", "load_hw_model", "save_model", "save_hw_model", "load_arrays", "list_models",
           "LoadedModel", "HandwritingModel", "ModelError", "resolve", "read_meta", "describe", "load_weights",
           "write_model_files", "bundled_dirs", "kind_of", "FORMATS", "FORMAT", "COMMAND"]


def load(name_or_path: str | None = None, device: str = "cpu", kind: str | None = None):
    """A text (LoadedModel) or handwriting (HandwritingModel) model, whichever the file holds; with `kind`, only
    that kind (default name: that kind's bundled model), else a ModelError naming the command that takes it."""
    kind = kind or kind_of(name_or_path)
    return (load_model if kind == TEXT else load_hw_model)(name_or_path, device)
