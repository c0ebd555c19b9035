"""More of docs/nginx-facts.md proven on real nginx: the facts that tests/test_nginx_facts.py and
the policy-level tests did not show on their own.

Same harness as tests/test_nginx_facts.py (whose `serve` fixture and config helpers are reused): each
test spells out the nginx config it is about, starts nginx on loopback from a temp prefix and
talks to it with `mtlsc.lab.client`, or runs `nginx -t` on it. Each test names the section of
docs/nginx-facts.md it proves.
"""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from mtlsc.lab import pki
from mtlsc.lab.client import plain_request, request
from mtlsc.lab.nginx import free_port, quote, test_config
from test_nginx_facts import LOCAL, Creds, answer, serve, subject, tls_server, verifying  # noqa: F401 (serve: a fixture)

pytestmark = pytest.mark.nginx


def _creds(d: Path, name: str, issued: pki.Issued) -> Creds:
    return Creds(pki.write_pem(d / f"{name}.pem", issued.cert), pki.write_pem(d / f"{name}.key", issued.key))


@dataclass(frozen=True)
class Lab:
    """This module's PKI on disk. `tls_server` reads only `server_cert` and `server_key`."""

    dir: Path
    root: pki.Issued  # the trusted client CA, kept with its key to issue CRLs and odd files
    ca: Path
    evil_ca: Path
    crl_empty: Path
    crl_revoking_alice: Path
    server_cert: Path
    server_key: Path
    alice: Creds  # CN=alice,O=Acme,C=US from the trusted CA
    expired: Creds  # from the trusted CA, expired
    evil_alice: Creds  # alice's subject, from the evil CA


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, now) -> Lab:
    d = tmp_path_factory.mktemp("pki")
    root = pki.make_root("Lab Client Root", now=now)
    evil = pki.make_root("Evil Root", now=now, org="Evil")
    server = pki.issue_server(pki.make_root("Lab Server Root", now=now), ["localhost", LOCAL], now=now)
    alice = pki.issue_client(root, subject("alice"), now=now)
    return Lab(
        dir=d,
        root=root,
        ca=pki.write_pem(d / "ca.pem", root.cert),
        evil_ca=pki.write_pem(d / "evil-ca.pem", evil.cert),
        crl_empty=pki.write_pem(d / "empty.crl", pki.make_crl(root, [], now=now)),
        crl_revoking_alice=pki.write_pem(d / "alice-revoked.crl",
                                         pki.make_crl(root, [alice.cert.serial_number], now=now)),
        server_cert=pki.write_pem(d / "server.pem", server.cert),
        server_key=pki.write_pem(d / "server.key", server.key),
        alice=_creds(d, "alice", alice),
        expired=_creds(d, "expired", pki.issue_client(root, subject("expired"), now=now,
                                                       not_before=now - timedelta(days=30), days=1)),
        evil_alice=_creds(d, "evil-alice", pki.issue_client(evil, subject("alice"), now=now)),
    )


def _nginx_t(tmp_path: Path, nginx_bin: str, http_conf: str) -> tuple[bool, str]:
    return test_config(tmp_path / "t", http_conf, nginx_bin)


def _verify_error(nginx, reason: str) -> bool:
    """error.log names the OpenSSL reason of a refused client certificate (bounded wait)."""
    return nginx.wait_for_log(reason, log="error")


# --- §1: statuses and `$ssl_client_verify` under `on` and `optional` ------------------------------

def test_verify_client_statuses(lab: Lab, serve) -> None:
    on, optional = free_port(), free_port()
    show = 'location / { return 200 "verify=$ssl_client_verify"; }'
    conf = tls_server(lab, on, verifying(lab.ca, "on") + show) + tls_server(lab, optional, verifying(lab.ca) + show)
    with serve(conf, on, optional) as nginx:
        none_on = request(LOCAL, on)
        assert none_on.status == 400 and "No required SSL certificate was sent" in none_on.text
        for port in (on, optional):
            untrusted = request(LOCAL, port, **lab.evil_alice.kw())
            assert untrusted.status == 400 and "The SSL certificate error" in untrusted.text, untrusted
            late = request(LOCAL, port, **lab.expired.kw())
            assert late.status == 400 and "The SSL certificate error" in late.text, late
            assert request(LOCAL, port, **lab.alice.kw()).text == "verify=SUCCESS"
        assert request(LOCAL, optional).text == "verify=NONE"
        assert _verify_error(nginx, "(21:unable to verify the first certificate)")
        assert _verify_error(nginx, "(10:certificate has expired)")


