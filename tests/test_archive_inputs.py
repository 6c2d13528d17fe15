"""What compress and decompress take, and what they leave: gzip's and xz's conventions for files that are not
plain files (devices, FIFOs, links), names at the file system's limit, standard streams closed or on a terminal."""
import os
import pty
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import HMGEN

SKIPPED = 3


def hmgen(*args, stdin=None, **kw):
    return subprocess.run(HMGEN + list(args), input=stdin, capture_output=True, timeout=120, **kw)


@pytest.fixture
def model(byte_model):
    return ["-m", str(byte_model)]


def test_a_device_node_is_skipped_and_never_removed(tmp_path, model):
    node = tmp_path / "mynull"
    try:
        os.mknod(node, 0o644 | 0o020000, os.makedev(1, 3))        # a character device, as /dev/null
    except PermissionError:
        pytest.skip("mknod needs root")
    r = hmgen("compress", *model, str(node))
    assert r.returncode == SKIPPED and b"not a regular file" in r.stderr
    assert node.is_char_device() and not (tmp_path / "mynull.hmz").exists()


def test_a_fifo_is_skipped_at_once_and_kept(tmp_path, model):
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    r = hmgen("compress", *model, str(fifo))          # no writer: it must not wait for one
    assert r.returncode == SKIPPED and fifo.exists() and not (tmp_path / "ff.hmz").exists()


def test_with_c_a_fifo_is_read_once_as_a_stream(tmp_path, model):
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(b"data\n"))
    writer.start()
    r = hmgen("compress", "-c", *model, str(fifo))
    writer.join()
    assert r.returncode == 0 and hmgen("decompress", *model, stdin=r.stdout).stdout == b"data\n"


@pytest.mark.parametrize("c", [[], ["-c"]])
def test_a_socket_is_skipped(tmp_path, model, c):
    import socket
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        r = hmgen("compress", *c, *model, str(tmp_path / "sock"))
    assert r.returncode == SKIPPED and b"socket" in r.stderr and r.stdout == b""


def test_decompress_skips_a_fifo_named_like_an_archive(tmp_path, model):
    fifo = tmp_path / "x.hmz"
    os.mkfifo(fifo)
    r = hmgen("decompress", str(fifo))
    assert r.returncode == SKIPPED and fifo.exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("make", ["symlink", "hardlink"])
def test_a_linked_file_is_skipped_unless_kept_or_forced(tmp_path, model, make):
    target = tmp_path / "a.txt"
    target.write_bytes(b"the linked text\n")
    link = tmp_path / "l.txt"
    (link.symlink_to if make == "symlink" else link.hardlink_to)(target)
    r = hmgen("compress", *model, str(link))
    assert r.returncode == SKIPPED and link.exists() and not (tmp_path / "l.txt.hmz").exists()
    assert hmgen("compress", "-k", "-q", *model, str(link)).returncode == 0
    assert (tmp_path / "l.txt.hmz").exists() and link.exists() and target.read_bytes() == b"the linked text\n"
    assert hmgen("compress", "-f", "-q", *model, str(link)).returncode == 0
    assert not link.exists() and not link.is_symlink() and target.read_bytes() == b"the linked text\n"


@pytest.mark.parametrize("command, missing, present", [("compress", "gone.txt", "gone.txt.hmz"),
                                                      ("decompress", "gone.hmz", "gone")])
