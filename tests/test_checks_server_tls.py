"""The server's own TLS (issue 16): profile checks MTLS240-242 and the server certificate and key file
checks MTLS320-328, each with the policy or file that triggers it and the clean case. The files are
made here; a policy naming files this machine does not have hears nothing about them."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlsc import ir, pipeline
from mtlsc.checks import CHECKS, CheckContext, run_checks
from mtlsc.checks.server_cert import covers
from mtlsc.lab import certs as lab
from mtlsc.lab.server_pki import _ca, _leaf

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _chain(tmp: Path, names=("api.example.com",), *, rsa_key: bool = False, days: int = 90, ocsp: str | None = None,
           with_issuer: bool = True, start: datetime | None = None, key=None) -> tuple[Path, Path]:
    new_key = (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)) if rsa_key else lab._new_key
    root = _ca(None, "srv root", new_key(), NOW)
    issuing = _ca(root, "srv issuing", new_key(), NOW)
    leaf_key = key or new_key()
    b = (lab._base(lab._name(names[0], "t"), issuing, leaf_key, start or NOW - timedelta(hours=1),
                   (start or NOW - timedelta(hours=1)) + timedelta(days=days), None)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
         .add_extension(x509.SubjectAlternativeName([lab._san(n) for n in names]), critical=False))
    if ocsp:
        b = b.add_extension(lab._aia(ocsp), critical=False)
    leaf = lab._signed(b, issuing.key, leaf_key)
    crt, key_path = tmp / "srv.crt", tmp / "srv.key"
    lab.write_pem(crt, leaf.cert, *((issuing.cert,) if with_issuer else ()))
    lab.write_pem(key_path, leaf.key)
    return crt, key_path


def _check(tmp: Path, server: str = "", *, crt: Path | str = "/etc/nginx/tls/absent.crt",
           key: Path | str = "/etc/nginx/tls/absent.key", names: str = "api.example.com", top: str = "",
           more: str = "") -> list:
    (tmp / "ca.pem").write_bytes(lab.make_root("clients", now=NOW).cert.public_bytes(serialization.Encoding.PEM))
    policy = tmp / "p.mtls"
    policy.write_text(f"""{top}
