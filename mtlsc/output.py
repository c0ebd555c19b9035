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
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)
