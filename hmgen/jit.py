"""numba, set up once: compiled code is cached on disk so that only the first run of a function compiles it.

numba caches beside the source file; an installed package may not be writable there. Then a per-user cache
directory (numba's own fallback), or a temporary one, keeps the compile to the first run. Import njit from
here, never from numba directly, so the cache directory is settled before numba reads it.

numba keeps a cached function while its own file is unchanged, even when a function it calls from another file
has changed (a documented limitation of its cache): the archive's predictor calls the components in the other
files of its folder, and stale code there would code differently from a fresh build. So a cached function under
hmgen is stamped with every module of its folder: a change to any of them compiles the folder's functions again.

Kernels take their state as NamedTuples of arrays. numba counts the references to an array taken out of a tuple,
and removes the counting only where the array is taken and used in one straight stretch of code; an array taken
inside a branch, or used across one, costs atomic reference counts on every pass of a loop. So a kernel takes the
arrays it needs at its top, reads them unconditionally where an index is valid either way, and the components'
small functions are inlined into their callers (inline="always"): same numbers, a fraction of the time.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def cache_dir_fallback() -> None:
    """Point NUMBA_CACHE_DIR elsewhere when the package's own folders cannot be written."""
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    here = os.path.join(HERE, "__pycache__")
    try:
        os.makedirs(here, exist_ok=True)
        if os.access(here, os.W_OK):
            return
    except OSError:
        pass
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for d in (os.path.join(base, "hmgen", "numba"), os.path.join(tempfile.gettempdir(), f"hmgen-numba-{os.getuid()}")):
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                os.environ["NUMBA_CACHE_DIR"] = d
                return
        except OSError:
            continue


cache_dir_fallback()
from numba import njit  # noqa: E402,F401  (after the cache directory is settled)
from numba.core import caching  # noqa: E402


def folder_stamp(folder: str) -> str:
    """sha256 over the names and contents of the folder's Python modules."""
    return _folder_stamp(folder, tuple((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                                       for e in sorted(os.scandir(folder), key=lambda e: e.name)
                                       if e.name.endswith(".py")))


@functools.lru_cache(maxsize=None)
def _folder_stamp(folder: str, files: tuple) -> str:              # files: the key, so an edit is seen
    h = hashlib.sha256()
    for name, _, _ in files:
        with open(os.path.join(folder, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


class FolderStamped:
    """A numba cache locator for hmgen's files whose source stamp is folder_stamp of the function's folder."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.abspath(py_file).startswith(HERE + os.sep):
            return None                                            # another package's functions: numba's way
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return folder_stamp(os.path.dirname(os.path.abspath(self._py_file)))


def stamp_by_folder() -> bool:
    """Put FolderStamped versions of numba's file-backed locators first; False where this numba's cache machinery
    is not the one known (numba 0.60-0.68 name it with or without a leading underscore)."""
    def find(name):
        return getattr(caching, name, None) or getattr(caching, "_" + name, None)

    impl = find("CacheImpl")
    bases = [find(n) for n in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")]
    if impl is None or None in bases or not isinstance(getattr(impl, "_locator_classes", None), list):
        return False
    if not any(issubclass(c, FolderStamped) for c in impl._locator_classes):
        impl._locator_classes[:0] = [type("FolderStamped" + b.__name__.lstrip("_"), (FolderStamped, b), {})
                                     for b in bases]
    return True


STAMPED = stamp_by_folder()


def compiled(*functions) -> bool:
    """Whether numba's disk cache holds code for these @njit functions (False on a fresh install: the first call
    compiles them). Reads numba's private cache layout; says True when it cannot tell."""
    try:
        return all(os.path.exists(f._cache._cache_file._index_path) for f in functions)
    except AttributeError:
        return True
