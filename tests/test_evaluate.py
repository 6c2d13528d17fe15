"""Streams side by side (hmgen.text.evaluate.side_by_side): a long sequence cut into contiguous pieces, run as
one batch, each piece from the zero state. Both of its users, the BPC and the boundary measurements, must
give what running each piece on its own gives."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hmgen.cell.reference import CharLM, ModelConfig, operations
from hmgen.text.boundaries import stream_boundaries
from hmgen.cell.reference import op_counts, rates_dict
from hmgen.text.evaluate import evaluate
from hmgen.modelio import load_model

VOCAB = 13

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> CharLM:
    torch.manual_seed(0)
    m = CharLM(ModelConfig(vocab_size=VOCAB, arch="hmlstm", embed_dim=6, hidden=[6, 5, 4], out_embed=6)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))           # a loss far from uniform
        for layer in m.rnn.layers[:2]:
            layer.bias[4 * layer.hidden] = 1.0    # detectors that fire often, but not always
    return m.eval()


def pieces(n: int, streams: int) -> list[slice]:
    per = math.ceil(n / streams)
    return [slice(k * per, min((k + 1) * per, n)) for k in range(streams) if k * per < n]


@pytest.mark.parametrize("streams, seq_len", [(1, 200), (3, 4), (5, 7)])
def test_bpc_and_rates_of_streams_are_each_piece_run_from_the_zero_state(model, streams, seq_len):
    ids = np.random.default_rng(1).integers(0, VOCAB, 48)        # 47 predictions: the last piece is short
    nll, counts = 0.0, 0
    with torch.no_grad():
        for p in pieces(len(ids) - 1, streams):
            x = torch.from_numpy(ids[p])[None]
            y = torch.from_numpy(ids[p.start + 1:p.stop + 1])
            logits, _, z = model(x, model.initial_state(1))
            nll += float(F.cross_entropy(logits[0], y, reduction="sum"))
            counts = counts + op_counts(model, z, torch.zeros(1, 3))
    r = evaluate(model, ids, streams=streams, seq_len=seq_len)
    assert r["symbols"] == len(ids) - 1
    assert r["layers"] == rates_dict(counts)                       # UPDATE / COPY / FLUSH rates per layer
    assert r["bpc"] == pytest.approx(nll / (len(ids) - 1) / math.log(2), rel=1e-6)   # evaluate: float32 loss


@pytest.mark.parametrize("streams, seq_len", [(3, 4), (5, 7)])
def test_boundaries_of_streams_are_each_pieces_own_boundaries(model, streams, seq_len):
    ids = np.random.default_rng(2).integers(0, VOCAB, 47)
    want_z, want_ops = [], []
    with torch.no_grad():
        for p in pieces(len(ids), streams):
            _, _, z = model(torch.from_numpy(ids[p])[None], model.initial_state(1))
            want_z.append(z[0])
            want_ops.append(operations(z, torch.zeros(1, 3))[0])
    z, ops = stream_boundaries(model, ids, streams=streams, seq_len=seq_len)
    assert 0 < z[:, :2].mean() < 1                                 # the comparison sees both z values
    assert np.array_equal(z, torch.cat(want_z).numpy()) and np.array_equal(ops, torch.cat(want_ops).numpy())


def test_the_default_text_model_updates_every_layer_and_less_often_with_depth():
    lm = load_model()                                           # whatever the default is: its hierarchy is alive
    text = (Path(__file__).parent / "data" / "golden-v3.txt").read_bytes()     # 4,000 bytes of a licence
    out = evaluate(lm.model, lm.vocab.encode(text), streams=1)
    updates = [layer["update"] for layer in out["layers"]]
    assert all(0.01 < u < 0.99 for u in updates), updates
    assert updates == sorted(updates, reverse=True) and len(set(updates)) == len(updates), updates


def word_position():
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "word_position.py"
    spec = importlib.util.spec_from_file_location("word_position", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_word_position_benchmark_buckets_symbols_by_their_place_in_the_word():
    space = np.array([c == " " for c in "ab  cdefg h"])
    assert word_position().positions(space).tolist() == [1, 2, 0, 0, 1, 2, 3, 4, 4, 0, 1]


@pytest.mark.parametrize("streams", [1, 5])
def test_word_position_benchmark_bits_average_to_the_models_bpc(model, streams):
    ids = np.random.default_rng(2).integers(0, VOCAB, 60)
    bits = word_position().symbol_bits(model, ids, streams)
    assert bits.shape == (59,)
    assert bits.mean() == pytest.approx(evaluate(model, ids, streams=streams)["bpc"], rel=1e-6)
