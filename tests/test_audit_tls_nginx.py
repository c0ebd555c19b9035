"""TLS-setting traps of `mtlsc audit` (MTLS547, MTLS548, MTLS549) on real nginx, against the original
`tests/fixtures/audit/tls.conf` and then against the policy `mtlsc import` writes for it.

MTLS547 runs through `mtlsc.audit.prove` with every client limited to TLS 1.3. MTLS548 and MTLS549
need what a table of single requests cannot show (a session resumed across a CRL update and reload;
a plain-HTTP listener), so the original runs with its own CA and CRL files (`prove.as_written`) and
the imported policy is compiled for the same lab (`prove.compile_lab`)."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mtlsc.audit import audit
from mtlsc.audit.importer import import_configs
from mtlsc.audit.prove import as_written, compile_lab, prove_import
from mtlsc.lab.client import plain_request, request
from mtlsc.lab.nginx import free_port, quote, running_nginx
from mtlsc.lab.pki import issue_client, issue_server, make_crl, make_root, write_pem
from support import HERE

pytestmark = pytest.mark.nginx
FIXTURES = HERE / "fixtures" / "audit"
OLD = "old.example.com"  # tls.conf: `listen 80` and `listen 443 ssl`, `ssl_crl`, the shared session cache


def _now() -> datetime:
    return datetime.now(timezone.utc)


def test_mtls547_tls13_only_clients_fail_the_handshake_on_the_original_and_get_in_after_import(tmp_path, nginx_bin):
    result = audit([str(FIXTURES / "tls.conf")])
    assert {("MTLS547", 10), ("MTLS547", 19)} <= {(d.code, d.span.line) for d in result.diagnostics}
    table = prove_import(result.configs[0], import_configs(result.configs), tmp_path / "p.mtls",
                         nginx_bin=nginx_bin, workdir=tmp_path / "lab", tls_version="TLSv1.3")
    rows = {(r.ask.server, r.client): r for r in table.rows}
    member = "clients.pem: CN=mtlsc-prove,O=Nowhere"
    # `ssl_protocols TLSv1 TLSv1.1 TLSv1.2`, and no `ssl_protocols` at all (nginx 1.22's default): no TLS 1.3
    for server in (OLD, "norevoke.example.com"):
        assert rows[(server, member)].original.status == 0 and not rows[(server, member)].original.reached
        assert rows[(server, member)].policy.reached
        stranger = rows[(server, "unknown CA: CN=mtlsc-prove,O=Nowhere")]
        assert not stranger.original.allowed and not stranger.policy.allowed


class _Lab:
    """tls.conf copied next to its CA and CRL files; a member client; the lab's server certificate."""

    def __init__(self, tmp_path: Path):
        self.dir, now = tmp_path, _now()
        shutil.copy(FIXTURES / "tls.conf", tmp_path / "tls.conf")
        self.ca = make_root("old clients", now=now)
        write_pem(tmp_path / "ca" / "clients.pem", self.ca.cert)
        leaf = issue_client(self.ca, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]), now=now)
        self.serial = leaf.cert.serial_number
        self.client = {"cert": write_pem(tmp_path / "alice.crt", leaf.cert), "key": write_pem(tmp_path / "alice.key", leaf.key)}
        self.write_crl(revoked=False)
        self.result = audit([str(tmp_path / "tls.conf")], now=now)
        self.config = self.result.configs[0]
        srv = issue_server(make_root("lab server ca", now=now), [OLD, "norevoke.example.com"], now=now)
        self.server_cert = (write_pem(tmp_path / "lab.crt", srv.cert), write_pem(tmp_path / "lab.key", srv.key))
        self.ports = {lst.key: free_port() for s in self.config.servers for lst in s.listens}

    def write_crl(self, revoked: bool) -> None:
        write_pem(self.dir / "ca" / "clients.crl", make_crl(self.ca, [self.serial] if revoked else [], now=_now()))

    def port(self, number: int) -> int:
        return self.ports[("*", number)]

    @contextmanager
    def original(self, nginx_bin: str, backend: str):
        conf = as_written(self.config, self.server_cert, self.ports, backend)
        with running_nginx(conf, self.dir / "nginx-original", ports=list(self.ports.values()), nginx_bin=nginx_bin) as n:
            yield n

    def compile_policy(self, backend: str) -> Path:
        imported = import_configs(self.result.configs)
        paths = {p: str(f) for srv in imported.servers for p, f in zip((srv.certificate, srv.key), self.server_cert)}
        listen = {str(port): f"127.0.0.1:{self.port(port)}" for port in (443, 8443)}
        return compile_lab(imported, paths, listen, backend, self.dir / "policy", _now())

    @contextmanager
    def policy(self, nginx_bin: str, backend: str):
        out = self.compile_policy(backend)
        tls = [self.port(443), self.port(8443)]
        with running_nginx(f"include {quote(str(out) + '/*.conf')};", self.dir / "nginx-policy", ports=tls,
                           nginx_bin=nginx_bin) as n:
            yield n


