"""`mtlsc lab`: every example passes on real nginx; a hand-broken gate fails loudly; --keep keeps
the lab up until Ctrl-C and its files afterwards; a missing nginx says how to install it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from mtlsc.lab.audit import audit
from mtlsc.lab.echo import EchoRequest
from mtlsc.lab.run import run_lab
from support import REPO, run_cli

pytestmark = pytest.mark.nginx
PARTNER = str(REPO / "policies" / "partner-api.mtls")


def test_lab_command_passes_and_reports_by_route():
    proc = subprocess.run([sys.executable, "-m", "mtlsc", "lab", PARTNER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "api.example.com/partner/ (require partners)\n  PASS  no certificate -> 403 no_cert" in proc.stdout
    assert re.search(r"^\d+ passed, 0 failed  \(\d+\.\d s\)$", proc.stdout, re.M)
    assert "mtlsc lab: nginx: pid" in proc.stderr


def _drop_identity_gate(out):
    conf = next((out / "nginx").glob("api.example.com_*.conf"))
    text = conf.read_text()
    broken = re.sub(r"^\s*if \(\$mtls_\w+_deny1\).*\n", "", text, flags=re.M)
    assert broken != text
    conf.write_text(broken)


def test_a_hand_broken_gate_fails_the_lab_loudly(tmp_path, nginx_bin):
    run = run_lab([PARTNER], tmp_path, nginx_bin=nginx_bin, tamper=_drop_identity_gate)
    assert not run.ok and run.failed >= 1
    assert "FAIL  api.example.com/partner/ (require partners): certificate of the CA on no allow list -> 403 forbidden: got HTTP 200" in run.output


def test_keep_leaves_the_lab_up_until_interrupted(tmp_path):
    work = tmp_path / "lab"
    proc = subprocess.Popen([sys.executable, "-m", "mtlsc", "lab", "--keep", "--workdir", str(work), PARTNER],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "press Ctrl-C" in line or not line:
                break
        assert any("press Ctrl-C" in line for line in lines), "".join(lines)
        curl = proc.stdout.readline().strip()
        assert curl.startswith("curl --cacert")
        pid = int((work / "nginx" / "nginx.pid").read_text())
        assert _running(pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert (work / "out" / "tests.sh").exists()
    assert not _running(pid), "nginx was stopped with the lab"


def _running(pid: int) -> bool:
    """Alive and not a zombie (a daemonised nginx is reaped by init, which a container may lack)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_header_audit_catches_spoofed_extra_and_duplicate_headers(tmp_path, nginx_bin):
    run = run_lab([PARTNER], tmp_path, nginx_bin=nginx_bin)
    host = f"api.example.com:{run.ports[0]}"
    bad = [
        EchoRequest("GET", "/healthz", (("Host", host), ("X-Client-Verify", "SUCCESS")), b""),
        EchoRequest("GET", "/partner/x", (("Host", host), ("X-Client-Verify", "SUCCESS"), ("X-Client-Verify", "SUCCESS")), b""),
        EchoRequest("GET", "/partner/x", (("Host", host), ("X-Client-Verify", "mtlsc-spoofed")), b""),
        EchoRequest("GET", "/partner/x", (("Host", host), ("X_Client_Verify", "x"), ("X-Client-Verify", "NONE")), b""),
        EchoRequest("GET", "/", (("Host", host), ("X-Client-Issuer", "CN=x")), b""),
    ]
    problems = audit(run.policy, bad)
    for fragment in ("/healthz: got x-client-verify, which route /healthz does not forward",
                     "/partner/x: x-client-verify arrived more than once",
                     "/partner/x: a spoofed identity header reached the backend",
                     "/partner/x: a header with `_` reached the backend",
                     "/: got x-client-issuer", "/: x-client-verify missing though the route forwards verify"):
        assert any(fragment in p for p in problems), (fragment, problems)
    assert audit(run.policy, run.requests) == []
