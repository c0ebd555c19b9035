"""Write a compiled output directory all at once: the old one or the new one, never half.

The files are written into a fresh sibling directory, which then replaces DIR by rename. DIR
must be empty, absent, or an earlier mtlsc output (it holds MARKER), so that a mistyped `-o`
can never wipe a directory mtlsc does not own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MARKER = ".mtlsc-output"


class OutputError(OSError):
    pass


def write_atomic(target: Path, files: dict[str, str], executable=("tests.sh",)) -> None:
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).exists():
        raise OutputError(f"{target} is not empty and was not written by mtlsc; choose another -o directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            if rel in executable:
                path.chmod(0o755)
        (staging / MARKER).write_text("written by mtlsc compile; the whole directory is replaced on each compile\n")
        _swap(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):  # one atomic step: `staging` now holds the old output
        shutil.rmtree(staging, ignore_errors=True)
        return
    # No renameat2 (not Linux, or a filesystem without RENAME_EXCHANGE): two renames. A failure
    # between them puts the old output back; only a kill between them can leave DIR missing.
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux renameat2 RENAME_EXCHANGE). False when the system or
    the filesystem cannot, so the caller falls back; any other failure raises OSError."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