def _resumes_after_revocation(lab: _Lab, nginx, backend, echo_backend) -> tuple:
    """Full handshake, resume, revoke the client in the CRL file, reload (as mtlsc apply does for the
    policy: recompiled with the new CRL first), offer the session again. Returns (resumed before,
    (status, resumed, reached the backend) after, a new full handshake's status after)."""
    kw = dict(server_name=OLD, tls_version="TLSv1.2", tickets=False, **lab.client)  # resumes by session id
    first = request("127.0.0.1", lab.port(443), "/x", **kw)
    before = request("127.0.0.1", lab.port(443), "/x", session=first.session, **kw)
    assert (first.status, before.status) == (200, 200)
    lab.write_crl(revoked=True)
    if backend is not None:
        lab.compile_policy(backend)
    nginx.reload()
    echo_backend.clear()
    after = request("127.0.0.1", lab.port(443), "/x", session=before.session or first.session, **kw)
    reached = bool(echo_backend.snapshot())
    fresh = request("127.0.0.1", lab.port(443), "/x", **{**kw, "tickets": True})  # a new context: no session
    return before.session_reused, (after.status, after.session_reused, reached), fresh.status


def test_mtls548_shared_session_cache_resumes_a_revoked_client_after_the_crl_reload_and_the_import_does_not(
        tmp_path, nginx_bin, echo_backend):
    lab = _Lab(tmp_path)
    assert ("MTLS548", 3) in {(d.code, d.span.line) for d in lab.result.diagnostics}
    with lab.original(nginx_bin, echo_backend.url) as nginx:
        reused_before, after, fresh = _resumes_after_revocation(lab, nginx, None, echo_backend)
    assert reused_before
    assert after == (200, True, True)  # the revoked client's session, resumed, reaches the backend
    assert fresh == 400  # while a full handshake with the same certificate is refused: the CRL is loaded
    lab.write_crl(revoked=False)
    with lab.policy(nginx_bin, echo_backend.url) as nginx:
        reused_before, after, fresh = _resumes_after_revocation(lab, nginx, echo_backend.url, echo_backend)
    assert not reused_before  # `ssl_session_cache off`: nothing to resume by session id
    assert after == (403, False, False)  # a full handshake, and the new CRL refuses it (mtlsc's 403)
    assert fresh == 403


def test_mtls549_the_plain_listener_serves_the_gated_location_without_a_certificate_and_the_import_drops_it(
        tmp_path, nginx_bin, echo_backend):
    lab = _Lab(tmp_path)
    assert ("MTLS549", 5) in {(d.code, d.span.line) for d in lab.result.diagnostics}
    with lab.original(nginx_bin, echo_backend.url):
        echo_backend.clear()
        plain = plain_request("127.0.0.1", lab.port(80), "/x")
        got = echo_backend.snapshot()
        assert plain.status == 200 and len(got) == 1  # `ssl_verify_client on` enforces nothing here
        assert got[0].header_values("X-Client-Verify") == []  # empty `$ssl_client_verify`: not sent
        assert request("127.0.0.1", lab.port(443), "/x", server_name=OLD).status == 400  # TLS without a certificate
    with lab.policy(nginx_bin, echo_backend.url):
        echo_backend.clear()
        assert plain_request("127.0.0.1", lab.port(80), "/x").status == 0  # no plain listener any more
        refused = plain_request("127.0.0.1", lab.port(443), "/x")
        assert refused.status == 400 and "plain HTTP request was sent to HTTPS port" in refused.text
        assert echo_backend.snapshot() == []
