"""`mtlsc lab`: the command-line face of mtlsc.lab.run."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from mtlsc.lab.nginx import NginxMissing, NginxStartError
from mtlsc.lab.report import report
from mtlsc.lab.run import LabError, run_lab, running_lab, test_lab
from mtlsc.render import render


def _progress(message: str) -> None:
    sys.stderr.write(f"mtlsc lab: {message}\n")
    sys.stderr.flush()


def lab_command(policies: list[str], *, keep: bool, workdir: Path | None, nginx: str | None) -> int:
    missing = [p for p in policies if not Path(p).is_file()]
    if missing:
        sys.stderr.write(f"error[MTLS900]: cannot read the policy file {missing[0]}\n")
        return 2
    work = workdir or Path(tempfile.mkdtemp(prefix="mtlsc-lab-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        if keep:
            return _keep(policies, work, nginx, started)
        run = run_lab(policies, work, nginx_bin=nginx, progress=_progress)
        sys.stdout.write(report(run, time.monotonic() - started))
        return 0 if run.ok else 1
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


def _keep(policies, work: Path, nginx: str | None, started: float) -> int:
    """Run the tests, then keep nginx and the backend up for a person to poke at."""
    with running_lab(policies, work, nginx_bin=nginx, progress=_progress) as lab:
        run = test_lab(lab, work)
        # A shell starts background jobs with SIGINT ignored; say explicitly that INT and TERM stop the lab.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _interrupt)
        try:
            sys.stdout.write(report(run, time.monotonic() - started))
            sys.stdout.write(_try_it(lab))
            sys.stdout.flush()
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            sys.stderr.write(f"mtlsc lab: stopped; files kept in {work}\n")
    return 0 if run.ok else 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _try_it(lab) -> str:
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
