"""`python -m benchmarks [--quick] [--out FILE] [--workdir DIR]`: every benchmark of issue 6.

The full run (about 10-15 minutes on 2 cores) writes docs/performance.md; `--quick` (under a
minute) runs the same machinery on small sizes and writes only what `--out` names.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import cli_bench, compile_bench, report, runtime

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "performance.md"


@dataclass(frozen=True)
class Plan:
    route_sizes: list[int]
    identity_sizes: list[int]
    fixed_identities: int  # in the route sweep
    fixed_routes: int  # in the identity sweep
    cas: int
    repeats: int
    peer_timeout: float
    runtime_identities: list[int]
    runtime_rounds: int
    keepalive_requests: int
    new_conn_requests: int
    cli_runs: int
    lab_runs: int
    lab_policies: tuple[str, ...]


FULL = Plan([10, 100, 1_000, 10_000], [10, 1_000, 10_000, 50_000], 100, 10, 3, 5, 300,
            [10, 10_000, 50_000], 15, 10_000, 500, 20, 1, tuple(cli_bench.EXAMPLES))
QUICK = Plan([10, 100], [10, 1_000], 20, 10, 3, 2, 60, [10, 1_000], 2, 4_000, 200, 3, 1, ("partner-api",))


def tiny(plan: Plan = QUICK) -> Plan:
    """The smallest plan that still runs every stage: for the unit test of this machinery."""
    return Plan([10, 20], [10, 30], 10, 10, 2, 1, 60, [10, 30], 1, 200, 20, 1, 0, ())


def run(plan: Plan, work: Path, *, sections: set[str], progress=print) -> str:
    started = time.monotonic()
    sweeps = growth_raw = rt = latency = labs = None
    parts = []
    if "compile" in sections:
        sweeps = compile_bench.measure_sweeps(work / "compile", route_sizes=plan.route_sizes,
                                              identity_sizes=plan.identity_sizes,
                                              fixed_identities=plan.fixed_identities, fixed_routes=plan.fixed_routes,
                                              cas=plan.cas, repeats=plan.repeats, timeout=plan.peer_timeout,
                                              progress=progress)
        growth_text, growth_raw = report.growth_table(sweeps)
    if "runtime" in sections:
        rt = runtime.measure(work / "runtime", identity_counts=plan.runtime_identities, rounds=plan.runtime_rounds,
                             keepalive_requests=plan.keepalive_requests, new_conn_requests=plan.new_conn_requests,
                             progress=progress)
    if "cli" in sections:
        latency = cli_bench.measure_latency(work / "cli", plan.cli_runs)
        progress("cli: latency done")
        if plan.lab_runs and plan.lab_policies:
            labs = cli_bench.measure_lab(work / "cli", plan.lab_runs, list(plan.lab_policies))
            progress("cli: lab done")
    vs = report.verdicts(sweeps, growth_raw or [], rt, latency, labs)
    parts.append("## Targets\n\n" + report.verdict_table(vs))
    if sweeps is not None:
        parts.append(
            "## Compile cost\n\nSynthetic policies (`benchmarks/synth.py`): "
            f"{plan.cas} CAs (root + issuing CA, depth 1, a CRL per certificate), identities that are exact "
            "subjects (every tenth a fingerprint pin), one server whose routes cycle through public, optional, "
            "`allow any` and allow lists of 10 identities, plus `/partner/` allowing every identity. "
            f"Route sweep at {plan.fixed_identities} identities, identity sweep at {plan.fixed_routes} routes. "
            "Times are medians of whole processes of each command (`mtlsc check POLICY`, `mtlsc compile "
            "POLICY -o DIR`), start to exit: interpreter start-up and imports included, what a user waits "
            "for; one unmeasured run first writes the bytecode and mtlsc's cache. Peak MB is the process's "
            "peak RSS. `compile` includes writing the output directory. The stage table below is measured "
            "in one process (`benchmarks/worker.py phases`, imports excluded).\n\n"
            + report.compile_table(sweeps)
            + "\n\n### Growth per step\n\n" + growth_text
            + "\n\n### Where compile time goes (one run each)\n\n" + report.phases_table(sweeps))
        parts.append(
            "## Against peers, on the same work\n\n"
            "`crossplane parse` reads the emitted config (`events {} http { include nginx/*.conf; }`, includes "
            "followed, JSON to /dev/null); `gixy` analyses the same file with every plugin. Whole processes of "
            "their console scripts, timed like mtlsc's, in turns with mtlsc's own runs.\n\n" + report.peers_table(sweeps))
    if rt is not None:
        parts.append(
            "## Runtime cost of the emitted gates in nginx\n\n"
            "One nginx per config (1 worker, loopback, `access_log off`, same server certificate, "
            "`ssl_protocols TLSv1.2 TLSv1.3`, `ssl_session_cache off`), all running at once; rounds go through "
            "the configs in turn. Backend: `return 200` (the emitted `proxy_pass` lines are replaced by it; the "
            "gates run before it). Clients (`benchmarks/load.py`, 2 processes of Python `ssl` sockets) present "
            "identity 0's certificate, allowed everywhere; keep-alive = HTTP/1.1 connections reused, new "
            "connection = a full TLS 1.3 handshake per request. Worker CPU is the nginx worker's run time from "
            "/proc/PID/schedstat per 10,000 answered requests: the robust figure on a shared machine, while "
            "req/s is bounded by the Python client. The mtlsc policy: `route /partner/ { require c0  allow "
            "<every identity> }` and 8 other routes.\n\n"
            f"Rounds: {plan.runtime_rounds}, each starting at another config; per round and config "
            f"{plan.keepalive_requests:,} keep-alive and {plan.new_conn_requests:,} new-connection requests. "
            "Figures are medians over rounds; spread = half the range over rounds. The targets compare "
            "configs round by round (they ran moments apart) and take the median of those ratios. The "
            "\"(proxied)\" configs proxy to a plain-HTTP `return 200` server in the same nginx over kept-alive "
            "upstream connections (keep-alive clients only): there the emitted config also sets or clears "
            f"{_headers_text(rt)} identity and forwarding headers per request, which a hand-written config "
            "usually does not. The two \"two CAs\" configs are one server whose routes name two CAs that could "
            "each mint a look-alike of the other's names: bound by name only (the `auth_request` lines removed), "
            "and as emitted, also bound by key (an njs signature check per request to those routes, "
            "docs/language.md \"Several CAs on one server\"); both proxied, both connection modes.\n\n"
            + report.runtime_table(rt) + "\n\n### `nginx -t` and reload\n\n" + report.nginx_ops_table(rt))
    if latency is not None:
        rows = [[c.label, report._ms(c.median), report._ms(min(c.seconds)), report._ms(c.first)] for c in latency]
        text = ("## CLI latency\n\nNew processes, bytecode cache allowed, mtlsc's cache (`mtlsc.cache`: parser "
                "tables, public trust store facts) warm; `first` = the very first run, with that cache empty. "
                f"{plan.cli_runs} runs each, in turns.\n\n"
                + report.table(["command", "median ms", "min ms", "first ms"], rows))
        if labs:
            text += "\n\n" + report.table(
                ["`mtlsc lab`", "wall s (median)", "cases", ""],
                [[f"policies/{l.policy}.mtls", f"{l.median:.1f}" if l.median else "-", f"{l.passed} passed, {l.failed} failed",
                  l.error or ""] for l in labs])
        parts.append(text)
    parts.append(f"_Benchmark wall time: {time.monotonic() - started:.0f} s._")
    return "\n\n".join(parts) + "\n"


def _headers_text(rt) -> str:
    counts = sorted({n for name, n in rt.header_lines.items() if name.startswith("mtlsc") and n})
    return " to ".join(str(n) for n in (counts[0], counts[-1])) if len(counts) > 1 else str(counts[0]) if counts else "its"


HEADER = """# Performance

