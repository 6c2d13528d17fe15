"""Compression: byte-exact round trips, portable integer inference, the archive format, the CLI."""
import json
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from hmgen.archive import format as C
from hmgen.archive.engine import scheme
from hmgen.archive.engine import torch_engine as quant
from hmgen.modelio import load_model
from tests.conftest import HMGEN, make_model
from hmgen.text.data import Vocab

DATA = Path(__file__).parent / "data"
SHORT = b"A short line for the command-line tests.\n"
TEXT = (b"The hierarchical multiscale LSTM learns where words end without being told. "
        b"It copies its upper layers while a word goes on, and updates them when it ends.\n") * 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    """The bundled english-small as an integer engine."""
    return quant.QuantLM(load_model("english-small").model)


@pytest.fixture(scope="module")
def tiny(byte_model):
    return quant.QuantLM(load_model(str(byte_model)).model)


def roundtrip(q, data: bytes, **kw) -> bytes:
    out = io.BytesIO()
    C.compress(io.BytesIO(data), out, q, "m", **kw)
    back = io.BytesIO()
    C.decompress(io.BytesIO(out.getvalue()), back, q, "m")
    assert back.getvalue() == data
    return out.getvalue()


def frequencies(q, rows: np.ndarray, dense=False) -> torch.Tensor:
    """All frequency tables for a (lanes, T) byte array: (T, lanes, vocab)."""
    x = torch.from_numpy(rows.astype(np.int64))
    state, out = q.initial_state(x.shape[0]), []
    prev = torch.full((x.shape[0],), C.START)
    for t in range(x.shape[1]):
        f, state = q.step(prev, state, dense=dense)
        out.append(f)
        prev = x[:, t]
    return torch.stack(out)


def english_rows(lanes=8, length=60) -> np.ndarray:
    data = np.frombuffer(TEXT * 6, dtype=np.uint8)
    return np.stack([data[k * 37:k * 37 + length] for k in range(lanes)])


# ---- round trips ---------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), lanes=st.integers(1, 6), min_lane=st.integers(1, 64))
def test_any_bytes_round_trip_for_any_lane_layout(tiny, data, lanes, min_lane):
    roundtrip(tiny, data, max_lanes=lanes, min_lane=min_lane)


@pytest.mark.parametrize("data", [b"", b"x", b"\x00" * 500, bytes(range(256)), b"\xff\xfe invalid \xc3("],
                         ids=["empty", "one-byte", "run", "all-bytes", "invalid-utf8"])
def test_edge_cases_round_trip_with_the_bundled_model(small, data):
    roundtrip(small, data, min_lane=64)


def test_inputs_longer_than_a_block_round_trip_block_by_block(tiny):
    data = bytes(random.Random(0).randrange(256) for _ in range(2500))
    out = io.BytesIO()
    stats = C.compress(io.BytesIO(data), out, tiny, "m", block=1000, min_lane=100)
    assert stats.blocks == 3
    back = io.BytesIO()
    C.decompress(io.BytesIO(out.getvalue()), back, tiny, "m")
    assert back.getvalue() == data


def test_english_compresses_below_three_bits_per_byte(small):
    archive = roundtrip(small, TEXT, min_lane=10_000)
    payload = len(archive) - len(roundtrip(small, b"")) - (1 + C.BLOCK_HEAD.size)   # less the fixed headers
    assert 8 * payload / len(TEXT) < 3.0


def code_both_ways(q, data: bytes, m: int, method: int = C.MIXED) -> bytes:
    """The model path alone (method 4 by default; 3 mixed byte tables, 2 the network alone): words, checked to
    decode back to data."""
    words = C.code_block(q, m, len(data), True, data=data, method=method)
    assert C.code_block(q, m, len(data), False, words=words, method=method) == data
    return words.astype("<u4").tobytes()


@pytest.mark.slow                          # methods 3 and 4 (format 1's network-only paths) run with the slow tests
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=400), m=st.integers(1, 64), method=st.sampled_from([C.MIXED_BYTES, C.MIXED]))
def test_the_mixed_model_paths_round_trip_any_bytes_in_any_lane_layout(tiny, data, m, method):
    code_both_ways(tiny, data, min(m, len(data)), method)


@pytest.mark.slow
@pytest.mark.parametrize("method", [C.MIXED_BYTES, C.MIXED])
def test_the_mixer_learns_from_the_block_what_the_network_does_not_know(tiny, method):
    passage = random.Random(3).randbytes(300)
    data = passage + passage[::-1] + passage                         # the third part repeats the first
    mixed = code_both_ways(tiny, data, len(data), method)            # one lane: the repeat follows the original
    alone = code_both_ways(tiny, data, len(data), C.NETWORK)
    assert len(mixed) < 0.75 * len(alone)


@pytest.mark.slow
def test_coding_bit_by_bit_costs_no_more_than_coding_byte_tables(small):
    data = Path(C.__file__).read_bytes()[:3000]                      # prose and code the model never saw
    bits = code_both_ways(small, data, 300, C.MIXED)
    table = code_both_ways(small, data, 300, C.MIXED_BYTES)
    assert len(bits) <= len(table)


def cm_both_ways(q, data: bytes, m: int, network: bool = True) -> bytes:
    """Methods 8 (network True, lanes of m) and 9 (without it: one lane) both ways, checked; -> the payload."""
    m = m if network else len(data)
    payload = C.code_cm(q, m, len(data), True, data=data, network=network)
    assert C.code_cm(q, m, len(data), False, payload=payload, network=network) == data
    return payload


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=600), m=st.integers(1, 80), network=st.booleans())
def test_the_context_mixing_paths_round_trip_any_bytes_in_any_lane_layout(tiny, data, m, network):
    cm_both_ways(tiny, data, min(m, len(data)), network)


def test_the_context_mixing_coder_grows_its_buffer_for_incompressible_input(tiny, monkeypatch):
    grown, real = [], C.coder.grown
    monkeypatch.setattr(C.coder, "grown", lambda cd: grown.append(len(cd.buf)) or real(cd))
    data = random.Random(5).randbytes(6_000)   # in 600 lanes of 10: a step may write more than its first guess
    assert len(cm_both_ways(tiny, data, 10)) > len(data) and grown


