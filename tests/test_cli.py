"""The command line: one-line errors, exit codes, JSON for scripts."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from hmgen import __version__
from tests.conftest import HMGEN

DATA = Path(__file__).parent / "data"


def run(*args, timeout=300):
    return subprocess.run(HMGEN + list(args), capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(r, code=1):
    assert r.returncode == code
    assert r.stderr.startswith("hmgen: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"hmgen {__version__}"


def test_help_shows_examples():
    r = run("--help")
    assert r.returncode == 0 and 'hmgen sample --prime "the"' in r.stdout


def test_eval_reports_bpc_and_operation_rates_as_json(byte_model, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("the cat sat on the mat. " * 20)
    r = run("eval", str(f), "-m", str(byte_model), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["symbols"] == len(f.read_bytes()) - 1
    assert 0 < out["bpc"] < 20
    assert len(out["layers"]) == 2 and all(abs(sum(l.values()) - 1) < 1e-3 for l in out["layers"])


def test_eval_of_a_missing_file_is_a_one_line_error(byte_model, tmp_path):
    assert_one_line_error(run("eval", str(tmp_path / "missing.txt"), "-m", str(byte_model)))


def test_eval_of_text_outside_the_vocabulary_is_a_one_line_error(char_model, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("UPPER CASE")
    assert_one_line_error(run("eval", str(f), "-m", str(char_model)))


def test_unknown_model_is_a_one_line_error():
    assert_one_line_error(run("sample", "-m", "no-such-model"))


def test_bad_option_value_is_a_usage_error():
    r = run("sample", "--temperature", "-1")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def stderr_through_a_terminal(args, timeout=300) -> str:
    """Run hmgen with stderr on a pseudo-terminal (stdout a pipe) and return what the terminal showed."""
    import os
    import pty
    master, slave = pty.openpty()
    proc = subprocess.Popen(HMGEN + list(args), stdout=subprocess.PIPE, stderr=slave, env={**os.environ, "COLUMNS": "200"})
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    proc.wait(timeout=timeout)
    os.close(master)
    return shown.decode("utf-8", "replace")


def train_args(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return ["train", str(text), "--out", str(tmp_path / "run"), "--hidden", "8,8", "--out-embed", "8", "--embed-dim", "8",
            "--batch-size", "2", "--seq-len", "8", "--steps", "6", "--log-every", "2", "--eval-every", "1000"]


@pytest.mark.slow
def test_training_shows_a_progress_bar_on_a_terminal(tmp_path):
    shown = stderr_through_a_terminal(train_args(tmp_path))
    assert "train" in shown and "bpc" in shown and "ch/s" in shown and "6/6" in shown


@pytest.mark.slow
def test_quiet_training_shows_no_progress_bar(tmp_path):
    assert "bpc" not in stderr_through_a_terminal(train_args(tmp_path) + ["--quiet"])


# ----------------------------------------------------------------------------- bad values stop at the edge

def in_process(args, input=None):
    """The command in-process (typer's runner): same parsing, error lines and exit codes, no start-up cost."""
    from typer.testing import CliRunner

    from hmgen.cli import app
    return CliRunner().invoke(app, args, input=input, prog_name="hmgen")


@pytest.mark.parametrize("args", [
    ["sample", "-t", "inf", "-n", "5"],
    ["sample", "--device", "bogus", "-n", "5"],
    ["eval", "x.txt", "--device", "bogus"],
    ["eval", "x.txt", "--threads", "0"],
    ["eval", "x.txt", "--threads", "-1"],
    ["eval", "x.txt", "--max-symbols", "0"],
    ["eval", "x.txt", "--max-symbols", "-5"],
    ["handwrite", "hi", "-o", "-", "--bias", "inf"],
    ["train", "x.txt", "-b", "0"],
    ["train", "x.txt", "--lr", "-1"],
    ["train", "x.txt", "--threads", "0"],
    ["compress", "--lanes", "0"],
    ["sample", "--no-such-option"],
])
def test_a_bad_option_value_is_one_usage_line_with_status_2(args):
    r = in_process(args)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("hmgen: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("command", [["sample", "-n", "5"], ["eval", "x.txt"], ["boundaries", "x"],
                                     ["train", "x.txt"], ["compress"]])
