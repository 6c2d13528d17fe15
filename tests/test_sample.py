"""Sampling: determinism, filtering, and output that is always whole UTF-8 characters."""
import subprocess

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmgen.text.data import VocabError
from hmgen.modelio import load_model
from hmgen.text.sample import START, filter_logits, generate, utf8_allowed, utf8_next
from tests.conftest import HMGEN


def sample_bytes(path, **kw) -> bytes:
    return b"".join(generate(load_model(path), **kw))


def test_same_seed_gives_the_same_bytes(byte_model):
    assert sample_bytes(byte_model, prime="the", length=200, seed=7) == sample_bytes(byte_model, prime="the", length=200, seed=7)


def test_different_seeds_give_different_text(byte_model):
    assert sample_bytes(byte_model, length=200, seed=1) != sample_bytes(byte_model, length=200, seed=2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), length=st.integers(0, 60))
def test_byte_model_output_is_valid_utf8_of_the_requested_length(byte_model, seed, length):
    text = sample_bytes(byte_model, length=length, seed=seed).decode("utf-8")   # strict: raises if invalid
    assert len(text) == length


def test_every_yielded_chunk_is_one_whole_character(byte_model):
    chunks = list(generate(load_model(byte_model), length=100, seed=3))
    assert len(chunks) == 100
    assert all(len(c.decode("utf-8")) == 1 for c in chunks)


def completes(prefix: bytes) -> bool:
    """Some UTF-8 text starts with `prefix`. A partial character is completed by one of a few first
    continuation bytes (lead bytes E0, ED, F0, F4 restrict it), then any number of 0x80."""
    tails = [b""] + [first + b"\x80" * k for first in (b"\x80", b"\x90", b"\xa0", b"\xbf") for k in range(3)]
    for tail in tails:
        try:
            (prefix + tail).decode("utf-8")
            return True
        except UnicodeDecodeError:
            pass
    return False


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=8))
def test_utf8_automaton_allows_exactly_the_bytes_that_can_still_become_utf8(choices):
    """Walk the automaton with arbitrary allowed choices; at every point the allowed bytes are exactly those
    after which the text can still be completed to valid UTF-8 (surrogates and overlongs excluded)."""
    state, prefix = START, b""
    for c in choices:
        allowed = utf8_allowed(state)
        assert [bool(a) for a in allowed] == [completes(prefix + bytes([b])) for b in range(256)], prefix
        b = int(torch.nonzero(allowed)[c % int(allowed.sum())])
        state, prefix = utf8_next(state, b), prefix + bytes([b])


def test_temperature_zero_is_greedy_and_equals_top_k_one(byte_model):
    greedy = sample_bytes(byte_model, prime="a", length=50, temperature=0, seed=1)
    assert greedy == sample_bytes(byte_model, prime="a", length=50, temperature=0, seed=2)
    assert greedy == sample_bytes(byte_model, prime="a", length=50, top_k=1, seed=3)


def test_top_k_keeps_only_the_k_likeliest():
    probs = filter_logits(torch.tensor([1.0, 3.0, 2.0, 0.0]), 1.0, 2, None)
    assert (probs > 0).tolist() == [False, True, True, False]
    assert float(probs.sum()) == pytest.approx(1.0)


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert (filter_logits(logits, 1.0, None, 0.7) > 0).tolist() == [True, True, False, False]
    assert (filter_logits(logits, 1.0, None, 0.8) > 0).tolist() == [True, True, False, False]
    assert (filter_logits(logits, 1.0, None, 0.81) > 0).tolist() == [True, True, True, False]


def test_prime_outside_the_vocabulary_is_refused(char_model):
    with pytest.raises(VocabError, match="not in this model's vocabulary"):
        sample_bytes(char_model, prime="Hello", length=5)


def test_cli_streams_to_stdout_for_pipelines(byte_model):
    r = subprocess.run(HMGEN + ["sample", "-m", str(byte_model), "-n", "300", "--seed", "1"], capture_output=True, timeout=120)
    assert r.returncode == 0
    assert len(r.stdout.decode("utf-8")) == 300
    assert r.stderr == b""


def test_cli_prints_the_prime_then_the_continuation(char_model):
    r = subprocess.run(HMGEN + ["sample", "-m", str(char_model), "--prime", "the", "-n", "20", "--seed", "1"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith(b"the") and len(r.stdout.decode()) == 23


def test_cli_unencodable_prime_is_a_one_line_error(char_model):
    r = subprocess.run(HMGEN + ["sample", "-m", str(char_model), "--prime", "Zürich"], capture_output=True, timeout=120)
    assert r.returncode == 1
    assert r.stdout == b""
    assert r.stderr.decode().count("\n") == 1 and "Traceback" not in r.stderr.decode()


def test_cli_reader_closing_the_pipe_is_not_an_error(byte_model):
    r = subprocess.run(" ".join(HMGEN + ["sample", "-m", str(byte_model), "-n", "100000"]) + " | head -c 10",
                       shell=True, capture_output=True, timeout=120)
    assert len(r.stdout) == 10
    assert b"Traceback" not in r.stderr and b"Error" not in r.stderr


def test_top_p_zero_keeps_only_the_likeliest_symbol():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])
    assert filter_logits(logits, 1.0, None, 0.0).tolist() == [0.0, 1.0, 0.0, 0.0]


def test_a_temperature_too_small_for_floating_point_is_greedy():
    logits = torch.tensor([1.0, 3.0, 2.0, float("-inf")])
    assert filter_logits(logits, 5e-324, None, None).tolist() == [0.0, 1.0, 0.0, 0.0]


def test_a_huge_temperature_is_uniform_over_the_allowed_symbols():
    probs = filter_logits(torch.tensor([1.0, 3.0, 2.0, float("-inf")]), 1e300, None, None)
    assert torch.allclose(probs, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0], dtype=probs.dtype))
