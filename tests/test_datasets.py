"""hmgen.text.datasets.fetch against a stand-in archive served on 127.0.0.1 (never the real 100 MB corpora)."""
from __future__ import annotations

import hashlib
import http.server
import io
import random
import socket
import threading
import zipfile

import pytest

from hmgen.text import datasets
from hmgen.text.data import DataError, load_corpus
from hmgen.text.datasets import fetch

TEXT8 = "".join(random.Random(0).choice("abcdefghijklmnopqrstuvwxyz    ") for _ in range(20_000)).encode()
ENWIK8 = bytes(random.Random(1).randrange(256) for _ in range(20_000))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zipped(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, data)
    return buf.getvalue()


class Server:
    """Serves `files` (path -> bytes) on 127.0.0.1 and counts the requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5

            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = Server({"/text8.zip": zipped("text8", TEXT8), "/enwik8.zip": zipped("enwik8", ENWIK8),
                "/broken.zip": b"this is not a zip archive" * 10,
                "/wrong-member.zip": zipped("something-else", TEXT8)})
    yield s
    s.close()


@pytest.fixture
def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/text8.zip"


def get(name, d, server, **kw):
    data = TEXT8 if name == "text8" else ENWIK8
    kw = {"url": server.url(f"/{name}.zip"), "sha256": sha(data), **kw}
    return fetch(name, str(d), download=True, progress=False, **kw)


def test_fetch_downloads_verifies_and_returns_the_unzipped_file(tmp_path, server):
    path = get("text8", tmp_path, server)
    assert path == tmp_path / "text8"
    assert path.read_bytes() == TEXT8
    assert get("enwik8", tmp_path, server).read_bytes() == ENWIK8


def test_second_fetch_uses_the_file_in_place_without_downloading(tmp_path, server):
    get("text8", tmp_path, server)
    assert fetch("text8", tmp_path, download=True, url=server.url("/text8.zip"), sha256=sha(TEXT8)) \
        == tmp_path / "text8"
    assert server.requests == ["/text8.zip"]


def test_load_corpus_refuses_a_file_that_is_not_the_real_corpus(tmp_path, server):
    get("text8", tmp_path, server)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_corpus(f"text8:{tmp_path}")


def test_file_in_place_with_wrong_bytes_is_refused(tmp_path, server):
    (tmp_path / "text8").write_bytes(b"not text8")
    with pytest.raises(DataError, match="checksum"):
        fetch("text8", tmp_path, sha256=sha(TEXT8))
    assert server.requests == []


def test_file_changed_after_verification_is_checked_again(tmp_path, server):
    path = get("text8", tmp_path, server)
    path.write_bytes(TEXT8[:-1] + b"x")
    with pytest.raises(DataError, match="checksum"):
        fetch("text8", tmp_path, sha256=sha(TEXT8))


def test_wrong_checksum_raises_and_leaves_nothing_behind(tmp_path, server):
    with pytest.raises(DataError, match="checksum") as e:
        get("text8", tmp_path, server, sha256="0" * 64)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_download_raises_and_leaves_nothing_behind(tmp_path, server):
    with pytest.raises(DataError, match="cannot fetch text8"):
        get("text8", tmp_path, server, url=server.url("/broken.zip"))
    assert list(tmp_path.iterdir()) == []


def test_archive_without_the_expected_member_raises_and_leaves_nothing_behind(tmp_path, server):
    with pytest.raises(DataError, match="no member 'text8'"):
        get("text8", tmp_path, server, url=server.url("/wrong-member.zip"))
    assert list(tmp_path.iterdir()) == []


def test_http_error_raises_and_leaves_nothing_behind(tmp_path, server):
    with pytest.raises(DataError, match="404"):
        get("text8", tmp_path, server, url=server.url("/missing.zip"))
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_raises_and_leaves_nothing_behind(tmp_path, closed_port_url):
    with pytest.raises(DataError, match="cannot fetch text8") as e:
        fetch("text8", tmp_path, download=True, url=closed_port_url, sha256=sha(TEXT8), progress=False)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_without_download_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="--download") as e:
        fetch("enwik8", tmp_path)
    assert str(tmp_path / "enwik8") in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(DataError, match="unknown dataset"):
        fetch("text9", tmp_path)


def test_default_directory_is_hmgen_data(tmp_path, monkeypatch, server):
    monkeypatch.setenv("HMGEN_DATA", str(tmp_path))
    assert fetch("text8", download=True, url=server.url("/text8.zip"), sha256=sha(TEXT8),
                 progress=False) == tmp_path / "text8"


@pytest.fixture
def stand_in_checksums(monkeypatch):
    """The loader verifies against the known checksums: make them those of the stand-ins."""
    monkeypatch.setitem(datasets.SHA256, "text8", sha(TEXT8))
    monkeypatch.setitem(datasets.SHA256, "enwik8", sha(ENWIK8))


def test_load_corpus_splits_fetched_text8_90_5_5_with_a_char_vocabulary(tmp_path, server, stand_in_checksums):
    get("text8", tmp_path, server)
    corpus = load_corpus(f"text8:{tmp_path}")
    n = len(TEXT8)
    assert {k: len(v) for k, v in corpus.splits.items()} == \
        {"train": n * 90 // 100, "valid": n * 95 // 100 - n * 90 // 100, "test": n - n * 95 // 100}
    assert corpus.vocab.kind == "chars" and corpus.vocab.size <= 27
    assert b"".join(corpus.vocab.decode(corpus.split(s)) for s in ("train", "valid", "test")) == TEXT8


def test_load_corpus_reads_fetched_enwik8_as_bytes(tmp_path, server, stand_in_checksums):
    get("enwik8", tmp_path, server)
    corpus = load_corpus(f"enwik8:{tmp_path}")
    assert corpus.vocab.kind == "bytes" and corpus.vocab.size == 256
    assert [len(corpus.split(s)) for s in ("train", "valid", "test")] == [18_000, 1_000, 1_000]
    assert bytes(corpus.split("test")) == ENWIK8[19_000:]


def test_load_corpus_with_download_fetches_from_the_default_address(tmp_path, server, stand_in_checksums,
                                                                  monkeypatch):
    monkeypatch.setitem(datasets.URLS, "text8", server.url("/text8.zip"))
    with pytest.raises(DataError, match="--download"):
        load_corpus(f"text8:{tmp_path}")
    corpus = load_corpus(f"text8:{tmp_path}", download=True)
    assert sum(len(v) for v in corpus.splits.values()) == len(TEXT8)
    assert server.requests == ["/text8.zip"]


def test_verified_file_is_not_hashed_again_while_unchanged(tmp_path, server, monkeypatch):
    get("text8", tmp_path, server)
    assert (tmp_path / "text8.sha256").read_text().split()[0] == sha(TEXT8)
    hashed = []
    monkeypatch.setattr(datasets, "file_sha256", lambda p: hashed.append(p) or sha(p.read_bytes()))
    for _ in range(2):
        fetch("text8", tmp_path, sha256=sha(TEXT8))
    assert hashed == []
