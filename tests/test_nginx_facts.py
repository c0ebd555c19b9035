"""Real nginx proves the behaviours mtlsc's emitted config relies on (docs/nginx-facts.md).

Each test starts its own nginx on loopback with the config it is about, spelled out in the test, and
talks to it with `mtlsc.lab.client` (which can send no SNI, any Host, raw headers, a TLS version and
a resumed session). Certificates are minted per module with `mtlsc.lab.pki`, valid now.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mtlsc.lab import pki
from mtlsc.lab.client import plain_request, request
from mtlsc.lab.nginx import free_port, quote, running_nginx

pytestmark = pytest.mark.nginx

LOCAL = "127.0.0.1"
# What a location answers, so each response says which server ran and what nginx verified.
ECHO_VARS = "sni=$ssl_server_name host=$host verify=$ssl_client_verify dn=$ssl_client_s_dn"


def subject(cn: str, org: str = "Acme", country: str = "US") -> x509.Name:
    """A DN that nginx prints as `CN=cn,O=org,C=country` (DER order is root-most first)."""
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, country),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


@dataclass(frozen=True)
class Creds:
    """A client certificate and key on disk, as `request(cert=..., key=...)` takes them."""

    cert: Path
    key: Path

    def kw(self) -> dict[str, Path]:
        return {"cert": self.cert, "key": self.key}


@dataclass(frozen=True)
class Lab:
    """The module's PKI on disk: the trusted CA (+ CRLs), an evil CA, server and client certs."""

    dir: Path
    ca: Path  # the trusted client CA (a root, so its CRL alone covers every chain)
    evil_ca: Path
    crl_empty: Path
    crl_revoking_alice: Path
    server_cert: Path
    server_key: Path
    alice: Creds  # CN=alice,O=Acme,C=US from the trusted CA
    alice_upper: Creds  # CN=ALICE,O=ACME,C=US from the trusted CA
    bob: Creds  # CN=bob,O=Acme,C=US from the trusted CA
    evil_alice: Creds  # alice's subject, from the evil CA


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, now) -> Lab:
    """Mint the module's certificates and CRLs once (EC keys: fast) into a temp directory."""
    d = tmp_path_factory.mktemp("pki")
    root = pki.make_root("Lab Client Root", now=now)
    evil = pki.make_root("Evil Root", now=now, org="Evil")
    server = pki.issue_server(pki.make_root("Lab Server Root", now=now),
                              ["b.test", "a.test", "localhost", LOCAL], now=now)

    def client(name: str, issuer: pki.Issued, dn: x509.Name) -> tuple[Creds, pki.Issued]:
        issued = pki.issue_client(issuer, dn, now=now)
        cert = pki.write_pem(d / f"{name}.pem", issued.cert)
        return Creds(cert, pki.write_pem(d / f"{name}.key", issued.key)), issued

    alice, alice_issued = client("alice", root, subject("alice"))
    return Lab(
        dir=d,
        ca=pki.write_pem(d / "ca.pem", root.cert),
        evil_ca=pki.write_pem(d / "evil-ca.pem", evil.cert),
        crl_empty=pki.write_pem(d / "empty.crl", pki.make_crl(root, [], now=now)),
        crl_revoking_alice=pki.write_pem(
            d / "alice-revoked.crl", pki.make_crl(root, [alice_issued.cert.serial_number], now=now)),
        server_cert=pki.write_pem(d / "server.pem", server.cert),
        server_key=pki.write_pem(d / "server.key", server.key),
        alice=alice,
        alice_upper=client("alice-upper", root, subject("ALICE", "ACME"))[0],
        bob=client("bob", root, subject("bob"))[0],
        evil_alice=client("evil-alice", evil, subject("alice"))[0],
    )


def tls_server(lab: Lab, port: int, body: str, *, name: str = "", default: bool = False) -> str:
    """A TLS server block on 127.0.0.1:`port` with the lab server certificate and `body` inside."""
    flags = " default_server" if default else ""
    names = f"server_name {name};" if name else ""
    return f"""
server {{
    listen {LOCAL}:{port} ssl{flags};
    {names}
    ssl_certificate {quote(lab.server_cert)};
    ssl_certificate_key {quote(lab.server_key)};
    {body}
}}
"""


def verifying(ca: Path, mode: str = "optional") -> str:
    """Server-level client verification against the CA file `ca`."""
    return f"ssl_verify_client {mode}; ssl_client_certificate {quote(ca)};"


def answer(label: str) -> str:
    """A catch-all location that reports which server answered and what nginx saw."""
    return f'location / {{ return 200 "server={label} {ECHO_VARS}"; }}'