def test_a_damaged_context_mixing_payload_decodes_to_other_bytes_never_an_error_of_its_own(tiny):
    payload = bytearray(cm_both_ways(tiny, TEXT, 40))
    payload[len(payload) // 2] ^= 0x10
    assert C.code_cm(tiny, 40, len(TEXT), False, payload=bytes(payload)) != TEXT


def test_the_file_models_learn_fixed_length_records_that_lzma_codes_worse(tiny):
    """Binary records of 12 bytes (an id counting up, a slowly varying value, flags): data, not text, so the
    block goes to method 9, whose contexts (the byte a record above, the column) beat LZMA2 on it."""
    rng = random.Random(4)
    rows = [i.to_bytes(4, "little") + (50_000 + 20 * i + rng.randrange(40)).to_bytes(4, "little") +
            bytes([rng.choice((0, 1, 3)), 0, 0, 7]) for i in range(2000)]
    data = b"".join(rows)
    archive = roundtrip(tiny, data)
    assert C.list_archive(io.BytesIO(archive)).methods == ["cm-7"]
    assert len(archive) < 0.9 * len(C.methods.lzma_compress(data))


def test_text_goes_to_the_network_and_binary_data_does_not():
    assert C.looks_like_text(TEXT) and C.looks_like_text("naïve café, 東京\n".encode())
    assert not C.looks_like_text(bytes(range(256)) * 4) and not C.looks_like_text(TEXT + b"\0")


def test_the_encoder_computing_the_network_a_step_ahead_writes_the_same_payload(tiny):
    data = (DATA / "golden-v3.txt").read_bytes()
    n = len(data)
    assert C.code_cm(tiny, 200, n, True, data=data, ahead=True) == C.code_cm(tiny, 200, n, True, data=data)


def test_method_11_stopped_while_a_step_is_computed_ahead_returns_none(tiny):
    data = (DATA / "golden-v3.txt").read_bytes()
    assert C.code_cm(tiny, 200, len(data), True, data=data, ahead=True, give_up=lambda t, size: True) is None


def test_mixed_archives_do_not_depend_on_the_thread_count(small):
    data = TEXT[:len(TEXT) // 3] + (DATA / "golden-v3.txt").read_bytes()
    one = roundtrip(small, data, min_lane=64)
    assert C.list_archive(io.BytesIO(one)).methods == ["mixed-3"] and C.list_archive(io.BytesIO(one)).lanes[0] > 1
    torch.set_num_threads(2)                                           # reset by the one_thread fixture
    assert roundtrip(small, data, min_lane=64) == one


def lane_start_costs(n: int, m: int) -> np.ndarray:
    """Method 9's bits all spent on the lanes' first bytes: no pace to compare, so only the forecast rule acts."""
    return (np.arange(n + 1) + m - 1) // m * 8192


def uniform_costs(n: int, bytes_per_byte: float) -> np.ndarray:
    return (np.arange(n + 1) * bytes_per_byte * 8192).astype(np.int64)


def test_the_forecast_rule_does_not_act_on_blocks_under_the_minimum():
    m, n = 1024, C.GIVE_UP_MIN - 1                                     # forecast 10,240 bytes > 1.02 x 9,900
    give_up = C.gives_up(m, n, lambda: (9_900, lane_start_costs(n, m)))
    assert not any(give_up(t, 10 * t) for t in range(C.CHECK_EVERY, m, C.CHECK_EVERY))


@pytest.mark.parametrize("nine, stops", [(9_900, True), (10_100, False), (None, False)])
def test_method_8_gives_up_half_way_when_its_forecast_exceeds_method_9_by_the_margin(nine, stops):
    m, n = 1024, C.GIVE_UP_MIN                                         # the payload grows 10 bytes a step:
    known = None if nine is None else (nine, lane_start_costs(n, m))   # forecast 10,240 bytes
    give_up = C.gives_up(m, n, lambda: known)
    asked = [give_up(t, 10 * t) for t in range(C.CHECK_EVERY, m, C.CHECK_EVERY)]
    half_way = int(C.GIVE_UP_FROM * m) // C.CHECK_EVERY - 1
    assert not any(asked[:half_way]) and all(asked[half_way:]) == stops


def test_the_forecast_leaves_out_the_costly_first_steps():
    m, n, step = 1024, C.GIVE_UP_MIN, C.CHECK_EVERY                    # 5,000 bytes in the first step, then 5 a step
    give_up = C.gives_up(m, n, lambda: (10_000, lane_start_costs(n, m)))   # forecast ~10,100 < 10,200: keep going
    assert not any(give_up(t, 5_000 + 5 * t) for t in range(step, m, step))


def test_in_a_small_block_method_8_stops_once_even_a_better_pace_cannot_reach_method_9():
    m, n = 1000, 20_000                                                # 20 lanes; method 8: 10 bytes a step, 0.5 a
    give_up = C.gives_up(m, n, lambda: (6_000, uniform_costs(n, 0.3)))   # byte; method 9: 0.3 a byte
    asked = [(t, give_up(t, 10 * t)) for t in range(C.CHECK_EVERY, m, C.CHECK_EVERY)]
    assert [t for t, stop in asked if stop][0] == 384                  # the first check from PACE_FROM (0.375)


def test_method_8_goes_on_while_a_better_pace_could_still_win():
    m, n = 1000, 20_000                                                # method 9 0.55 a byte: 11,000 bytes; method 8
    give_up = C.gives_up(m, n, lambda: (11_000, uniform_costs(n, 0.55)))   # at most 8,000 + 2 t by its pace
    assert not any(give_up(t, 10 * t) for t in range(C.CHECK_EVERY, m, C.CHECK_EVERY))


def test_method_9_reports_the_bits_it_spent_before_each_byte():
    data = (DATA / "golden-v3.txt").read_bytes()
    costs = []
    payload = C.code_alone(len(data), True, data, None, None, costs=costs)
    assert costs[0].shape == (len(data) + 1,) and costs[0][0] == 0 and (np.diff(costs[0]) > 0).all()
    assert abs(costs[0][-1] / 8192 - len(payload)) < 0.01 * len(payload)


def test_a_block_whose_method_8_gives_up_is_method_9s_and_round_trips(tiny, monkeypatch):
    monkeypatch.setattr(C, "looks_like_prose", lambda data: False)      # method 12 first
    monkeypatch.setattr(C, "gives_up", lambda m, n, nine: lambda t, size: nine() is not None)
    data = (DATA / "golden-v3.txt").read_bytes()
    archive = roundtrip(tiny, data, min_lane=64)
    assert C.list_archive(io.BytesIO(archive)).methods == ["cm-8-text"]


def test_prose_is_told_from_code_markup_tables_and_other_scripts():
    prose = (DATA / "golden-v3.txt").read_bytes()
    assert C.looks_like_prose(prose) and C.looks_like_prose(TEXT)
    assert not C.looks_like_prose(b'def f(x):\n    return {"a": x[0] + 1}  # (lanes, m)\n' * 20)
    assert not C.looks_like_prose(b'<p class="note">A <a href="/x">link</a></p>\n' * 20)
    assert not C.looks_like_prose(b"code,country,name\nAD-02,AD,Canillo\n" * 20)
    assert not C.looks_like_prose("Быстрая коричневая лиса прыгает через ленивую собаку.\n".encode() * 20)


def test_on_one_thread_a_prose_block_is_coded_by_method_11_before_method_12(tiny, monkeypatch):
    order = []
    code_cm, code_alone = C.code_cm, C.code_alone
    monkeypatch.setattr(C, "code_cm", lambda *a, **k: order.append(11) or code_cm(*a, **k))
    monkeypatch.setattr(C, "code_alone", lambda *a, **k: order.append(12) or code_alone(*a, **k))
    data = (DATA / "golden-v3.txt").read_bytes()
    C.encode_block(tiny, data, C.DEFAULT_LANES, 64, None)
    assert order == [11, 12]
    order.clear()
    C.encode_block(tiny, b'{"code": "AD-02", "name": "Canillo"},\n' * 40, C.DEFAULT_LANES, 64, None)
    assert order == [12, 11]


def test_method_12_stops_once_even_a_better_pace_cannot_reach_method_11():
    n = 20_000                                                         # method 11: 0.3 bytes a byte (6,000 bytes);
    give_up = C.yields_to(n, uniform_costs(n, 0.3))                    # method 12: 0.5 a byte, its least at 5,000:
    cost = np.full(n + 1, int(0.5 * 8192)); cost[0] = 0                # 2,500 + 0.8 x 0.5 / 0.3 x 4,500 = 8,500
    asked = [(t, give_up(t, cost)) for t in range(1000, n, 1000)]
    assert [t for t, stop in asked if stop][0] == 5000                 # the first check from YIELD_FROM (0.25)


def test_method_12_goes_on_while_a_better_pace_could_still_win():
    n = 20_000                                                         # method 11: 0.55 a byte (11,000 bytes);
    give_up = C.yields_to(n, uniform_costs(n, 0.55))                   # method 12's least: 0.5 t + 0.4 (n - t) < 11,000
    cost = np.full(n + 1, int(0.5 * 8192)); cost[0] = 0
    assert not any(give_up(t, cost) for t in range(1000, n, 1000))


def test_a_prose_block_whose_method_12_stops_is_method_11s_and_round_trips(tiny, monkeypatch):
    monkeypatch.setattr(C, "yields_to", lambda n, eleven: lambda t, cost: True)
    data = (DATA / "golden-v3.txt").read_bytes()
    archive = roundtrip(tiny, data, min_lane=64)
    assert C.list_archive(io.BytesIO(archive)).methods == ["mixed-3"]


def test_method_11_reports_the_bits_it_spent_before_each_byte_in_every_lane(tiny):
    data = (DATA / "golden-v3.txt").read_bytes()
    costs = []
    payload = C.code_cm(tiny, 200, len(data), True, data=data, costs=costs)
    assert costs[0].shape == (len(data) + 1,) and costs[0][0] == 0 and (np.diff(costs[0]) > 0).all()
    assert abs(costs[0][-1] / 8192 - len(payload)) < 0.01 * len(payload)


def test_decoding_on_threads_starts_the_costliest_blocks_of_a_window_first(tiny, monkeypatch):
    import concurrent.futures
    out = io.BytesIO()
    writer = C.MemberWriter(out, tiny, "m", min_lane=64)
    blocks = [random.Random(1).randbytes(3000), TEXT]                        # stored, then the model's
    for data in blocks:
        writer.write_block(data)
    writer.close()
    started = []

    class Recording(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, *args):
            started.append(C.METHOD_NAMES[args[0].method])
            return super().submit(fn, *args)
    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", Recording)
    back = io.BytesIO()
    C.decompress(io.BytesIO(out.getvalue()), back, tiny, "m", threads=2)
    assert back.getvalue() == b"".join(blocks)
    assert started[0] in ("mixed-3", "cm-8-text") and started[1:] == ["stored"]        # TEXT is prose


def test_squash_and_stretch_are_integer_inverses():
    from hmgen.archive.adaptive.logistic import curves
    squash, stretch = curves()
    assert squash[2047] == 2048 and squash[0] == 1 and squash[-1] == 4095
    assert (np.diff(squash) >= 0).all() and (np.diff(stretch) >= 0).all()
    assert all(abs(int(squash[stretch[p] + 2047]) - p) <= 12 for p in range(1, 4096))


# ---- portability: the integer engine ---------------------------------------------------------------------

def test_skipping_copied_rows_gives_the_same_frequencies_as_dense_computation(small):
    rows = english_rows()
    assert torch.equal(frequencies(small, rows), frequencies(small, rows, dense=True))


def test_a_lanes_frequencies_do_not_depend_on_the_other_lanes_in_the_batch(small):
    rows = english_rows()
    together = frequencies(small, rows)
    alone = frequencies(small, rows[3:4])
    assert torch.equal(together[:, 3:4], alone)


def test_frequencies_do_not_depend_on_the_thread_count(small):
    rows = english_rows(lanes=48, length=12)
    one = frequencies(small, rows)
    torch.set_num_threads(max(2, os.cpu_count() or 2))                   # reset by the one_thread fixture
    assert torch.get_num_threads() > 1
    assert torch.equal(one, frequencies(small, rows))


def test_float32_and_float64_matrix_products_agree_exactly(monkeypatch):
    lm = load_model("english-small").model
    q32 = quant.QuantLM(lm)
    assert q32.layers[0].rec.w_t.dtype == torch.float32               # the design claims fp32 is exact here
    monkeypatch.setattr(scheme, "exact_dtype", lambda bound: np.float64)
    q64 = quant.QuantLM(lm)
    assert q64.layers[0].rec.w_t.dtype == torch.float64
    rows = english_rows(lanes=4, length=40)
    assert torch.equal(frequencies(q32, rows), frequencies(q64, rows))


def test_reduced_float32_matmul_precision_does_not_change_the_archive(small):
    """TF32 / bf16 matmul settings round float32 products; the engine then multiplies in float64."""
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        out = io.BytesIO()
        C.compress(io.BytesIO((DATA / "golden-v3.txt").read_bytes()), out, small, "english-small")
    finally:
        torch.set_float32_matmul_precision(before)
    assert out.getvalue() == (DATA / "golden-v12.hmz").read_bytes()


@pytest.mark.parametrize("isa", ["default", "avx2"])
def test_torchs_engine_codes_identically_under_other_cpu_instruction_sets(isa):
    """ATEN_CPU_CAPABILITY makes torch use its scalar / AVX2 kernels instead of the best available.
    torch reads only lower-case values (it ignores "DEFAULT" with a warning), so first check it took effect.
    (The CLI's CPU engine is numba's: tests/test_integer_numba.py compiles it for a generic CPU.)"""
    env = dict(os.environ, ATEN_CPU_CAPABILITY=isa)
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    used = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout.strip()
    if used != isa.upper():
        pytest.skip(f"this CPU cannot run torch's {isa} kernels (torch used {used})")
    code = ("import io, sys, torch; from hmgen.archive import format as C; "
            "from hmgen.archive.engine.torch_engine import QuantLM; from hmgen.modelio import load_model; "
            "torch.set_num_threads(1); out = io.BytesIO(); "
            "C.compress(open(sys.argv[1], 'rb'), out, QuantLM(load_model('english-small').model), 'english-small'); "
            "sys.stdout.buffer.write(out.getvalue())")
    run = subprocess.run([sys.executable, "-c", code, str(DATA / "golden-v3.txt")], capture_output=True, env=env)
    assert run.stdout == (DATA / "golden-v12.hmz").read_bytes(), run.stderr


HEAD = 4 + 3 + len("english-small") + 32 + 4              # a golden archive's header: magic, version, scheme,
                                                        # name, sha256, CRC


def decoded(q, archive: bytes, threads: int = 1) -> bytes:
    """A golden archive decoded with the model it names (english-small)."""
    back = io.BytesIO()
    C.decompress(io.BytesIO(archive), back, q, "english-small", threads=threads)
    return back.getvalue()


def test_a_version_1_archive_made_on_2026_11_22_still_decodes(small):
    assert decoded(small, (DATA / "golden.hmz").read_bytes()) == (DATA / "golden.txt").read_bytes()


@pytest.mark.parametrize("version, made, method, original", [
    (2, "2026-11-28", "mixed-bytes", "golden.txt"), (3, "2026-11-28", "mixed", "golden-v3.txt"),
    (5, "2026-12-06", "mixed-2", "golden-v3.txt"), (6, "2026-12-06", "mixed-2", "golden-v3.txt"),
    (7, "2026-12-07", "mixed-3", "golden-v3.txt"), (8, "2026-12-07", "mixed-3", "golden-v3.txt"),
    (9, "2026-12-07", "mixed-3", "golden-v3.txt"), (10, "2026-12-07", "mixed-3", "golden-v3.txt")])
def test_an_archive_of_an_earlier_version_still_decodes(small, version, made, method, original):
    archive = (DATA / f"golden-v{version}.hmz").read_bytes()
    assert archive[4] == version and C.list_archive(io.BytesIO(archive)).methods == [method]
    assert decoded(small, archive) == (DATA / original).read_bytes()


def test_a_version_4_archive_made_on_2026_12_04_still_decodes(small):
    """golden-v4.hmz: the version-3 archive's blocks under a version-4 header, byte for byte."""
    archive = (DATA / "golden-v4.hmz").read_bytes()
    assert archive[4] == 4 and archive[HEAD:] == (DATA / "golden-v3.hmz").read_bytes()[HEAD:]
    assert decoded(small, archive) == (DATA / "golden-v3.txt").read_bytes()


@pytest.mark.parametrize("version", [8, 9, 10])
def test_a_version_8_to_10_archive_of_code_made_on_2026_12_07_still_decodes(small, version):
    """golden-v8-code.txt, a short Python module and the HTML table it prints, written for this test, took format
    8's models with the network (method 14), in formats 8, 9 and 10."""
    archive = (DATA / f"golden-v{version}-code.hmz").read_bytes()
    assert archive[4] == version and C.list_archive(io.BytesIO(archive)).methods == ["mixed-4"]
    assert decoded(small, archive) == (DATA / "golden-v8-code.txt").read_bytes()


@pytest.mark.parametrize("golden, original, method", [("golden-v11.hmz", "golden-v3.txt", "mixed-3"),
                                                     ("golden-v11-code.hmz", "golden-v8-code.txt", "mixed-5")])
def test_a_version_11_archive_made_on_2026_12_07_still_decodes(small, golden, original, method):
    """With the network, format 11 coded prose by format 7's method (11) and code and markup by format 11's (23:
    format 8's models with the groups and runs contexts)."""
    archive = (DATA / golden).read_bytes()
    assert archive[4] == 11 and C.list_archive(io.BytesIO(archive)).methods == [method]
    assert decoded(small, archive) == (DATA / original).read_bytes()


@pytest.mark.parametrize("golden, original, method", [("golden-v12.hmz", "golden-v3.txt", "mixed-3"),
                                                     ("golden-v12-code.hmz", "golden-v8-code.txt", "mixed-6")])
def test_a_version_12_archive_made_on_2026_12_07_decodes_and_is_reproduced_exactly(small, golden, original, method):
    """With the network, format 12 codes prose by format 7's method (11), as formats 8 to 11 did, and code and
    markup by format 12's (28: format 11's models made wide)."""
    archive = (DATA / golden).read_bytes()
    assert archive[4] == 12 and C.list_archive(io.BytesIO(archive)).methods == [method]
    text = decoded(small, archive)
    assert text == (DATA / original).read_bytes()
    again = io.BytesIO()
    C.compress(io.BytesIO(text), again, small, "english-small")
    assert again.getvalue() == archive


def test_formats_8_to_12_code_prose_as_format_7_did_byte_for_byte():
    v7, v8, v9, v10, v11, v12 = ((DATA / f"golden-v{k}.hmz").read_bytes() for k in (7, 8, 9, 10, 11, 12))
    assert v7[HEAD:] == v8[HEAD:] == v9[HEAD:] == v10[HEAD:] == v11[HEAD:] == v12[HEAD:]


def test_a_version_6_archive_with_primed_blocks_made_on_2026_12_06_still_decodes(small):
    """golden-v6-primed.hmz: golden-v3.txt cut as if SEGMENT were 1,000 bytes and coded by method 9 alone: a head
    and two pieces primed by it (method 10), so the primed coding is pinned byte for byte."""
    archive = (DATA / "golden-v6-primed.hmz").read_bytes()
    assert C.list_archive(io.BytesIO(archive)).methods == ["cm", "cm-primed", "cm-primed"]
    for threads in (1, 2):
        assert decoded(small, archive, threads) == (DATA / "golden-v3.txt").read_bytes()


def test_a_version_7_archive_with_primed_blocks_made_on_2026_12_07_still_decodes(small):
    """golden-v7-primed.hmz: the same cut with format 7's file models (methods 12 and 13)."""
    archive = (DATA / "golden-v7-primed.hmz").read_bytes()
    assert C.list_archive(io.BytesIO(archive)).methods == ["cm-3", "cm-3-primed", "cm-3-primed"]
    for threads in (1, 2):
        assert decoded(small, archive, threads) == (DATA / "golden-v3.txt").read_bytes()


def test_a_version_8_archive_with_primed_blocks_made_on_2026_12_07_still_decodes(small):
    """golden-v8-primed.hmz: the same cut with format 8's file models (methods 15 and 16)."""
    archive = (DATA / "golden-v8-primed.hmz").read_bytes()
    assert C.list_archive(io.BytesIO(archive)).methods == ["cm-4", "cm-4-primed", "cm-4-primed"]
    for threads in (1, 2):
        assert decoded(small, archive, threads) == (DATA / "golden-v3.txt").read_bytes()


@pytest.mark.parametrize("name, methods, original", [
    ("golden-v9-primed.hmz", ["cm-5", "cm-5-primed", "cm-5-primed"], "golden-v3.txt"),
    ("golden-v9-text-primed.hmz", ["cm-5-text", "cm-5-text-primed", "cm-5-text-primed"], "golden-v8-code.txt"),
    ("golden-v10-primed.hmz", ["cm-6", "cm-6-primed", "cm-6-primed"], "golden-v3.txt"),
    ("golden-v10-text-primed.hmz", ["cm-5-text", "cm-5-text-primed", "cm-5-text-primed"], "golden-v8-code.txt"),
    ("golden-v11-primed.hmz", ["cm-7", "cm-7-primed", "cm-7-primed"], "golden-v3.txt"),
    ("golden-v11-text-primed.hmz", ["cm-7-text", "cm-7-text-primed", "cm-7-text-primed"], "golden-v8-code.txt")])
def test_a_version_9_to_11_archive_with_primed_blocks_still_decodes(small, name, methods, original):
    """The same cut (golden-v3.txt, or golden-v8-code.txt for the -text- ones) with format 9's file models for data
    (methods 17 and 18) and for text (19 and 20), with format 10's wide ones for data (21 and 22; format 10 kept
    19 and 20 for text) and with format 11's for data (24 and 25) and text (26 and 27)."""
    archive = (DATA / name).read_bytes()
    assert C.list_archive(io.BytesIO(archive)).methods == methods
    for threads in (1, 2):
        assert decoded(small, archive, threads) == (DATA / original).read_bytes()


def test_a_version_12_archive_with_primed_blocks_for_data_decodes_and_is_reproduced(small, monkeypatch):
    """golden-v12-primed.hmz: golden-v3.txt cut as if SEGMENT were 1,000 bytes, coded by format 11's file models
    for data (methods 24 and 25, which format 12 keeps), made as it is remade here."""
    archive = (DATA / "golden-v12-primed.hmz").read_bytes()
    assert C.list_archive(io.BytesIO(archive)).methods == ["cm-7", "cm-7-primed", "cm-7-primed"]
    for threads in (1, 2):
        assert decoded(small, archive, threads) == (DATA / "golden-v3.txt").read_bytes()
    monkeypatch.setattr(C, "SEGMENT", 1000)
    monkeypatch.setattr(C, "looks_like_text", lambda data: False)
    monkeypatch.setattr(C, "looks_like_prose", lambda data: False)
    again = io.BytesIO()
    C.compress(io.BytesIO((DATA / "golden-v3.txt").read_bytes()), again, small, "english-small")
    assert again.getvalue() == archive


def test_a_version_12_archive_with_primed_blocks_for_text_decodes_and_is_reproduced(small, monkeypatch):
    """golden-v12-text-primed.hmz: golden-v8-code.txt cut as if SEGMENT were 1,000 bytes and coded by format 12's
    file models for text alone (methods 29 and 30: the encoder told not to run the network), made as it is remade
    here."""
    archive = (DATA / "golden-v12-text-primed.hmz").read_bytes()
    assert C.list_archive(io.BytesIO(archive)).methods == ["cm-8-text", "cm-8-text-primed", "cm-8-text-primed"]
    for threads in (1, 2):
        assert decoded(small, archive, threads) == (DATA / "golden-v8-code.txt").read_bytes()
    monkeypatch.setattr(C, "SEGMENT", 1000)
    candidate = C.model_candidate
    monkeypatch.setattr(C, "model_candidate", lambda *a, **k: candidate(*a, **{**k, "network": False}))
    again = io.BytesIO()
    C.compress(io.BytesIO((DATA / "golden-v8-code.txt").read_bytes()), again, small, "english-small")
    assert again.getvalue() == archive


def test_integer_inference_costs_under_two_hundredths_of_a_bit(small):
    lm = load_model("english-small").model
    rows = english_rows(lanes=4, length=120)
    x = torch.from_numpy(rows.astype(np.int64))
    with torch.no_grad():
        prev = torch.cat([torch.full((4, 1), C.START), x[:, :-1]], 1)
        logits, _, _ = lm(prev, lm.initial_state(4))
        float_bits = -torch.log_softmax(logits.double(), -1).gather(2, x[..., None]).mean() / np.log(2)
    f = frequencies(small, rows).permute(1, 0, 2).double()              # (lanes, T, vocab)
    p = f.gather(2, x[..., None]).squeeze(-1) / f.sum(-1)
    int_bits = -torch.log2(p).mean()
    assert abs(int_bits - float_bits) < 0.02


def test_the_coders_compiled_code_is_stamped_with_every_module_of_its_folder(tmp_path):
    """numba checks only a cached function's own file, and the predictor inlines the components in the other files
    of its folder: the stamp numba compares covers all of them, so editing any one compiles the folder again."""
    import shutil
    from hmgen import jit
    from hmgen.archive.adaptive import predictor
    folder = Path(predictor.__file__).parent
    assert jit.STAMPED and predictor.learn._cache._impl.locator.get_source_stamp() == jit.folder_stamp(str(folder))
    copy = shutil.copytree(folder, tmp_path / "adaptive", ignore=shutil.ignore_patterns("__pycache__"))
    before = jit.folder_stamp(str(copy))
    (copy / "apm.py").write_text((copy / "apm.py").read_text() + "# edited\n")
    assert jit.folder_stamp(str(copy)) != before


def test_once_the_coder_has_run_its_compiled_code_is_known_to_be_cached(byte_model):
    """The CLI asks whether the coder is compiled (to say so on a terminal before a first compile): that question
    names the compiled functions the coder runs, so it must answer yes once they have run."""
    from hmgen.archive.files import Engines, coder_compiled
    Engines("cpu").get(str(byte_model))
    assert coder_compiled() is True


def test_tables_are_the_correctly_rounded_functions():
    t = scheme.tables()
    R = scheme.R
    assert t["sigmoid"][R] == scheme.GATE // 2 and t["tanh"][R] == 0
    assert t["sigmoid"][R + 256] == round(scheme.GATE / (1 + np.exp(-1)))
    assert t["exp"][0] == scheme.EXP_ONE and t["exp"][256] == round(scheme.EXP_ONE * np.exp(-1))


# ---- the format ------------------------------------------------------------------------------------------

def test_decoding_with_another_model_is_refused_naming_the_model_needed(tmp_path, small):
    other = quant.QuantLM(load_model(str(make_model(tmp_path / "other", Vocab("bytes"), seed=1))).model)
    archive = io.BytesIO()
    C.compress(io.BytesIO(TEXT), archive, small, "english-small")          # a block coded by the model
    with pytest.raises(C.FormatError, match="english-small"):
        C.decompress(io.BytesIO(archive.getvalue()), io.BytesIO(), other, "other")


def test_the_listing_reads_sizes_and_methods_from_headers(tiny):
    archive = io.BytesIO()
    C.compress(io.BytesIO(b"x" * 1000 + os.urandom(1000)), archive, tiny, "m", block=1000)
    info = C.list_archive(io.BytesIO(archive.getvalue()))
    assert (info.original, info.compressed, info.blocks) == (2000, len(archive.getvalue()), 2)
    assert info.methods[1] == "stored"


def xz_size(data: bytes) -> int:
    return len(subprocess.run(["xz", "-9e", "-c", "-T1"], input=data, capture_output=True, check=True).stdout)


def within_xz_bound(q, data: bytes, **kw) -> bool:
    """The format's promise: never more than xz -9e's size + 0.1 % + 64 bytes."""
    return len(roundtrip(q, data, **kw)) <= xz_size(data) * 1.001 + 64


NASTY = {"zeros": bytes(20_000), "hello": b"hello world\n" * 2000, "random": random.Random(1).randbytes(30_000),
         "binary": Path(sys.executable).resolve().read_bytes()[:200_000]}


@pytest.mark.parametrize("name", NASTY)
def test_nasty_inputs_stay_within_the_xz_bound(tiny, name):
    assert within_xz_bound(tiny, NASTY[name])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=2000), st.builds(lambda b, k: b * k, st.binary(min_size=1, max_size=20),
                                                           st.integers(1, 300))))
