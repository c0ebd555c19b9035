"""`mtlsc apply` / `mtlsc rollback` against a real nginx on loopback (temp prefix, high ports).

Every scenario runs bounded load from background threads while the apply runs — a public route
without a certificate and a gated route with an allowed client certificate — and asserts that no
request failed and that requests were in flight across every reload. The counts (requests sent,
failed) of each scenario are printed (`pytest -s`).
Several policies in one nginx: tests/test_apply_policies_nginx.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mtlsc import apply as apply_mod
from mtlsc.apply import EXIT_OK, EXIT_REVERTED, EXIT_USAGE, apply, history, live_entry, rollback
from mtlsc.apply.history import APPLIED, INTERRUPTED, ROLLED_BACK, State
from apply_support import Load, Target
from mtlsc.lab.client import request
from mtlsc.lab.echo import EchoBackend, running_echo_backend
from mtlsc.lab.nginx import NginxProcess, free_port, running_nginx
from mtlsc.lab.pki import issue_client, issue_server, make_chain, make_crl, make_root, write_pem

pytestmark = pytest.mark.nginx

HOST = "api.example.com"

POLICY = """\
nginx ">= 1.22"
ca partners {{
  bundle "ca/root.pem" "ca/issuing.pem"
  depth 1
  crl "ca/root.crl" "ca/{issuing_crl}"
}}
identity acme {{ subject "CN=acme,O=Acme" }}
identity loader {{ subject "CN=loader,O=Acme" }}
server {host} {{
  listen 127.0.0.1:{port}{extra_listen}
  certificate "{cert}" key "{key}"
  backend "{backend}"
  install "{install}"
  route = /healthz {{ public }}
  route /partner/ {{ require partners  allow acme loader  forward subject verify }}
{extra_routes}}}
"""


@dataclass
class Deployment:
    """A running nginx whose main config includes conf_dir/*.conf, with a PKI and an echo backend."""

    root: Path
    prefix: Path
    conf_dir: Path
    install: Path
    port: int
    nginx: NginxProcess
    echo: EchoBackend
    server_cert: Path
    server_key: Path
    acme: tuple[Path, Path]  # a client certificate the policy allows (the smoke checks use it)
    loader: tuple[Path, Path]  # another one, for the load (no test revokes it)
    chain: object
    now: datetime
    policies: Path
    options: dict = field(default_factory=dict)

    def policy(self, name: str, *, cert: str | None = None, extra_routes: str = "", extra_listen: str = "",
               issuing_crl: str = "issuing.crl") -> str:
        """Version `name` of the policy, written over the one policy file (as a user edits it)."""
        path = self.policies / "api.mtls"
        path.write_text(f"# version {name}\n" + POLICY.format(
            host=HOST, port=self.port, cert=cert or self.server_cert, key=self.server_key, backend=self.echo.url,
            install=self.install, extra_routes=extra_routes, extra_listen=extra_listen, issuing_crl=issuing_crl))
        return str(path)

    def apply(self, *policies: str, **kw) -> apply_mod.ApplyResult:
        return apply(list(policies), self.conf_dir, **{**self.options, **kw})

    def rollback(self, **kw) -> apply_mod.ApplyResult:
        opts = {k: v for k, v in self.options.items() if k not in ("client_cert", "client_key")}
        return rollback(self.conf_dir, **{**opts, **kw})

    def load(self) -> Load:
        return Load([Target(HOST, self.port, "/healthz"), Target(HOST, self.port, "/partner/load", self.loader)])

    def get(self, path: str, cert: tuple[Path, Path] | None = None):
        return request("127.0.0.1", self.port, path, server_name=HOST,
                       cert=cert[0] if cert else None, key=cert[1] if cert else None, timeout=5)

    def live_files(self) -> dict[str, bytes]:
        out = {}
        for d in (self.conf_dir, self.install):
            for p in sorted(d.glob("*")):
                if p.is_file():
                    out[str(p)] = p.read_bytes()
        return out


@pytest.fixture
def deployment(tmp_path, nginx_bin, now) -> Iterator[Deployment]:
    root = tmp_path
    prefix, conf_dir, install, policies = root / "nginx", root / "nginx" / "conf.d", root / "nginx" / "mtls", root / "policy"
    for d in (conf_dir, install, policies / "ca"):
        d.mkdir(parents=True)
    chain = make_chain("partners", 1, now=now)
    write_pem(policies / "ca" / "root.pem", chain.root.cert)
    write_pem(policies / "ca" / "issuing.pem", chain.issuing.cert)
    write_pem(policies / "ca" / "root.crl", make_crl(chain.root, [], now=now))
    write_pem(policies / "ca" / "issuing.crl", make_crl(chain.issuing, [], now=now))
    acme = issue_client(chain.issuing, _name("acme", "Acme"), now=now)
    write_pem(root / "acme.crt", acme.cert)
    write_pem(root / "acme.key", acme.key)
    loader = issue_client(chain.issuing, _name("loader", "Acme"), now=now)
    write_pem(root / "loader.crt", loader.cert)
    write_pem(root / "loader.key", loader.key)
    server_ca = make_root("apply test server CA", now=now)
    srv = issue_server(server_ca, [HOST, "127.0.0.1"], now=now)
    write_pem(root / "server.crt", srv.cert)
    write_pem(root / "server.key", srv.key)
    port = free_port()
    http = f'include "{conf_dir}/*.conf";'
    with running_echo_backend() as echo, running_nginx(http, prefix, ports=[], nginx_bin=nginx_bin) as nginx:
        dep = Deployment(root, prefix, conf_dir, install, port, nginx, echo, root / "server.crt", root / "server.key",
                         (root / "acme.crt", root / "acme.key"), (root / "loader.crt", root / "loader.key"), chain, now,
                         policies)
        dep.options = {"nginx_bin": nginx_bin, "nginx_conf": prefix / "nginx.conf", "nginx_prefix": prefix,
                       "nginx_args": ("-e", str(prefix / "error.log")), "reload_timeout": 5, "drain_timeout": 5}
        yield dep


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _first_apply(dep: Deployment) -> str:
    v1 = dep.policy("v1")
    result = dep.apply(v1, client_cert=str(dep.acme[0]), client_key=str(dep.acme[1]))
    assert result.exit_code == EXIT_OK, result.report()
    return v1


# ----- scenarios ---------------------------------------------------------------------------------

def test_apply_success_installs_reloads_and_smoke_checks(deployment):
    dep = deployment
    _first_apply(dep)
    assert dep.get("/healthz").status == 200
    assert dep.get("/partner/x").status == 403
    assert dep.get("/partner/x", dep.acme).status == 200
    workers = dep.nginx.workers()
    v2 = dep.policy("v2", extra_routes="  route /status/ { public }\n")
    with dep.load() as loop:
        result = dep.apply(v2, client_cert=str(dep.acme[0]), client_key=str(dep.acme[1]))
    loop.record("apply success", result.reloads)
    assert result.exit_code == EXIT_OK and result.ok, result.report()
    assert dep.get("/status/x").status == 200  # the new route is served
    assert not (dep.nginx.workers() & workers)  # a new worker generation
    assert result.servers("changed") == [f"{HOST}:{dep.port}"] and f"changed {HOST}:{dep.port}" in result.message
    names = {c.path: c for c in result.smoke}
    assert names["/healthz"].ok and names["/partner/mtlsc-probe"].ok and names["/status/mtlsc-probe"].ok
    assert any(c.client == "acme.crt" and c.ok for c in result.smoke)
    assert sorted(p.name for p in dep.conf_dir.glob("*.conf")) == ["00-mtlsc.conf", f"{HOST}_{dep.port}.conf"]
    assert {p.name for p in dep.install.iterdir()} == {f"{HOST}_{dep.port}.ca.pem", f"{HOST}_{dep.port}.crl.pem"}
    entries = history(dep.conf_dir)
    assert [(e.action, e.result) for e in entries] == [("apply", APPLIED), ("apply", APPLIED)]
    assert entries[1].previous == entries[0].id and live_entry(dep.conf_dir) == entries[1].id
    assert entries[1].policies[0]["path"].endswith("api.mtls") and len(entries[1].policies[0]["sha256"]) == 64
    assert {Path(i["path"]).name for i in entries[1].inputs} == {"root.pem", "issuing.pem", "root.crl", "issuing.crl"}
    assert not list(dep.conf_dir.glob(".*mtlsc-new*"))  # no staged leftovers


def test_nginx_t_failure_restores_files_and_nginx_keeps_serving(deployment):
    dep = deployment
    _first_apply(dep)
    before = dep.live_files()
    workers = dep.nginx.workers()
    bad = dep.policy("bad-cert", cert="/nonexistent/mtlsc/server.crt")
    with dep.load() as loop:
        result = dep.apply(bad)
    loop.record("nginx -t failure", result.reloads)
    assert result.exit_code == EXIT_REVERTED and result.stage == "nginx-t" and result.rolled_back, result.report()
    assert "/nonexistent/mtlsc/server.crt" in result.message
    assert dep.live_files() == before  # the previous files, byte for byte
    assert dep.nginx.workers() == workers  # never reloaded
    assert dep.get("/partner/x", dep.acme).status == 200
    assert history(dep.conf_dir)[-1].result == ROLLED_BACK
    assert live_entry(dep.conf_dir) == history(dep.conf_dir)[0].id


def test_smoke_failure_revoked_client_rolls_back(deployment):
    """A new CRL revokes the certificate the smoke checks must get through with: nginx -t and the
    reload succeed, the smoke check fails, the previous files come back and nginx reloads them."""
    dep = deployment
    _first_apply(dep)
    before = dep.live_files()
    acme_serial = x509.load_pem_x509_certificate(dep.acme[0].read_bytes()).serial_number
    write_pem(dep.policies / "ca" / "issuing-new.crl", make_crl(dep.chain.issuing, [acme_serial], now=dep.now))
    revoking = dep.policy("revoking", issuing_crl="issuing-new.crl")
    with dep.load() as loop:
        result = dep.apply(revoking, client_cert=str(dep.acme[0]), client_key=str(dep.acme[1]))
    loop.record("smoke failure (revoked client)", result.reloads)
    assert result.exit_code == EXIT_REVERTED and result.stage == "smoke" and result.rolled_back, result.report()
    failed = [c for c in result.smoke if not c.ok]
    assert failed and failed[0].client == "acme.crt"
    # nginx's own reason, from its error log (the answer itself says only 403)
    assert "certificate revoked" in failed[0].nginx and "certificate revoked" in result.report(log=False)
    assert "reloaded nginx with the previous configuration" in result.log
    assert dep.live_files() == before
    assert dep.get("/partner/x", dep.acme).status == 200  # acme gets in again: the old CRL is loaded
    assert history(dep.conf_dir)[-1].result == ROLLED_BACK


def test_reload_failure_port_in_use_rolls_back(deployment):
    """nginx -t does not bind ports: a listen address another process holds passes the test and
    fails the reload. The master keeps its old workers; apply restores the files and reloads them."""
    dep = deployment
    _first_apply(dep)
    before = dep.live_files()
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        taken = dep.policy("taken", extra_listen=f"\n  listen 127.0.0.1:{busy.getsockname()[1]}")
        with dep.load() as loop:
            result = dep.apply(taken, reload_timeout=3)
    finally:
        busy.close()
    loop.record("reload failure (port in use)", result.reloads)
    assert result.exit_code == EXIT_REVERTED and result.stage == "reload", result.report()
    assert dep.live_files() == before
    assert dep.get("/partner/x", dep.acme).status == 200


def test_rollback_walks_back_one_apply_at_a_time(deployment):
    dep = deployment
    v1_files = None
    _first_apply(dep)
    v1_files = dep.live_files()
    v2 = dep.policy("v2", extra_routes="  route /status/ { public }\n")
    assert dep.apply(v2).exit_code == EXIT_OK
    assert dep.get("/status/x").status == 200
    with dep.load() as loop:
        result = dep.rollback(client_cert=str(dep.acme[0]), client_key=str(dep.acme[1]))
    loop.record("rollback", result.reloads)
    assert result.exit_code == EXIT_OK, result.report()
    assert dep.live_files() == v1_files
    assert dep.get("/status/x").status == 404  # v2's route is gone
    assert any(c.client == "acme.crt" and c.ok for c in result.smoke)  # smoke-checked with v1's policy
    entries = history(dep.conf_dir)
    assert [(e.action, e.result, e.undoes) for e in entries] == [
        ("apply", APPLIED, None), ("apply", APPLIED, None), ("rollback", APPLIED, 2)]
    assert live_entry(dep.conf_dir) == 3
    assert "rollback" in apply_mod.format_history(entries, 3)
    # Once more: back to before mtlsc (its files removed), then nothing is left to roll back.
    result = dep.rollback()
    assert result.exit_code == EXIT_OK, result.report()
    assert not list(dep.conf_dir.glob("*.conf")) and not list(dep.install.iterdir())
    assert live_entry(dep.conf_dir) is None
    result = dep.rollback()
    assert result.exit_code == EXIT_USAGE and "nothing to roll back" in result.message
    # An apply after rollbacks becomes the newest version again.
    assert dep.apply(v2).exit_code == EXIT_OK and dep.get("/status/x").status == 200


def test_lock_refuses_a_second_apply(deployment):
    dep = deployment
    v1 = dep.policy("v1")
    state = State(dep.conf_dir / ".mtlsc")
    # Held by another process: refused at once with who holds it; nothing changes.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); f.write('apply pid %d' % __import__('os').getpid()); f.flush(); "
         "print('held', flush=True); time.sleep(60)", str(state.root / "lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        state.root.mkdir(parents=True, exist_ok=True)
        assert holder.stdout.readline().strip() == "held"
        result = dep.apply(v1)
        assert result.exit_code == EXIT_USAGE and result.stage == "lock", result.report()
        assert "another mtlsc apply or rollback is running" in result.message and f"pid {holder.pid}" in result.message
        assert not list(dep.conf_dir.glob("*.conf")) and history(dep.conf_dir) == []
        assert dep.rollback().stage == "lock"
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # Released (the kernel drops a dead holder's lock): the apply goes through.
    assert dep.apply(v1).exit_code == EXIT_OK
    # Two applies at once in this process: the first holds the lock (slowed down), the second is refused.
    v2 = dep.policy("v2", extra_routes="  route /status/ { public }\n")
    original = apply_mod._recover

    def slow_recover(*args):
        time.sleep(1.0)  # runs under the lock
        return original(*args)

    results = {}
    apply_mod._recover = slow_recover
    try:
        first = threading.Thread(target=lambda: results.update(first=dep.apply(v2)))
        first.start()
        time.sleep(0.3)
        results["second"] = dep.apply(v1)
        first.join(timeout=60)
    finally:
        apply_mod._recover = original
    assert results["first"].exit_code == EXIT_OK, results["first"].report()
    assert results["second"].stage == "lock" and results["second"].exit_code == EXIT_USAGE


def test_lock_wait_outlasts_a_short_holder(deployment):
    dep = deployment
    v1 = dep.policy("v1")
    state = State(dep.conf_dir / ".mtlsc")
    with state.locked():  # held by this process: a second open file description is refused too
        assert dep.apply(v1).stage == "lock"
    started = time.monotonic()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(1.5)",
                               str(state.root / "lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = dep.apply(v1, lock_wait=30)
    finally:
        holder.wait(timeout=30)
    assert result.exit_code == EXIT_OK, result.report()
    assert time.monotonic() - started >= 1.0


def test_dry_run_tests_a_copy_and_changes_nothing(deployment):
    dep = deployment
    _first_apply(dep)
    before = dep.live_files()
    workers = dep.nginx.workers()
    v2 = dep.policy("v2", extra_routes="  route /status/ { public }\n")
    result = dep.apply(v2, dry_run=True)
    assert result.exit_code == EXIT_OK and "nothing was changed" in result.message, result.report()
    bad = dep.policy("bad-cert", cert="/nonexistent/mtlsc/server.crt")
    result = dep.apply(bad, dry_run=True)
    assert result.exit_code == EXIT_REVERTED and "/nonexistent/mtlsc/server.crt" in result.message, result.report()
    assert dep.live_files() == before and dep.nginx.workers() == workers
    assert len(history(dep.conf_dir)) == 1  # dry runs are not recorded
    assert dep.get("/status/x").status == 404


def test_policy_errors_and_foreign_files_change_nothing(deployment):
    dep = deployment
    broken = dep.policies / "broken.mtls"
    broken.write_text('server api.example.com { route / { require nobody } }\n')
    result = dep.apply(str(broken))
    assert result.exit_code == 1 and result.stage == "compile" and result.diagnostics
    assert "error[" in result.report()
    # A hand-written file where mtlsc would install its own: refused, never overwritten.
    foreign = dep.conf_dir / "00-mtlsc.conf"
    foreign.write_text("# mine\n")
    result = dep.apply(dep.policy("v1"))
    assert result.exit_code == EXIT_USAGE and "not installed by mtlsc" in result.message
    assert foreign.read_text() == "# mine\n" and history(dep.conf_dir) == []


def test_nginx_not_running_is_refused_before_any_change(deployment, tmp_path):
    dep = deployment
    result = dep.apply(dep.policy("v1"), pid_file=tmp_path / "no.pid")
    assert result.exit_code == EXIT_USAGE and "nginx is not running" in result.message
    assert not list(dep.conf_dir.glob("*.conf"))


def test_killed_apply_is_recovered_by_the_next_run(deployment):
    """SIGKILL while the live files are swapped but nginx has not reloaded: the next run finds the
    journal, restores the files it replaced and records the entry as interrupted."""
    dep = deployment
    _first_apply(dep)
    before = dep.live_files()
    v2 = dep.policy("v2", extra_routes="  route /status/ { public }\n")
    marker = dep.root / "swapped"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mtlsc import apply as a\n"
        "def progress(line):\n"
        "    if line.startswith('swapped in'):\n"
        "        Path(sys.argv[1]).write_text('x')\n"
        "        time.sleep(60)\n"
        f"a.apply([{v2!r}], {str(dep.conf_dir)!r}, progress=progress, **{_literal(dep.options)})\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(marker)], cwd=str(Path(__file__).parent.parent))
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the child never reached the swap"
        assert dep.live_files() != before  # the new files are live on disk
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    with dep.load() as loop:
        result = dep.apply(dep.policy("v1"))
    loop.record("recovery after a killed apply", result.reloads)
    assert result.exit_code == EXIT_OK, result.report()
    assert any("interrupted" in line for line in result.log)
    assert [e.result for e in history(dep.conf_dir)] == [APPLIED, INTERRUPTED, APPLIED]
    assert dep.get("/status/x").status == 404


def _literal(options: dict) -> str:
    return "{" + ", ".join(f"{k!r}: {_value(v)}" for k, v in options.items()) + "}"


def _value(v) -> str:
    if isinstance(v, Path):
        return f"__import__('pathlib').Path({str(v)!r})"
    return repr(v)


def test_cli_apply_list_and_rollback_end_to_end(deployment):
    """The same through the command line: `mtlsc apply`, `mtlsc rollback --list`, `mtlsc rollback`."""
    from support import run_cli

    dep = deployment
    o = dep.options
    nginx = ["--nginx-conf-dir", str(dep.conf_dir), "--nginx", o["nginx_bin"], "--nginx-conf", str(o["nginx_conf"]),
             "--nginx-prefix", str(o["nginx_prefix"]), "--nginx-arg=-e", f"--nginx-arg={o['nginx_args'][1]}"]
    code, _, err = run_cli("apply", dep.policy("v1"), *nginx, "--client-cert", str(dep.acme[0]),
                           "--client-key", str(dep.acme[1]))
    assert code == 0, err
    assert dep.get("/healthz").status == 200 and dep.get("/partner/x", dep.acme).status == 200
    code, out, _ = run_cli("rollback", *nginx, "--list")
    assert code == 0 and "apply" in out
    code, _, err = run_cli("rollback", *nginx)
    assert code == 0, err
    assert not list(dep.conf_dir.glob("*.conf")), "back to before mtlsc: nothing installed"
