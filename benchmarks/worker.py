"""One measurement in a fresh process: `python -m benchmarks.worker OP ARG...` prints JSON.

Imports happen before the clock starts, and a short first run is repeated (a cold process is
measured separately, by the CLI latency benchmark), so each tool is timed on its work alone. Peak memory is the process's
`ru_maxrss` after the work, next to the same figure before it (the interpreter and imports).

OPs:
  check POLICY             mtlsc check, diagnostics rendered as `mtlsc check` prints them
  compile POLICY OUT       mtlsc compile: check, emit, write OUT (replaced whole)
  phases POLICY            compile stage by stage (seconds per stage)
  crossplane NGINX_CONF    crossplane.parse (includes followed)
  gixy NGINX_CONF          gixy's analysis of the config, every plugin
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
    if op == "check":
        from mtlsc import pipeline
        from mtlsc.parse import parser
        from mtlsc.render import render

        parser()

        def work(policy):
            result = pipeline.check([policy])
            render(result.diagnostics, result.sources, "text")
            return {"failed": result.failed, "diagnostics": len(result.diagnostics)}
        return work
    if op == "compile":
        from mtlsc import pipeline
        from mtlsc.output import write_atomic
        from mtlsc.parse import parser
        from mtlsc.render import render
        import mtlsc.emit
        mtlsc.emit.environment()  # jinja2 imported: an import, not work
        parser()

        def work(policy, out):
            result = pipeline.compile_policy([policy])
            render(result.diagnostics, result.sources, "text")
            if result.failed:
                return {"failed": True}
            write_atomic(out, result.outputs)
            return {"failed": False, "bytes": {k: len(v) for k, v in result.outputs.items()}}
        return work
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
    if op == "crossplane":
        import crossplane

        def work(conf):
            payload = crossplane.parse(conf)
            if payload["status"] != "ok":
                raise RuntimeError(f"crossplane: {payload['errors'][:2]}")
            return {"configs": len(payload["config"])}
        return work
    if op == "gixy":
        import logging

        from gixy.core.config import Config
        from gixy.core.manager import Manager

        logging.disable(logging.WARNING)  # gixy logs every unparsed block

        def work(conf):
            manager = Manager(config=Config())
            with open(conf, "rb") as f:
                manager.audit(conf, f)
            return {"issues": sum(len(p.issues) for p in manager.results)}
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
