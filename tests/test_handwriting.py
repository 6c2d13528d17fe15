"""Handwriting synthesis: IAM-OnDB loading, preprocessing, the mixture loss, the window, synthesis,
SVG output, the CLI, and training through `hmgen train iam:DIR`. Tiny models; seconds on a CPU."""
import io
import json
import math
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from hmgen.handwriting.data import (HandwritingDataError, load_iam, load_npz, load_original, parse_strokes_xml,
                                    preprocess, select, to_strokes)
from hmgen.handwriting.model import HWConfig, SynthesisNet, encode_text, mixture_nll, normalise, text_batch
from hmgen.modelio import ModelError, load_hw_model, save_hw_model
from hmgen.handwriting.render import to_png, to_svg
from hmgen.handwriting.sample import WORD_GAP, Line, SynthesisError, space_words, synthesize, wrap, write_lines

from .conftest import HMGEN

SVG_NS = "{http://www.w3.org/2000/svg}"


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- a small IAM-OnDB in its original layout

def stroke_xml(strokes) -> str:
    body = "".join(
        '<Stroke colour="black" start_time="0" end_time="1">'
        + "".join(f'<Point x="{x}" y="{y}" time="{i * 0.01:.2f}"/>' for i, (x, y) in enumerate(s))
        + "</Stroke>" for s in strokes)
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession><WhiteboardDescription>'
            '<SensorLocation corner="top_left"/></WhiteboardDescription>'
            f'<StrokeSet>{body}</StrokeSet></WhiteboardCaptureSession>')


