"""Corpora, vocabularies and truncated-BPTT batches."""
import lzma
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmgen.errors import UsageError
from hmgen.text.data import DataError, StreamBatches, Vocab, VocabError, load_corpus, load_eval_ids, ptb_text

PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "ptb"


@given(st.binary(max_size=300))
def test_byte_vocabulary_encodes_any_input_and_decodes_it_back(data):
    v = Vocab("bytes")
    assert v.size == 256
    assert v.decode(v.encode(data)) == data


def test_char_vocabulary_names_the_characters_it_cannot_encode():
    v = Vocab("chars", list("abc "))
    with pytest.raises(VocabError, match="'xz'"):
        v.encode("a xz")


def test_ptb_format_becomes_plain_text():
    raw = b"a e r _ b a n k n o t e \n p i e r r e _ < u n k > _ N \n "
    assert ptb_text(raw) == "aer banknote\npierre <unk> N\n"


@pytest.mark.skipif(not PTB.is_dir(), reason="char-PTB not beside the checkout")
def test_ptb_has_the_papers_fifty_symbols_and_its_sizes():
    corpus = load_corpus(f"ptb:{PTB}")
    assert corpus.vocab.size == 50          # 49 symbols + end of line (SOURCES.md)
    # train: 4,975,414 symbols + 42,068 end-of-line symbols
    assert len(corpus.split("train")) == 4_975_414 + 42_068
    assert len(corpus.split("test")) == 438_662 + 3_761


def test_ptb_reads_xz_compressed_split_files(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.char.{split}.txt.xz").write_bytes(lzma.compress(b"a _ b \n b _ a \n " * 50))
    corpus = load_corpus(f"ptb:{tmp_path}")
    assert corpus.vocab.decode(corpus.split("valid")[:8]) == b"a b\nb a\n"


def test_xz_files_are_read_directly(tmp_path):
    (tmp_path / "a.txt.xz").write_bytes(lzma.compress(b"hello world " * 100))
    corpus = load_corpus(str(tmp_path / "a.txt.xz"))
    assert corpus.vocab.kind == "bytes"
    assert bytes(np.concatenate([corpus.split("train"), corpus.split("valid")])) == b"hello world " * 100


def test_folder_with_split_names_gives_those_splits(tmp_path):
    (tmp_path / "x.train.txt").write_text("a" * 500)
    (tmp_path / "x.valid.txt.xz").write_bytes(lzma.compress(b"b" * 50))
    (tmp_path / "notes.md").write_text("not data")
    corpus = load_corpus(str(tmp_path))
    assert bytes(corpus.split("train")) == b"a" * 500 and bytes(corpus.split("valid")) == b"b" * 50


def test_missing_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_corpus(str(tmp_path / "nope.txt"))


def test_batches_continue_each_stream_from_one_segment_to_the_next():
    ids = np.arange(1000, dtype=np.int64)
    b = StreamBatches(ids, batch=4, seq_len=10)
    x0, y0, first = b.get(0)
    x1, _, _ = b.get(1)
    assert first and x0.shape == (4, 10)
    assert (y0[:, :-1] == x0[:, 1:]).all()           # targets are the inputs shifted by one
    assert (x1[:, 0] == y0[:, -1]).all()             # the next segment starts where this one ended


def test_batches_wrap_to_a_new_epoch_that_resets_the_state():
    b = StreamBatches(np.arange(1000), batch=4, seq_len=10)
    assert b.get(len(b))[2] and not b.get(len(b) + 1)[2]
    assert (b.get(len(b))[0] == b.get(0)[0]).all()


def test_processes_split_the_global_batch_between_them():
    ids = np.arange(5000)
    whole = StreamBatches(ids, 8, 10).get(3)[0]
    parts = [StreamBatches(ids, 8, 10, rank=r, world=2).get(3)[0] for r in range(2)]
    assert (np.stack(parts, axis=1).reshape(8, 10) == whole).all()


def test_eval_data_is_converted_to_the_models_vocabulary(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abc")
    assert load_eval_ids(str(f), None, Vocab("chars", list("abc"))).tolist() == [0, 1, 2]
    assert load_eval_ids(str(f), None, Vocab("bytes")).tolist() == [97, 98, 99]


def test_eval_of_a_folder_corpus_without_a_test_split_is_refused_naming_its_splits(tmp_path):
    (tmp_path / "x.train.txt").write_text("a" * 500)
    (tmp_path / "x.valid.txt").write_text("b" * 50)
    with pytest.raises(UsageError, match=r"no test split \(it has: train, valid\)"):
        load_eval_ids(str(tmp_path), None, Vocab("bytes"))
    assert bytes(load_eval_ids(str(tmp_path), "valid", Vocab("bytes")).astype("uint8")) == b"b" * 50
