"""CVE-2025-23419 (issue 11 §3): when `nginx ">= X"` includes builds without the fix and servers that
check clients differently share an address, mtlsc turns session tickets off there, so no session can
be resumed at all, under any name (MTLS238 says so and what it costs). Shown on real nginx: sessions
are not resumed with the affected range, and are with `nginx ">= 1.26.3"`.

This nginx (Debian 1.22.1-9+deb12u*) carries the fix, so the cross-server bypass itself cannot be
shown here; what is shown is that the emitted config leaves no session to resume."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mtlsc import pipeline
from mtlsc.lab.client import request
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.pki import issue_server, make_root, write_pem
from mtlsc.output import write_atomic

pytestmark = pytest.mark.nginx
NOW = datetime.now(timezone.utc)


def _policy(tmp_path, target: str, port: int) -> str:
    a, b, srv_ca = make_root("ca a", now=NOW), make_root("ca b", now=NOW), make_root("server ca", now=NOW)
    write_pem(tmp_path / "a.pem", a.cert)
    write_pem(tmp_path / "b.pem", b.cert)
    srv = issue_server(srv_ca, ["api.example.com", "admin.example.com"], now=NOW)
    write_pem(tmp_path / "srv.crt", srv.cert)
    write_pem(tmp_path / "srv.key", srv.key)
    servers = "".join(f"""server {name} {{
  listen 127.0.0.1:{port}
  certificate "{tmp_path}/srv.crt" key "{tmp_path}/srv.key"
  backend "http://127.0.0.1:9"
  install "{tmp_path}/out/mtls"
  route = /healthz {{ public }}
  route / {{ require {ca}  allow any }}
}}
""" for name, ca in (("api.example.com", "a"), ("admin.example.com", "b")))
    return f"""nginx "{target}"
ca a {{ bundle "{tmp_path}/a.pem" }}
ca b {{ bundle "{tmp_path}/b.pem" }}
{servers}"""


def _resumed(tmp_path, nginx_bin, target: str, version: str) -> tuple[bool, set[str]]:
    port = free_port()
    path = tmp_path / "p.mtls"
    path.write_text(_policy(tmp_path, target, port))
    result = pipeline.compile_policy([str(path)], now=NOW)
    assert not result.failed, [(d.code, d.message) for d in result.diagnostics]
    write_atomic(tmp_path / "out", result.outputs)
    with running_nginx(f"include {tmp_path}/out/nginx/*.conf;", tmp_path / "nginx", ports=[port], nginx_bin=nginx_bin):
        kw = dict(server_name="api.example.com", tls_version=version)
        first = request("127.0.0.1", port, "/healthz", **kw)
        # TLS 1.3 tickets arrive after the handshake: read a second response before reusing the session
        second = request("127.0.0.1", port, "/healthz", session=first.session, **kw)
        again = request("127.0.0.1", port, "/healthz", session=second.session or first.session, **kw)
    assert 0 not in (first.status, second.status, again.status)  # HTTP answers (502: the backend is a dummy)
    return bool(second.session_reused or again.session_reused), {d.code for d in result.diagnostics}


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_mtls238_triggers_and_no_session_is_resumed_when_unpatched_builds_are_targeted(tmp_path, nginx_bin, version):
    resumed, codes = _resumed(tmp_path, nginx_bin, ">= 1.22", version)
    assert "MTLS238" in codes
    assert not resumed
    conf = next((tmp_path / "out" / "nginx").glob("api.example.com_*.conf")).read_text()
    assert "ssl_session_tickets off;" in conf


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_mtls238_clean_and_sessions_resume_when_only_fixed_builds_are_targeted(tmp_path, nginx_bin, version):
    resumed, codes = _resumed(tmp_path, nginx_bin, ">= 1.26.3", version)
    assert "MTLS238" not in codes
    assert resumed