@pytest.fixture
def serve(tmp_path: Path, nginx_bin: str):
    """`with serve(http_conf, *ports) as nginx:` runs nginx from this test's temp prefix."""

    def start(http_conf: str, *ports: int):
        return running_nginx(http_conf, tmp_path / "nginx", ports=ports, nginx_bin=nginx_bin)

    return start


# --- 1. default server rejecting the handshake closes the no-SNI hole (facts §5) -----------------

def test_rejecting_default_server_closes_the_no_sni_hole(lab: Lab, serve) -> None:
    protected, open_ = free_port(), free_port()
    conf = (
        f"server {{ listen {LOCAL}:{protected} ssl default_server; ssl_reject_handshake on; }}"
        + tls_server(lab, protected, verifying(lab.ca) + answer("b"), name="b.test")
        # The §5 hole: the default server trusts an evil CA, and its handshake serves Host b.test.
        + tls_server(lab, open_, verifying(lab.evil_ca) + answer("a"), name="a.test", default=True)
        + tls_server(lab, open_, verifying(lab.ca) + answer("b"), name="b.test")
    )
    with serve(conf, protected, open_):
        hole = request(LOCAL, open_, host_header="b.test", **lab.evil_alice.kw())
        assert hole.status == 200
        assert hole.text == "server=b sni= host=b.test verify=SUCCESS dn=CN=alice,O=Acme,C=US"

        for sni in (None, "unknown.test"):
            for creds in (lab.alice, lab.evil_alice):
                r = request(LOCAL, protected, server_name=sni, host_header="b.test", **creds.kw())
                assert r.status == 0 and "unrecognized name" in r.error.lower(), (sni, creds, r)
        ok = request(LOCAL, protected, server_name="b.test", **lab.alice.kw())
        assert ok.status == 200
        assert ok.text == "server=b sni=b.test host=b.test verify=SUCCESS dn=CN=alice,O=Acme,C=US"
        evil = request(LOCAL, protected, server_name="b.test", **lab.evil_alice.kw())
        assert evil.status == 400  # untrusted certificate under `optional` (facts §1)


# --- 2. SNI names one verifying server, Host another: 421 (facts §5) ------------------------------

def test_sni_host_mismatch_is_421(lab: Lab, serve) -> None:
    port = free_port()
    conf = (tls_server(lab, port, verifying(lab.ca) + answer("a"), name="a.test", default=True)
            + tls_server(lab, port, verifying(lab.ca) + answer("b"), name="b.test"))
    with serve(conf, port):
        crossed = request(LOCAL, port, server_name="b.test", host_header="a.test", **lab.alice.kw())
        assert crossed.status == 421
        same = request(LOCAL, port, server_name="b.test", host_header="b.test", **lab.alice.kw())
        assert same.status == 200 and same.text.startswith("server=b ")


# --- 3. `^~` keeps a regex location from taking over a prefix (facts §2) --------------------------

def test_caret_tilde_prefix_is_not_taken_over_by_a_regex(lab: Lab, serve) -> None:
    port = free_port()
    body = r"""
    location ^~ /p/ { return 200 "prefix-p"; }
    location /q/ { return 200 "prefix-q"; }
    location ~ \.json$ { return 200 "regex"; }
    """
    with serve(tls_server(lab, port, body), port):
        got = {path: request(LOCAL, port, path).text for path in ("/p/a", "/p/a.json", "/q/a", "/q/a.json")}
    assert got == {"/p/a": "prefix-p", "/p/a.json": "prefix-p", "/q/a": "prefix-q", "/q/a.json": "regex"}


# --- 4. map keys: case-insensitive strings, the empty key, concatenated sources (facts §7) --------

def test_map_keys(lab: Lab, serve) -> None:
    port = free_port()
    conf = """
map $ssl_client_s_dn $exact { default no; "CN=alice,O=Acme,C=US" yes; }
map $http_x_probe $probe { default set; "" empty; }
map "$http_x_a$http_x_b" $joined { default no; "onetwo" yes; }
map "$http_x_a|$http_x_b" $separated { default no; "one|two" yes; }
""" + tls_server(lab, port, verifying(lab.ca) + 'location / { return 200 '
                 '"exact=$exact probe=$probe joined=$joined separated=$separated"; }')
    with serve(conf, port):
        def ask(creds: Creds | None = None, headers=()) -> str:
            return request(LOCAL, port, headers=headers, **(creds.kw() if creds else {})).text

        assert ask(lab.alice).startswith("exact=yes ")
        assert ask(lab.alice_upper).startswith("exact=yes ")  # CN=ALICE,O=ACME,C=US: keys ignore case
        assert ask(lab.bob).startswith("exact=no ")
        assert "probe=empty" in ask()  # header absent: the source is "", and the "" key matches
        assert "probe=set" in ask(headers=[("X-Probe", "x")])
        assert "joined=yes separated=yes" in ask(headers=[("X-A", "one"), ("X-B", "two")])
        # Without a separator, different pairs collide: concatenated keys need one.
        assert "joined=yes separated=no" in ask(headers=[("X-A", "on"), ("X-B", "etwo")])


