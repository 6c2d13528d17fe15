"""Model files: safetensors + JSON, never pickle; bundled models found by name."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from hmgen.text.data import Vocab
from hmgen.handwriting.model import HWConfig, SynthesisNet
from hmgen.bundled import DEFAULT
from hmgen.modelio import (HandwritingModel, LoadedModel, ModelError, list_models, load, load_hw_model, load_model,
                           resolve, save_hw_model, save_model)
from tests.conftest import HMGEN, make_model
from tests.test_cli import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]


def test_a_saved_model_loads_back_with_identical_outputs(tmp_path):
    desc = make_model(tmp_path / "m", Vocab("bytes"))
    a = load_model(desc)
    b = load_model(tmp_path / "m.safetensors")
    x = torch.randint(0, 256, (2, 7))
    la, _, _ = a.model(x, a.model.initial_state(2))
    lb, _, _ = b.model(x, b.model.initial_state(2))
    assert torch.equal(la, lb)


def test_model_files_are_safetensors_and_json_only(tmp_path):
    make_model(tmp_path / "m", Vocab("bytes"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == "hmgen-model" and meta["model"]["arch"] == "hmlstm" and meta["vocab"]["kind"] == "bytes"
    data = (tmp_path / "m.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")                  # safetensors: a u64 header length, then a JSON header
    assert data[8:9] == b"{" and isinstance(json.loads(data[8:8 + n]), dict)
    assert not data.startswith((b"\x80", b"PK"))            # neither a pickle nor a zip (torch.save)


def test_a_pickle_in_place_of_weights_is_refused_not_executed(tmp_path):
    make_model(tmp_path / "m", Vocab("bytes"))
    marker = tmp_path / "pwned"
    payload = f"import os\nclass P:\n    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
    code = payload + f"import pickle; open({str(tmp_path / 'm.safetensors')!r}, 'wb').write(pickle.dumps(P()))"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(ModelError, match="damaged|cannot load"):
        load_model(tmp_path / "m")
    assert not marker.exists()


def test_unknown_model_name_lists_what_is_bundled():
    with pytest.raises(ModelError, match="bundled"):
        resolve("no-such-model-anywhere")


def test_bundled_models_are_listed_with_size_and_figures():
    figure = {"text": "valid_bpc", "handwriting": "test_nll_line"}
    for m in list_models():
        assert m["parameters"] > 0 and m["file_bytes"] > 0 and figure[m["kind"]] in m["figures"]


@pytest.fixture(scope="module")
def two_kinds(tmp_path_factory) -> tuple[Path, Path]:
    """A text model and a handwriting model, untrained, side by side."""
    d = tmp_path_factory.mktemp("kinds")
    text = make_model(d / "text", Vocab("bytes"))
    torch.manual_seed(0)
    hw = save_hw_model(d / "hand", SynthesisNet(HWConfig(alphabet=" ab", hidden=[4, 4], mixtures=2, window=2)))
    return text, hw


def test_load_gives_the_kind_of_model_the_file_holds(two_kinds):
    text, hw = two_kinds
    assert isinstance(load(text), LoadedModel) and isinstance(load(hw), HandwritingModel)
    assert isinstance(load_model(text), LoadedModel) and isinstance(load_hw_model(hw), HandwritingModel)


def test_asking_for_the_other_kind_names_the_command_that_takes_the_model(two_kinds):
    text, hw = two_kinds
    with pytest.raises(ModelError, match="is a handwriting model: use hmgen handwrite"):
        load_model(hw)
    with pytest.raises(ModelError, match="is a text model: use hmgen sample"):
        load_hw_model(text)


def test_sample_with_a_handwriting_model_says_to_use_handwrite(two_kinds):
    r = subprocess.run(HMGEN + ["sample", "-m", str(two_kinds[1]), "-n", "5"], capture_output=True, text=True, timeout=120)
    assert_one_line_error(r)
    assert f"{two_kinds[1]} is a handwriting model: use hmgen handwrite" in r.stderr


def test_handwrite_with_a_text_model_says_to_use_sample(two_kinds):
    r = subprocess.run(HMGEN + ["handwrite", "ab", "-m", str(two_kinds[0]), "-o", "-"], capture_output=True, text=True,
                       timeout=120)
    assert_one_line_error(r)
    assert f"{two_kinds[0]} is a text model: use hmgen sample" in r.stderr


@pytest.mark.skipif({m["kind"] for m in list_models()} != {"text", "handwriting"}, reason="needs both bundled kinds")
def test_models_command_lists_text_and_handwriting_models():
    r = subprocess.run(HMGEN + ["models"], capture_output=True, text=True, timeout=120)
    rows = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()[1:]}
    assert r.returncode == 0 and rows == {m["name"]: m["kind"] for m in list_models()}
    assert set(rows.values()) == {"text", "handwriting"}


@pytest.mark.skipif(not list_models(), reason="no bundled model in models/")
def test_bundled_model_samples_from_the_cli():
    r = subprocess.run(HMGEN + ["sample", "--prime", "the", "-n", "40", "--seed", "1"], capture_output=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith(b"the") and len(r.stdout.decode()) == 43


@pytest.mark.skipif({m["kind"] for m in list_models()} != {"text", "handwriting"}, reason="needs both bundled kinds")
def test_models_command_marks_the_default_model_of_each_kind():
    r = subprocess.run(HMGEN + ["models"], capture_output=True, text=True, timeout=120)
    marked = {line.split()[1]: line.split()[0] for line in r.stdout.splitlines()[1:] if line.split()[-1] == "default"}
    assert r.returncode == 0 and marked == DEFAULT


@pytest.mark.skipif({m["kind"] for m in list_models()} != {"text", "handwriting"}, reason="needs both bundled kinds")
def test_an_unknown_text_model_lists_only_the_bundled_text_models_and_marks_the_default():
    with pytest.raises(ModelError) as e:
        load_model("no-such-model")
    text = {m["name"] for m in list_models() if m["kind"] == "text"}
    listed = str(e.value).split("(bundled: ")[1].rstrip(")").split(", ")
    assert {n.removesuffix(" (default)") for n in listed} == text
    assert f"{DEFAULT['text']} (default)" in listed


def test_models_command_prints_json_for_scripts():
    r = subprocess.run(HMGEN + ["models", "--json"], capture_output=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout) == json.loads(json.dumps(list_models()))


@pytest.mark.skipif(not list_models(), reason="no bundled model in models/")
def test_a_built_wheel_carries_the_bundled_models_and_finds_them_by_name(tmp_path):
    """Build the wheel (no network: hatchling from the test environment), install it into a folder
    of its own and list the models from there, away from the checkout."""
    pytest.importorskip("hatchling")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)
    wheel = next(tmp_path.glob("hmgen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("hmgen/models/") and n.endswith(".safetensors") for n in names)
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(target)
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import hmgen.modelio as m, json; print(json.dumps([(x['name'], x['path']) for x in m.list_models()]))"
    found = json.loads(subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                                      check=True, timeout=120).stdout)
    assert found and all(str(target) in path for _, path in found)


def test_saved_model_files_get_the_permissions_of_a_plain_open(tmp_path):
    """Written through a temporary file (0600 by default), they still end up readable as umask allows."""
    import os
    from hmgen.text.data import Vocab
    from tests.conftest import make_model
    old = os.umask(0o022)
    try:
        desc = make_model(tmp_path / "m", Vocab("bytes"))
    finally:
        os.umask(old)
    assert desc.stat().st_mode & 0o777 == 0o644
    assert desc.with_suffix(".safetensors").stat().st_mode & 0o777 == 0o644


def test_a_model_file_with_a_flipped_weight_byte_is_refused(tmp_path, byte_model):
    for part in (".json", ".safetensors"):
        shutil.copy(byte_model.with_suffix(part), tmp_path / f"m{part}")
    weights = bytearray((tmp_path / "m.safetensors").read_bytes())
    weights[-3] ^= 0x01
    (tmp_path / "m.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ModelError, match="damaged"):
        load_model(tmp_path / "m")


def test_a_file_that_is_not_a_model_is_named_as_such(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("not a model\n")
    with pytest.raises(ModelError, match="not a model file"):
        load_model(str(text))


def test_a_same_named_file_in_the_current_folder_never_stands_in_for_a_bundled_model(tmp_path, monkeypatch, byte_model):
    name = DEFAULT["text"]
    for part in (".json", ".safetensors"):
        shutil.copy(byte_model.with_suffix(part), tmp_path / f"{name}{part}")
    (tmp_path / f"{name}.safetensors").write_bytes(b"damaged")
    monkeypatch.chdir(tmp_path)
    bundled = resolve(None)
    assert bundled == resolve(name) and bundled.parent != tmp_path            # no -m, and -m NAME: the bundled one
    with pytest.raises(ModelError, match="damaged"):
        load_model(f"./{name}")                                               # a path: the file here
    with pytest.raises(ModelError, match=f"./{name}-2 for the one in this folder"):
        shutil.copy(byte_model, tmp_path / f"{name}-2.json")
        resolve(f"{name}-2")


def test_weights_without_their_description_say_the_json_is_missing(tmp_path, byte_model):
    shutil.copy(byte_model.with_suffix(".safetensors"), tmp_path / "m.safetensors")
    for given in (tmp_path / "m", f"{tmp_path}/m.safetensors"):
        with pytest.raises(ModelError, match=r"m\.json: missing, the description of .*m\.safetensors"):
            resolve(given)
