"""`hmgen boundaries` and hmgen.text.boundaries: where each layer's detector fires, as text, SVG and JSON."""
import json
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from hmgen.text.boundaries import (Boundaries, analyse, prf, render_svg, render_terminal, rows, space_flags,
                              stream_boundaries, word_boundaries)
from hmgen.text.data import Vocab
from hmgen.cell.reference import op_counts
from hmgen.cell.reference import operations
from hmgen.modelio import load_model
from tests.conftest import HMGEN
from tests.test_cli import assert_one_line_error

SVG = "{http://www.w3.org/2000/svg}"
TEXT = "naïve words, then more words"          # ï is two bytes: 29 steps for a byte model, 28 characters


def run(*args, input=None):
    return subprocess.run(HMGEN + list(args), capture_output=True, text=True, input=input, timeout=120)


def hand_made(text="ab cd", z1=(0, 1, 1, 0, 1)) -> Boundaries:
    """A 2-layer picture with chosen layer-1 boundaries (the top layer has no detector)."""
    z = torch.tensor([[[v, 0] for v in z1]], dtype=torch.float32)
    ops = operations(z, torch.zeros(1, 2))[0]
    return Boundaries(text, list(text), np.arange(len(text)), z[0].to(torch.int8).numpy(), ops.numpy(), "hand")


def forward_z(lm, text):
    ids = torch.from_numpy(lm.vocab.encode(text).astype(np.int64))[None]
    with torch.no_grad():
        _, _, z = lm.model(ids, lm.model.initial_state(1))
    return z


def test_z_is_the_models_own_boundaries_one_row_per_step(byte_model):
    lm = load_model(byte_model)
    b = analyse(lm, TEXT, seq_len=7)                     # segments carry the state: same as one pass
    assert b.z.shape == (len(TEXT.encode()), 2)
    assert np.array_equal(b.z, forward_z(lm, TEXT)[0].numpy())
    assert not b.z[:, -1].any()                          # the top layer has no detector


def test_operation_counts_match_the_model_operations(char_model):
    lm = load_model(char_model)
    b = analyse(lm, "the cat sat on the mat")
    z = forward_z(lm, "the cat sat on the mat")
    assert np.array_equal(b.ops, operations(z, torch.zeros(1, 2))[0].numpy())
    assert np.array_equal(b.counts, op_counts(lm.model, z, torch.zeros(1, 2)).numpy())


def test_a_multibyte_character_shows_any_boundary_of_its_bytes(byte_model):
    b = analyse(load_model(byte_model), "aï")
    assert b.step_char.tolist() == [0, 1, 1]
    b.z[:] = [[0, 0], [1, 0], [0, 0]]                    # fired inside the ï
    assert b.char_z().tolist() == [[0, 0], [1, 0]]


def test_streams_give_the_same_boundaries_as_one_pass(byte_model):
    lm = load_model(byte_model)
    ids = lm.vocab.encode(TEXT)
    z, ops = stream_boundaries(lm.model, ids, streams=1, seq_len=5)
    b = analyse(lm, TEXT)
    assert np.array_equal(z, b.z) and np.array_equal(ops, b.ops)


def test_svg_has_one_band_per_layer_boundary_marks_and_the_counts():
    b = hand_made()
    root = ET.fromstring(render_svg(b))
    bands = root.findall(f".//{SVG}g[@class='band']")
    assert [g.get("id") for g in bands] == ["layer-1", "layer-2"]
    assert len(bands[0].findall(f"{SVG}line[@class='boundary']")) == 3
    assert len(bands[1].findall(f"{SVG}line[@class='boundary']")) == 0
    counts = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "counts"]
    assert counts[0].startswith("layer 1: UPDATE 3  COPY 0  FLUSH 2 ")   # flush after each boundary but the last
    assert counts[1].startswith("layer 2: UPDATE 3  COPY 2  FLUSH 0 ")


def test_svg_wraps_long_text_into_blocks():
    b = hand_made("abc def ghi", (0,) * 11)
    root = ET.fromstring(render_svg(b, width=4))
    labels = [t.text for t in root.iter(f"{SVG}text") if t.text == "layer 1"]
    assert len(labels) == 3


def test_terminal_view_shows_the_text_and_one_row_per_layer_marking_boundaries():
    lines = [t.plain for t in render_terminal(hand_made(), width=80)]
    assert lines[0].endswith("ab cd")
    assert lines[1] == "L1  ─┃┃╶┃" and lines[2] == "L2  ·──·─"   # layer 2 copies where layer 1 did not fire
    assert any(l.startswith("layer 2: UPDATE 3") for l in lines)