# --- §2: per-location verification does not exist; locations match the normalised path --------

def test_ssl_verify_client_is_refused_inside_a_location(lab: Lab, tmp_path: Path, nginx_bin: str) -> None:
    for directive in ("ssl_verify_client on;", f"ssl_client_certificate {quote(lab.ca)};"):
        body = verifying(lab.ca) + f"location /p/ {{ {directive} return 200; }}"
        ok, err = _nginx_t(tmp_path, nginx_bin, tls_server(lab, free_port(), body))
        name = directive.split()[0]
        assert not ok and f'"{name}" directive is not allowed here' in err, err


def test_locations_match_the_normalised_path_and_the_raw_target_is_forwarded(lab: Lab, serve, echo_backend) -> None:
    """§2 and §F1, §F2, §F5: what nginx matches, and what a proxy_pass without a URI part sends."""
    port = free_port()
    body = f"""
    location = /healthz {{ proxy_pass {echo_backend.url}; }}
    location ^~ /partner/ {{ return 200 "partner"; }}
    location ^~ /static {{ return 200 "static"; }}
    location ^~ /norm/ {{ proxy_pass {echo_backend.url}/norm/; }}
    location ^~ / {{ return 200 "root"; }}
    """
    with serve(tls_server(lab, port, body), port):
        def get(target: str) -> str:
            r = request(LOCAL, port, target)
            assert r.status == 200, (target, r)
            return r.text

        # §2: dot segments, doubled slashes and escaped letters are resolved before matching.
        for target in ("/partner//x", "//partner/x", "/x/../partner/x", "/%70artner/x", "/partner/./x"):
            assert get(target) == "partner", target
        # §F2: `;` and `\` are ordinary characters, and matching is case-sensitive.
        for target in ("/partner;x/y", "/partner\\x", "/PARTNER/x", "/Partner/x"):
            assert get(target) == "root", target
        # §F5: a prefix without a trailing slash is a string prefix.
        assert get("/static-admin/export") == get("/staticfoo") == "static"
        # §F1: matched as /healthz, forwarded as sent; with a URI part, the normalised path is sent.
        assert get("/partner/../healthz").startswith("GET /partner/../healthz\n")
        assert get("/norm//a/./b").startswith("GET /norm/a/b\n")
    assert [r.path for r in echo_backend.snapshot()] == ["/partner/../healthz", "/norm/a/b"]


# --- §4 / §11: the CRL file is read when the configuration loads, and only then ------------------

def test_a_changed_crl_file_needs_a_reload(lab: Lab, serve, tmp_path: Path) -> None:
    port = free_port()
    crl = tmp_path / "current.crl"
    shutil.copy(lab.crl_empty, crl)
    body = verifying(lab.ca) + f"ssl_crl {quote(crl)};" + 'location / { return 200 "$ssl_client_verify"; }'
    with serve(tls_server(lab, port, body), port) as nginx:
        assert request(LOCAL, port, **lab.alice.kw()).text == "SUCCESS"
        shutil.copy(lab.crl_revoking_alice, crl)
        assert request(LOCAL, port, **lab.alice.kw()).text == "SUCCESS"  # a full handshake, old CRL
        nginx.reload()
        assert request(LOCAL, port, **lab.alice.kw()).status == 400
        assert _verify_error(nginx, "(23:certificate revoked)")