def fake_line(rng, n_chars: int):
    """A wavy pen trace: ~10 points per character, a pen lift every 3 characters."""
    strokes, x = [], 1000
    for _ in range(max(1, n_chars // 3)):
        n = 30
        t = np.arange(n)
        xs = x + t * 6 + rng.integers(-2, 3, n)
        ys = 2000 + (40 * np.sin(t / 2)).astype(int) + rng.integers(-2, 3, n)
        strokes.append(list(zip(xs.tolist(), ys.tolist())))
        x = int(xs[-1]) + 30
    return strokes


FORMS = {"a01-000u": ("train", ["abc ab", "ba cab"]), "a01-001w": ("train", ["cab abc", "abba"]),
         "b02-010": ("val_v", ["ab ca"]), "c03-020x": ("test_f", ["cc ab", "a b c"])}


def write_iam(root: Path, as_tar: bool = False) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for form, (split, lines) in FORMS.items():
        d = f"{form[:3]}/{form[:7]}"
        files[f"ascii/{d}/{form}.txt"] = "OCR:\n\nprinted prompt\n\nCSR:\n\n" + "\n".join(lines) + "\n\n"
        for i, text in enumerate(lines, 1):
            files[f"lineStrokes/{d}/{form}-{i:02d}.xml"] = stroke_xml(fake_line(rng, len(text)))
    for name in ("ascii", "lineStrokes"):
        mine = {k: v for k, v in files.items() if k.startswith(name + "/")}
        if as_tar:
            with tarfile.open(root / f"{name}-all.tar.gz", "w:gz") as tf:
                for k, v in mine.items():
                    data = v.encode()
                    info = tarfile.TarInfo(k)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        else:
            for k, v in mine.items():
                (root / k).parent.mkdir(parents=True, exist_ok=True)
                (root / k).write_text(v)
    names = {"train": "trainset.txt", "val_v": "testset_v.txt", "val_t": "testset_t.txt", "test_f": "testset_f.txt"}
    for split, fname in names.items():
        forms = [f for f, (s, _) in FORMS.items() if s == split]
        (root / fname).write_text("".join(f" {f}\n" for f in forms))
    return root


@pytest.fixture(scope="module")
def iam_dir(tmp_path_factory) -> Path:
    return write_iam(tmp_path_factory.mktemp("iam") / "folders")


def test_xml_parser_reads_points_and_stroke_ends():
    pts = parse_strokes_xml(stroke_xml([[(1, 2), (3, 4), (5, 6)], [(7, 8)]]))
    assert pts.tolist() == [[1, 2, 0], [3, 4, 0], [5, 6, 1], [7, 8, 1]]
    with pytest.raises(HandwritingDataError):
        parse_strokes_xml("<WhiteboardCaptureSession><StrokeSet/></WhiteboardCaptureSession>")
    with pytest.raises(HandwritingDataError):
        parse_strokes_xml("<not xml")


@pytest.mark.parametrize("as_tar", [False, True])
def test_original_layout_folders_and_tar_with_official_splits(tmp_path, as_tar):
    root = write_iam(tmp_path / "iam", as_tar)
    lines = load_original(root)
    by_id = {ln.line_id: ln for ln in lines}
    assert len(lines) == sum(len(v[1]) for v in FORMS.values())
    assert by_id["a01-000u-02"].text == "ba cab"
    assert by_id["b02-010-01"].split == "val_v" and by_id["c03-020x-02"].split == "test_f"
    assert {ln.line_id for ln in select(lines, "train")} == {"a01-000u-01", "a01-000u-02", "a01-001w-01", "a01-001w-02"}
    assert [ln.line_id for ln in select(lines, "valid")] == ["b02-010-01"]
    assert by_id["a01-000u-01"].points[-1, 2] == 1 and by_id["a01-000u-01"].points.dtype == np.int32


def test_original_layout_skips_forms_that_do_not_align(tmp_path):
    root = write_iam(tmp_path / "iam")
    (root / "ascii/a01/a01-000/a01-000u.txt").write_text("CSR:\n\nonly one line\n")   # 1 text line, 2 stroke files
    ids = {ln.line_id for ln in load_original(root)}
    assert not any(i.startswith("a01-000u") for i in ids) and "a01-001w-01" in ids


def test_npz_fast_path_matches_the_xml(tmp_path, iam_dir):
    lines = load_original(iam_dir)
    starts, rows, first = [0], [], []
    for ln in lines:
        p = ln.points
        d = np.diff(p[:, :2], axis=0, prepend=p[:1, :2])
        rows.append(np.concatenate([d, p[:, 2:]], 1))
        starts.append(starts[-1] + len(p))
        first.append(p[0, :2])
    path = tmp_path / "lines.npz"
    np.savez(path, strokes=np.concatenate(rows).astype(np.int16), line_start=np.array(starts),
             first_xy=np.array(first, np.int32), text=np.array([ln.text for ln in lines]),
             line_id=np.array([ln.line_id for ln in lines]), split=np.array([ln.split for ln in lines]))
    again = load_npz(path)
    assert [a.text for a in again] == [b.text for b in lines]
    assert all(np.array_equal(a.points, b.points) for a, b in zip(again, lines))
    assert len(load_iam(path)) == len(lines)
    with pytest.raises(HandwritingDataError):
        load_iam(tmp_path / "missing")


def test_preprocess_offsets_flip_glitches_clip_and_stride():
    pts = np.array([[0, 0, 0], [10, 0, 0], [20, 10, 1], [1000, 10, 0], [1010, 10, 0], [1020, 10, 1]], np.int32)
    off = preprocess(pts, stride=1, align=False, glitch=0, clip=500)
    assert off.shape == (5, 3)
    assert off[:2, :2].tolist() == [[10, 0], [10, -10]]            # y flipped: down in the XML is negative here
    assert off[2, 0] == 500                                         # the 980-unit pen-up jump clipped
    assert off[:, 2].tolist() == [0, 1, 0, 0, 1]
    split = preprocess(np.array([[0, 0, 0], [10, 0, 0], [900, 0, 0], [910, 0, 1]], np.int32), 1, False, glitch=300)
    assert split[:, 2].tolist() == [1, 0, 1]                        # glitch: the stroke is cut before the jump
    strided = preprocess(np.array([[i, 0, int(i == 6)] for i in range(7)], np.int32), stride=4, align=False)
    assert np.cumsum(strided[:, 0]).tolist() == [4, 6] and strided[-1, 2] == 1   # every 4th point and the last
    strokes = to_strokes(off)
    assert len(strokes) == 2 and strokes[0][-1].tolist() == [20, -10]


def test_alignment_removes_the_baseline_slope():
    x = np.arange(0, 400, 5)
    pts = np.stack([x, -(0.3 * x).astype(int) + 500, np.r_[np.zeros(len(x) - 1), 1]], 1).astype(np.int32)
    off = preprocess(pts, stride=1, align=True)
    y = np.cumsum(off[:, 1])
    assert abs(np.polyfit(np.cumsum(off[:, 0]), y, 1)[0]) < 0.01


# ----------------------------------------------------------------------------- model, loss, window

def tiny_cfg(**kw) -> HWConfig:
    base = dict(alphabet=" abc", hidden=[8, 8], mixtures=3, window=2, layer_norm=False, line_height=100.0)
    base.update(kw)
    return HWConfig(**base)


def test_mixture_loss_matches_a_direct_computation():
    torch.manual_seed(0)
    M = 3
    params = torch.randn(2, 5, 1 + 6 * M)
    target = torch.cat([torch.randn(2, 5, 2), torch.randint(0, 2, (2, 5, 1)).float()], -1)
    got = mixture_nll(params, target, M)
    e, pi = params[..., 0], params[..., 1:1 + M]
    mu = params[..., 1 + M:1 + 3 * M].reshape(2, 5, M, 2)
    sig = params[..., 1 + 3 * M:1 + 5 * M].reshape(2, 5, M, 2).exp()
    rho = params[..., 1 + 5 * M:].tanh()
    for b in range(2):
        for t in range(5):
            dens = 0.0
            w = torch.softmax(pi[b, t], 0)
            for j in range(M):
                s1, s2, r = sig[b, t, j, 0], sig[b, t, j, 1], rho[b, t, j]
                cov = torch.tensor([[s1 * s1, r * s1 * s2], [r * s1 * s2, s2 * s2]])
                mvn = torch.distributions.MultivariateNormal(mu[b, t, j], covariance_matrix=cov)
                dens += w[j] * mvn.log_prob(target[b, t, :2]).exp()
            p_eos = torch.sigmoid(e[b, t])
            want = -math.log(dens) - math.log(p_eos if target[b, t, 2] > 0 else 1 - p_eos)
            assert got[b, t].item() == pytest.approx(want, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("arch", ["hmlstm", "lstm"])
def test_window_never_moves_backwards_and_shapes(arch):
    torch.manual_seed(1)
    net = SynthesisNet(tiny_cfg(arch=arch))
    onehot, mask = text_batch([encode_text("abc a", " abc"), encode_text("b", " abc")], net.cfg.n_chars)
    state = net.initial_state(2)
    kappas = []
    for t in range(40):
        params, state, phi, z = net.step(torch.randn(2, 3), state, onehot, mask)
        kappas.append(state[1].clone())
        assert phi.shape == (2, 6) and params.shape == (2, 1 + 6 * 3) and z.shape == (2, 2)
        assert phi[1, 2:].abs().sum() == 0                          # padding positions get no attention
    k = torch.stack(kappas)
    assert bool((k[1:] >= k[:-1]).all())


def test_unconditional_mode_has_no_window():
    net = SynthesisNet(tiny_cfg(conditional=False, alphabet=""))
    params, state, z, phi = net(torch.randn(2, 7, 3), net.initial_state(2))
    assert params.shape == (2, 7, 19) and phi is None and not hasattr(net, "window")
    with pytest.raises(SynthesisError, match="unconditional"):
        synthesize(model_of(net), ["ab"])


def model_of(net, styles=None):
    from hmgen.modelio import HandwritingModel
    return HandwritingModel(net, net.cfg, styles or [], {"name": "tiny"})


def test_synthesis_terminates_by_the_window_or_the_cap():
    torch.manual_seed(2)
    net = SynthesisNet(tiny_cfg())
    with torch.no_grad():                                  # a window that races ahead: it must stop on the text end
        net.window.bias[4:] = 30.0
    lines = synthesize(model_of(net), ["abc", "a"], bias=1.0, seed=1, max_steps_per_char=20)
    assert [ln.stop for ln in lines] == ["end of text", "end of text"]
    assert all(1 <= ln.steps < 20 * (len(ln.text) + 1) for ln in lines)
    assert all(np.all(np.diff(ln.kappa) >= 0) for ln in lines)
    with torch.no_grad():                                  # a window that never moves: the hard cap
        net.window.bias[4:] = -40.0
    ln = synthesize(model_of(net), ["ab c"], seed=1, max_steps_per_char=5)[0]
    assert ln.stop == "step cap" and ln.steps == 5 * 5 and ln.offsets.shape == (25, 3) and ln.offsets[-1, 2] == 1


def test_same_seed_same_strokes_and_priming_runs():
    torch.manual_seed(3)
    net = SynthesisNet(tiny_cfg())
    m = model_of(net, [{"text": "ab", "offsets": np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)}])
    a = write_lines(m, ["abc", "cab"], seed=5, max_steps_per_char=4)
    b = write_lines(m, ["abc", "cab"], seed=5, max_steps_per_char=4)
    assert all(np.array_equal(x.offsets, y.offsets) for x, y in zip(a, b))
    primed = write_lines(m, ["abc", "cab"], seed=5, style=0, max_steps_per_char=4)
    assert [ln.prime_chars for ln in primed] == [3, 3]
    with pytest.raises(SynthesisError, match="no style 1"):
        write_lines(m, ["a"], style=1)
    with pytest.raises(SynthesisError, match="'Z'.*'x'|'x'.*'Z'"):
        synthesize(m, ["abZx"])


def test_wrap_at_word_boundaries_to_the_width():
    assert wrap("the quick brown fox jumps", 10) == ["the quick", "brown fox", "jumps"]
    assert wrap("abcdefghij", 4) == ["abcd", "efgh", "ij"]


def test_wrap_keeps_blank_input_lines_as_blank_lines():
    assert wrap("ab\n\ncd ef\n", 40) == ["ab", "", "cd ef"]
    assert wrap("\n \nab\r\n\r\n\r\ncd\n\n", 40) == ["ab", "", "", "cd"]


def racing_model(styles=None):
    """An untrained tiny model whose window runs ahead: every line ends by the window, in a few points."""
    torch.manual_seed(2)
    net = SynthesisNet(tiny_cfg())
    with torch.no_grad():
        net.window.bias[4:] = 30.0
    return model_of(net, styles)


def test_blank_lines_come_back_in_place_and_keep_their_band_in_the_svg():
    lines = write_lines(racing_model(), ["ab", "", "ba"], seed=1)
    assert [ln.text for ln in lines] == ["ab", "", "ba"] and lines[1].stop == "blank" and len(lines[1].offsets) == 0
    root = ET.fromstring(to_svg([ln.offsets for ln in lines], 100.0, line_height=50, margin=10))
    groups = root.findall(f"{SVG_NS}g")
    assert [len(g.findall(f"{SVG_NS}path")) for g in groups] == [1, 0, 1]
    assert float(root.get("height")) == 2 * 10 + 3 * 50


def test_a_multi_line_text_is_one_hand_at_one_scale():
    m = racing_model([{"text": "ab", "offsets": np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)}])
    assert [ln.prime_chars for ln in write_lines(m, ["abc", "cab", "", "bca"], seed=1)] == [0, 0, 0, 0]
    assert [ln.prime_chars for ln in write_lines(m, ["abc", "", "bca"], seed=1, style=0)] == [3, 0, 3]
    line = write_lines(m, ["abc"], seed=1)[0].offsets
    first, second = [np.array(g[0].get("d").replace("M", " ").replace("L", " ").replace(",", " ").split(), float)
                     for g in ET.fromstring(to_svg([line, line], 100.0, line_height=50, smooth=False)).findall(f"{SVG_NS}g")]
    assert np.allclose(first[0::2], second[0::2]) and np.allclose(second[1::2] - first[1::2], 50, atol=0.11)


def test_every_line_is_drawn_level_and_centred_in_its_own_band():
    rng = np.random.default_rng(0)
    t = np.arange(200)
    sloped = np.c_[np.full(200, 3.0), 0.6 + 8 * np.sin(t / 3) + rng.normal(0, 0.5, 200), t % 40 == 39]
    svg = to_svg([sloped.astype(np.float32)] * 3, 100.0, line_height=50, margin=10, smooth=False)
    for i, g in enumerate(ET.fromstring(svg).findall(f"{SVG_NS}g")):
        xy = np.array([v.split(",") for v in g[0].get("d").replace("M", " ").replace("L", " ").split()], float)
        assert abs(np.polyfit(xy[:, 0], xy[:, 1], 1)[0]) < 0.01        # rising 0.2 per unit before levelling
        assert np.median(xy[:, 1]) == pytest.approx(10 + (i + 0.5) * 50, abs=0.3)


def two_word_line(gap: float, dot: bool = False) -> Line:
    """"ab cd" as two 11-point strokes (x steps of 1) `gap` units apart; optionally a dot drawn over "ab"
    while the window sits on the space."""
    word = np.c_[np.ones(11), np.zeros(11), np.arange(11) == 10]
    rows = [np.r_[[[0, 0, 0]], word[1:]]]
    kappa = [np.linspace(0, 1.4, 11)]
    if dot:
        rows.append([[-5, 5, 1]])
        kappa.append([2.0])
    rows.append(np.r_[[[gap + (5 if dot else 0), -(5 if dot else 0), 0]], word[1:]])
    kappa.append(np.linspace(3, 4, 11))
    off = np.concatenate(rows).astype(np.float32)
    position = np.concatenate(kappa).astype(np.float32)
    return Line("ab cd", off, "end of text", len(off), position, position=position)


def word_gap_in_svg(offsets: np.ndarray, units_per_line: float = 100.0) -> float:
    """The widest horizontal gap between the ink before a stroke and the stroke, in line heights."""
    svg = to_svg([offsets], units_per_line, line_height=100, margin=0, smooth=False)
    strokes = [np.array([v.split(",") for v in part.replace("L", " ").split()], float)
               for part in ET.fromstring(svg).find(f"{SVG_NS}g")[0].get("d").split("M")[1:]]
    gaps = [s[:, 0].min() - np.concatenate(strokes[:i])[:, 0].max() for i, s in enumerate(strokes) if i]
    return max(gaps) / (0.75 * 100)                    # the layout draws a line height 0.75 x line_height pixels


@pytest.mark.parametrize("gap, want", [(1.0, WORD_GAP[0]), (500.0, WORD_GAP[1]), (60.0, 0.60)])
def test_words_are_spaced_as_in_the_training_data(gap, want):
    spaced = space_words(two_word_line(gap), units_per_line=100.0)
    assert word_gap_in_svg(spaced) == pytest.approx(want, abs=0.01)


def test_a_stroke_drawn_on_the_space_stays_with_its_word():
    spaced = space_words(two_word_line(1.0, dot=True), units_per_line=100.0)
    assert np.array_equal(spaced[:12], two_word_line(1.0, dot=True).offsets[:12])      # the dot did not move
    assert word_gap_in_svg(spaced) == pytest.approx(WORD_GAP[0], abs=0.01)


def test_a_line_whose_window_stalls_is_drawn_again():
    m = racing_model()
    with torch.no_grad():
        m.net.window.bias[4:] = -40.0                     # the window never moves: every draw hits the cap
    assert [ln.tries for ln in synthesize(m, ["ab"], seed=1, max_steps_per_char=3)] == [3]
    assert [ln.tries for ln in synthesize(m, ["ab"], seed=1, max_steps_per_char=3, retries=0)] == [1]
    assert [ln.tries for ln in synthesize(racing_model(), ["ab"], seed=1)] == [1]


def test_svg_is_valid_xml_with_one_group_per_line_and_png():
    rng = np.random.default_rng(0)
    lines = [np.c_[rng.normal(5, 3, (30, 2)), (np.arange(30) % 10 == 9)].astype(np.float32) for _ in range(3)]
    svg = to_svg(lines, 100.0, line_height=50, margin=10, color="#123456", stroke_width=3)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg" and root.get("viewBox").startswith("0 0 ")
    groups = root.findall(f"{SVG_NS}g")
    assert len(groups) == 3
    for g in groups:
        (path,) = g.findall(f"{SVG_NS}path")
        assert path.get("d").startswith("M") and path.get("d").count("M") == 3
        assert path.get("stroke") == "#123456" and path.get("fill") == "none"
    W, H = float(root.get("width")), float(root.get("height"))
    assert H == 2 * 10 + 3 * 50
    xs = [float(v.split(",")[0]) for g in groups for v in g[0].get("d").replace("M", " ").replace("L", " ").split()]
    assert min(xs) == pytest.approx(10, abs=0.2) and max(xs) <= W - 10 + 0.2
    png = to_png(lines, 100.0, line_height=50, margin=10)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" in png[-12:]


# ----------------------------------------------------------------------------- model files and the CLI

@pytest.fixture(scope="module")
def hw_model(tmp_path_factory) -> Path:
    torch.manual_seed(4)
    cfg = tiny_cfg(alphabet=" abcdefghijklmnopqrstuvwxyz", mean=[10.0, 0.0], std=[50.0, 50.0])
    net = SynthesisNet(cfg)
    with torch.no_grad():
        net.window.bias[4:] = 2.0          # moves ~0.18 characters per point: terminates quickly
    rng = np.random.default_rng(0)
    styles = [{"text": "hello", "line_id": "x-01", "offsets": rng.normal(size=(20, 3)).astype(np.float32)}]
    return save_hw_model(tmp_path_factory.mktemp("hw") / "tiny-hw", net, styles, description="untrained test model")


def test_model_file_round_trip(hw_model):
    m = load_hw_model(str(hw_model))
    assert m.cfg.hidden == [8, 8] and len(m.styles) == 1 and m.styles[0]["text"] == "hello"
    assert json.loads(hw_model.read_text())["format"] == "hmgen-handwriting-model"
    with pytest.raises(ModelError, match="no handwriting model"):
        load_hw_model(str(hw_model.parent / "nope"))


def real(args, **kw):
    """The installed command in a subprocess (slow to start: used once for the stdin/stdout pipe)."""
    return subprocess.run(HMGEN + args, capture_output=True, text=True, timeout=120, **kw)


class Result:
    def __init__(self, r):
        self.returncode, self.stdout, self.stderr = r.exit_code, r.stdout, r.stderr


def run(args, input=None):
    """The command in-process (typer's runner): same parsing, exit codes and streams, no interpreter start-up."""
    from typer.testing import CliRunner

    from hmgen.cli import app
    return Result(CliRunner().invoke(app, args, input=input))


def test_cli_writes_svg_file_stdout_and_reads_stdin(tmp_path, hw_model):
    out = tmp_path / "out.svg"
    r = run(["handwrite", "hello world\nagain", "-m", str(hw_model), "-o", str(out), "--seed", "1", "-v",
             "--color", "navy", "--stroke-width", "1.5", "--png", str(tmp_path / "out.png")])
    assert r.returncode == 0, r.stderr
    root = ET.parse(out).getroot()
    assert len(root.findall(f"{SVG_NS}g")) == 2
    assert "line 1:" in r.stderr and "line 2:" in r.stderr and "stopped:" in r.stderr
    assert (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG")
    r2 = real(["handwrite", "-", "-m", str(hw_model), "-o", "-", "--seed", "1", "--style", "0"], input="abc def")
    assert r2.returncode == 0, r2.stderr
    assert ET.fromstring(r2.stdout).tag == f"{SVG_NS}svg"
    r3 = run(["handwrite", "hello world\nagain", "-m", str(hw_model), "-o", "-", "--seed", "1",
              "--color", "navy", "--stroke-width", "1.5"])
    assert r3.stdout == out.read_text()                       # same seed, same SVG
    r4 = run(["handwrite", "-m", str(hw_model), "--list-styles"])
    assert r4.returncode == 0 and r4.stdout.strip() == "0\thello\tx-01"


def test_cli_errors(tmp_path, hw_model):
    r = run(["handwrite", "héllo Wörld", "-m", str(hw_model), "-o", str(tmp_path / "x.svg")])
    assert r.returncode == 1 and r.stderr.startswith("hmgen: characters the model never saw")
    assert "'W'" in r.stderr and "'é'" in r.stderr and "'ö'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.svg").exists()
    r = run(["handwrite", "héllo Wörld", "-m", str(hw_model), "-o", "-", "--skip-unknown", "-v"])
    assert r.returncode == 0 and "skipped characters the model never saw: 'W' 'é' 'ö'" in r.stderr
    r = run(["handwrite", "hello", "-m", str(hw_model)])
    assert r.returncode == 2 and "-o" in r.stderr
    r = run(["handwrite", "hello", "-m", str(hw_model), "-o", "-", "--style", "7"])
    assert r.returncode == 1 and "no style 7" in r.stderr
    r = run(["handwrite", "  \n ", "-m", str(hw_model), "-o", "-"])
    assert r.returncode == 1 and "nothing to write" in r.stderr
    r = run(["handwrite", "hello", "-m", str(tmp_path / "none"), "-o", "-"])
    assert r.returncode == 1 and "no handwriting model" in r.stderr
    r = run(["handwrite", "hello", "-m", str(hw_model), "-o", "-", "--color", 'red"/><script'])
    assert r.returncode == 2 and "colour" in r.stderr
    r = run(["handwrite", "hello", "-m", str(hw_model), "-o", str(tmp_path / "no" / "dir.svg")])
    assert r.returncode == 1 and "cannot write" in r.stderr and not (tmp_path / "no").exists()


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path, hw_model, monkeypatch):
    out = tmp_path / "out.svg"
    out.write_text("the user's old drawing")
    real_write = Path.write_bytes

    def half_then_full(self, data):                 # the disk fills up half-way through the write
        real_write(self, data[:len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    r = run(["handwrite", "hello", "-m", str(hw_model), "-o", str(out)])
    assert r.returncode == 1 and "No space left" in r.stderr
    assert out.read_text() == "the user's old drawing" and [p.name for p in tmp_path.iterdir()] == ["out.svg"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_writing_to_a_device_writes_it_and_never_replaces_it(hw_model):
    r = run(["handwrite", "hello", "-m", str(hw_model), "-o", "/dev/full"])
    assert r.returncode == 1 and "No space left" in r.stderr and not Path("/dev/full").is_file()


# ----------------------------------------------------------------------------- training through hmgen train

def test_train_iam_runs_resumes_and_exports_a_usable_model(tmp_path, iam_dir):
    out = tmp_path / "run"
    common = ["--hidden", "8,8", "--no-layer-norm", "--mixtures", "3", "--window", "2", "--batch-size", "2",
              "--seq-len", "16", "--eval-every", "4", "--ckpt-every", "4", "--log-every", "2", "--threads", "1",
              "--out", str(out), "-q", "--json"]
    r = run(["train", f"iam:{iam_dir}", "--steps", "4"] + common)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == 4
    r = run(["train", "--resume", "--steps", "8", "--out", str(out), "-q", "--json"])
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["step"] >= 8 and summary["best_valid_nll"] is not None
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("valid_nll_line" in x for x in recs) and any(x.get("event") == "resume" for x in recs)
    m = load_hw_model(str(out / "best"))
    assert set(m.cfg.alphabet) == set("abc ") and m.styles == [] and m.cfg.std[0] > 0
    r = run(["handwrite", "cab", "-m", str(out / "best"), "-o", "-", "--seed", "0", "--max-steps-per-char", "5"])
    assert r.returncode == 0, r.stderr
    r = run(["train", f"iam:{tmp_path / 'nothing'}", "--steps", "1", "--out", str(tmp_path / "r2"), "-q"])
    assert r.returncode == 1 and r.stderr.startswith("hmgen: ") and "Traceback" not in r.stderr


def test_train_iam_resume_is_exact(tmp_path, iam_dir):
    from safetensors.torch import load_file
    common = ["--hidden", "8,8", "--mixtures", "3", "--window", "2", "--batch-size", "2", "--seq-len", "16",
              "--eval-every", "1000", "--ckpt-every", "1000", "--threads", "1", "-q", "--json"]
    r = run(["train", f"iam:{iam_dir}", "--epochs", "2", "--out", str(tmp_path / "a")] + common)
    assert r.returncode == 0, r.stderr
    r = run(["train", f"iam:{iam_dir}", "--epochs", "1", "--out", str(tmp_path / "b")] + common)
    assert r.returncode == 0, r.stderr
    r = run(["train", "--resume", "--epochs", "2", "--out", str(tmp_path / "b"), "-q", "--json"])
    assert r.returncode == 0, r.stderr
    a, b = (load_file(str(tmp_path / d / "checkpoint.safetensors")) for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "handwriting" / "iamondb"


@pytest.mark.skipif(not (SHARED / "lineStrokes-all.tar.xz").is_file(), reason="the project's IAM-OnDB copy is not here")
def test_real_iam_xml_files_match_the_aligned_npz():
    """A few real lineStrokes files, read straight from the archive, against the npz built from them."""
    got = {}
    with tarfile.open(SHARED / "lineStrokes-all.tar.xz", "r:xz") as tf:
        for m in tf:
            if m.isfile() and m.name.endswith(".xml"):
                got[Path(m.name).stem] = parse_strokes_xml(tf.extractfile(m).read())
                if len(got) == 3:
                    break
    z = np.load(SHARED / "iamondb_lines.npz")
    ids = list(z["line_id"])
    matched = [k for k in got if k in ids]
    assert matched
    for line_id in matched:
        pts = got[line_id]
        i = ids.index(line_id)
        seg = z["strokes"][z["line_start"][i]:z["line_start"][i + 1]].astype(np.int64)
        xy = z["first_xy"][i] + np.cumsum(seg[:, :2], 0)
        assert np.array_equal(pts[:, :2], xy) and np.array_equal(pts[:, 2], seg[:, 2])


def test_handwriting_training_applies_the_rate_regulariser_as_text_does(tmp_path, iam_dir):
    common = ["--hidden", "8,8", "--mixtures", "3", "--window", "2", "--batch-size", "2", "--seq-len", "16",
              "--eval-every", "4", "--ckpt-every", "4", "--log-every", "2", "--threads", "1", "--steps", "4", "-q"]
    for reg, out in (("0.03", tmp_path / "on"), ("0", tmp_path / "off")):
        r = run(["train", f"iam:{iam_dir}", "--rate-reg", reg, "--out", str(out)] + common)
        assert r.returncode == 0, r.stderr
    logged = lambda out: [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in ln]
    on, off = logged(tmp_path / "on"), logged(tmp_path / "off")
    assert all(rec["rate_loss"] > 0 for rec in on if "z_rates" in rec)
    assert not any("rate_loss" in rec for rec in off)


def test_handwriting_training_logs_each_detectors_firing_window_share_and_layer_operations(tmp_path, iam_dir):
    r = run(["train", f"iam:{iam_dir}", "--hidden", "8,8,8", "--mixtures", "3", "--window", "2", "--batch-size", "2",
             "--seq-len", "16", "--eval-every", "4", "--log-every", "1", "--threads", "1", "--steps", "2", "-q",
             "--out", str(tmp_path / "run")])
    assert r.returncode == 0, r.stderr
    recs = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"z_rates"' in ln]
    assert [rec["step"] for rec in recs] == [1, 2]
    for rec in recs:
        assert len(rec["fire"]) == len(rec["window"]) == 2 and all(0 <= v <= 1 for v in rec["fire"] + rec["window"])
        assert rec["fire"] == rec["z_rates"]                       # the same count, both over real points only
        assert len(rec["layers"]) == 3 and all(abs(sum(op.values()) - 1) < 1e-3 for op in rec["layers"])
        assert rec["layers"][0]["copy"] == 0                      # the bottom layer never copies
        assert {"L1.boundary", "L2.boundary", "L1.gates", "other"} <= set(rec["grad_groups"])


def test_eval_iam_gives_nll_per_line_and_point_and_each_layers_operations(tmp_path, iam_dir):
    out = tmp_path / "run"
    r = run(["train", f"iam:{iam_dir}", "--hidden", "8,8", "--mixtures", "3", "--window", "2", "--batch-size", "2",
             "--seq-len", "16", "--eval-every", "2", "--threads", "1", "--steps", "2", "-q", "--out", str(out)])
    assert r.returncode == 0, r.stderr
    r = run(["eval", f"iam:{iam_dir}", "--split", "test", "-m", str(out / "best"), "--json"])
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["split"] == "test" and got["lines"] == 2 and got["points"] > 0           # testset_f: c03-020x
    assert got["nll_line"] == pytest.approx(got["nll_point"] * got["points"] / got["lines"], rel=1e-3)
    assert len(got["layers"]) == 2 and set(got["layers"][1]) == {"update", "copy", "flush"}
    valid = json.loads(run(["eval", f"iam:{iam_dir}", "--split", "valid", "-m", str(out / "best"), "--json"]).stdout)
    assert valid["lines"] == 1 and valid["nll_line"] != got["nll_line"]
    r = run(["eval", f"iam:{iam_dir}", "--split", "dev", "-m", str(out / "best")])
    assert r.returncode == 1 and "unknown split 'dev'" in r.stderr and "Traceback" not in r.stderr
    r = run(["eval", f"iam:{iam_dir}", "--streams", "2", "-m", str(out / "best")])
    assert r.returncode == 2 and "--streams" in r.stderr


def test_features_of_a_hand_slant_width_height_and_pen_ups():
    from hmgen.handwriting.styles import features
    # twenty "letters" 40 units tall, 30 apart, each one stroke, their down-strokes leaning right by 20 degrees
    lean = np.tan(np.radians(20))
    letter = [(0, 0), (-40 * lean, -40), (-40 * lean + 10, -40), (10, 0)]          # down, right, up (y up)
    pts, x0 = [], 0.0
    for _ in range(20):
        pts += [(x0 + 40 * lean + x, 40 + y) for x, y in letter]
        x0 += 30
    xy = np.array(pts, float)
    eos = np.zeros(len(xy))
    eos[3::4] = 1
    off = np.c_[np.diff(np.r_[[[0, 0]], xy], axis=0), eos].astype(np.float32)
    f = features(off, "a" * 20)
    assert f["slant"] == pytest.approx(20, abs=0.5)
    assert f["pen_up_share"] == pytest.approx(0.25)
    assert f["letter_height"] == pytest.approx(40, abs=2)
    assert f["width_per_char"] == pytest.approx((19 * 30 + 10 + 40 * lean) / 20, rel=0.02)
    mirrored = off * np.array([-1, 1, 1], np.float32)
    assert features(mirrored, "a" * 20)["slant"] == pytest.approx(-20, abs=0.5)


def steady_window_model(step: float) -> "HandwritingModel":
    """Every window Gaussian alike, moving `step` characters per point whatever the network does."""
    torch.manual_seed(5)
    net = SynthesisNet(tiny_cfg(alphabet=" abcd"))
    with torch.no_grad():
        net.window.weight.zero_()
        net.window.bias[4:] = math.log(math.expm1(step / net.cfg.kappa_scale))   # softplus^-1
    return model_of(net)


def test_a_primed_line_leaves_out_the_rest_of_the_primers_text():
    m = steady_window_model(0.1)
    primer = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    primer[:, 2] = np.arange(12) % 4 == 3
    (ln,) = synthesize(m, ["ab"], seed=3, prime=(primer, "abcd"), max_steps_per_char=30)
    assert ln.prime_chars == 5 and ln.primer_lag == pytest.approx(3, abs=0.5)   # the window left on "b" of "abcd"
    assert ln.stop == "end of text"
    assert ln.position.min() >= ln.prime_chars - 1        # from the separating space on: nothing of "abcd"
    assert ln.steps == len(ln.offsets) < 30 * 3           # the cap counts this line's own points


def test_word_gaps_follow_the_window_position_not_its_lagging_mean():
    (ln,) = synthesize(steady_window_model(0.1), ["ab cd"], seed=1, max_steps_per_char=30)
    assert np.all(np.diff(ln.kappa) >= 0) and ln.position is not None and len(ln.position) == len(ln.offsets)
    assert np.array_equal(ln.position, np.round(ln.kappa))     # one Gaussian shape: the argmax is the nearest slot


def test_cli_svg_and_png_to_the_same_file_is_a_usage_error(tmp_path):
    r = subprocess.run(HMGEN + ["handwrite", "hi", "-o", str(tmp_path / "x.svg"), "--png", str(tmp_path / "x.svg")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "same file" in r.stderr and not (tmp_path / "x.svg").exists()


def test_handwriting_runs_default_to_a_tenth_of_the_straight_through_gradient_text_runs_to_all_of_it():
    from hmgen.handwriting.train import HandwritingTask
    from hmgen.text.train import TextTask
    from hmgen.training.config import TrainConfig
    hand = TrainConfig(data="iam:somewhere").with_defaults(HandwritingTask.detector_defaults).detectors
    text = TrainConfig(data="corpus.txt").with_defaults(TextTask.detector_defaults).detectors
    assert (hand.boundary_grad, hand.boundary_lr, hand.rate_band) == (0.1, 0.1, 1.0)
    assert (text.boundary_grad, text.boundary_lr, text.rate_band) == (1.0, 1.0, 2.0)
    mine = TrainConfig(data="iam:somewhere", boundary_grad=1.0, boundary_lr=0.5)
    mine = mine.with_defaults(HandwritingTask.detector_defaults).detectors
    assert (mine.boundary_grad, mine.boundary_lr) == (1.0, 0.5)


def test_with_a_style_a_line_is_written_in_primed_pieces_of_whole_words(monkeypatch):
    import hmgen.handwriting.sample as sample
    from hmgen.handwriting.sample import pieces_of
    assert pieces_of("ab cab a bb abcabcabc c", 6) == ["ab cab", "a bb", "abcabcabc", "c"]
    m = racing_model([{"text": "ab", "offsets": np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)}])
    asked = []
    real_synthesize = sample.synthesize
    monkeypatch.setattr(sample, "synthesize", lambda model, texts, *a, **k: asked.append(texts) or
                        real_synthesize(model, texts, *a, **k))
    lines = write_lines(m, ["ab cab a bb", "", "c"], seed=1, style=0, piece=6)
    assert asked == [["ab cab", "a bb", "c"]]                     # one batch: every piece of every line
    assert [ln.text for ln in lines] == ["ab cab a bb", "", "c"] and lines[0].stop == "end of text"
    write_lines(m, ["ab cab a bb"], seed=1, piece=6)               # no style: whole lines
    assert asked[-1] == ["ab cab a bb"]


def test_pieces_are_joined_a_word_gap_apart_at_the_same_height():
    from hmgen.handwriting.sample import join_pieces
    a = np.array([[0, 0, 0], [10, 5, 0], [10, -5, 1]], np.float32)         # ink from x 0 to 20, median y 0
    b = np.array([[0, 30, 0], [10, 10, 1]], np.float32)                    # from its origin: x 0..10, y 30..40
    off = join_pieces([a, b], units_per_line=100.0)
    xy = np.cumsum(off[:, :2], 0)
    assert len(off) == 5 and off[2, 2] == 1
    assert xy[3:, 0].min() - xy[:3, 0].max() == pytest.approx(100 * sum(WORD_GAP) / 2)
    assert np.median(xy[3:, 1]) == pytest.approx(np.median(xy[:3, 1]))


def test_calibration_sets_each_detectors_rate_on_the_lines_given():
    from hmgen.handwriting.calibrate import calibrate, rates
    from hmgen.handwriting.data import Prepared
    from hmgen.handwriting.train import tensors_for
    torch.manual_seed(0)
    cfg = tiny_cfg(hidden=[8, 8, 8], arch="hmlstm")
    net = SynthesisNet(cfg)
    rng = np.random.default_rng(0)
    lines = [Prepared(f"x-{i}", "abc ab", np.c_[rng.normal(size=(80, 2)), np.arange(80) % 9 == 8].astype(np.float32))
             for i in range(8)]
    batches = [tensors_for(lines, [0, 1, 2, 3], cfg, "cpu"), tensors_for(lines, [4, 5, 6, 7], cfg, "cpu")]
    calibrate(net, batches, [0.2, 0.05])
    got = rates(net, batches)
    assert got[0] == pytest.approx(0.2, abs=0.01) and got[1] == pytest.approx(0.05, abs=0.01)