def test_long_text_wraps_at_spaces_and_newlines():
    chars = list("one two three\nfour")
    assert ["".join(chars[s:e]) for s, e in rows(chars, 9)] == ["one two ", "three\n", "four"]
    assert ["abcdefgh"[s:e] for s, e in rows(list("abcdefgh"), 3)] == ["abc", "def", "gh"]


def test_word_boundaries_fall_after_word_ends_or_before_word_starts():
    space = np.array([c == " " for c in "ab  cd"])
    assert np.flatnonzero(word_boundaries(space, "end")).tolist() == [1, 5]
    assert np.flatnonzero(word_boundaries(space, "start")).tolist() == [3]
    assert space_flags(np.array([97, 32, 10]), Vocab("bytes")).tolist() == [False, True, True]


def test_precision_recall_f1_exact_and_with_tolerance():
    ref = np.zeros(10, bool)
    ref[[2, 6]] = True
    pred = np.zeros(10, bool)
    pred[[2, 3, 7]] = True
    assert prf(pred, ref) == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4, "matched": 1,
                                            "predicted": 3, "reference": 2})
    tol = prf(pred, ref, tolerance=1)        # 3 is next to the already matched 2: each reference matches once
    assert (tol["matched"], tol["precision"], tol["recall"]) == (2, 2 / 3, 1.0)
    assert prf(np.zeros(3, bool), np.zeros(3, bool))["f1"] == 0.0


def test_cli_draws_the_hierarchy_of_the_bundled_model(tmp_path):
    out = tmp_path / "fox.svg"
    r = run("boundaries", "the quick brown fox jumps over the lazy dog", "-o", str(out))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].strip() == "the quick brown fox jumps over the lazy dog"
    assert [l[:2] for l in lines[1:4]] == ["L1", "L2", "L3"] and "┃" in lines[1]
    root = ET.fromstring(out.read_text())
    assert len(root.findall(f".//{SVG}g[@class='band']")) == 3


def test_cli_json_is_the_raw_z_matrix(char_model):
    r = run("boundaries", "the cat", "-m", str(char_model), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    b = analyse(load_model(char_model), "the cat")
    assert out["z"] == b.z.tolist() and out["ops"] == b.ops.tolist() and out["text"] == "the cat"
    assert [c["update"] + c["copy"] + c["flush"] for c in out["counts"]] == [7, 7]


def test_cli_reads_standard_input_and_writes_svg_to_stdout(byte_model):
    r = run("boundaries", "-", "-m", str(byte_model), "-o", "-", input="hello there\n")
    assert r.returncode == 0, r.stderr
    assert ET.fromstring(r.stdout).tag == f"{SVG}svg"


@pytest.mark.parametrize("args, code", [
    (["", "-m", "{byte}"], 2),                          # empty text: a bad argument, as no text at all
    (["hello", "-m", "no-such-model"], 1),
    (["UPPER", "-m", "{char}"], 1),                     # outside the model's vocabulary
    (["-m", "{byte}"], 2),                              # no text at all
])
def test_cli_errors_are_one_line(args, code, byte_model, char_model):
    args = [a.format(byte=byte_model, char=char_model) for a in args]
    assert_one_line_error(run("boundaries", *args), code)


def test_cli_columns_0_still_draws_the_rows(byte_model):
    import os
    r = subprocess.run(HMGEN + ["boundaries", "the cat", "-m", str(byte_model)], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "0"}, timeout=120)
    assert r.returncode == 0 and "L1" in r.stdout and "the cat" in r.stdout


def test_one_boundary_is_one_boundary_not_1_boundaries(byte_model):
    r = run("boundaries", "the cat sat", "-m", str(byte_model))
    assert r.returncode == 0 and "1 boundaries" not in r.stdout


def test_one_step_is_one_step_not_1_steps(byte_model):
    r = run("boundaries", "a", "-m", str(byte_model))
    assert r.returncode == 0 and "of 1 step;" in r.stdout and "1 steps" not in r.stdout


@pytest.mark.parametrize("text", ["a\U0001F44D\U0001F3FDb", "\u2764\ufe0fc", "e\u0301x", "x\u200by", "\u65e5\u672c z"])
def test_rows_under_the_text_take_as_many_cells_as_the_text_row(text, byte_model):
    from rich.cells import cell_len
    lines = render_terminal(analyse(load_model(byte_model), text), 80)
    rows = [line.plain for line in lines[:3]]                 # the text and the two layers of the test model
    assert len({cell_len(row) for row in rows}) == 1, rows


def test_cli_svg_output_into_a_missing_folder_is_refused(byte_model, tmp_path):
    r = run("boundaries", "the cat", "-m", str(byte_model), "-o", str(tmp_path / "deep" / "a" / "b.svg"))
    assert_one_line_error(r)
    assert not (tmp_path / "deep").exists()
