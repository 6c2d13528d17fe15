"""Shared fixtures: tiny untrained models written as real model files (fast; no training needed)."""
import sys
from pathlib import Path

import pytest
import torch

from hmgen.text.data import Vocab
from hmgen.cell.reference import CharLM, ModelConfig
from hmgen.modelio import save_model

HMGEN = [sys.executable, "-m", "hmgen"]


@pytest.fixture
def one_thread():
    """Tiny per-step tensors gain nothing from intra-op threads, and lose a lot (up to ~70x) when test runs
    share a busy machine. Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(path: Path, vocab: Vocab, arch: str = "hmlstm", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = CharLM(ModelConfig(vocab_size=vocab.size, arch=arch, embed_dim=8, hidden=[8, 8], out_embed=8))
    return save_model(path, model, vocab, figures={"valid_bpc": 8.0}, description="untrained test model")


@pytest.fixture(scope="session")
def byte_model(tmp_path_factory) -> Path:
    """An untrained byte-level model: it proposes every byte, the worst case for UTF-8 output."""
    return make_model(tmp_path_factory.mktemp("models") / "bytes", Vocab("bytes"))


@pytest.fixture(scope="session")
def char_model(tmp_path_factory) -> Path:
    """An untrained model over a small character set, like the PTB models."""
    return make_model(tmp_path_factory.mktemp("models") / "chars", Vocab("chars", list(" \nabcdefghijklmnopqrstuvwxyz")))
