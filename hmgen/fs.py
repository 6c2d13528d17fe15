"""File helpers, in one place: writing a file so that a failure leaves nothing half-written, hashing it, and
saying in one line what went wrong with it. Nothing here imports the rest of hmgen (it sits at the bottom)."""
from __future__ import annotations

import hashlib
import re
import os
import shutil
import tempfile
from pathlib import Path

CHUNK = 1 << 20


def one_line(e: BaseException) -> str:
    """An error as the one line a user reads: "PATH: reason" for a file's error (PATH may be "standard output"),
    "HTTP 404 Not Found" for a web server's, else the message with its whitespace collapsed."""
    import urllib.error
    if isinstance(e, urllib.error.HTTPError):
        text = f"HTTP {e.code} {e.reason}"
    elif isinstance(e, urllib.error.URLError):
        text = str(e.reason)
    elif isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


def reason(e: BaseException) -> str:
    """Why an operation on a file failed, for a message that names the file itself: an OSError's strerror ("No
    such file or directory", not "[Errno 2] No such file or directory: 'x'"), else the error's one line."""
    return e.strerror if isinstance(e, OSError) and e.strerror else one_line(e)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def temporary_name(path: Path) -> str:
    """A temporary file beside `path` for its output: hidden, and short enough for any name `path` may have
    (a name near the file system's 255-byte limit must still get a temporary file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


def atomic_write(path: str | os.PathLike, write, like: str | os.PathLike | None = None) -> None:
    """write(tmp) into a temporary file in `path`'s folder, renamed over `path` only on success; on any failure
    (an error, Ctrl-C) the temporary file is removed and `path` is as it was. The folder must exist: a mistyped
    folder is an error, not created. An error names `path`, never the temporary file. The file gets the
    permissions and times of `like` (as gzip gives its output the input's), or else those a plain open() would
    give, not mkstemp's 0600."""
    path = Path(path)
    try:
        tmp = temporary_name(path)
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(path)) from None
    try:
        try:
            write(tmp)
            if like is not None:
                try:
                    shutil.copystat(like, tmp)
                except OSError:             # a file system without the metadata: the defaults below
                    like = None
            if like is None:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except OSError as e:
            if e.filename in (tmp, None) and e.errno is not None:
                raise type(e)(e.errno, e.strerror, str(path)) from None
            raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> None:
    """torch tensors to a safetensors file through atomic_write. safetensors reports a failed write (a full disk,
    a file size limit) as its own error type; it becomes the OSError it was, naming `path`."""
    from safetensors.torch import save_file

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except OSError:
            raise
        except Exception as e:                         # safetensors_rust.SafetensorError
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            number = int(code.group(1))
            raise OSError(number, os.strerror(number), str(path)) from None
    atomic_write(path, write)
