"""`mtlsc lab`: the command-line face of mtlsc.lab.run."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mtlsc import pipeline
from mtlsc.diagnostics import has_errors
from mtlsc.lab.nginx import NginxMissing, NginxStartError
from mtlsc.lab.report import PolicyTests, report
from mtlsc.lab.run import Lab, LabError, running_lab, test_lab, user_cas
from mtlsc.lab.userca import CaKey, UserCaError
from mtlsc.policytest.command import find_test_files, load_all
from mtlsc.policytest.run import counts, expect_on_lab, files_cas, render_results, required_skips
from mtlsc.render import render


def _progress(message: str) -> None:
    sys.stderr.write(f"mtlsc lab: {message}\n")
    sys.stderr.flush()


def lab_command(policies: list[str], *, keep: bool, workdir: Path | None, nginx: str | None,
                tests: list[str] | None = None, ca_keys: Sequence[CaKey] = (), allow_skips: bool = False) -> int:
    missing = [p for p in policies if not Path(p).is_file()]
    if missing:
        sys.stderr.write(f"error[MTLS900]: cannot read the policy file {missing[0]}\n")
        return 2
    front = pipeline.read_and_lower(policies)
    if front.policy is None:
        sys.stderr.write(render(front.diagnostics, front.sources))
        return 2 if front.io_error else 1
    loaded = _load_policy_tests(front.policy, policies, tests)
    if loaded is None:
        return 1
    cases, sources = loaded
    # The tests' own certificate files get the answer the user's nginx gives them only if the lab
    # trusts exactly the CA files that signed them.
    keep_cas = files_cas(cases)
    try:
        user_cas(front.policy, ca_keys, keep_cas)  # a key that does not fit stops here, before nginx starts
    except UserCaError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    for name in sorted(keep_cas - {k.ca for k in ca_keys}):
        _progress(f"ca {name}: the policy tests name certificates it signed, so the lab trusts its files as they are "
                  f"and mints its test clients only with --ca-key {name}=KEY.pem")
    work = (workdir or Path(tempfile.mkdtemp(prefix="mtlsc-lab-"))).absolute()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with running_lab(policies, work, nginx_bin=nginx, progress=_progress, ca_keys=ca_keys,
                         keep_cas=keep_cas) as lab:
            _progress("running tests.sh")
            run = test_lab(lab, work, allow_skips=allow_skips)
            policy_tests = _policy_tests(lab, cases, sources) if cases or sources else None
            text = report(run, time.monotonic() - started, policy_tests, allow_skips)
            ok = run.ok and not (policy_tests and (policy_tests.failed or (policy_tests.required and not allow_skips)))
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
    except UserCaError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    finally:
        if not keep and workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _load_policy_tests(policy, policies: list[str], tests: list[str] | None):
    """(expectations, sources) of the policy's test files, checked against the user's policy;
    None when they do not load."""
    files = find_test_files(policies, tests)
    if not files:
        return [], {}
    cases, diags, sources = load_all(files, policy)
    if diags:
        sys.stderr.write(render(diags, sources))
    if has_errors(diags):
        return None
    return cases, sources


def _policy_tests(lab: Lab, cases, sources) -> PolicyTests:
    """The YAML expectations on this nginx."""
    _progress(f"running {len(sources)} policy test file(s) on nginx")
    results = expect_on_lab(lab, cases)
    passed, failed, skipped = counts(results)
    return PolicyTests(render_results(results, sources), passed, failed, skipped, required_skips(results))


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
            crt, key = lab.pki.client(f"{route.ca.name}/client") if route.ca is not None else (None, None)
            if crt is not None and crt.exists():  # not minted for a CA of yours without --ca-key
                lines.append(f"  {base} --cert {crt} --key {key} https://{name}:{port}{path}")
    return "\n".join(lines) + "\n"
