"""A per-user cache of things that are slow to build and never change between runs: the LALR
parser tables and the facts of the public trust stores. Every entry is keyed by what it was
built from, so a stale entry is simply never found; a cache that cannot be read or written
costs the time to rebuild, never an error.

Where: $MTLSC_CACHE_DIR, else $XDG_CACHE_HOME/mtlsc, else ~/.cache/mtlsc.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("MTLSC_CACHE_DIR"):
        return Path(os.environ["MTLSC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mtlsc"


def entry(kind: str, key: str) -> Path:
    """The file for `kind` built from `key` (any text that changes when the inputs change)."""
    return cache_dir() / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def write_atomic(path: Path, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`, so a
    concurrent run sees the old entry or the new one, never half of one. Errors are ignored."""
    name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
            name = f.name
            write(f)
        os.replace(name, path)
        name = None
    except Exception:
        pass
    finally:
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(name)


def load_pickle(path: Path):
    """The object pickled at `path`, or None when there is none (or it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:
        return None


def store_pickle(path: Path, obj) -> None:
    write_atomic(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))


def file_stamp(path: str) -> str:
    """What identifies a file's contents cheaply: path, size, mtime and inode ('-' if absent)."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:-"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
