"""Inputs the model cannot win, and inputs larger than a block (format version 4): the estimate that skips the
model, one LZMA stream across a member's blocks, and its flush records."""
import io
import lzma
import os
import random
from pathlib import Path

import pytest

from hmgen.archive import format as C
from tests.test_compress import mutations

pytestmark = pytest.mark.usefixtures("one_thread")
BLOCK = C.ESTIMATE_FROM + 4096           # small blocks for the tests, still judged on a sample


@pytest.fixture(scope="module")
def tiny(byte_model):
    from hmgen.archive.files import Engines
    return Engines().get(str(byte_model))[0]            # the compiled CPU engine: what compress runs


def archive_of(q, data: bytes, block: int = BLOCK) -> tuple[bytes, C.Stats]:
    out = io.BytesIO()
    st = C.compress(io.BytesIO(data), out, q, "m", block=block)
    back = io.BytesIO()
    C.decompress(io.BytesIO(out.getvalue()), back, q, "m")
    assert back.getvalue() == data
    return out.getvalue(), st


def repeated_random(n: int, period: int = 200_000, seed: int = 0) -> bytes:
    chunk = random.Random(seed).randbytes(period)
    return (chunk * (n // period + 1))[:n]


def test_random_bytes_skip_the_model_and_cost_what_xz_does(tiny):
    data = os.urandom(3 * BLOCK)
    archive, st = archive_of(tiny, data)
    assert st.methods == ["lzma-stream"] * 3
    assert len(archive) <= len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) * 1.001 + 200


def test_one_lzma_stream_reaches_back_across_block_boundaries(tiny):
    data = repeated_random(3 * BLOCK)                 # each block repeats what the first one held
    archive, st = archive_of(tiny, data)
    assert st.methods == ["lzma-stream"] * 3
    assert len(archive) < 1.05 * len(lzma.compress(data[:200_000], format=lzma.FORMAT_RAW, filters=C.methods.FILTERS))


def test_a_stream_is_flushed_before_a_block_of_another_method(tiny):
    text = b"The cat sat on the mat, and then it sat on the hat.\n" * 200
    data = os.urandom(BLOCK) + text
    archive, st = archive_of(tiny, data)
    assert st.methods[0] == "lzma-stream" and st.methods[1] != "lzma-stream"
    listed = C.list_archive(io.BytesIO(archive))
    assert (listed.compressed, listed.original, listed.methods) == (len(archive), len(data), st.methods)


def test_prose_is_still_coded_by_the_model_when_its_block_is_judged_on_a_sample(monkeypatch):
    from hmgen.archive.files import Engines
    monkeypatch.setattr(C, "ESTIMATE_FROM", 60_000)
    monkeypatch.setattr(C, "SAMPLE", 30_000)
    root = Path(__file__).resolve().parents[1]
    prose = (root / "README.md").read_bytes()[:70_000]
    q, _ = Engines().get("english-small-3")
    _, st = archive_of(q, prose, block=len(prose))
    assert st.methods == ["mixed-2"]


@pytest.mark.slow
def test_every_corruption_of_an_archive_with_lzma_streams_is_detected(tiny):
    data = repeated_random(2 * BLOCK, period=50_000) + b"a little text at the end\n"
    archive, _ = archive_of(tiny, data)
    for bad in mutations(archive, 200, seed=3):
        out = io.BytesIO()
        with pytest.raises(C.FormatError):
            C.decompress(io.BytesIO(bad), out, tiny, "m")
        assert data.startswith(out.getvalue())


def test_a_version_3_reader_would_refuse_a_stream_block_but_this_one_reads_version_3(tiny):
    archive, _ = archive_of(tiny, os.urandom(BLOCK))
    assert archive[4] == C.VERSION == 5
    v3 = bytearray(archive)
    v3[4] = 3                                          # a stream block under version 3 is out of range
    with pytest.raises(C.FormatError):
        C.decompress(io.BytesIO(bytes(v3)), io.BytesIO(), tiny, "m")


def words(n: int, seed: int = 0) -> bytes:
    vocabulary = b"the a cat dog sat ran on under mat hill river and then slowly quickly home".split()
    rng = random.Random(seed)
    return b" ".join(rng.choice(vocabulary) for _ in range(n // 5))[:n]


def test_the_archive_is_the_same_for_any_number_of_threads_and_decodes_with_any(tiny, monkeypatch):
    monkeypatch.setattr(C, "SEGMENT", 40_000)          # the model's blocks: several, small, for the test
    data = words(150_000)
    archives = []
    for threads in (1, 2, 3):
        out = io.BytesIO()
        st = C.compress(io.BytesIO(data), out, tiny, "m", threads=threads)
        archives.append(out.getvalue())
    assert len(st.methods) == 4 and set(st.methods) <= {"mixed-2", "cm"} and archives[0] == archives[1] == archives[2]
    for threads in (1, 2, 4):
        back = io.BytesIO()
        C.decompress(io.BytesIO(archives[0]), back, tiny, "m", threads=threads)
        assert back.getvalue() == data


def test_a_block_read_is_cut_into_a_few_long_pieces_never_into_many_short_ones(monkeypatch):
    monkeypatch.setattr(C, "SEGMENT", 1000)
    assert [len(p) for p in C.segments(bytes(2500), 4)] == [1000, 1000, 500]        # none under SEGMENT...
    assert [len(p) for p in C.segments(bytes(40_000), 4)] == [10_000] * 4         # ...and at most `count`
    assert [len(p) for p in C.segments(bytes(40_000), 1)] == [40_000]             # level 9: whole
    assert [len(p) for p in C.segments(b"a" * 999 + b"\r\n" + b"b" * 999, 2)] == [1001, 999]   # CR LF kept


def test_a_block_alone_in_its_input_is_the_same_when_its_codes_run_side_by_side(tiny):
    text, machine = words(20_000, seed=2), bytes(range(256)) * 40        # method 8 against 9; method 9 alone
    for data in (text, machine):
        one, two = io.BytesIO(), io.BytesIO()
        C.compress(io.BytesIO(data), one, tiny, "m", threads=1)
        st = C.compress(io.BytesIO(data), two, tiny, "m", threads=2)
        assert st.blocks == 1 and one.getvalue() == two.getvalue()
        back = io.BytesIO()
        C.decompress(io.BytesIO(two.getvalue()), back, tiny, "m")
        assert back.getvalue() == data


@pytest.mark.slow
def test_a_damaged_block_decoded_on_threads_writes_nothing_after_the_blocks_before_it(tiny, monkeypatch):
    monkeypatch.setattr(C, "SEGMENT", 30_000)
    data = words(100_000, seed=1)
    out = io.BytesIO()
    C.compress(io.BytesIO(data), out, tiny, "m", threads=2)
    for bad in mutations(out.getvalue(), 40, seed=5):
        back = io.BytesIO()
        with pytest.raises(C.FormatError):
            C.decompress(io.BytesIO(bad), back, tiny, "m", threads=3)
        assert data.startswith(back.getvalue())
