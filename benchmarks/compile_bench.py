"""Compile cost and peers: mtlsc check / compile next to crossplane and gixy on the same work.

Each measurement is one whole process of the tool's own command (`mtlsc check`, `mtlsc compile`,
`crossplane parse`, `gixy`), timed from start to exit: interpreter start-up and imports included,
which is what a user waits for. The tools take turns within every repetition, so the ratios come
from one run on one machine. The stage breakdown (`benchmarks.worker phases`) is in-process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import synth

REPO = Path(__file__).resolve().parent.parent
NGINX_WRAPPER = "events {}\nhttp {\n    include nginx/*.conf;\n}\n"


@dataclass
class Runs:
    seconds: list[float] = field(default_factory=list)  # wall time of the whole process
    cpu: list[float] = field(default_factory=list)  # its user + system CPU time
    peak_mb: list[float] = field(default_factory=list)  # the process's peak RSS, interpreter and imports included
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    @property
    def peak(self) -> float | None:
        return statistics.median(self.peak_mb) if self.peak_mb else None


@dataclass
class ShapeResult:
    shape: synth.Shape
    policy_bytes: int
    runs: dict[str, Runs] = field(default_factory=dict)  # op -> runs
    phases: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)  # output file -> bytes


def worker(op: str, *args: str, timeout: float) -> dict:
    """Run one measurement; raises RuntimeError with the worker's last stderr line on failure."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", op, *args], capture_output=True,
                              text=True, timeout=timeout, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"still running after {timeout:.0f} s (stopped)") from None
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        raise RuntimeError(lines[-1][:300] if lines else f"exit {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Process:
    seconds: float
    cpu: float
    peak_mb: float


# exit codes that mean the tool did its job: mtlsc check 1 = findings, gixy 1 = issues found
OK_CODES = {"check": {0, 1}, "compile": {0}, "crossplane": {0}, "gixy": {0, 1}}


def command(tool: str) -> list[str]:
    """The tool's own console script beside this interpreter (a venv's bin/), as a user runs it;
    `python -m` where there is none (mtlsc run from a checkout)."""
    script = Path(sys.executable).parent / tool
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", tool]


def timed_process(cmd: list[str], ok: set[int], timeout: float) -> Process:
    """Run `cmd` to its end: wall time, CPU time and peak RSS of that process alone (wait4).
    Python may write bytecode, as an installed package has it (pip compiles at install)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in ok:
            err.seek(0)
            lines = [l for l in err.read().decode(errors="replace").splitlines() if l.strip()]
            if proc.returncode < 0:
                raise RuntimeError(f"still running after {timeout:.0f} s (stopped)")
            raise RuntimeError(lines[-1][:300] if lines else f"exit {proc.returncode}")
    return Process(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def gixy_available() -> str | None:
    """None when gixy can be imported, else why not."""
    try:
        import gixy.core.manager  # noqa: F401
    except Exception as exc:  # ImportError, or a gixy that fails to import on this Python
        return f"{type(exc).__name__}: {exc}"
    return None


def measure_shape(work: Path, shape: synth.Shape, *, repeats: int, timeout: float, peers: bool,
                  long_run: float = 5.0, progress=print) -> ShapeResult:
    """check, compile, crossplane and gixy on one synthetic policy; `repeats` runs each (3 when a
    single run takes longer than `long_run` seconds)."""
    policy = synth.write_policy(work / "policies", shape)
    out = work / "out" / shape.name
    result = ShapeResult(shape, policy.stat().st_size)
    ops = ["check", "compile"] + (["crossplane", "gixy"] if peers else [])
    no_gixy = gixy_available()
    if "gixy" in ops and no_gixy:
        result.runs["gixy"] = Runs(error=f"gixy is not installed or does not import ({no_gixy}): pip install -e '.[bench]'")
        ops.remove("gixy")
    conf = out / "nginx.conf"
    if result.policy_bytes < 1_000_000:  # an unmeasured run writes the bytecode and mtlsc's cache
        try:
            timed_process(command("mtlsc") + ["check", str(policy)], OK_CODES["check"], timeout)
        except RuntimeError:
            pass  # reported by the measured runs
    n = repeats
    rep = 0
    while rep < n:
        for op in ops:
            runs = result.runs.setdefault(op, Runs())
            if runs.error:
                continue
            cmd = {"check": command("mtlsc") + ["check", str(policy)],
                   "compile": command("mtlsc") + ["compile", str(policy), "-o", str(out)],
                   "crossplane": command("crossplane") + ["parse", str(conf), "-o", os.devnull],
                   "gixy": command("gixy") + [str(conf)]}[op]
            try:
                info = timed_process(cmd, OK_CODES[op], timeout)
            except RuntimeError as exc:
                if op == "compile":
                    raise RuntimeError(f"{shape.name} does not compile: {exc}") from None
                runs.error = str(exc)
                continue
            if op == "compile":
                result.outputs = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
                conf.write_text(NGINX_WRAPPER)
            runs.seconds.append(info.seconds)
            runs.cpu.append(info.cpu)
            runs.peak_mb.append(info.peak_mb)
            if rep == 0 and info.seconds > long_run:
                n = min(n, 3)
        rep += 1
    try:
        result.phases = worker("phases", str(policy), timeout=timeout)["phases"]
    except RuntimeError:
        result.phases = {}
    progress(f"compile: {shape.name} " + ", ".join(
        f"{op} {r.median:.3f}s" if r.median is not None else f"{op} -" for op, r in result.runs.items()))
    return result


@dataclass
class Sweeps:
    routes: list[ShapeResult]
    identities: list[ShapeResult]


def measure_sweeps(work: Path, *, route_sizes: list[int], identity_sizes: list[int], fixed_identities: int,
                   fixed_routes: int, cas: int, repeats: int, timeout: float, progress=print) -> Sweeps:
    started = time.monotonic()
    routes = [measure_shape(work, synth.Shape(r, fixed_identities, cas), repeats=repeats, timeout=timeout,
                            peers=True, progress=progress) for r in route_sizes]
    idents = [measure_shape(work, synth.Shape(fixed_routes, i, cas), repeats=repeats, timeout=timeout,
                            peers=True, progress=progress) for i in identity_sizes]
    progress(f"compile: done in {time.monotonic() - started:.0f} s")
    return Sweeps(routes, idents)
