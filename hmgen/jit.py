"""numba, set up once: compiled code is cached on disk so that only the first run of a function compiles it.

numba caches beside the source file; an installed package may not be writable there. Then a per-user cache
directory (numba's own fallback), or a temporary one, keeps the compile to the first run. Import njit from
here, never from numba directly, so the cache directory is settled before numba reads it.
"""
from __future__ import annotations

import os
import tempfile


def cache_dir_fallback() -> None:
    """Point NUMBA_CACHE_DIR elsewhere when the package's own folders cannot be written."""
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
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


def compiled(*functions) -> bool:
    """Whether numba's disk cache holds code for these @njit functions (False on a fresh install: the first call
    compiles, ~15 s for the archive coder). Reads numba's private cache layout; says True when it cannot tell."""
    try:
        return all(os.path.exists(f._cache._cache_file._index_path) for f in functions)
    except AttributeError:
        return True
