"""Where compile time goes, in a fresh process: `python -m benchmarks.worker phases POLICY` prints JSON.

Imports happen before the clock starts and a short first run is repeated, so the stages are timed
on their work alone (the whole-process figures, imports included, are compile_bench's).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare(op: str):
    """Import what `op` needs and return a function doing the work (timed by the caller)."""
    if op == "phases":
        from mtlsc import pipeline
        from mtlsc.checks import CheckContext, run_checks
        from mtlsc.emit import environment, nginx, testscript, variables
        from mtlsc.parse import parser
        from mtlsc.pki import load_pki
        from datetime import datetime, timezone

        environment()
        parser()

        def work(policy):
            out = {}
            with pipeline._few_gc_passes():
                t = time.perf_counter()
                front = pipeline.read_and_lower([policy])
                out["parse + lower"] = time.perf_counter() - t
                t = time.perf_counter()
                pki, _ = load_pki(front.policy)
                out["CA files"] = time.perf_counter() - t
                t = time.perf_counter()
                run_checks(CheckContext(front.policy, pki, datetime.now(timezone.utc)))
                out["checks"] = time.perf_counter() - t
                for name, emitter in (("emit nginx", nginx), ("emit variables.md", variables), ("emit tests.sh", testscript)):
                    t = time.perf_counter()
                    emitter.emit(front.policy, pki)
                    out[name] = time.perf_counter() - t
            return {"phases": out}
        return work
    raise SystemExit(f"unknown op {op}")


WARM_UP_BELOW = 1.0  # seconds: a run this short is repeated, and the second one is timed


def main(argv: list[str]) -> int:
    """Time `op` on `args`. A first run under WARM_UP_BELOW seconds is a warm-up (first-call
    costs: template and regex compilation, lazy imports, caches), the same for every tool; a
    longer first run is the figure itself, those costs being small beside it."""
    op, *args = argv
    work = _prepare(op)
    before = _rss_mb()
    started = time.perf_counter()
    info = work(*args)
    seconds = time.perf_counter() - started
    if seconds < WARM_UP_BELOW:
        started = time.perf_counter()
        info = work(*args)
        seconds = time.perf_counter() - started
    print(json.dumps({"op": op, "seconds": seconds, "rss_before_mb": before, "rss_peak_mb": _rss_mb(), **info}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