def test_asking_for_a_missing_cuda_device_is_one_usage_line(command):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = in_process(command + ["--device", "cuda"])
    assert r.exit_code == 2 and r.stderr == "hmgen: no CUDA device available (use --device cpu)\n"


# ----------------------------------------------------------------------------- eval: what is evaluated

def test_eval_refuses_a_split_of_a_plain_file(byte_model, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("the cat sat on the mat. " * 20)
    r = in_process(["eval", str(f), "--split", "test", "-m", str(byte_model)])
    assert r.exit_code == 2 and "has no splits" in r.stderr and r.stderr.count("\n") == 1


def test_eval_refuses_a_corpus_folder_without_a_test_split_naming_its_splits(byte_model, tmp_path):
    for split in ("train", "valid"):
        (tmp_path / f"x.{split}.txt").write_text("the cat sat on the mat. " * 20)
    r = in_process(["eval", str(tmp_path), "-m", str(byte_model)])
    assert r.exit_code == 2 and "no test split (it has: train, valid)" in r.stderr
    assert in_process(["eval", str(tmp_path), "--split", "valid", "-m", str(byte_model), "-q"]).exit_code == 0


def test_eval_refuses_an_unknown_split_name_before_looking_at_the_data(tmp_path):
    r = in_process(["eval", f"ptb:{tmp_path / 'nonexist'}", "--split", "bogus"])
    assert r.exit_code == 2 and "'bogus' is not one of train, valid, test" in r.stderr and r.stderr.count("\n") == 1


def test_eval_of_an_empty_device_says_what_eval_of_an_empty_file_says(byte_model, tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    said = [in_process(["eval", path, "-m", str(byte_model)]).stderr
            for path in (str(tmp_path / "empty.txt"), "/dev/null")]
    assert said == [f"hmgen: {tmp_path / 'empty.txt'}: need at least 2 symbols to evaluate\n",
                    "hmgen: /dev/null: need at least 2 symbols to evaluate\n"]


def test_eval_uses_a_plain_folder_whole(byte_model, tmp_path):
    (tmp_path / "a.txt").write_text("the cat sat. ")
    (tmp_path / "b.txt").write_text("on the mat. ")
    r = in_process(["eval", str(tmp_path), "-m", str(byte_model), "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["symbols"] == len("the cat sat. on the mat. ") - 1


def test_eval_runs_pieces_side_by_side_only_when_each_is_long():
    from hmgen.cli.text import MIN_PIECE, default_streams
    assert default_streams(MIN_PIECE) == 1 and default_streams(2 * MIN_PIECE + 1) == 2
    assert default_streams(100 * MIN_PIECE) == 16


def test_eval_says_when_pieces_run_side_by_side_lose_context(byte_model, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("the cat sat on the mat. " * 20)
    r = in_process(["eval", str(f), "-m", str(byte_model), "--json", "--streams", "4"])
    assert r.exit_code == 0 and json.loads(r.stdout)["streams"] == 4 and "zero state" in r.stderr
    one = in_process(["eval", str(f), "-m", str(byte_model), "--json"])
    assert json.loads(one.stdout)["streams"] == 1 and "note" not in one.stderr


# ----------------------------------------------------------------------------- standard output going wrong

@pytest.mark.slow                                     # ~10 s: a process for every command
def test_every_command_stops_quietly_with_141_when_the_reader_leaves():
    for args in (["sample", "-n", "200"], ["decompress", "-c", str(DATA / "golden.hmz")], ["models"],
                 ["boundaries", "the_quick"]):                # the last two draw with rich, which exited with 1
        p = subprocess.Popen(HMGEN + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.close()                              # the reader left before the first byte
        err = p.stderr.read()
        assert p.wait(timeout=300) == 141 and err == b"", (args, err)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_standard_output_is_one_line_error():
    with open("/dev/full", "wb") as full:
        r = subprocess.run(HMGEN + ["sample", "-n", "50"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr == "hmgen: standard output: No space left on device\n"


def test_a_closed_standard_output_is_one_line_error():
    r = subprocess.run(HMGEN + ["decompress", "-c", str(DATA / "golden.hmz")], stderr=subprocess.PIPE,
                       text=True, timeout=300, preexec_fn=lambda: os.close(1))
    assert r.returncode == 1 and r.stderr == "hmgen: standard output: Bad file descriptor\n"


# ----------------------------------------------------------------------------- help

COMMANDS = ["train", "sample", "eval", "boundaries", "models", "handwrite", "compress", "decompress"]


@pytest.mark.parametrize("command", [[]] + [[c] for c in COMMANDS])
def test_help_is_whole_at_80_columns(command):
    from typer.testing import CliRunner

    from hmgen.cli import app
    r = CliRunner().invoke(app, command + ["--help"], prog_name="hmgen", env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0
    assert "…" not in r.stdout and max(map(len, r.stdout.splitlines())) <= 80


@pytest.mark.parametrize("command", ["sample", "handwrite", "train"])
def test_help_on_a_narrow_terminal_fits_it_and_cuts_no_word(command):
    import typer

    from hmgen.cli import app
    r = subprocess.run(HMGEN + [command, "--help"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "40"})
    shown = r.stdout.split()
    words = [w for p in typer.main.get_command(app).commands[command].params for w in (p.help or "").split()]
    assert r.returncode == 0 and max(map(len, r.stdout.splitlines())) <= 40
    assert [w for w in words if w not in shown] == []


def test_help_names_the_exit_statuses_and_offers_completion():
    r = in_process(["--help"])
    assert "Exit status" in r.stdout and "141" in r.stdout
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout
    assert "3 warning" in in_process(["compress", "--help"]).stdout


# ----------------------------------------------------------------------------- handwrite output

def test_handwrite_writes_a_png_to_standard_output():
    r = in_process(["handwrite", "hi", "--png", "-", "--seed", "1"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes.startswith(b"\x89PNG") and not list(Path(".").glob("-"))


def test_handwrite_refuses_two_outputs_on_standard_output():
    r = in_process(["handwrite", "hi", "-o", "-", "--png", "-"])
    assert r.exit_code == 2 and "choose one" in r.stderr


@pytest.mark.parametrize("args,option", [
    (["sample", "--seed", "99999999999999999999999", "-n", "1"], "--seed"),
    (["sample", "-t", "inf", "-n", "1"], "--temperature"),
    (["eval", "x.txt", "--threads", str(2 ** 64)], "--threads"),
    (["compress", "--lanes", str(2 ** 70)], "--lanes"),
    (["handwrite", "hi", "-o", "x.svg", "--bias", "1e38"], "--bias"),
    (["handwrite", "hi", "-o", "x.svg", "--max-steps-per-char", str(2 ** 64)], "--max-steps-per-char"),
    (["handwrite", "hi", "-o", "x.svg", "--line-height", "1e300"], "--line-height"),
    (["train", "x.txt", "--steps", str(2 ** 64)], "--steps"),
])
def test_extreme_numbers_are_usage_errors_naming_the_option(args, option, tmp_path):
    r = subprocess.run(HMGEN + args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert_one_line_error(r, 2)
    assert option in r.stderr and not (tmp_path / "x.svg").exists()


@pytest.mark.parametrize("args, says", [
    (["sample", "-t", "nan", "-n", "1"], "nan is not a finite number (expected a number of at least 0)"),
    (["handwrite", "hi", "-o", "x.svg", "--bias", "nan"],
     "nan is not a finite number (expected a number from 0 to 100)"),
    (["compress", "-T", "-1"], "-1 is not an integer from 0 to 1024"),           # -1 is -T's value, not level 1
    (["compress", "--threads", "x"], "'x' is not an integer from 0 to 1024"),
    (["sample", "-n", "1e3"], "'1e3' is not an integer of at least 0"),
])
def test_a_bad_number_is_refused_saying_what_the_option_takes(args, says):
    r = in_process(args)
    assert r.exit_code == 2 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_model_too_large_for_torch_to_describe_is_refused_as_too_large_for_memory(tmp_path):
    data = tmp_path / "c.txt"
    data.write_text("some text to train on\n" * 100)
    r = in_process(["train", str(data), "--hidden", "3000000000", "--embed-dim", "8", "--steps", "1",
                    "--out", str(tmp_path / "run"), "-q"])
    assert r.exit_code == 2 and "GiB to train" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["sample", "--prime", "ab\udcff", "-n", "1"], ["boundaries", "ab\udcff"],
                                  ["handwrite", "ab\udcff", "-o", "x.svg"]])
def test_text_that_is_not_utf8_is_a_usage_error(args, tmp_path):
    argv = [os.fsencode(a) for a in HMGEN + args]           # the shell passes the byte 0xff as it is
    r = subprocess.run(argv, capture_output=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and b"not UTF-8" in r.stderr and b"0xff" in r.stderr and r.stderr.count(b"\n") == 1


@pytest.mark.parametrize("args", [["sample", "-m", "zz\udcff"], ["handwrite", "hi", "-o", "x.svg", "-m", "zz\udcff"],
                                  ["compress", "-c", "-m", "zz\udcff", "gone.txt"]])
def test_a_quoted_name_that_is_not_utf8_shows_its_bytes_as_escapes(args, tmp_path):
    argv = [os.fsencode(a) for a in HMGEN + args]
    r = subprocess.run(argv, capture_output=True, cwd=tmp_path, timeout=120)
    assert r.returncode in (1, 2) and b"zz\\xff" in r.stderr and b"udc" not in r.stderr, r.stderr


def test_handwriting_standard_input_that_is_not_utf8_is_refused_as_boundaries_refuses_it(tmp_path):
    for args in (["handwrite", "-", "-o", "x.svg"], ["boundaries", "-"]):
        r = subprocess.run(HMGEN + args, input=b"ab\xff cd", capture_output=True, cwd=tmp_path, timeout=120)
        said = b"hmgen: standard input: not UTF-8 text (invalid start byte at byte 2)\n"
        assert r.returncode == 1 and r.stderr == said
    assert not (tmp_path / "x.svg").exists()


@pytest.mark.parametrize("temperature", ["1e-45", "5e-324", "1e300"])
def test_extreme_temperatures_still_sample(temperature, byte_model):
    r = run("sample", "-m", str(byte_model), "-t", temperature, "-n", "20", "--seed", "1")
    assert r.returncode == 0 and r.stderr == "" and len(r.stdout) == 20


def test_commands_that_step_a_model_run_torch_on_one_thread_unless_told(byte_model, monkeypatch, tmp_path):
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    (tmp_path / "t.txt").write_text("the cat sat on the mat\n")
    m = ["-m", str(byte_model)]
    for args in (["sample", "-n", "3", *m], ["eval", str(tmp_path / "t.txt"), "-q", *m], ["boundaries", "ab", "-q", *m],
                 ["boundaries", "ab", "-q", "--threads", "2", *m]):
        assert in_process(args).exit_code == 0
    assert chosen == [1, 1, 1, 2]


def test_a_model_too_large_for_memory_is_refused_before_training(tmp_path):
    data = tmp_path / "c.txt"
    data.write_text("some text to train on\n" * 100)
    r = run("train", str(data), "--embed-dim", "100000000000", "--steps", "1", "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(r, 2)
    assert "GiB" in r.stderr and not (tmp_path / "run").exists()


def test_debugging_is_off_when_hmgen_debug_is_0():
    r = subprocess.run(HMGEN + ["sample", "-m", "no-such-model"], capture_output=True, text=True,
                       env={**os.environ, "HMGEN_DEBUG": "0"}, timeout=120)
    assert_one_line_error(r)


def test_eval_dash_reads_standard_input(byte_model):
    r = subprocess.run(HMGEN + ["eval", "-", "-m", str(byte_model), "--json"], input="the cat sat on the mat. " * 10,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["symbols"] == 239


@pytest.mark.parametrize("spec", ["FILE", "ptb:DIR"])
def test_every_split_error_is_a_usage_error(spec, byte_model, tmp_path):
    (tmp_path / "f.txt").write_text("some text\n")
    for name in ("train", "valid", "test"):
        (tmp_path / f"ptb.char.{name}.txt").write_text("a b _ c \n")
    data = str(tmp_path / "f.txt") if spec == "FILE" else f"ptb:{tmp_path}"
    assert_one_line_error(run("eval", data, "--split", "bogus", "-m", str(byte_model)), 2)