# --- 5. identity headers cannot be spoofed through a location that sets/clears them (facts §6) ---

SPOOFS = [
    ("X-Client-Verify", "SUCCESS"), ("x-client-verify", "SUCCESS"), ("X-CLIENT-VERIFY", "SUCCESS"),
    ("X-Client-Subject", "CN=admin,O=Acme,C=US"), ("x-client-subject", "CN=admin,O=Acme,C=US"),
    ("X-Client_Verify", "SUCCESS"), ("X_Client_Subject", "CN=admin"),
]


def test_identity_headers_are_not_spoofable(lab: Lab, serve, echo_backend) -> None:
    port = free_port()
    body = verifying(lab.ca) + f"""
    proxy_set_header X-Client-Verify $ssl_client_verify;   # server level: NOT inherited below
    location /api/ {{
        proxy_pass {echo_backend.url};
        proxy_set_header Host $host;
        proxy_set_header X-Client-Verify $ssl_client_verify;
        proxy_set_header X-Client-Subject "";
    }}
    location /leak/ {{
        proxy_pass {echo_backend.url};
        proxy_set_header Host $host;
    }}
    """
    with serve(tls_server(lab, port, body), port):
        anon = request(LOCAL, port, "/api/", headers=SPOOFS)
        with_cert = request(LOCAL, port, "/api/", headers=SPOOFS, **lab.alice.kw())
        leak = request(LOCAL, port, "/leak/", headers=SPOOFS)

    def identity_headers(resp) -> list[tuple[str, str]]:
        assert resp.status == 200, resp
        sent = [line.split(": ", 1) for line in resp.text.splitlines()[1:]]
        return [(k.lower(), v) for k, v in sent if k.lower().replace("_", "-").startswith("x-client")]

    assert [r.path for r in echo_backend.snapshot()] == ["/api/", "/api/", "/leak/"]
    assert identity_headers(anon) == [("x-client-verify", "NONE")]
    assert identity_headers(with_cert) == [("x-client-verify", "SUCCESS")]
    # The contrast: a location with its own proxy_set_header but no identity lines passes the
    # client's copies through, duplicates included (underscored names are still dropped).
    assert [k for k, _ in identity_headers(leak)] == ["x-client-verify"] * 3 + ["x-client-subject"] * 2


# --- 6. TLS 1.3 needs ssl_protocols on nginx 1.22 (facts §1) --------------------------------------

def test_tls13_needs_ssl_protocols(lab: Lab, serve) -> None:
    default, explicit = free_port(), free_port()
    conf = (tls_server(lab, default, answer("default"))
            + tls_server(lab, explicit, "ssl_protocols TLSv1.2 TLSv1.3;" + answer("explicit")))
    with serve(conf, default, explicit):
        refused = request(LOCAL, default, tls_version="TLSv1.3")
        assert refused.status == 0 and "protocol version" in refused.error.lower()
        assert request(LOCAL, default, tls_version="TLSv1.2").status == 200
        accepted = request(LOCAL, explicit, tls_version="TLSv1.3")
        assert (accepted.status, accepted.protocol) == (200, "TLSv1.3")


# --- 7. session resumption must not outlive a CRL update + reload (facts §11) ---------------------

SAFE_SESSIONS = {
    # What mtlsc emits: no server-side cache; tickets encrypted with keys nginx regenerates on reload.
    "cache-off-tickets-on": "ssl_session_cache off; ssl_session_tickets on;",
    "defaults": "",  # ssl_session_cache none; ssl_session_tickets on;
}
SHARED_CACHE = "ssl_session_cache shared:S:1m;"
KEY_FILE = "ssl_session_cache off; ssl_session_tickets on; ssl_session_ticket_key {key};"
UNSAFE_SESSIONS = [
    # (b) of the brief, and facts §11: the shared cache survives a reload.
    *(pytest.param(SHARED_CACHE + "ssl_session_tickets off;", v, True, id=f"shared-cache-tickets-off-{v}")
      for v in ("TLSv1.2", "TLSv1.3")),
    # Tickets on do not save a shared cache: a TLS 1.2 client without ticket support resumes by
    # session id. (TLS 1.3 has only tickets, and those die with the reload.)
    pytest.param(SHARED_CACHE + "ssl_session_tickets on;", "TLSv1.2", False,
                 id="shared-cache-no-ticket-client"),
    # A fixed ticket key file survives the reload, so old tickets still decrypt.
    *(pytest.param(KEY_FILE, v, True, id=f"ticket-key-file-{v}") for v in ("TLSv1.2", "TLSv1.3")),
]


