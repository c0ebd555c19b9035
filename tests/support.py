"""Helpers shared by the tests: golden files and running the CLI in-process."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from mtlsc.cli import main

HERE = Path(__file__).parent
REPO = HERE.parent
UPDATE = os.environ.get("MTLSC_UPDATE_GOLDENS") == "1"


def assert_golden(path: Path, text: str) -> None:
    """Compare with the golden file; `MTLSC_UPDATE_GOLDENS=1 pytest` rewrites it (review the diff)."""
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"missing golden {path}: run MTLSC_UPDATE_GOLDENS=1 pytest and review it"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{path} differs (MTLSC_UPDATE_GOLDENS=1 rewrites it)"


def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run `mtlsc ARGS` in this process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def drop_lines(conf: Path, needle: str) -> None:
    """Remove every line of `conf` containing `needle`: the control experiment of a gate test (the
    same config without the gate, to show the hole it closes)."""
    conf.write_text("".join(line for line in conf.read_text().splitlines(keepends=True) if needle not in line))