def test_a_certificate_in_place_of_a_crl_passes_nginx_t_and_refuses_every_client(lab: Lab, serve) -> None:
    """§4, §13 (MTLS302)."""
    port = free_port()
    body = verifying(lab.ca) + f"ssl_crl {quote(lab.ca)};" + 'location / { return 200 "$ssl_client_verify"; }'
    with serve(tls_server(lab, port, body), port) as nginx:
        assert request(LOCAL, port).text == "NONE"
        assert request(LOCAL, port, **lab.alice.kw()).status == 400
        assert _verify_error(nginx, "(3:unable to get certificate CRL)")


# --- §6: underscores_in_headers -------------------------------------------------------------------

@pytest.mark.parametrize("underscores", ["off", "on"])
def test_underscored_header_names_pass_only_when_allowed(lab: Lab, serve, echo_backend, underscores) -> None:
    port = free_port()
    body = f"""underscores_in_headers {underscores};
    location / {{ proxy_pass {echo_backend.url}; proxy_set_header X-Client-Verify $ssl_client_verify; }}"""
    with serve(tls_server(lab, port, body), port):
        assert request(LOCAL, port, headers=[("X-Client_Verify", "SUCCESS")]).status == 200
    (got,) = echo_backend.snapshot()
    assert got.header_values("X-Client-Verify") == ["NONE"]
    assert got.header_values("X-Client_Verify") == (["SUCCESS"] if underscores == "on" else [])


# --- §8: ssl_trusted_certificate verifies clients without being advertised -----------------------

def _advertised_ca_names(port: int) -> str:
    """The CA names of nginx's CertificateRequest, as `openssl s_client` prints them."""
    proc = subprocess.run(["openssl", "s_client", "-connect", f"{LOCAL}:{port}", "-servername", "localhost"],
                          input="", capture_output=True, text=True, timeout=15)
    out = proc.stdout
    start = out.find("Acceptable client certificate CA names")
    assert start >= 0, out
    return out[start:out.find("---", start)] if "---" in out[start:] else out[start:]


def test_ssl_trusted_certificate_widens_client_trust_unadvertised(lab: Lab, serve, tmp_path: Path, nginx_bin) -> None:
    port = free_port()
    body = verifying(lab.ca) + f"ssl_trusted_certificate {quote(lab.evil_ca)};" + answer("s")
    with serve(tls_server(lab, port, body), port):
        evil = request(LOCAL, port, **lab.evil_alice.kw())
        names = _advertised_ca_names(port)
    assert evil.status == 200 and "verify=SUCCESS dn=CN=alice,O=Acme,C=US" in evil.text, evil
    assert "Lab Client Root" in names and "Evil" not in names, names
    only_trusted = f"ssl_verify_client on; ssl_trusted_certificate {quote(lab.ca)};" + answer("s")
    ok, err = _nginx_t(tmp_path, nginx_bin, tls_server(lab, free_port(), only_trusted))
    assert not ok and "no ssl_client_certificate for ssl_verify_client" in err, err


# --- §9: optional_no_ca hands failed certificates to the location ---------------------------------

def test_optional_no_ca_delivers_unverified_certificates(lab: Lab, serve) -> None:
    port = free_port()
    with serve(tls_server(lab, port, verifying(lab.ca, "optional_no_ca") + answer("s")), port):
        evil = request(LOCAL, port, **lab.evil_alice.kw())
    assert evil.status == 200, evil
    assert evil.text.endswith("verify=FAILED:unable to verify the first certificate dn=CN=alice,O=Acme,C=US")


# --- §10: ssl_ocsp -----------------------------------------------------------------------------

@dataclass(frozen=True)
class OcspLab:
    ca_file: Path  # root + intermediate
    intermediate: pki.Issued
    good: Creds
    revoked: Creds
    no_url: Creds  # a client certificate without an OCSP URL
    known: dict[int, tuple[x509.Certificate, pki.Issued]]  # serial -> (certificate, its issuer)
    revoked_serials: frozenset[int]
    good_serial: int