def test_a_missing_input_is_an_error_even_when_its_output_exists(tmp_path, model, command, missing, present):
    (tmp_path / present).write_bytes(b"")
    r = hmgen(command, *model, missing, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr == f"hmgen: {missing}: No such file or directory\n".encode()


def test_c_and_f_compress_an_archive_again(tmp_path, model):
    f = tmp_path / "x.hmz"
    f.write_bytes(b"already compressed, says its name\n")
    assert hmgen("compress", *model, str(f)).returncode == SKIPPED
    again = hmgen("compress", "-c", *model, str(f))
    assert again.returncode == 0 and hmgen("decompress", *model, stdin=again.stdout).stdout == f.read_bytes()
    assert hmgen("compress", "-f", "-k", "-q", *model, str(f)).returncode == 0 and (tmp_path / "x.hmz.hmz").exists()


def test_a_name_near_the_file_system_limit_still_compresses(tmp_path, model):
    f = tmp_path / ("n" * 246)                          # its archive's name is 250 bytes: allowed (255)
    f.write_bytes(b"a long name\n")
    r = hmgen("compress", "-k", *model, str(f))
    assert r.returncode == 0, r.stderr
    assert hmgen("decompress", "-c", *model, str(f) + ".hmz").stdout == b"a long name\n"


def test_a_write_error_names_the_output_and_leaves_no_temporary_file(tmp_path, model):
    import resource
    f = tmp_path / "a.txt"
    f.write_bytes(os.urandom(4000))                      # its archive is larger than the 1,000 bytes allowed
    r = hmgen("compress", *model, str(f), preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000)))
    assert r.returncode == 1 and str(f).encode() + b".hmz: " in r.stderr and b".tmp" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_an_input_read_error_names_the_input_and_writes_nothing_to_stdout(model):
    r = hmgen("compress", "-c", *model, "/proc/self/mem")      # a regular file whose first read fails (EIO)
    assert r.returncode == 1 and r.stdout == b"" and b"/proc/self/mem" in r.stderr


@pytest.mark.parametrize("args", [["compress"], ["decompress"], ["boundaries", "-"], ["handwrite", "-", "-o", "x.svg"]])
def test_a_closed_standard_input_is_a_one_line_error(args, model, tmp_path):
    extra = model if args[0] in ("compress", "boundaries") else []
    r = subprocess.run(HMGEN + args + extra, stdin=subprocess.DEVNULL, capture_output=True, cwd=tmp_path,
                       timeout=120, preexec_fn=lambda: os.close(0))
    assert r.returncode == 1 and r.stderr.startswith(b"hmgen: standard input: ") and r.stderr.count(b"\n") == 1
    assert not (tmp_path / "x.svg").exists()


def test_a_closed_standard_error_does_not_stop_the_work(tmp_path, model):
    f = tmp_path / "a.txt"
    f.write_bytes(b"quiet, please\n")
    r = subprocess.run(HMGEN + ["compress", *model, str(f)], capture_output=True, timeout=120,
                       preexec_fn=lambda: os.close(2))
    assert r.returncode == 0 and (tmp_path / "a.txt.hmz").exists() and not f.exists()


def on_a_terminal(args, stdin=None):
    """Run with stdout (and stdin unless given) on a pseudo-terminal; (exit status, what stdout showed)."""
    controller, terminal = pty.openpty()
    try:
        r = subprocess.run(HMGEN + args, stdin=stdin if stdin is not None else terminal, stdout=terminal,
                           stderr=subprocess.PIPE, timeout=60)
        os.set_blocking(controller, False)
        try:
            shown = os.read(controller, 1 << 16)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(controller)
        os.close(terminal)
    return r, shown


def test_dash_among_files_writes_no_archive_to_a_terminal(tmp_path, model):
    f = tmp_path / "b.txt"
    f.write_bytes(b"b\n")
    with open(f, "rb") as stdin:
        r, shown = on_a_terminal(["compress", "-k", *model, str(f), "-"], stdin=stdin)
    assert r.returncode == 1 and b"terminal" in r.stderr and b"HMZ" not in shown


def test_listing_standard_input_on_a_terminal_does_not_wait():
    start = time.time()
    r, _ = on_a_terminal(["decompress", "-l"])
    assert r.returncode == 1 and b"terminal" in r.stderr and time.time() - start < 30


@pytest.mark.parametrize("kind", ["directory", "socket"])
def test_listing_skips_a_directory_or_socket_with_a_warning_as_testing_does(tmp_path, kind):
    import socket
    path = tmp_path / "x.hmz"
    with socket.socket(socket.AF_UNIX) as s:
        path.mkdir() if kind == "directory" else s.bind(str(path))
        tested = hmgen("decompress", "-t", str(path))
        listed, as_json = hmgen("decompress", "-l", str(path)), hmgen("decompress", "-l", "--json", str(path))
    assert tested.returncode == listed.returncode == as_json.returncode == SKIPPED
    assert listed.stderr == tested.stderr and b"-- ignored" in listed.stderr and listed.stdout == b""   # no header
    assert __import__("json").loads(as_json.stdout) == []


