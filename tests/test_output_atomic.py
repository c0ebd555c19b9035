"""Fault injection for `mtlsc.output.write_atomic`: whatever step fails, and wherever the process
is killed, the output directory holds the old complete output or the new complete output.

1. In-process: every filesystem call write_atomic makes (mkdtemp, mkdir, write, chmod, rename,
   rmdir, rmtree, the directory exchange) is made to raise at call k, for k = 1, 2, ... until a
   write completes untouched.
2. Out of process: a child rewrites the directory in a loop (alternating two versions) and is
   SIGKILLed after a random delay, KILLS times; after each kill the directory is checked.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from mtlsc import output
from mtlsc.output import MARKER, write_atomic
from support import REPO

KILLS = int(os.environ.get("MTLSC_KILLS", "40"))


def version(tag: str, n: int = 30) -> dict[str, str]:
    """A compiled-output-shaped file set whose every file names its version."""
    files = {f"nginx/{i:02d}-server.conf": f"# {tag} server {i}\n" + f"{tag} line\n" * 50 for i in range(n)}
    files["mtls/ca.pem"] = f"{tag} trust\n"
    files["variables.md"] = f"# {tag}\n"
    files["tests.sh"] = f"#!/bin/sh\necho {tag}\n"
    return files


def tree(target: Path) -> dict[str, str] | None:
    """The files under `target` (without the marker), or None when it does not exist."""
    if not target.exists():
        return None
    return {str(p.relative_to(target)): p.read_text() for p in sorted(target.rglob("*"))
            if p.is_file() and p.name != MARKER}


def assert_whole(target: Path, *allowed: dict[str, str] | None) -> None:
    got = tree(target)
    assert got in allowed, f"{target} holds a mix: {sorted((got or {}).items())[:3]}"


class Fault(OSError):
    pass


class Injector:
    """Counts calls of the patched functions; the `fail_at`-th one raises Fault instead."""

    def __init__(self, fail_at: int):
        self.fail_at, self.calls, self.fired = fail_at, 0, None

    def wrap(self, name, fn):
        def wrapper(*args, **kwargs):
            self.calls += 1
            if self.calls == self.fail_at:
                self.fired = name
                raise Fault(28, f"injected fault in {name}")
            return fn(*args, **kwargs)
        return wrapper


PATCHED = [
    (os, "rename"), (os, "replace"), (os, "rmdir"), (os, "mkdir"), (os, "chmod"), (tempfile, "mkdtemp"),
    (shutil, "rmtree"), (Path, "write_text"), (Path, "chmod"), (Path, "mkdir"),
]


def _inject(monkeypatch, injector: Injector) -> None:
    for owner, name in PATCHED:
        monkeypatch.setattr(owner, name, injector.wrap(f"{getattr(owner, '__name__', owner)}.{name}",
                                                       getattr(owner, name)))
    if hasattr(output, "_exchange"):
        monkeypatch.setattr(output, "_exchange", injector.wrap("output._exchange", output._exchange))


@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "two-renames"])
@pytest.mark.parametrize("first", [True, False], ids=["into-nothing", "over-old-output"])
def test_a_fault_at_every_step_leaves_old_or_new(tmp_path, monkeypatch, first, fallback):
    """`two-renames`: the path taken where renameat2(RENAME_EXCHANGE) is missing."""
    if fallback:
        monkeypatch.setattr(output, "_exchange", lambda a, b: False)
    old, new = version("old"), version("new")
    steps = 0
    for k in range(1, 1000):
        target = tmp_path / f"run{k}" / "out"
        if not first:
            write_atomic(target, old)
        injector = Injector(k)
        with monkeypatch.context() as m:
            _inject(m, injector)
            try:
                write_atomic(target, new)
            except Fault:
                pass
        assert_whole(target, None if first else old, new)
        if injector.fired is None:  # call k was never reached: the write ran to the end
            assert tree(target) == new
            break
        steps += 1
        # The next write repairs nothing by hand: it must simply work again.
        write_atomic(target, new)
        assert tree(target) == new
    print(f"\n{steps} injected faults ({'first write' if first else 'over an old output'}"
          f"{', two-rename fallback' if fallback else ''})")
    assert steps >= 5


CHILD = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[2], sys.argv[3]]
    from pathlib import Path
    from mtlsc.output import write_atomic
    from test_output_atomic import version
    target = Path(sys.argv[1])
    versions = [version("a"), version("b")]
    print("ready", flush=True)
    i = 0
    while True:
        write_atomic(target, versions[i % 2])
        i += 1
""")


def test_sigkill_at_random_points_leaves_old_or_new(tmp_path):
    target = tmp_path / "out"
    a, b = version("a"), version("b")
    write_atomic(target, a)
    rng = random.Random(int(os.environ.get("MTLSC_KILL_SEED", "7")))
    for _ in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(REPO), str(Path(__file__).parent)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0, 0.05))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        assert_whole(target, a, b)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    print(f"\n{KILLS} kills; hidden leftovers from killed writes: {len(leftovers)}")
    write_atomic(target, a)  # a later write still works, next to any leftovers
    assert tree(target) == a
