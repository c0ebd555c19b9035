"""The server's own TLS on the real nginx 1.22 with OpenSSL 3.0 (issue 16, docs/nginx-facts.md §14).

- What nginx takes from the default server of an address (before it reads SNI) and what from the
  server the SNI names: hand-written configs, probed with `openssl s_client`.
- mtlsc's compiled profiles accept what Mozilla's profile names and refuse the rest, and sslyze's
  Mozilla check (`sslyze --mozilla_config=PROFILE`, the tool the field grades with) passes for every
  shipped example (default profile, `intermediate`) and for `modern` and `old`, in the lab, with the lab
  server CA given to sslyze so that trust in the certificate is checked too.
- HSTS reaches every answer, refusals included, also through a route whose own `add_header` drops the
  server's; `server_tokens off` hides the version.
- OCSP stapling with the issuer from the certificate file, and no `ssl_trusted_certificate`.
"""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mtlsc.lab import certs as lab
from mtlsc.lab.client import request
from mtlsc.lab.nginx import free_port, running_nginx, test_config
from mtlsc.lab.run import running_lab
from mtlsc.lab.tlsgrade import SslyzeMissing, find_sslyze, grade
from support import REPO

pytestmark = pytest.mark.nginx
NOW = datetime.now(timezone.utc)
EXAMPLES = sorted((REPO / "policies").glob("*.mtls"))


@pytest.fixture(scope="module")
def sslyze() -> str:
    """The sslyze command; missing sslyze fails the test, as missing nginx does."""
    try:
        return find_sslyze()
    except SslyzeMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def s_client(port: int, name: str, *args: str) -> tuple[bool, str]:
    """(handshake completed, what was negotiated) for `openssl s_client` with these options."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name, *args],
                       input="", capture_output=True, text=True, timeout=20)
    lines = [l.strip() for l in p.stdout.splitlines() if "Cipher is" in l or "Server Temp Key" in l]
    return p.returncode == 0 and "Cipher is (NONE)" not in p.stdout, " / ".join(lines)


def _server_files(tmp: Path) -> tuple[Path, Path]:
    root = lab.make_root("facts server ca", now=NOW)
    srv = lab.issue_server(root, ["a.test", "b.test"], now=NOW)
    lab.write_pem(tmp / "srv.crt", srv.cert)
    lab.write_pem(tmp / "srv.key", srv.key)
    return tmp / "srv.crt", tmp / "srv.key"


def _hand_written(tmp: Path, port: int, default: str, named: str) -> str:
    crt, key = _server_files(tmp)
    return f"""