def test_listing_reads_a_fifo_as_a_stream(tmp_path, model):
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    packed = hmgen("compress", *model, stdin=b"abc\n").stdout
    writer = threading.Thread(target=lambda: fifo.write_bytes(packed))
    writer.start()
    r = hmgen("decompress", "-l", "--json", str(fifo))
    writer.join()
    assert r.returncode == 0 and __import__("json").loads(r.stdout)[0]["original"] == 4


def test_listing_a_concatenation_made_with_two_models_names_both(byte_model, char_model, tmp_path):
    other = tmp_path / "other"
    from tests.conftest import make_model
    from hmgen.text.data import Vocab
    make_model(other, Vocab("bytes"), seed=1)
    both = (hmgen("compress", "-m", str(byte_model), stdin=b"abc\n").stdout
            + hmgen("compress", "-m", str(other), stdin=b"def\n").stdout)
    r = hmgen("decompress", "-l", "--json", stdin=both)
    listed = __import__("json").loads(r.stdout)[0]
    assert r.returncode == 0 and [m["name"] for m in listed["models"]] == ["bytes", "other"] and listed["members"] == 2


def test_an_archive_made_with_another_model_of_the_same_name_asks_for_its_file():
    from types import SimpleNamespace
    from hmgen.archive.format import FormatError, Header, check_model
    made = Header("english-small-3", b"\x01" * 32, 0)         # a user's run named like the bundled model
    with pytest.raises(FormatError, match="--model PATH") as e:
        check_model(made, SimpleNamespace(hash=b"\x02" * 32), "english-small-3")
    assert "--model english-small-3" not in str(e.value)


def test_an_archive_whose_model_is_there_but_damaged_says_so_not_that_it_is_missing(monkeypatch):
    from hmgen.archive import files
    from hmgen.archive.format import FormatError, Header
    from hmgen.modelfile import ModelError, ModelNotFound
    def failing(error):
        def get(name):
            raise error
        return get

    head = Header("english-small-3", b"\x01" * 32, 0)
    engines = files.Engines()
    monkeypatch.setattr(engines, "get", failing(ModelError("m.safetensors: damaged")))
    with pytest.raises(ModelError, match="damaged"):
        engines.for_archive(head, None)
    monkeypatch.setattr(engines, "get", failing(ModelNotFound("no text model")))
    with pytest.raises(FormatError, match="not installed: pass --model PATH"):
        engines.for_archive(head, None)


@pytest.mark.parametrize("command", [[], ["compress"], ["sample"], ["handwrite"], ["train"]])
def test_help_on_a_narrow_terminal_never_cuts_an_example_command(command):
    import os
    r = subprocess.run(HMGEN + command + ["--help"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "40"})
    examples = [l for l in r.stdout.splitlines() if l.lstrip().startswith(("hmgen ", "cat "))]
    assert r.returncode == 0 and all(len(l) <= 40 for l in examples), examples


@pytest.mark.slow
def test_a_big_file_shows_bytes_rate_and_time_left_both_ways_on_a_terminal(tmp_path, model):
    from tests.test_cli import stderr_through_a_terminal
    f = tmp_path / "big.txt"
    words = b"the a cat dog sat ran on under mat hill river and then slowly quickly".split()
    rng = random.Random(0)
    f.write_bytes(b" ".join(rng.choice(words) for _ in range(60_000)))
    shown = stderr_through_a_terminal(["compress", "-k", *model, str(f)])
    assert "big.txt" in shown and "kB" in shown and "/s" in shown and ("0:00" in shown or "-:--:--" in shown)
    shown = stderr_through_a_terminal(["decompress", "-f", *model, str(f) + ".hmz"])
    total = f"{f.stat().st_size / 1000:.1f}"
    assert "kB/s" in shown and f"/{total}" in shown.replace("\u2009", "")       # the total from the headers