def test_any_input_stays_within_the_xz_bound(tiny, data):
    assert within_xz_bound(tiny, data)


def test_repetitive_and_random_blocks_are_stored_by_lzma_and_as_they_are(tiny):
    archive = roundtrip(tiny, b"abc" * 3000 + random.Random(2).randbytes(3000), block=9000)
    assert C.list_archive(io.BytesIO(archive)).methods[1] == "stored"
    assert len(archive) < 9000 // 20 + 3000 + 200


def test_machine_code_gets_xzs_x86_filter_and_comes_out_smaller_than_xz(tiny):
    import shutil
    code = Path(shutil.which("ls") or sys.executable).resolve().read_bytes()[:100_000]
    if not C.methods.looks_like_x86(code):
        pytest.skip("no x86 machine code here (ls is another instruction set's)")
    archive = roundtrip(tiny, code)
    assert C.list_archive(io.BytesIO(archive)).methods[0] in ("lzma-x86", "cm-7")
    assert len(archive) < xz_size(code)


def test_text_is_not_taken_for_machine_code():
    assert not C.methods.looks_like_x86(TEXT) and not C.methods.looks_like_x86((DATA / "golden-v3.txt").read_bytes())


def test_crlf_line_ends_cost_next_to_nothing(small):
    lf = TEXT.replace(b". ", b".\n")
    crlf = lf.replace(b"\n", b"\r\n")
    assert len(roundtrip(small, crlf)) <= len(roundtrip(small, lf)) + 1