@pytest.fixture(scope="module")
def ocsp_lab(tmp_path_factory: pytest.TempPathFactory, now) -> OcspLab:
    d = tmp_path_factory.mktemp("ocsp")
    chain = pki.make_chain("ocsp", 1, now=now)
    url = "http://127.0.0.1:9/"  # never asked: the tests that reach a responder name it
    good = pki.issue_client(chain.issuing, subject("good"), now=now, ocsp_url=url)
    revoked = pki.issue_client(chain.issuing, subject("revoked"), now=now, ocsp_url=url)
    no_url = pki.issue_client(chain.issuing, subject("no-url"), now=now)
    known = {good.cert.serial_number: (good.cert, chain.issuing),
             revoked.cert.serial_number: (revoked.cert, chain.issuing),
             chain.issuing.cert.serial_number: (chain.issuing.cert, chain.root)}
    return OcspLab(pki.write_pem(d / "ca.pem", chain.root.cert, chain.issuing.cert), chain.issuing,
                   _creds(d, "good", good), _creds(d, "revoked", revoked), _creds(d, "no-url", no_url),
                   known, frozenset({revoked.cert.serial_number}), good.cert.serial_number)


def _ocsp_answer(o: OcspLab, der: bytes, now: datetime) -> tuple[int, bytes]:
    """(serial asked about, DER response signed by that certificate's issuer)."""
    req = ocsp.load_der_ocsp_request(der)
    cert, issuer = o.known[req.serial_number]
    revoked = req.serial_number in o.revoked_serials
    response = (ocsp.OCSPResponseBuilder()
                .add_response(cert=cert, issuer=issuer.cert, algorithm=req.hash_algorithm,
                              cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
                              this_update=now - timedelta(minutes=5), next_update=now + timedelta(hours=1),
                              revocation_time=now - timedelta(minutes=5) if revoked else None,
                              revocation_reason=None)
                .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert)
                .sign(issuer.key, hashes.SHA256()))
    return req.serial_number, response.public_bytes(Encoding.DER)