ca partners {{ bundle "ca.pem" }}
server {names} {{
  certificate "{crt}" key "{key}"
  backend "http://127.0.0.1:8080"
{server}
  route = /healthz {{ public }}
  route / {{ require partners  allow any }}
}}
{more}""")
    result = pipeline.compile_policy([str(policy)], now=NOW)
    return result.diagnostics


def _codes(diags) -> list[str]:
    return [d.code for d in diags]


def _only(diags, code):
    found = [d for d in diags if d.code == code]
    assert len(found) == 1, [(d.code, d.message) for d in diags]
    return found[0]


# ----- profiles ------------------------------------------------------------------------------------

def test_mtls240_triggers_for_the_old_profile(tmp_path):
    d = _only(_check(tmp_path, "  tls old"), "MTLS240")
    assert "TLS 1.0" in d.message and d.span.line == 6


def test_mtls240_clean_for_intermediate_and_modern(tmp_path):
    assert "MTLS240" not in _codes(_check(tmp_path))
    assert "MTLS240" not in _codes(_check(tmp_path, "  tls modern"))


OTHER = """server www.example.com {
  certificate "/etc/nginx/tls/www.crt" key "/etc/nginx/tls/www.key"
  backend "http://127.0.0.1:8080"
  %s
  route / { public }
}"""


def test_mtls241_triggers_for_two_profiles_on_one_address(tmp_path):
    diags = _check(tmp_path, "  tls modern", more=OTHER % "listen 443")
    d = _only(diags, "MTLS241")
    assert "modern" in d.message and "intermediate" in d.message


def test_mtls241_clean_on_separate_ports_or_one_profile(tmp_path):
    assert "MTLS241" not in _codes(_check(tmp_path, "  tls modern", more=OTHER % "listen 8443"))
    assert "MTLS241" not in _codes(_check(tmp_path, "  tls modern", more=OTHER % "tls modern"))


def _with_host(tmp_path, default_servers) -> list:
    (tmp_path / "ca.pem").write_bytes(lab.make_root("clients", now=NOW).cert.public_bytes(serialization.Encoding.PEM))
    policy = tmp_path / "p.mtls"
    policy.write_text('ca partners { bundle "ca.pem" }\nserver api.example.com {\n  certificate "/x.crt" key "/x.key"\n'
                      '  backend "http://127.0.0.1:8080"\n  tls modern\n  route / { public }\n}\n')
    result = pipeline.compile_policy([str(policy)], now=NOW)
    host = ir.HostNginx("nginx -T", default_servers=frozenset(default_servers))
    ctx = CheckContext(replace(result.policy, host=host), result.pki, NOW)
    return run_checks(ctx, tuple(c for c in CHECKS if c.code == "MTLS242"))


def test_mtls242_triggers_where_your_default_server_decides(tmp_path):
    d = _only(_with_host(tmp_path, {("*", 443)}), "MTLS242")
    assert "ssl_protocols TLSv1.3;" in d.help


def test_mtls242_clean_where_mtlsc_writes_the_default_server(tmp_path):
    assert "MTLS242" not in _codes(_with_host(tmp_path, {("*", 8443)}))


# ----- the certificate and key files ------------------------------------------------------------------

def test_absent_files_are_not_checked(tmp_path):
    assert not [c for c in _codes(_check(tmp_path)) if c.startswith("MTLS32")]


def test_mtls320_triggers_for_a_key_this_user_cannot_read(tmp_path):
    crt, key = _chain(tmp_path)
    if os.geteuid() == 0:
        key = tmp_path / "dir-not-file.key"
        key.mkdir()  # reading a directory fails for root too (EISDIR)
    else:
        key.chmod(0)
    d = _only(_check(tmp_path, crt=crt, key=key), "MTLS320")
    assert str(key) in d.message


def test_mtls320_clean_for_readable_files(tmp_path):
    crt, key = _chain(tmp_path)
    assert not [c for c in _codes(_check(tmp_path, crt=crt, key=key)) if c.startswith("MTLS32")]


def test_mtls321_triggers_for_files_nginx_cannot_read(tmp_path):
    crt, key = _chain(tmp_path)
    der = tmp_path / "srv.der"
    der.write_bytes(x509.load_pem_x509_certificates(crt.read_bytes())[0].public_bytes(serialization.Encoding.DER))
    assert "no PEM certificate" in _only(_check(tmp_path, crt=der, key=key), "MTLS321").message
    enc = tmp_path / "enc.key"
    k = serialization.load_pem_private_key(key.read_bytes(), None)
    enc.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(b"pw")))
    assert "encrypted" in _only(_check(tmp_path, crt=crt, key=enc), "MTLS321").message


def test_mtls321_clean_for_pem_files(tmp_path):
    crt, key = _chain(tmp_path)
    assert "MTLS321" not in _codes(_check(tmp_path, crt=crt, key=key))


def test_mtls322_triggers_for_a_key_of_another_certificate(tmp_path):
    crt, _ = _chain(tmp_path)
    other = tmp_path / "other.key"
    lab.write_pem(other, lab._new_key())
    assert "does not belong" in _only(_check(tmp_path, crt=crt, key=other), "MTLS322").message


def test_mtls322_clean_for_the_matching_key(tmp_path):
    crt, key = _chain(tmp_path)
    assert "MTLS322" not in _codes(_check(tmp_path, crt=crt, key=key))


def test_mtls323_triggers_for_expired_and_future_certificates(tmp_path):
    crt, key = _chain(tmp_path, start=NOW - timedelta(days=40), days=30)
    assert "expired" in _only(_check(tmp_path, crt=crt, key=key), "MTLS323").message
    crt, key = _chain(tmp_path, start=NOW + timedelta(days=2))
    assert "not valid before" in _only(_check(tmp_path, crt=crt, key=key), "MTLS323").message


def test_mtls323_clean_for_a_current_certificate(tmp_path):
    crt, key = _chain(tmp_path)
    assert "MTLS323" not in _codes(_check(tmp_path, crt=crt, key=key))


def test_mtls324_triggers_within_the_expiry_window(tmp_path):
    crt, key = _chain(tmp_path, days=5)
    assert "expires on" in _only(_check(tmp_path, crt=crt, key=key), "MTLS324").message


def test_mtls324_clean_outside_the_window(tmp_path):
    crt, key = _chain(tmp_path, days=60)
    assert "MTLS324" not in _codes(_check(tmp_path, crt=crt, key=key))


def test_mtls325_triggers_without_the_issuing_ca(tmp_path):
    crt, key = _chain(tmp_path, with_issuer=False)
    d = _only(_check(tmp_path, crt=crt, key=key), "MTLS325")
    assert "srv issuing" in d.message and "unable to get local issuer certificate" in d.message


def test_mtls325_triggers_for_a_chain_out_of_order(tmp_path):
    crt, key = _chain(tmp_path)
    leaf, issuing = x509.load_pem_x509_certificates(crt.read_bytes())
    stranger = lab.make_root("stranger", now=NOW)
    lab.write_pem(crt, leaf, stranger.cert, issuing)
    assert "did not sign it" in _only(_check(tmp_path, crt=crt, key=key), "MTLS325").message


def test_mtls325_clean_with_the_chain(tmp_path):
    crt, key = _chain(tmp_path)
    assert "MTLS325" not in _codes(_check(tmp_path, crt=crt, key=key))


def test_mtls326_triggers_for_keys_outside_the_profile(tmp_path):
    crt, key = _chain(tmp_path, rsa_key=True)
    assert "where `modern` asks for ECDSA" in _only(_check(tmp_path, "  tls modern", crt=crt, key=key), "MTLS326").message
    crt, key = _chain(tmp_path, days=200)
    assert "lifetime of 200 days" in _only(_check(tmp_path, "  tls modern", crt=crt, key=key), "MTLS326").message
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    crt, key = _chain(tmp_path, rsa_key=True, key=weak)
    assert "weak 1024-bit RSA key" in _only(_check(tmp_path, crt=crt, key=key), "MTLS326").message


def test_mtls326_clean_for_the_profiles_certificates(tmp_path):
    crt, key = _chain(tmp_path)
    assert "MTLS326" not in _codes(_check(tmp_path, "  tls modern", crt=crt, key=key))
    crt, key = _chain(tmp_path, rsa_key=True, days=365)
    assert "MTLS326" not in _codes(_check(tmp_path, "  tls old", crt=crt, key=key))


def test_mtls327_triggers_for_a_name_the_certificate_lacks(tmp_path):
    crt, key = _chain(tmp_path, names=("api.example.com",))
    d = _only(_check(tmp_path, crt=crt, key=key, names="api.example.com www.example.com"), "MTLS327")
    assert "`www.example.com`" in d.message and "api.example.com" not in d.message.split("cover")[1].split("(")[0]


def test_mtls327_clean_for_covered_names(tmp_path):
    crt, key = _chain(tmp_path, names=("*.example.com",))
    assert "MTLS327" not in _codes(_check(tmp_path, crt=crt, key=key, names="api.example.com www.example.com"))


@pytest.mark.parametrize("patterns, name, expected", [
    (["*.example.com"], "a.example.com", True), (["*.example.com"], "a.b.example.com", False),
    (["*.example.com"], "example.com", False), (["*.example.com"], "*.example.com", True),
    (["a.example.com"], "*.example.com", False), (["API.example.com"], "api.example.com", False),
    (["api.example.com"], "API.example.com", True),
])
def test_wildcards_cover_one_label(patterns, name, expected):
    assert covers([p.lower() if p.islower() else p for p in patterns], name) is expected


def test_mtls328_triggers_when_nginx_cannot_staple(tmp_path):
    crt, key = _chain(tmp_path, with_issuer=False)
    d = _only(_check(tmp_path, "  stapling on", crt=crt, key=key), "MTLS328")
    assert "no OCSP responder" in d.message and "does not hold its issuer" in d.message
    crt, key = _chain(tmp_path, ocsp="http://ocsp.example.com/")
    assert "host name" in _only(_check(tmp_path, "  stapling on", crt=crt, key=key), "MTLS328").message


def test_mtls328_clean_with_url_issuer_and_resolver(tmp_path):
    crt, key = _chain(tmp_path, ocsp="http://ocsp.example.com/")
    assert "MTLS328" not in _codes(_check(tmp_path, "  stapling on", crt=crt, key=key, top='resolver "127.0.0.53"'))
    crt, key = _chain(tmp_path, ocsp="http://127.0.0.1:9/")
    assert "MTLS328" not in _codes(_check(tmp_path, "  stapling on", crt=crt, key=key))
    assert "MTLS328" not in _codes(_check(tmp_path, crt=crt, key=key))  # stapling off: nothing to say