@pytest.mark.parametrize("data", [b"a\r\nb\nc\r\n", b"\r\r\n\r", b"\n\r\n", b"x\r"])
def test_mixed_line_ends_round_trip(tiny, data):
    roundtrip(tiny, data * 50)


def test_concatenated_archives_decode_to_the_concatenation(tiny):
    a, b = roundtrip(tiny, b"first part\n"), roundtrip(tiny, b"")
    back = io.BytesIO()
    C.decompress(io.BytesIO(a + b + a), back, tiny, "m")
    assert back.getvalue() == b"first part\n" * 2


def test_garbage_after_an_archive_is_refused(tiny):
    with pytest.raises(C.FormatError, match="trailing garbage"):
        C.decompress(io.BytesIO(roundtrip(tiny, b"abc") + b"\n"), io.BytesIO(), tiny, "m")


def mutations(archive: bytes, count: int, seed: int = 0):
    rng = random.Random(seed)
    for k in range(count):
        kind = k % 4
        b = bytearray(archive)
        pos = rng.randrange(len(b))
        if kind == 0:
            b[pos] ^= 1 << rng.randrange(8)                                # flip a bit
        elif kind == 1:
            b = b[:pos]                                                    # truncate
        elif kind == 2:
            b.insert(pos, rng.randrange(256))                              # insert a byte
        else:
            del b[pos]                                                     # delete a byte
        yield bytes(b)