server {{ listen 127.0.0.1:{port} ssl default_server; ssl_reject_handshake on; {default} return 421; }}
server {{
    listen 127.0.0.1:{port} ssl; server_name a.test;
    ssl_certificate {crt}; ssl_certificate_key {key};
    {named}
    return 200 "a\\n";
}}"""


# ----- what comes from the default server, what from the SNI server ---------------------------------------

def test_protocols_and_tls13_groups_come_from_the_default_server(tmp_path, nginx_bin):
    port = free_port()
    conf = _hand_written(tmp_path, port, "ssl_protocols TLSv1.2 TLSv1.3;",
                         "ssl_protocols TLSv1.3; ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256; "
                         "ssl_ecdh_curve X25519:prime256v1:secp384r1;")
    with running_nginx(conf, tmp_path / "nginx", ports=[port], nginx_bin=nginx_bin):
        # the SNI server says TLS 1.3 only: TLS 1.2 still gets through, with its TLS 1.2 cipher list
        ok, how = s_client(port, "a.test", "-tls1_2")
        assert ok and "ECDHE-ECDSA-AES128-GCM-SHA256" in how
        assert not s_client(port, "a.test", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384")[0]
        # its curves hold for TLS 1.2, not for the TLS 1.3 key share, which OpenSSL's defaults decide
        assert not s_client(port, "a.test", "-tls1_2", "-curves", "secp521r1")[0]
        for group in ("X448", "secp521r1", "ffdhe2048"):
            assert s_client(port, "a.test", "-tls1_3", "-curves", group)[0], group


def test_tls13_suites_and_groups_set_on_the_default_server_hold(tmp_path, nginx_bin):
    port = free_port()
    conf = _hand_written(tmp_path, port, "ssl_protocols TLSv1.2 TLSv1.3; ssl_conf_command Ciphersuites "
                         "TLS_AES_128_GCM_SHA256; ssl_ecdh_curve X25519:prime256v1:secp384r1;",
                         "ssl_protocols TLSv1.2 TLSv1.3;")
    with running_nginx(conf, tmp_path / "nginx", ports=[port], nginx_bin=nginx_bin):
        assert not s_client(port, "a.test", "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384")[0]
        assert s_client(port, "a.test", "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256")[0]
        for group in ("X448", "secp521r1", "ffdhe2048"):
            assert not s_client(port, "a.test", "-tls1_3", "-curves", group)[0], group
        assert s_client(port, "a.test", "-tls1_3", "-curves", "secp384r1")[0]


def test_tls13_suites_set_only_on_the_sni_server_do_not_hold(tmp_path, nginx_bin):
    port = free_port()
    conf = _hand_written(tmp_path, port, "ssl_protocols TLSv1.2 TLSv1.3;",
                         "ssl_protocols TLSv1.2 TLSv1.3; ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;")
    with running_nginx(conf, tmp_path / "nginx", ports=[port], nginx_bin=nginx_bin):
        assert s_client(port, "a.test", "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384")[0]


def test_nginx_t_refuses_a_small_rsa_key_and_a_mismatched_key(tmp_path, nginx_bin):
    root = lab.make_root("facts server ca", now=NOW)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    b = lab._base(lab._name("a.test", "t"), root, weak, NOW - timedelta(hours=1), NOW + timedelta(days=30), None)
    lab.write_pem(tmp_path / "weak.crt", lab._signed(b, root.key, weak).cert)
    lab.write_pem(tmp_path / "weak.key", weak)
    crt, _ = _server_files(tmp_path)
    lab.write_pem(tmp_path / "other.key", lab._new_key())
    for cert, key, expected in ((tmp_path / "weak.crt", tmp_path / "weak.key", "ee key too small"),
                                (crt, tmp_path / "other.key", "key values mismatch")):
        ok, err = test_config(tmp_path / "t", f"server {{ listen 127.0.0.1:{free_port()} ssl; "
                              f"ssl_certificate {cert}; ssl_certificate_key {key}; }}", nginx_bin)
        assert not ok and expected in err, err


# ----- mtlsc's compiled profiles --------------------------------------------------------------------

def _policy(tmp: Path, tls: str = "", *, public_only: bool = False, extra: str = "", route_nginx: str = "",
            top: str = "") -> Path:
    (tmp / "ca").mkdir(exist_ok=True)
    gate = "public" if public_only else "require partners  allow any"
    path = tmp / "p.mtls"
    path.write_text(f"""{top}
