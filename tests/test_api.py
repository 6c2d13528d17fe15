"""hmgen as a library, like Python's lzma module: compress / decompress / open, interoperable with the CLI."""
import io
import subprocess

import pytest

import hmgen
from tests.conftest import HMGEN

TEXT = b"The hierarchical multiscale LSTM finds where words end.\n" * 20


@pytest.fixture
def model(byte_model):
    return str(byte_model)


def test_compress_then_decompress_gives_the_bytes_back(model):
    packed = hmgen.compress(TEXT, model)
    assert packed[:4] == b"\x89HMZ" and hmgen.decompress(packed, model) == TEXT


def test_concatenated_archives_decompress_to_the_concatenation(model):
    assert hmgen.decompress(hmgen.compress(b"one ", model) + hmgen.compress(b"two", model), model) == b"one two"


def test_the_cli_reads_what_the_library_writes_and_the_other_way_round(model, tmp_path):
    (tmp_path / "a.hmz").write_bytes(hmgen.compress(TEXT, model))
    r = subprocess.run(HMGEN + ["decompress", "-c", "-m", model, str(tmp_path / "a.hmz")], capture_output=True)
    assert r.returncode == 0 and r.stdout == TEXT
    cli = subprocess.run(HMGEN + ["compress", "-m", model], input=TEXT, capture_output=True).stdout
    assert hmgen.decompress(cli, model) == TEXT


def test_open_streams_writes_and_reads_of_any_size(model, tmp_path):
    path = tmp_path / "x.hmz"
    with hmgen.open(path, "wb", model=model) as f:
        for i in range(0, len(TEXT), 7):
            f.write(TEXT[i:i + 7])
    with hmgen.open(path, "rb", model=model) as f:
        assert f.read(5) == TEXT[:5] and f.read() == TEXT[5:] and f.read() == b""


def test_open_in_text_mode_encodes_and_decodes(model, tmp_path):
    with hmgen.open(tmp_path / "t.hmz", "wt", model=model, encoding="utf-8") as f:
        f.write("wörds\n")
    with hmgen.open(tmp_path / "t.hmz", "rt", model=model, encoding="utf-8") as f:
        assert f.read() == "wörds\n"


def test_open_takes_file_objects_and_append_adds_a_member(model, tmp_path):
    buffer = io.BytesIO()
    with hmgen.open(buffer, "wb", model=model) as f:
        f.write(b"first ")
    with hmgen.open(tmp_path / "a.hmz", "wb", model=model) as f:
        f.write(b"one ")
    with hmgen.open(tmp_path / "a.hmz", "ab", model=model) as f:
        f.write(b"two")
    assert hmgen.decompress(buffer.getvalue(), model) == b"first "
    assert hmgen.decompress((tmp_path / "a.hmz").read_bytes(), model) == b"one two"


def test_a_damaged_archive_raises_an_hmgen_error(model):
    packed = bytearray(hmgen.compress(TEXT, model))
    packed[len(packed) // 2] ^= 0x20
    with pytest.raises(hmgen.HmgenError):
        hmgen.decompress(bytes(packed), model)
    with pytest.raises(hmgen.FormatError):
        hmgen.decompress(b"not an archive")


@pytest.mark.parametrize("level", [1, 2, 3, 9])
def test_every_level_decodes_without_being_told_it(model, level):
    assert hmgen.decompress(hmgen.compress(TEXT, model, level=level), model) == TEXT


def test_a_level_outside_1_to_9_is_refused(model):
    with pytest.raises(ValueError):
        hmgen.compress(TEXT, model, level=10)


def test_importing_hmgen_does_not_import_the_coder():
    code = "import sys, hmgen; print('numba' in sys.modules, 'torch' in sys.modules)"
    r = subprocess.run([HMGEN[0], "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("flags", [["-T2"], ["-cT2"], ["-T", "2"]])
def test_a_thread_count_written_as_xz_writes_it_is_not_a_level(flags, model):
    from hmgen.cli.archive import level_flags
    assert not any(a.startswith("--level") for a in level_flags(["compress", *flags]))
    r = subprocess.run(HMGEN + ["compress", *flags, "-m", model], input=TEXT, capture_output=True)
    assert r.returncode == 0 and hmgen.decompress(r.stdout, model) == TEXT


@pytest.mark.parametrize("flags,level", [(["-1"], 1), (["--fast"], 1), (["--best"], 9), (["-9c"], 9),
                                         (["-3", "-c"], 3), (["--level", "2"], 2), (["-3T2"], 3), (["-3cT", "2"], 3)])
def test_cli_level_flags_as_gzip_and_xz_take_them(flags, level, model):
    from hmgen.cli.archive import level_flags
    expanded = level_flags(["compress", *flags])
    assert f"--level={level}" in expanded or ["--level", str(level)] == expanded[1:3]
    r = subprocess.run(HMGEN + ["compress", *flags, "-m", model], input=TEXT, capture_output=True)
    assert r.returncode == 0 and hmgen.decompress(r.stdout, model) == TEXT