OLDER_GOLDEN = ["golden.hmz", "golden-v2.hmz", "golden-v3.hmz", "golden-v4.hmz", "golden-v5.hmz", "golden-v6.hmz",
                "golden-v6-primed.hmz", "golden-v7.hmz", "golden-v7-primed.hmz", "golden-v8.hmz", "golden-v8-code.hmz",
                "golden-v8-primed.hmz", "golden-v9-primed.hmz", "golden-v9-text-primed.hmz", "golden-v10.hmz",
                "golden-v10-code.hmz", "golden-v10-primed.hmz", "golden-v10-text-primed.hmz", "golden-v11.hmz",
                "golden-v11-code.hmz", "golden-v11-primed.hmz", "golden-v11-text-primed.hmz", "golden-v12.hmz",
                "golden-v12-primed.hmz"]
CODE_GOLDEN = ("golden-v8-code.hmz", "golden-v9-text-primed.hmz", "golden-v10-code.hmz", "golden-v10-text-primed.hmz",
               "golden-v11-code.hmz", "golden-v11-text-primed.hmz", "golden-v12-code.hmz", "golden-v12-text-primed.hmz")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) for n in OLDER_GOLDEN] +   # ~8 s each:
                         ["golden-v12-code.hmz", "golden-v12-text-primed.hmz"])   # versions 1-11's and version
                                                       # 12's whose payloads are version 11's (prose, data) run with
                                                       # the slow tests