def resume_across_revocation(lab: Lab, serve, session_conf: str, tls_version: str, tickets: bool = True):
    """Full handshake as alice, resume, revoke alice in the CRL, reload, offer the session again.

    Returns (the resumption before the reload, the one after, the access log once nginx stopped).
    """
    port = free_port()
    crl = lab.dir / f"current-{port}.crl"
    shutil.copy(lab.crl_empty, crl)
    ticket_key = lab.dir / f"ticket-{port}.key"
    ticket_key.write_bytes(os.urandom(80))
    body = (verifying(lab.ca) + f"ssl_crl {quote(crl)}; ssl_protocols TLSv1.2 TLSv1.3;"
            + session_conf.format(key=quote(ticket_key))
            + 'location / { return 200 "verify=$ssl_client_verify reused=$ssl_session_reused"; }')
    kw = dict(tls_version=tls_version, tickets=tickets, **lab.alice.kw())
    with serve(tls_server(lab, port, body), port) as nginx:
        first = request(LOCAL, port, **kw)
        assert first.text == "verify=SUCCESS reused=.", first
        before = request(LOCAL, port, session=first.session, **kw)
        shutil.copy(lab.crl_revoking_alice, crl)
        nginx.reload()
        after = request(LOCAL, port, session=before.session or first.session, **kw)
    return before, after, nginx.access_log()  # complete: a stopped nginx has logged every request


@pytest.mark.parametrize("tls_version", ["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize("name", SAFE_SESSIONS)
def test_safe_session_settings_end_revoked_sessions_at_reload(
    lab: Lab, serve, name: str, tls_version: str
) -> None:
    before, after, log = resume_across_revocation(lab, serve, SAFE_SESSIONS[name], tls_version)
    assert (before.session_reused, before.text) == (True, "verify=SUCCESS reused=r")
    assert not after.session_reused
    # The fallback full handshake presents the (now revoked) certificate: the new CRL rejects it.
    assert after.status == 400 and "SUCCESS" not in after.text
    assert "verify=FAILED:certificate revoked" in log.splitlines()[-1]


@pytest.mark.parametrize(("session_conf", "tls_version", "tickets"), UNSAFE_SESSIONS)
def test_unsafe_session_settings_resume_revoked_sessions(
    lab: Lab, serve, session_conf: str, tls_version: str, tickets: bool
) -> None:
    _, after, _ = resume_across_revocation(lab, serve, session_conf, tls_version, tickets)
    assert (after.session_reused, after.status, after.text) == (True, 200, "verify=SUCCESS reused=r")


# --- 8. error_page 495/496 under `optional` (facts E1) --------------------------------------------

def test_error_pages_for_certificate_failures(lab: Lab, serve) -> None:
    optional, required = free_port(), free_port()
    pages = """
    error_page 495 = @bad;
    error_page 496 = @nocert;
    location @bad { return 403 "bad:$ssl_client_verify"; }
    location @nocert { return 401 "nocert"; }
    location / { return 200 "ok:$ssl_client_verify"; }
    """
    conf = (tls_server(lab, optional, verifying(lab.ca, "optional") + pages)
            + tls_server(lab, required, verifying(lab.ca, "on") + pages))
    with serve(conf, optional, required):
        def ask(port: int, creds: Creds | None = None) -> tuple[int, str]:
            r = request(LOCAL, port, **(creds.kw() if creds else {}))
            return r.status, r.text

        assert ask(optional, lab.evil_alice) == (403, "bad:FAILED:unable to verify the first certificate")
        assert ask(optional) == (200, "ok:NONE")  # 496 never fires under `optional`
        assert ask(optional, lab.alice) == (200, "ok:SUCCESS")
        assert ask(required) == (401, "nocert")  # ...only under `on`
        assert ask(required, lab.evil_alice)[0] == 403


# --- 9. a TLS-only listener has no plain-HTTP side door (facts §13) -------------------------------

def test_tls_listener_refuses_plain_http(lab: Lab, serve) -> None:
    port = free_port()
    with serve(tls_server(lab, port, verifying(lab.ca, "on") + answer("tls")), port):
        r = plain_request(LOCAL, port)
    assert r.status == 400 and "The plain HTTP request was sent to HTTPS port" in r.text
