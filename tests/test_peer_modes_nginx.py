"""Peers' modes on the real nginx. `reject no_cert 302 "https://..."`: a client without a certificate
is sent to the page, on a gated route and under `handshake require`; a forbidden identity still gets
its refusal. `passthrough` (optional_no_ca): any self-made certificate reaches the backend with
nginx's verdict, an expired one is refused. The model agrees on each."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mtlsc import pipeline
from mtlsc.lab.client import request
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.pki import issue_client, issue_server, make_root, write_pem
from mtlsc.model.evaluate import evaluate
from mtlsc.output import write_atomic

pytestmark = pytest.mark.nginx
NOW = datetime.now(timezone.utc)
URL = "https://help.example.org/get-a-certificate?from=mtls"

POLICY = """\
ca mesh {{ bundle "{d}/root.pem"  depth 0 }}
identity alice {{ cn "alice"  o "mesh" }}
server api.test {{
  listen 127.0.0.1:{port}
  certificate "{d}/srv.crt" key "{d}/srv.key"
  install "{d}/out/mtls"
  backend "http://127.0.0.1:9"
  {handshake}
  reject no_cert 302 "{url}"
  route /a/ {{ require mesh  allow alice }}
}}
"""


@pytest.mark.parametrize("handshake", ["", "handshake require"])
def test_no_certificate_is_redirected_and_nothing_else_is(tmp_path, handshake):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    root = make_root("mesh root", now=NOW)
    write_pem(tmp_path / "root.pem", root.cert)
    srv = issue_server(make_root("server ca", now=NOW), ["api.test"], now=NOW)
    write_pem(tmp_path / "srv.crt", srv.cert)
    write_pem(tmp_path / "srv.key", srv.key)
    bob = issue_client(root, x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mesh"),
                                        x509.NameAttribute(NameOID.COMMON_NAME, "bob")]), now=NOW)
    write_pem(tmp_path / "bob.crt", bob.cert)
    write_pem(tmp_path / "bob.key", bob.key)
    port = free_port()
    (tmp_path / "p.mtls").write_text(POLICY.format(d=tmp_path, port=port, handshake=handshake, url=URL))
    result = pipeline.compile_policy([str(tmp_path / "p.mtls")], now=NOW)
    assert not result.failed, [(x.code, x.message) for x in result.diagnostics]
    write_atomic(tmp_path / "out", result.outputs)
    server = result.policy.servers[0]
    with running_nginx(f"include {tmp_path}/out/nginx/*.conf;", tmp_path / "nginx", ports=[port]):
        none = request("127.0.0.1", port, "/a/x", server_name="api.test")
        want = evaluate(server, "/a/x", None)
        assert (none.status, dict((k.lower(), v) for k, v in none.headers).get("location")) == (302, URL)
        assert (want.status, want.location) == (302, URL)
        forbidden = request("127.0.0.1", port, "/a/x", server_name="api.test", cert=tmp_path / "bob.crt",
                            key=tmp_path / "bob.key")
        assert forbidden.status == 403 and b"not allowed" in forbidden.body


PASSTHROUGH = """\
server legacy.test {{
  listen 127.0.0.1:{port}
  certificate "{d}/srv.crt" key "{d}/srv.key"
  backend "http://127.0.0.1:{echo}"
  route = /healthz {{ public }}
  route / {{ passthrough  forward verify cert subject }}
}}
"""


def test_passthrough_hands_any_certificate_over_and_refuses_an_expired_one(tmp_path):
    from datetime import timedelta

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from mtlsc.lab.echo import running_echo_backend
    from mtlsc.model.evaluate import PASSTHROUGH_VERIFY, Client

    srv = issue_server(make_root("server ca", now=NOW), ["legacy.test"], now=NOW)
    write_pem(tmp_path / "srv.crt", srv.cert)
    write_pem(tmp_path / "srv.key", srv.key)
    anyone = make_root("anyone", now=NOW)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")])
    for label, kwargs in (("fresh", {}), ("expired", {"not_before": NOW - timedelta(days=30), "days": 1})):
        issued = issue_client(anyone, name, now=NOW, **kwargs)
        write_pem(tmp_path / f"{label}.crt", issued.cert)
        write_pem(tmp_path / f"{label}.key", issued.key)
    port = free_port()
    with running_echo_backend() as echo:
        (tmp_path / "p.mtls").write_text(PASSTHROUGH.format(d=tmp_path, port=port, echo=echo.port))
        result = pipeline.compile_policy([str(tmp_path / "p.mtls")], now=NOW)
        assert not result.failed, [(x.code, x.message) for x in result.diagnostics]
        assert "MTLS244" in {x.code for x in result.diagnostics}
        write_atomic(tmp_path / "out", result.outputs)
        server = result.policy.servers[0]
        with running_nginx(f"include {tmp_path}/out/nginx/*.conf;", tmp_path / "nginx", ports=[port]):
            fresh = request("127.0.0.1", port, "/x", server_name="legacy.test", cert=tmp_path / "fresh.crt",
                            key=tmp_path / "fresh.key")
            assert fresh.status == 200
            [seen] = echo.snapshot()
            assert seen.header_values("X-Client-Verify") == [PASSTHROUGH_VERIFY]
            assert seen.header_values("X-Client-Subject") == ["CN=admin"]
            want = evaluate(server, "/x", Client("CN=admin", "", verified_by=None))
            assert want.status == 200 and ("X-Client-Verify", PASSTHROUGH_VERIFY) in want.headers
            expired = request("127.0.0.1", port, "/x", server_name="legacy.test", cert=tmp_path / "expired.crt",
                              key=tmp_path / "expired.key")
            assert expired.status == 403 and b"not accepted" in expired.body
            assert evaluate(server, "/x", Client("CN=admin", "", expired=True)).reason == "bad_cert"
            none = request("127.0.0.1", port, "/x", server_name="legacy.test")
            assert none.status == 200 and echo.snapshot()[-1].header_values("X-Client-Verify") == ["NONE"]
