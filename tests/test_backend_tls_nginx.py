"""`https://` backends are verified by default (issue 11 §4, docs/language.md "Backends over TLS"):
on real nginx, a backend whose certificate another CA issued, or for another name, gets no request
(502); nginx presents its own client certificate when the policy names one; `backend_verify off`
is the explicit, warned way back (MTLS237)."""

from __future__ import annotations

import http.server
import ssl
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mtlsc.lab.client import request
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.pki import issue_client, issue_server, make_root, write_pem
from mtlsc.lab.run import prepare

pytestmark = pytest.mark.nginx
NOW = datetime.now(timezone.utc)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (stdlib name)
        body = b"backend over tls\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def tls_backend(cert: Path, key: Path, client_ca: Path | None = None):
    """An HTTPS server on 127.0.0.1; with `client_ca`, it requires a client certificate from it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("backend-pki")
    backend_ca, other_ca, nginx_ca = (make_root(n, now=NOW) for n in ("backend ca", "other ca", "nginx client ca"))
    files = {"backend_ca": write_pem(d / "backend-ca.pem", backend_ca.cert),
             "nginx_ca": write_pem(d / "nginx-ca.pem", nginx_ca.cert)}
    for label, ca in (("good", backend_ca), ("other", other_ca)):
        srv = issue_server(ca, ["backend.test"], now=NOW)
        files[f"{label}_crt"], files[f"{label}_key"] = write_pem(d / f"{label}.crt", srv.cert), write_pem(d / f"{label}.key", srv.key)
    me = issue_client(nginx_ca, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nginx")]), now=NOW)
    files["me_crt"], files["me_key"] = write_pem(d / "me.crt", me.cert), write_pem(d / "me.key", me.key)
    return files


def _answer(tmp_path: Path, nginx_bin: str, pki: dict, settings: str, served_by: str, client_ca: bool = False):
    policy = tmp_path / "p.mtls"
    policy.write_text(f"""server api.example.com {{
  certificate "/tmp/x.crt" key "/tmp/x.key"
  backend "https://127.0.0.1:9"
{settings}
  route / {{ public }}
}}
""")
    with tls_backend(pki[f"{served_by}_crt"], pki[f"{served_by}_key"], pki["nginx_ca"] if client_ca else None) as port:
        result, _, ports = prepare([str(policy)], tmp_path / "lab", f"https://127.0.0.1:{port}", NOW)
        with running_nginx(f"include {tmp_path}/lab/out/nginx/*.conf;", tmp_path / "lab" / "nginx", ports=ports,
                           nginx_bin=nginx_bin):
            resp = request("127.0.0.1", ports[0], "/x", server_name="api.example.com")
    return resp.status, {d.code for d in result.diagnostics}


@pytest.mark.parametrize("case, settings, served_by, client_ca, status", [
    ("verified", 'backend_ca "{backend_ca}"\nbackend_name "backend.test"', "good", False, 200),
    ("certificate-from-another-ca", 'backend_ca "{backend_ca}"\nbackend_name "backend.test"', "other", False, 502),
    ("another-name", 'backend_ca "{backend_ca}"\nbackend_name "impostor.test"', "good", False, 502),
    ("url-host-is-the-name-by-default", 'backend_ca "{backend_ca}"', "good", False, 502),
    ("system-store-by-default", 'backend_name "backend.test"', "good", False, 502),
    ("backend-wants-nginx-certificate", 'backend_ca "{backend_ca}"\nbackend_name "backend.test"', "good", True, 502),
    ("nginx-presents-its-certificate",
     'backend_ca "{backend_ca}"\nbackend_name "backend.test"\nbackend_client_certificate "{me_crt}" key "{me_key}"',
     "good", True, 200),
])
def test_https_backends_are_verified(tmp_path, nginx_bin, pki, case, settings, served_by, client_ca, status):
    got, codes = _answer(tmp_path, nginx_bin, pki, settings.format(**pki), served_by, client_ca)
    assert got == status, case
    assert "MTLS237" not in codes


def test_mtls237_triggers_on_backend_verify_off_and_any_backend_then_gets_the_request(tmp_path, nginx_bin, pki):
    got, codes = _answer(tmp_path, nginx_bin, pki, "backend_verify off", "other")
    assert got == 200
    assert "MTLS237" in codes