@contextmanager
def running_responder(o: OcspLab, now: datetime) -> Iterator[tuple[str, list[int]]]:
    """A loopback OCSP responder for `o`'s certificates: (its URL, the serials asked about so far)."""
    asked: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, der: bytes) -> None:
            serial, body = _ocsp_answer(o, der, now)
            asked.append(serial)
            self.send_response(200)
            self.send_header("Content-Type", "application/ocsp-response")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 (stdlib name); nginx asks with GET /<base64 of the DER request>
            self._reply(base64.b64decode(urllib.parse.unquote(self.path.lstrip("/"))))

        def do_POST(self):  # noqa: N802 (stdlib name)
            self._reply(self.rfile.read(int(self.headers["Content-Length"])))

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((LOCAL, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOCAL}:{server.server_address[1]}/", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _ocsp_server(lab: Lab, o: OcspLab, port: int, mode: str, responder: str | None) -> str:
    line = f"ssl_ocsp {mode};" + (f" ssl_ocsp_responder {responder};" if responder else "")
    return tls_server(lab, port, verifying(o.ca_file) + line + 'location / { return 200 "$ssl_client_verify"; }')


def test_ocsp_config_checks_at_load(lab: Lab, ocsp_lab: OcspLab, tmp_path: Path, nginx_bin: str) -> None:
    ok, err = _nginx_t(tmp_path, nginx_bin, _ocsp_server(lab, ocsp_lab, free_port(), "on", None))
    assert ok, err  # neither a responder nor a resolver is needed to load
    ok, err = _nginx_t(tmp_path, nginx_bin, _ocsp_server(lab, ocsp_lab, free_port(), "leaf", "https://127.0.0.1:9/"))
    assert not ok and "invalid URL prefix in OCSP responder" in err, err
    no_ca = tls_server(lab, free_port(), verifying(ocsp_lab.ca_file, "optional_no_ca") + "ssl_ocsp on;")
    ok, err = _nginx_t(tmp_path, nginx_bin, no_ca)
    assert not ok and '"ssl_ocsp" is incompatible with "ssl_verify_client optional_no_ca"' in err, err


def test_a_failed_ocsp_lookup_refuses_the_client(lab: Lab, ocsp_lab: OcspLab, serve) -> None:
    no_responder, closed = free_port(), free_port()
    conf = (_ocsp_server(lab, ocsp_lab, no_responder, "leaf", None)
            + _ocsp_server(lab, ocsp_lab, closed, "leaf", f"http://{LOCAL}:{free_port()}/"))
    with serve(conf, no_responder, closed) as nginx:
        assert request(LOCAL, no_responder, **ocsp_lab.no_url.kw()).status == 400
        assert _verify_error(nginx, "no OCSP responder URL in certificate")
        assert request(LOCAL, closed, **ocsp_lab.good.kw()).status == 400
        assert _verify_error(nginx, "certificate status request failed")
        assert request(LOCAL, closed).text == "NONE"  # no certificate, nothing to ask


@pytest.mark.parametrize(("mode", "intermediate_asked"), [("leaf", False), ("on", True)])
def test_ocsp_on_asks_about_the_intermediate_too(lab: Lab, ocsp_lab: OcspLab, serve, now, mode,
                                                 intermediate_asked) -> None:
    port = free_port()
    with running_responder(ocsp_lab, now) as (url, asked):
        with serve(_ocsp_server(lab, ocsp_lab, port, mode, url), port) as nginx:
            assert request(LOCAL, port, **ocsp_lab.good.kw()).text == "SUCCESS"
            for_good = set(asked)
            assert request(LOCAL, port, **ocsp_lab.revoked.kw()).status == 400
            assert _verify_error(nginx, "certificate revoked")
    expected = {ocsp_lab.good_serial} | ({ocsp_lab.intermediate.cert.serial_number} if intermediate_asked else set())
    assert for_good == expected


# --- §12: odd files in ssl_client_certificate -----------------------------------------------------

def test_odd_ca_files(lab: Lab, serve, tmp_path: Path, nginx_bin: str) -> None:
    key_only = pki.write_pem(tmp_path / "key-only.pem", lab.root.key)
    der = tmp_path / "der.pem"
    der.write_bytes(lab.root.cert.public_bytes(Encoding.DER))
    for name, content in (("empty.pem", b""), ("garbage.pem", b"not a certificate\n")):
        (tmp_path / name).write_bytes(content)
    refused = {
        "empty.pem": "no certificate or crl found", "garbage.pem": "no certificate or crl found",
        "key-only.pem": "no certificate or crl found", "der.pem": "no certificate or crl found",
        lab.crl_empty.name: "SSL_load_client_CA_file",  # a CRL and no certificate
    }
    for name, why in refused.items():
        path = lab.crl_empty if name == lab.crl_empty.name else tmp_path / name
        ok, err = _nginx_t(tmp_path, nginx_bin, tls_server(lab, free_port(), verifying(path) + answer("s")))
        assert not ok and why in err, (name, err)

    files = {
        "junk": tmp_path / "junk.pem",
        "with_key": pki.write_pem(tmp_path / "with-key.pem", lab.root.key, lab.root.cert),
        "with_crl": pki.write_pem(tmp_path / "with-crl.pem", lab.root.cert,
                                  x509.load_pem_x509_crl(lab.crl_empty.read_bytes())),
        "leaf_only": lab.alice.cert,  # alice's own certificate as the CA file
    }
    files["junk"].write_bytes(lab.ca.read_bytes() + b"junk line\n")
    ports = {f: free_port() for f in files}
    conf = "".join(tls_server(lab, ports[f], verifying(files[f]) + answer(f)) for f in files)
    with serve(conf, *ports.values()) as nginx:
        for f in ("junk", "with_key", "with_crl"):
            assert "verify=SUCCESS" in request(LOCAL, ports[f], **lab.alice.kw()).text, f
        assert request(LOCAL, ports["leaf_only"], **lab.alice.kw()).status == 400
        assert _verify_error(nginx, "(21:unable to verify the first certificate)")


# --- §13: what nginx -t refuses in map blocks ---------------------------------------------------

def test_map_keys_that_differ_only_in_case_are_refused(lab: Lab, tmp_path: Path, nginx_bin: str) -> None:
    conf = 'map $ssl_client_s_dn $who { default 0; "CN=alice,O=Acme,C=US" 1; "CN=ALICE,O=ACME,C=US" 2; }'
    ok, err = _nginx_t(tmp_path, nginx_bin, conf + tls_server(lab, free_port(), answer("s")))
    assert not ok and 'conflicting parameter "cn=alice,o=acme,c=us"' in err, err


def test_backslashes_in_quoted_regexes_are_doubled(lab: Lab, tmp_path: Path, nginx_bin: str) -> None:
    def conf(regex: str) -> str:
        return f'map $ssl_client_s_dn $ok {{ default 0; "~{regex}" 1; }}' + tls_server(lab, free_port(), answer("s"))

    ok, err = _nginx_t(tmp_path, nginx_bin, conf(r"^(?:[^,\\]|\\.)*$"))
    assert not ok and "pcre2_compile() failed" in err, err
    ok, err = _nginx_t(tmp_path, nginx_bin, conf(r"^(?:[^,\\\\]|\\\\.)*$"))
    assert ok, err


def test_verification_needs_a_ca_file(lab: Lab, tmp_path: Path, nginx_bin: str) -> None:
    for mode in ("on", "optional"):
        ok, err = _nginx_t(tmp_path, nginx_bin, tls_server(lab, free_port(), f"ssl_verify_client {mode};"))
        assert not ok and "no ssl_client_certificate for ssl_verify_client" in err, (mode, err)


def test_client_verification_on_a_plain_listener_enforces_nothing(lab: Lab, serve) -> None:
    """§13, over-trust trap 12: `ssl_verify_client on` loads beside a listener without `ssl`."""
    plain, tls = free_port(), free_port()
    conf = f"""
server {{
    listen {LOCAL}:{plain};
    listen {LOCAL}:{tls} ssl;
    ssl_certificate {quote(lab.server_cert)};
    ssl_certificate_key {quote(lab.server_key)};
    {verifying(lab.ca, "on")}
    location / {{ return 200 "verify=[$ssl_client_verify]"; }}
}}
"""
    with serve(conf, plain, tls):
        assert request(LOCAL, tls).status == 400
        side_door = plain_request(LOCAL, plain)
    assert (side_door.status, side_door.text) == (200, "verify=[]")


# --- §F4: Host and Content-Length set from a value --------------------------------------------

@contextmanager
def raw_backend() -> Iterator[tuple[int, list[bytes]]]:
    """A backend that records the raw bytes of each request (read until a short pause) and answers 200."""
    got: list[bytes] = []
    listener = socket.create_server((LOCAL, 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve_forever() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.5)
                data = b""
                for _ in range(64):  # bounded: 64 reads at most
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        break
                    if not chunk:
                        break
                    data += chunk
                got.append(data)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve_forever, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], got
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _post(port: int, path: str, body: bytes) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((LOCAL, port), timeout=5) as plain, ctx.wrap_socket(plain) as tls:
        tls.sendall(head.encode() + body)
        out = b""
        for _ in range(64):
            chunk = tls.recv(65536)
            if not chunk:
                break
            out += chunk
    return out


def test_host_and_content_length_set_by_proxy_set_header(lab: Lab, serve) -> None:
    port = free_port()
    with raw_backend() as (backend, got):
        body = f"""
        location / {{
            proxy_pass http://{LOCAL}:{backend};
            proxy_set_header Host $host;
            proxy_set_header Host "forged.example";
            proxy_set_header Content-Length "3";
        }}
        """
        with serve(tls_server(lab, port, body), port):
            _post(port, "/", b"0123456789")
    assert len(got) == 1, got
    head, _, sent = got[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert [h for h in lines if h.lower().startswith("host:")] == ["Host: localhost", "Host: forged.example"]
    assert [h for h in lines if h.lower().startswith("content-length:")] == ["Content-Length: 3"]
    assert sent == b"0123456789"  # the real body, beside a length that frames only part of it
