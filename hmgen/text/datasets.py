"""Fetch text8 and enwik8, the two 100 MB corpora of the paper's character-level experiments.

Both come from Matt Mahoney's Large Text Compression Benchmark (http://mattmahoney.net/dc/textdata.html):
enwik8 is the first 10^8 bytes of an English Wikipedia XML dump; text8 is the same dump cleaned to lowercase
a-z and single spaces (27 symbols). Each is published as a zip holding one member of the same name.
The checksums are the SHA-256 of the unzipped 100,000,000-byte files, as recorded in the project's data notes.

    path = fetch("text8", download=True)       # ~/.cache/hmgen/text8 (or $HMGEN_DATA/text8)

The 90M/5M/5M split is done by hmgen.text.data.split_90_5_5.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
import zipfile
import zlib
from pathlib import Path

from hmgen.errors import DataError
from hmgen.fs import CHUNK, atomic_write, file_sha256, one_line, temporary_name
from hmgen.progress import Bar

URLS = {
    "text8": "http://mattmahoney.net/dc/text8.zip",
    "enwik8": "http://mattmahoney.net/dc/enwik8.zip",
}
SHA256 = {   # of the unzipped files, 100,000,000 bytes each
    "text8": "6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7",
    "enwik8": "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8",
}


def default_dir() -> Path:
    """$HMGEN_DATA if set, else ~/.cache/hmgen."""
    return Path(os.environ.get("HMGEN_DATA") or Path.home() / ".cache" / "hmgen").expanduser()


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns}"


def _verify_existing(path: Path, expected: str) -> None:
    """Check an already present file against `expected`, hashing it only when the marker file
    NAME.sha256 ("digest size mtime_ns") does not vouch for it as it is now."""
    marker = path.with_name(path.name + ".sha256")
    try:
        if marker.read_text().split() == [expected, *_stamp(path).split()]:
            return
    except OSError:
        pass
    got = file_sha256(path)
    if got != expected:
        raise DataError(f"{path}: checksum mismatch (sha256 {got[:12]}..., expected {expected[:12]}...); "
                        f"remove it and fetch again with --download")
    _write_marker(path, expected)


def _write_marker(path: Path, digest: str) -> None:
    line = f"{digest} {_stamp(path)}\n"
    try:
        atomic_write(path.with_name(path.name + ".sha256"), lambda tmp: Path(tmp).write_text(line))
    except OSError:
        pass   # a read-only folder only costs a rehash next time


def _download(url: str, dest, progress: bool) -> None:
    """Stream `url` into the open binary file `dest`, with a rich progress bar when asked and on a terminal."""
    with urllib.request.urlopen(url, timeout=60) as r:
        total = int(r.headers.get("Content-Length") or 0) or None
        with Bar(f"downloading {url.rsplit('/', 1)[-1]}", not progress, total=total, unit="bytes") as bar:
            done = 0
            while block := r.read(CHUNK):
                dest.write(block)
                done += len(block)
                bar.update(done)


def fetch(name: str, directory: str | os.PathLike | None = None, download: bool = False, *,
          url: str | None = None, sha256: str | None = None, progress: bool = True) -> Path:
    """Path of the unzipped corpus `name` ("text8" or "enwik8") in `directory` (default: default_dir()).

    A file already there is checked against its SHA-256 (once; a NAME.sha256 marker remembers the result).
    Otherwise, with download=True, URLS[name] (or `url`) is fetched, its single member unzipped, checked
    against SHA256[name] (or `sha256`) and only then moved into place. Every failure raises DataError
    with a one-line message and leaves nothing half-written behind."""
    if name not in URLS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(URLS)})")
    d = Path(directory).expanduser() if directory else default_dir()
    path, expected, url = d / name, sha256 or SHA256[name], url or URLS[name]
    if path.is_file():
        _verify_existing(path, expected)
        return path
    if not download:
        raise DataError(f"{name} not found at {path}: pass --download to fetch it from {url}, "
                        f"or put the unzipped file there")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {d}: {one_line(e)}") from None

    zipped = None
    try:
        zipped = temporary_name(d / f"{name}.zip")
        with open(zipped, "wb") as z:
            _download(url, z, progress)

        def unzip(tmp: str) -> None:            # the corpus reaches `path` only once its checksum matched
            with zipfile.ZipFile(zipped) as zf, zf.open(name) as member, open(tmp, "wb") as out:
                h = hashlib.sha256()
                while block := member.read(CHUNK):
                    h.update(block)
                    out.write(block)
            if h.hexdigest() != expected:
                raise DataError(f"{name} from {url}: checksum mismatch (sha256 {h.hexdigest()[:12]}..., "
                                f"expected {expected[:12]}...)")
        atomic_write(path, unzip)
    except DataError:
        raise
    except KeyError:
        raise DataError(f"{name} from {url}: the archive has no member {name!r}") from None
    except (OSError, http.client.HTTPException, zipfile.BadZipFile, zlib.error, EOFError, ValueError) as e:
        raise DataError(f"cannot fetch {name} from {url}: {one_line(e)}") from None
    finally:
        if zipped:
            Path(zipped).unlink(missing_ok=True)
    _write_marker(path, expected)
    return path
