"""`mtlsc lab`: the command-line face of mtlsc.lab.run."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from mtlsc.diagnostics import has_errors
from mtlsc.lab.nginx import NginxMissing, NginxStartError
from mtlsc.lab.report import report
from mtlsc.lab.run import Lab, LabError, running_lab, test_lab
from mtlsc.render import render


def _progress(message: str) -> None:
    sys.stderr.write(f"mtlsc lab: {message}\n")
    sys.stderr.flush()


def lab_command(policies: list[str], *, keep: bool, workdir: Path | None, nginx: str | None,
                tests: list[str] | None = None) -> int:
    missing = [p for p in policies if not Path(p).is_file()]
    if missing:
        sys.stderr.write(f"error[MTLS900]: cannot read the policy file {missing[0]}\n")
        return 2
    work = workdir or Path(tempfile.mkdtemp(prefix="mtlsc-lab-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with running_lab(policies, work, nginx_bin=nginx, progress=_progress) as lab:
            _progress("running tests.sh")
            run = test_lab(lab, work)
            policy_tests = _policy_tests(lab, policies, tests)
            if policy_tests is None:
                return 1
            text = report(run, time.monotonic() - started, policy_tests or None)
            ok = run.ok and not (policy_tests and policy_tests[2])
            if keep:
                _stay_up(lab, text, work)
            else:
                sys.stdout.write(text)
            return 0 if ok else 1
    except NginxMissing as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except NginxStartError as exc:
        sys.stderr.write(f"error: nginx did not start with the compiled config:\n{exc}\n")
        return 1
    except LabError as exc:
        sys.stderr.write(render(exc.diagnostics, exc.sources) or f"error: {exc}\n")
        return 1
    finally:
        if not keep and workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _policy_tests(lab: Lab, policies: list[str], tests: list[str] | None):
    """The YAML expectations on this nginx: () when there are none, None when they do not load."""
    from mtlsc.policytest_command import find_test_files, load_all
    from mtlsc.policytest_run import counts, expect_on_lab, render_results

    files = find_test_files(policies, tests)
    if not files:
        return ()
    _progress(f"running {sum(1 for _ in files)} policy test file(s) on nginx")
    cases, diags, sources = load_all(files, lab.policy)
    if diags:
        sys.stderr.write(render(diags, sources))
    if has_errors(diags):
        return None
    results = expect_on_lab(lab, cases)
    return (render_results(results, sources), *counts(results))


def _stay_up(lab: Lab, text: str, work: Path) -> None:
    """Keep nginx and the backend up for a person to poke at, until INT or TERM."""
    # A shell starts background jobs with SIGINT ignored; say explicitly that INT and TERM stop the lab.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        sys.stdout.write(text)
        sys.stdout.write(_try_it(lab))
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sys.stderr.write(f"mtlsc lab: stopped; files kept in {work}\n")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _try_it(lab: Lab) -> str:
    lines = [f"\nThe lab is running (files in {lab.out_dir.parent}). Try, then press Ctrl-C to stop:"]
    for server in lab.policy.servers:
        port = server.listens[0].port
        name = server.names[0]
        base = f"curl --cacert {lab.pki.server_ca} --resolve {name}:{port}:127.0.0.1"
        for route in server.routes:
            path = route.path if route.path.endswith("/") or route.match.value == "exact" else route.path + "/"
            lines.append(f"  {base} https://{name}:{port}{path}")
            if route.ca is not None:
                crt, key = lab.pki.client(f"{route.ca.name}/client")
                lines.append(f"  {base} --cert {crt} --key {key} https://{name}:{port}{path}")
    return "\n".join(lines) + "\n"