ca partners {{ bundle "ca/root.pem" }}
server api.example.com {{
  listen 8443
  certificate "/etc/nginx/tls/api.crt" key "/etc/nginx/tls/api.key"
  backend "http://127.0.0.1:8080"
  {tls}
  {extra}
  route = /healthz {{ public }}
  route /api/ {{ {gate} {route_nginx} }}
}}
""")
    return path


def test_compiled_profiles_accept_only_what_they_name(tmp_path, nginx_bin):
    for tls, accepted, refused in (
        ("", [("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), ("-tls1_3", "-curves", "X25519")],
         [("-tls1_1",), ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"), ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-CCM"),
          ("-tls1_2", "-cipher", "ECDHE-ECDSA-CAMELLIA128-SHA256"), ("-tls1_2", "-curves", "secp521r1"),
          ("-tls1_3", "-curves", "X448"), ("-tls1_3", "-curves", "secp521r1"), ("-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256")]),
        ("tls modern", [("-tls1_3",)], [("-tls1_2",)]),
        ("tls old", [("-tls1", "-cipher", "ALL:@SECLEVEL=0"), ("-tls1_2", "-cipher", "AES128-SHA")],
         [("-tls1_2", "-cipher", "ECDHE-RSA-CAMELLIA128-SHA256"), ("-tls1_3", "-curves", "X448")]),
    ):
        work = tmp_path / (tls.replace(" ", "-") or "default")
        work.mkdir()
        with running_lab([str(_policy(work, tls, public_only=tls == "tls old"))], work / "lab", nginx_bin=nginx_bin) as run:
            port = run.ports[0]
            for args in accepted:
                assert s_client(port, "api.example.com", *args)[0], (tls, args)
            for args in refused:
                assert not s_client(port, "api.example.com", *args)[0], (tls, args)


def _graded(lab_run, sslyze_cmd):
    out = {}
    for server in lab_run.policy.servers:
        client = (tuple(str(p) for p in lab_run.pki.client(f"{server.cas[0].name}/client")) if server.cas else None)
        g = grade("127.0.0.1", server.listens[0].port, server.names[0].replace("*", "x"), server.tls.profile,
                  ca_file=str(lab_run.pki.server_ca), client=client)
        out[server.names[0]] = g
    return out


@pytest.mark.parametrize("policy", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_passes_sslyze_mozilla_intermediate(policy, tmp_path, nginx_bin, sslyze):
    with running_lab([str(policy)], tmp_path, nginx_bin=nginx_bin) as run:
        assert {s.tls.profile for s in run.policy.servers} == {"intermediate"}
        for name, g in _graded(run, sslyze).items():
            assert g.completed and g.returncode == 0, (name, g.command, g.output[-3000:])
            assert g.issues == {}, (name, g.issues)


def test_modern_passes_sslyze_mozilla_modern(tmp_path, nginx_bin, sslyze):
    with running_lab([str(_policy(tmp_path, "tls modern"))], tmp_path / "lab", nginx_bin=nginx_bin) as run:
        g = _graded(run, sslyze)["api.example.com"]
        assert g.completed and g.returncode == 0 and g.issues == {}, (g.command, g.issues, g.output[-3000:])
        # graded against the next profile up, it fails where it should
        strict = grade("127.0.0.1", run.ports[0], "api.example.com", "modern", ca_file=str(run.pki.server_ca),
                       client=tuple(str(p) for p in run.pki.client("partners/client")))
        assert strict.issues == {}


def test_intermediate_fails_sslyze_mozilla_modern(tmp_path, nginx_bin, sslyze):
    with running_lab([str(_policy(tmp_path))], tmp_path / "lab", nginx_bin=nginx_bin) as run:
        g = grade("127.0.0.1", run.ports[0], "api.example.com", "modern", ca_file=str(run.pki.server_ca),
                  client=tuple(str(p) for p in run.pki.client("partners/client")))
        assert g.completed and "tls_versions" in g.issues and "ciphers" in g.issues


def test_old_passes_sslyze_mozilla_old(tmp_path, nginx_bin, sslyze):
    # Public routes only: sslyze's ROBOT scan, which its Mozilla check needs and which `old`'s RSA key
    # exchange brings in, does not run against a server that asks for client certificates (an sslyze
    # limitation, its issue 484).
    with running_lab([str(_policy(tmp_path, "tls old", public_only=True))], tmp_path / "lab", nginx_bin=nginx_bin) as run:
        assert not run.policy.servers[0].cas
        g = _graded(run, sslyze)["api.example.com"]
        assert g.completed and g.returncode == 0 and g.issues == {}, (g.command, g.issues, g.output[-3000:])
        assert "DHE" in g.output and "TLS 1.0 Cipher Suites" in g.output


# ----- HSTS and server_tokens -------------------------------------------------------------------------

def _hsts(resp) -> list[str]:
    return [v for k, v in resp.headers if k.lower() == "strict-transport-security"]


def test_hsts_on_every_answer_also_where_a_route_adds_headers(tmp_path, nginx_bin):
    policy = _policy(tmp_path, "hsts 2y include_subdomains", public_only=True,
                     extra="nginx { add_header X-Server-Level yes always; }",
                     route_nginx="nginx { add_header X-Route-Level yes always; }")
    with running_lab([str(policy)], tmp_path / "lab", nginx_bin=nginx_bin) as run:
        port, want = run.ports[0], ["max-age=63072000; includeSubDomains"]
        routed = request("127.0.0.1", port, "/api/x", server_name="api.example.com")
        assert routed.status == 200 and _hsts(routed) == want
        assert ("X-Route-Level", "yes") in routed.headers
        assert not any(k == "X-Server-Level" for k, _ in routed.headers)  # nginx: the route's add_header replaces
        plain = request("127.0.0.1", port, "/healthz", server_name="api.example.com")
        assert plain.status == 200 and _hsts(plain) == want and ("X-Server-Level", "yes") in plain.headers
        for path, status in (("/nowhere", 404), ("/api/../healthz", 400)):
            refused = request("127.0.0.1", port, path, server_name="api.example.com")
            assert refused.status == status and _hsts(refused) == want, path
        assert dict(plain.headers)["Server"] == "nginx"  # server_tokens off: no version


def test_hsts_on_refusals_before_any_route(tmp_path, nginx_bin):
    with running_lab([str(_policy(tmp_path))], tmp_path / "lab", nginx_bin=nginx_bin) as run:
        port = run.ports[0]
        crt, key = run.pki.client("partners/expired")
        bad = request("127.0.0.1", port, "/healthz", server_name="api.example.com", cert=crt, key=key)
        none = request("127.0.0.1", port, "/api/x", server_name="api.example.com")
        assert bad.status == 403 and none.status == 403
        assert _hsts(bad) == _hsts(none) == ["max-age=63072000"]


def test_hsts_off_sends_none(tmp_path, nginx_bin):
    with running_lab([str(_policy(tmp_path, "hsts off", public_only=True))], tmp_path / "lab", nginx_bin=nginx_bin) as run:
        assert _hsts(request("127.0.0.1", run.ports[0], "/healthz", server_name="api.example.com")) == []


# ----- OCSP stapling ------------------------------------------------------------------------------------

def _status(port: int, server_ca: Path) -> str:
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "api.example.com",
                        "-status", "-CAfile", str(server_ca)], input="", capture_output=True, text=True, timeout=20)
    return p.stdout


def test_stapling_takes_the_issuer_from_the_certificate_file(tmp_path, nginx_bin):
    with running_lab([str(_policy(tmp_path, "stapling on"))], tmp_path / "lab", nginx_bin=nginx_bin) as run:
        conf = next((run.out_dir / "nginx").glob("api.example.com_*.conf")).read_text()
        assert "ssl_stapling on;" in conf and not re.search(r"(?m)^\s*ssl_trusted_certificate\b", conf)
        # nginx fetches the answer after the first handshake that asks for it; bounded retries
        for _ in range(20):
            out = _status(run.ports[0], run.pki.server_ca)
            if "Cert Status: good" in out:
                break
            run.nginx.wait_for_log("OCSP", log="error", timeout=0.25)
        assert "Cert Status: good" in out and "Verify return code: 0 (ok)" in out
        assert [q.answer for q in run.ocsp.queries()][:1] == ["good"]


def test_stapling_verify_would_need_the_root_in_a_trust_file(tmp_path, nginx_bin):
    """ssl_stapling_verify on, without ssl_trusted_certificate: an answer signed by a delegated
    responder (as the lab's, and most CAs') is refused, and nothing is stapled."""
    def verify_on(out: Path) -> None:
        conf = next((out / "nginx").glob("api.example.com_*.conf"))
        conf.write_text(conf.read_text().replace("ssl_stapling_verify off;", "ssl_stapling_verify on;"))

    with running_lab([str(_policy(tmp_path, "stapling on"))], tmp_path / "lab", nginx_bin=nginx_bin,
                     tamper=verify_on) as run:
        for _ in range(3):
            out = _status(run.ports[0], run.pki.server_ca)
            assert "Cert Status: good" not in out
            if run.nginx.wait_for_log("OCSP_basic_verify() failed", log="error", timeout=1):
                break
        assert "OCSP_basic_verify() failed" in run.nginx.error_log()
