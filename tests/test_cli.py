"""The command line: one-line errors, exit codes, JSON for scripts."""
import json
import subprocess

from hmgen import __version__
from tests.conftest import HMGEN


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


def test_training_shows_a_progress_bar_on_a_terminal(tmp_path):
    shown = stderr_through_a_terminal(train_args(tmp_path))
    assert "train" in shown and "bpc" in shown and "ch/s" in shown and "6/6" in shown


def test_quiet_training_shows_no_progress_bar(tmp_path):
    assert "bpc" not in stderr_through_a_terminal(train_args(tmp_path) + ["--quiet"])