Regenerated by `python -m benchmarks` (this file; `--quick` for a smoke run). The benchmark is the
gate: unit tests make no timing assertions. Every ratio below comes from one run on one machine.

"""

NOTES = """
## Changes made from these numbers

- `evaluate.find_route`, `identity_headers` and the redirect lookup: routes indexed by path once
  per server (was a scan of every route per lookup, called per route: quadratic at 10,000 routes).
- `ir.Server.cas`: computed once (was rebuilt from every route on each use, per test case).
- `checks.unused_waiver`: returns at once when the policy has no `waive` (it ran every
  check a second time).
- `pipeline`: the garbage collector runs less often while a policy is processed (millions of
  objects that all stay alive; collection passes doubled a 10,000-route compile).
- `cast`/`emit.testscript`: a long allow list is sampled (`cast.IDENTITY_SAMPLE` = 8: first, last
  and evenly between) for tests.sh and the lab PKI, near misses are built against one index per CA
  (was one index per identity: quadratic), are tested only on routes allowing their identity, and
  each route looks at its own cast members only. tests.sh and the lab PKI grow with the policy,
  not with routes x identities; minting 50,000 client certificates took ~50 s.
- Cold start: jinja2 is imported only when emitting, certifi only when the public store is read;
  the LALR parser and the public trust store facts are cached per user (`mtlsc/cache.py`:
  `$MTLSC_CACHE_DIR`, `$XDG_CACHE_HOME/mtlsc` or `~/.cache/mtlsc`, keyed by their inputs).