def test_every_corruption_of_a_real_archive_is_detected(small, name):
    archive = (DATA / name).read_bytes()
    original = (DATA / ("golden.txt" if name in ("golden.hmz", "golden-v2.hmz") else
                        "golden-v8-code.txt" if name in CODE_GOLDEN else "golden-v3.txt")).read_bytes()
    for bad in mutations(archive, 400):
        out = io.BytesIO()
        with pytest.raises(C.FormatError):
            C.decompress(io.BytesIO(bad), out, small, "english-small")
        assert out.getvalue() == b"" or original.startswith(out.getvalue())


# ---- the command line ------------------------------------------------------------------------------------

def hmgen(*args, stdin=None):
    """The CLI on one thread: these inputs are tiny, and test runs share the machine."""
    return subprocess.run(HMGEN + list(args) + ["--threads", "1"], input=stdin, capture_output=True)


def test_compress_then_decompress_restores_the_file_and_removes_each_input(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(SHORT)
    assert hmgen("compress", "-q", str(f)).returncode == 0
    assert not f.exists() and (tmp_path / "a.txt.hmz").exists()
    assert hmgen("decompress", "-q", str(tmp_path / "a.txt.hmz")).returncode == 0
    assert f.read_bytes() == SHORT and not (tmp_path / "a.txt.hmz").exists()


def test_a_pipeline_round_trips(tmp_path):
    packed = hmgen("compress", stdin=SHORT)
    assert packed.returncode == 0 and packed.stdout[:4] == C.MAGIC
    assert hmgen("decompress", stdin=packed.stdout).stdout == SHORT


def test_compress_c_of_two_files_decompresses_to_both(tmp_path):
    (tmp_path / "a").write_bytes(b"one\n")
    (tmp_path / "b").write_bytes(b"two\n")
    packed = hmgen("compress", "-c", str(tmp_path / "a"), str(tmp_path / "b")).stdout
    assert hmgen("decompress", stdin=packed).stdout == b"one\ntwo\n"


def test_a_damaged_later_member_writes_no_output(tmp_path):
    good = hmgen("compress", stdin=b"fine\n").stdout
    bad = bytearray(good)
    bad[-10] ^= 1
    f = tmp_path / "two.hmz"
    f.write_bytes(good + bytes(bad))
    r = hmgen("decompress", "-c", str(f))
    assert r.returncode == 1 and r.stdout == b"" and b"damaged" in r.stderr
    assert hmgen("decompress", str(f)).returncode == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["two.hmz"]
    assert hmgen("decompress", stdin=bytes(f.read_bytes())).stdout == b""


def test_keep_stdout_and_compress_d(tmp_path):
    f = tmp_path / "b.txt"
    f.write_bytes(b"keep me")
    r = hmgen("compress", "-c", str(f))
    assert f.exists() and not (tmp_path / "b.txt.hmz").exists()
    (tmp_path / "b.hmz").write_bytes(r.stdout)
    assert hmgen("compress", "-d", "-c", str(tmp_path / "b.hmz")).stdout == b"keep me"
    assert hmgen("compress", "-k", "-q", str(f)).returncode == 0 and f.exists()


def test_an_existing_output_is_not_overwritten_without_force(tmp_path):
    f, out = tmp_path / "c.txt", tmp_path / "c.txt.hmz"
    f.write_bytes(b"new")
    out.write_bytes(b"precious")
    r = hmgen("compress", str(f))
    assert r.returncode == 3 and b"already exists" in r.stderr and out.read_bytes() == b"precious" and f.exists()
    assert hmgen("compress", "-f", "-q", str(f)).returncode == 0 and out.read_bytes()[:4] == C.MAGIC


def test_a_corrupt_archive_fails_with_one_line_and_leaves_nothing_behind(tmp_path):
    bad = bytearray((DATA / "golden.hmz").read_bytes())
    bad[120] ^= 0x10
    f = tmp_path / "g.txt.hmz"
    f.write_bytes(bytes(bad))
    r = hmgen("decompress", str(f))
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1 and b"damaged" in r.stderr
    assert f.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["g.txt.hmz"]
    assert hmgen("decompress", "-t", str(f)).returncode == 1


def test_bad_inputs_give_exit_codes_like_gzip_but_a_skipped_file_is_3(tmp_path):
    (tmp_path / "x.txt").write_bytes(b"x")
    (tmp_path / "y.hmz").write_bytes(b"not an archive")
    missing = hmgen("compress", "-k", "-q", str(tmp_path / "nope"), str(tmp_path / "x.txt"))
    assert missing.returncode == 1 and (tmp_path / "x.txt.hmz").exists()    # the others are still processed
    assert hmgen("decompress", str(tmp_path / "x.txt")).returncode == 3     # unknown suffix: a warning
    both = hmgen("decompress", str(tmp_path / "x.txt"), str(tmp_path / "nope.hmz"))
    assert both.returncode == 1                                             # an error outranks a warning
    assert hmgen("compress", "--lanes", "0", str(tmp_path / "x.txt")).returncode == 2   # usage error: distinct
    r = hmgen("decompress", str(tmp_path / "y.hmz"))
    assert r.returncode == 1 and b"not an hmgen archive" in r.stderr and b"Traceback" not in r.stderr


def test_test_and_list_report_on_an_archive():
    assert hmgen("decompress", "-t", "-v", str(DATA / "golden.hmz")).returncode == 0
    r = hmgen("compress", "-l", str(DATA / "golden.hmz"))
    assert r.returncode == 0 and b"english-small" in r.stdout and b"185" in r.stdout


def test_an_empty_file_reports_no_ratio_of_nothing(tmp_path, byte_model):
    (tmp_path / "e.txt").write_bytes(b"")
    r = hmgen("compress", "-k", "-m", str(byte_model), str(tmp_path / "e.txt"))
    listed = hmgen("decompress", "-l", "--json", str(tmp_path / "e.txt.hmz"))
    assert r.returncode == 0 and b"e.txt: 0 -> " in r.stderr and b"%" not in r.stderr and b"bpc" not in r.stderr
    assert json.loads(listed.stdout)[0]["ratio"] is None


def test_a_character_level_model_is_refused_for_compression(char_model):
    r = hmgen("compress", "--model", str(char_model), stdin=b"abc")
    assert r.returncode == 1 and b"byte-level" in r.stderr


def test_compressed_data_is_not_written_to_a_terminal():
    import pty
    controller, terminal = pty.openpty()
    try:
        r = subprocess.run(HMGEN + ["compress", "--threads", "1"], input=b"abc", stdout=terminal, stderr=subprocess.PIPE)
    finally:
        os.close(controller)
        os.close(terminal)
    assert r.returncode == 1 and b"not written to a terminal" in r.stderr


def test_asking_for_a_missing_gpu_is_a_one_line_usage_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = hmgen("compress", "--device", "cuda", stdin=b"abc")
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1 and b"CUDA" in r.stderr


@pytest.mark.parametrize("n,bound", [(769, 687_451), (4097, 2 ** 20), (1024, scheme.C_MAX)])
def test_layer_norm_sums_stay_exact_at_the_bounds(n, bound):
    """Inputs at ±bound: the engine's LN equals the same formula evaluated with Python's unbounded integers."""
    import math
    rng = random.Random(n)
    t = [rng.choice((-1, 1)) * (bound - rng.randrange(3)) for _ in range(n)]
    shift = scheme.ln_shift(n, bound)
    gain = torch.full((n,), 1.5 * scheme.PRE, dtype=torch.float64)
    got = quant.layer_norm(torch.tensor([t], dtype=torch.float64), gain, 7.0, shift)[0]
    ts = [v >> shift for v in t]                                       # floor, as the engine shifts
    s, q = sum(ts), sum(v * v for v in ts)
    root = math.sqrt(float(n * q - s * s) + 7.0)
    want = [round((float(n * v - s) / root) * (1.5 * scheme.PRE)) for v in ts]
    assert got.tolist() == want


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_leaves_no_temporary_file_behind(tmp_path, sig):
    import signal
    import time
    f = tmp_path / "big.txt"
    f.write_bytes(TEXT * 400)
    p = subprocess.Popen(HMGEN + ["compress", "--threads", "1", str(f)], stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not any(q.name.startswith(".big.txt.hmz") for q in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.05)                                               # until the temporary file exists
    p.send_signal(getattr(signal, sig))
    p.wait(60)
    assert p.returncode != 0 and sorted(q.name for q in tmp_path.iterdir()) == ["big.txt"]
    assert f.read_bytes() == TEXT * 400


def test_archives_and_restored_files_keep_the_inputs_permissions(tmp_path):
    f = tmp_path / "private.txt"
    f.write_bytes(SHORT)
    f.chmod(0o600)
    assert hmgen("compress", "-q", str(f)).returncode == 0
    assert (tmp_path / "private.txt.hmz").stat().st_mode & 0o777 == 0o600
    assert hmgen("decompress", "-q", str(tmp_path / "private.txt.hmz")).returncode == 0
    assert f.stat().st_mode & 0o777 == 0o600 and f.read_bytes() == SHORT
