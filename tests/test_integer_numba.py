"""The compiled CPU engine (hmgen.archive.engine.cpu_engine.IntegerLM) computes exactly QuantLM's integers
(hmgen.archive.engine.torch_engine), so an archive made by either decodes with the other, on any machine."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hmgen.archive import format as C
from hmgen.archive.engine import torch_engine as Q
from hmgen.archive.engine.cpu_engine import BLAS_ROWS, IntegerLM
from hmgen.fs import file_sha256
from hmgen.modelio import load_arrays, load_model
from tests.conftest import HMGEN
from tests.test_integer import MODELS, grid_model

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.usefixtures("one_thread")


def twins(model) -> tuple[Q.QuantLM, IntegerLM]:
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return Q.QuantLM(model), IntegerLM(model.cfg.to_dict(), arrays)


def both_frequencies(q: Q.QuantLM, nb: IntegerLM, rows: np.ndarray):
    """(T, lanes, vocab) frequencies from each engine, both fed the same symbols."""
    sq, sn = q.initial_state(rows.shape[0]), nb.initial_state(rows.shape[0])
    prev = np.full(rows.shape[0], C.START, np.int64)
    out_q, out_n = [], []
    for t in range(rows.shape[1]):
        fq, sq = q.next_frequencies(prev, sq)
        fn, sn = nb.next_frequencies(prev, sn)
        out_q.append(fq)
        out_n.append(fn.copy())
        prev = rows[:, t].astype(np.int64)
    return np.stack(out_q), np.stack(out_n)


@pytest.mark.parametrize("lanes", [7, BLAS_ROWS + 3])      # the compiled loops alone; BLAS for every lane's products
@pytest.mark.parametrize("arch, layer_norm, ln_terms", MODELS)
def test_the_compiled_engine_gives_quantlms_frequencies_at_every_step(arch, layer_norm, ln_terms, lanes):
    model = grid_model(arch, layer_norm, ln_terms).float()
    q, nb = twins(model)
    rows = np.random.default_rng(3).integers(0, model.cfg.vocab_size, (lanes, 80))
    fq, fn = both_frequencies(q, nb, rows)
    assert np.array_equal(fq, fn)


def test_the_lanes_computed_on_threads_give_the_same_frequencies_as_on_one():
    from concurrent.futures import ThreadPoolExecutor
    from hmgen.archive.engine.cpu_engine import LanesOnThreads
    model = grid_model(*MODELS[-1]).float()
    _, nb = twins(model)
    rows = np.random.default_rng(4).integers(0, model.cfg.vocab_size, (3 * BLAS_ROWS + 2, 40))
    with ThreadPoolExecutor(2) as pool:                 # each part has enough lanes for BLAS: three at once
        _, one = both_frequencies(Q.QuantLM(model), nb, rows)
        _, three = both_frequencies(Q.QuantLM(model), LanesOnThreads(nb, pool, 3), rows)
    assert np.array_equal(one, three)


def test_lanes_split_over_however_many_threads_are_idle_at_each_step_give_the_same_frequencies():
    from concurrent.futures import ThreadPoolExecutor
    from hmgen.archive.engine.cpu_engine import LanesOnThreads
    model = grid_model(*MODELS[-1]).float()
    _, nb = twins(model)
    rows = np.random.default_rng(5).integers(0, model.cfg.vocab_size, (7, 40))
    idle = iter(np.random.default_rng(6).integers(0, 4, 1000))          # 1..4 parts, changing every step
    with ThreadPoolExecutor(3) as pool:
        _, one = both_frequencies(Q.QuantLM(model), nb, rows)
        _, varying = both_frequencies(Q.QuantLM(model), LanesOnThreads(nb, pool, lambda: 1 + int(next(idle))), rows)
    assert np.array_equal(one, varying)


def test_on_english_small_both_engines_agree_and_have_the_same_identity():
    name, meta, arrays = load_arrays("english-small")
    nb = IntegerLM(meta["model"], arrays)
    q = Q.QuantLM(load_model("english-small").model)
    assert nb.hash == q.hash
    text = Path(C.__file__).read_bytes()                             # prose and code, never seen in training
    rows = np.frombuffer(text[:9 * 60], np.uint8).reshape(9, 60)
    fq, fn = both_frequencies(q, nb, rows)
    assert np.array_equal(fq, fn)


def test_an_archive_made_by_either_engine_is_the_golden_one():
    name, meta, arrays = load_arrays("english-small")
    text = (DATA / "golden-v3.txt").read_bytes()
    golden = (DATA / "golden-v12.hmz").read_bytes()
    for engine in (IntegerLM(meta["model"], arrays), Q.QuantLM(load_model("english-small").model)):
        out = io.BytesIO()
        C.compress(io.BytesIO(text), out, engine, "english-small")
        assert out.getvalue() == golden


def test_compress_and_decompress_on_the_cpu_never_import_torch(tmp_path):
    probe = ("import sys, runpy\n"
             "sys.argv = ['hmgen'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('hmgen', run_name='__main__')\n"
             "except SystemExit as e:\n    code = e.code\n"
             "sys.stderr.write('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    src = tmp_path / "a.txt"
    src.write_bytes(b"Nothing here needs torch.\n" * 20)
    for args in (["compress", "-k", str(src)], ["decompress", "-c", str(src) + ".hmz"]):
        r = subprocess.run([sys.executable, "-c", probe] + args, capture_output=True)
        assert r.returncode == 0 and r.stderr.endswith(b"NO-TORCH"), r.stderr


@pytest.mark.slow
def test_the_compiled_engine_codes_identically_when_compiled_for_a_generic_cpu(tmp_path):
    """NUMBA_CPU_NAME=generic compiles for the baseline x86-64 instruction set (no AVX, no FMA), into a fresh
    cache: the archive must not change."""
    env = dict(os.environ, NUMBA_CPU_NAME="generic", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run(HMGEN + ["compress", "-m", "english-small", "-c", str(DATA / "golden-v3.txt")], capture_output=True,
                       env=env)                                      # the model golden-v12.hmz names
    assert r.returncode == 0, r.stderr
    assert r.stdout == (DATA / "golden-v12.hmz").read_bytes()


def test_a_model_saved_in_bfloat16_loads_for_the_cpu_engine_with_the_same_identity(tmp_path):
    from safetensors.torch import load_file, save_file
    name, meta, arrays = load_arrays("english-small")
    src = Path(load_model("english-small").path)
    half = {k: v.to(torch.bfloat16) for k, v in load_file(str(src.with_suffix(".safetensors"))).items()}
    save_file(half, str(tmp_path / "m.safetensors"))
    desc = json.loads(src.read_text())
    desc["weights_sha256"] = file_sha256(tmp_path / "m.safetensors")   # the file's own, as a saved model records
    (tmp_path / "m.json").write_text(json.dumps(desc))
    _, _, loaded = load_arrays(str(tmp_path / "m.json"))
    nb = IntegerLM(meta["model"], loaded)
    q = Q.QuantLM(load_model(str(tmp_path / "m.json")).model)
    assert nb.hash == q.hash and loaded["embed.weight"].dtype == np.float32