- The key check of several CAs on one server (njs): it tries the key of the certificate the client
  certificate names as its issuer first, so a real client costs one key import and one signature
  check (it tried every key of the CA: 650 -> 396 µs worker CPU per kept-alive request).
- Front end (issue 13): one-line `identity` blocks (subject or fingerprint) and long `allow`
  lists are read without lark (`mtlsc/parse_fast.py`, the same nodes and spans, checked against
  lark by a property test); a DN already written as nginx prints it is not parsed again
  (`dn.nginx_form`); identity map entries are built only when the emitter writes them (`mtlsc
  check` built them for its emitter assertions). 10 routes / 50,000 identities, in-process
  check: 3.0 -> 1.1 s.
- `ir.Server.passthrough` computed once and MTLS205 building the locations once per server: both
  ran per route (1,000 routes compile 6.2 -> 1.6 s; 10,000 routes about 8 minutes -> 12 s).
- The compile and peer figures are whole processes since issue 13 (they were in-process with
  imports excluded): at small sizes the fixed cost of starting the interpreter and importing
  cryptography, lark, jinja2 and mtlsc's own modules dominates, and it is reported as such.
- gixy-ng cannot analyse configs with attribute identities: its copy of Python 3.10's
  `sre_parse` rejects the possessive quantifiers (`*+`, `++`) of mtlsc's DN regexes ("multiple
  repeat") and the run aborts; the synthetic policies therefore use exact subjects and
  fingerprints. gixy 0.1.21 runs on Python 3.11 but skips every `map` block ("Skip unparseable
  block"), so it would not analyse the gates at all; gixy-ng 0.2.59 is the peer measured.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, few repetitions (< 60 s); writes only --out")
    p.add_argument("--out", type=Path, help=f"where to write the report (default for the full run: {DOC.relative_to(REPO)})")
    p.add_argument("--workdir", type=Path, help="keep the generated policies, configs and PKI here (default: a temp dir)")
    p.add_argument("--only", choices=("compile", "runtime", "cli"), action="append",
                   help="run only these sections (repeatable)")
    args = p.parse_args(argv)
    plan = QUICK if args.quick else FULL
    out = args.out or (None if args.quick else DOC)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mtlsc-bench-"))
    sections = set(args.only or ("compile", "runtime", "cli"))

    def progress(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    try:
        body = run(plan, work, sections=sections, progress=progress)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    mode = "quick (`--quick`)" if args.quick else "full"
    text = HEADER + f"Mode: {mode}.\n\n" + report.environment_table() + "\n\n" + body + NOTES
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        progress(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
