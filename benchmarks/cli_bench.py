"""Cold-process latency of the `mtlsc` command, and `mtlsc lab` wall time per example policy.

Each run is a new process, as in a pre-commit hook or a CI step. Python may write and use its
bytecode cache (PYTHONDONTWRITEBYTECODE is dropped for these runs: an installed package has its
.pyc files), and one unmeasured run first fills mtlsc's own cache (parser tables, public trust
store facts); the first run's figure is reported too.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.compile_bench import command

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = ["partner-api", "multi-ca", "revocation", "service-mesh"]
_SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed", re.M)


@dataclass
class Latency:
    label: str
    command: list[str]
    seconds: list[float] = field(default_factory=list)
    first: float | None = None  # with mtlsc's cache empty

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class LabTime:
    policy: str
    seconds: list[float] = field(default_factory=list)
    passed: int = 0
    failed: int = 0
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def _mtlsc() -> list[str]:
    return command("mtlsc")


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["MTLSC_CACHE_DIR"] = str(cache)
    return env


def _run(command: list[str], env, timeout: float = 120) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    return time.perf_counter() - started, proc


def measure_latency(work: Path, runs: int, policy: str = "policies/partner-api.mtls") -> list[Latency]:
    """Interpreter alone, the libraries alone, mtlsc's imports, then `mtlsc check POLICY`, `runs`
    times each, in turns."""
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = _env(cache)
    cases = [
        Latency("python -c pass (interpreter start-up)", [sys.executable, "-c", "pass"]),
        Latency("import lark, cryptography.x509 (the libraries `check` reads with)",
                [sys.executable, "-c", "import lark, cryptography.x509"]),
        Latency("import lark, cryptography.x509, jinja2 (and `compile` writes with)",
                [sys.executable, "-c", "import lark, cryptography.x509, jinja2"]),
        Latency("import mtlsc.cli, pipeline, render", [sys.executable, "-c", "import mtlsc.cli, mtlsc.pipeline, mtlsc.render"]),
        Latency(f"mtlsc check {policy}", [*_mtlsc(), "check", policy]),
    ]
    for case in cases:  # one unmeasured run writes the .pyc files; the check run also mtlsc's cache
        seconds, proc = _run(case.command, env)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{case.command}: exit {proc.returncode}: {proc.stderr[-300:]}")
        case.first = seconds
    for _ in range(runs):
        for case in cases:
            seconds, _ = _run(case.command, env)
            case.seconds.append(seconds)
    return cases


def measure_lab(work: Path, runs: int, policies: list[str] = EXAMPLES) -> list[LabTime]:
    env = _env(work / "cache")
    out = []
    for name in policies:
        lab = LabTime(name)
        for _ in range(runs):
            try:
                seconds, proc = _run([*_mtlsc(), "lab", f"policies/{name}.mtls"], env, timeout=300)
            except subprocess.TimeoutExpired:
                lab.error = "still running after 300 s (stopped)"
                break
            found = _SUMMARY.search(proc.stdout)
            if proc.returncode != 0 or not found:
                lab.error = f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
                break
            lab.seconds.append(seconds)
            lab.passed, lab.failed = int(found[1]), int(found[2])
        out.append(lab)
    return out
