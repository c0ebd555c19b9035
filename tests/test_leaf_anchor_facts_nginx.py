"""What nginx 1.22 does with a self-signed client certificate listed as its own trust anchor in
`ssl_client_certificate` (docs/nginx-facts.md §F11), on raw
nginx configs, before mtlsc relies on it for `ca NAME { leaf ... }`.

Each server trusts one certificate and echoes `$ssl_client_verify`, so the verdict (and OpenSSL's
reason) is visible; `ssl_verify_client optional` lets a refused client still get an answer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlsc.lab.client import request
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.certs import make_crl
from mtlsc.lab.pki import issue_server, make_root, write_pem

pytestmark = pytest.mark.nginx
NOW = datetime.now(timezone.utc)
ALICE = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Laptops"), x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
SERIAL = 0x1234
_KU = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
           key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)


def self_signed(subject=ALICE, *, serial=SERIAL, ca=False, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,),
                digital_signature=True, key_cert_sign=False, valid=(timedelta(hours=-1), timedelta(days=30)),
                key=None):
    """A self-signed client certificate; every field a test may vary is a parameter."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
         .serial_number(serial).not_valid_before(NOW + valid[0]).not_valid_after(NOW + valid[1])
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=digital_signature,
                                     **{**_KU, "key_cert_sign": key_cert_sign, "key_agreement": not digital_signature}),
                        critical=True))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return b.sign(key, hashes.SHA256()), key


SERVER = """server {{
    listen 127.0.0.1:{port} ssl;
    server_name {name};
    ssl_certificate {d}/srv.crt;
    ssl_certificate_key {d}/srv.key;
    ssl_verify_client optional;
    ssl_client_certificate {d}/{name}.trust.pem;
    ssl_verify_depth {depth};
    location / {{ return 200 "$ssl_client_verify"; }}
}}
"""

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("leafanchor")
    srv = issue_server(make_root("server ca", now=NOW), ["leaf.test"], now=NOW)
    write_pem(d / "srv.crt", srv.cert)
    write_pem(d / "srv.key", srv.key)
    alice, alice_key = self_signed()
    twin, twin_key = self_signed()  # same subject, same serial, another key
    other, other_key = self_signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory")]))
    certs = {
        "alice": (alice, alice_key),
        "twin": (twin, twin_key),
        "other": (other, other_key),
        "expired": self_signed(valid=(timedelta(days=-30), timedelta(days=-1))),
        "future": self_signed(valid=(timedelta(days=1), timedelta(days=30))),
        "server-eku": self_signed(eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
        "no-eku": self_signed(eku=()),
        "any-eku": self_signed(eku=(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)),
        "no-digital-signature": self_signed(digital_signature=False),
        "ca-true": self_signed(ca=True, key_cert_sign=True),
    }
    for label, (cert, key) in certs.items():
        write_pem(d / f"{label}.crt", cert)
        write_pem(d / f"{label}.key", key)
    return d


def _verdicts(d: Path, trusted: str, depth: int, presented: list[str]) -> dict[str, str]:
    """Serve one server trusting `trusted` at `depth`; the verdict each presented certificate gets."""
    port = free_port()
    name = f"{trusted}-{depth}"
    (d / f"{name}.trust.pem").write_bytes((d / f"{trusted}.crt").read_bytes())
    conf = SERVER.format(port=port, name=name, d=d, depth=depth)
    out = {}
    with running_nginx(conf, d / f"nginx-{name}", ports=[port]) as nginx:
        for label in presented:
            r = request("127.0.0.1", port, "/", server_name=name, cert=d / f"{label}.crt", key=d / f"{label}.key")
            # a failed verification is answered 400 before the location runs; the reason is logged
            out[label] = r.text if r.status == 200 else f"{r.status} {_last_verify_error(nginx.error_log())}"
    return out


def _last_verify_error(log: str) -> str:
    lines = [l for l in log.splitlines() if "client SSL certificate verify error" in l]
    return lines[-1].split("verify error: ", 1)[1].split(") while", 1)[0] + ")" if lines else ""


def test_leaf_anchor_verifies_at_depth_0_and_1(lab):
    """A self-signed CA:FALSE leaf in the trust file verifies its own holder with ssl_verify_depth 0
    (the chain is the leaf alone) and with nginx's default 1."""
    for depth in (0, 1):
        assert _verdicts(lab, "alice", depth, ["alice"]) == {"alice": "SUCCESS"}


def test_leaf_anchor_refuses_a_same_subject_same_serial_twin_and_strangers(lab):
    """Another self-signed certificate with the anchor's subject and serial but its own key fails
    the signature check; one of another subject has no issuer at all."""
    for depth in (0, 1):
        got = _verdicts(lab, "alice", depth, ["alice", "twin", "other"])
        assert got == {"alice": "SUCCESS", "twin": "400 (18:self-signed certificate)",
                       "other": "400 (18:self-signed certificate)"}, got


def test_expired_or_future_leaf_anchor_refuses_its_holder(lab):
    """nginx checks the anchor's own dates: an expired listed leaf is refused (lockout), and so is
    one not yet valid."""
    assert _verdicts(lab, "expired", 0, ["expired"])["expired"] == "400 (10:certificate has expired)"
    assert _verdicts(lab, "future", 0, ["future"])["future"] == "400 (9:certificate is not yet valid)"


def test_leaf_anchor_without_client_auth_eku_is_refused(lab):
    """nginx verifies with the `sslclient` purpose: an EKU that leaves out clientAuth refuses the
    holder (`unsuitable certificate purpose`), at any depth, and so does anyExtendedKeyUsage alone;
    no EKU at all is accepted."""
    for depth in (0, 1):
        assert _verdicts(lab, "server-eku", depth, ["server-eku"]) == {"server-eku": "400 (26:unsuitable certificate purpose)"}
    assert _verdicts(lab, "any-eku", 0, ["any-eku"]) == {"any-eku": "400 (26:unsuitable certificate purpose)"}
    assert _verdicts(lab, "no-eku", 0, ["no-eku"]) == {"no-eku": "SUCCESS"}


def test_leaf_anchor_without_digital_signature_key_usage(lab):
    """A keyUsage without digitalSignature (keyAgreement only) does not stop nginx 1.22 (OpenSSL 3):
    the holder verifies, so mtlsc need not refuse it."""
    assert _verdicts(lab, "no-digital-signature", 0, ["no-digital-signature"]) == {"no-digital-signature": "SUCCESS"}


def test_self_signed_ca_true_certificate_anchors_itself_too(lab):
    """A CA:TRUE self-signed certificate presented as a client certificate verifies against itself:
    nginx does not tell a CA from a leaf here, so mtlsc must (a `leaf` CA refuses CA:TRUE)."""
    assert _verdicts(lab, "ca-true", 0, ["ca-true", "alice"]) == {"ca-true": "SUCCESS",
                                                                  "alice": "400 (18:self-signed certificate)"}


def _serve_alice_beside_a_ca(d: Path, extra: str) -> str:
    root = make_root("other root", now=NOW)
    write_pem(d / "root.pem", root.cert)
    write_pem(d / "root.crl", make_crl(root, [], now=NOW))
    (d / "both.trust.pem").write_bytes((d / "alice.crt").read_bytes() + (d / "root.pem").read_bytes())
    port = free_port()
    conf = SERVER.format(port=port, name="both", d=d, depth=1).replace("location", f"{extra}\n    location")
    with running_nginx(conf, d / f"nginx-both-{port}", ports=[port]) as nginx:
        r = request("127.0.0.1", port, "/", server_name="both", cert=d / "alice.crt", key=d / "alice.key")
        return r.text if r.status == 200 else f"{r.status} {_last_verify_error(nginx.error_log())}"


def test_crl_of_another_ca_on_the_server_locks_the_leaf_out(lab):
    """ssl_crl is per server and wants a CRL for every anchor (docs/nginx-facts.md §4): a listed leaf
    beside a CA with a CRL gets `unable to get certificate CRL`. Only the leaf's own key could sign
    a CRL for it, and the server's operator does not hold it: the leaf CA needs a server without CRLs."""
    assert _serve_alice_beside_a_ca(lab, f"ssl_crl {lab}/root.crl;") == "400 (3:unable to get certificate CRL)"


def test_ocsp_skips_a_self_signed_leaf(lab):
    """`ssl_ocsp on` and `leaf` ask no responder about a self-signed certificate: the listed leaf passes."""
    for mode in ("on", "leaf"):
        assert _serve_alice_beside_a_ca(lab, f"ssl_ocsp {mode}; resolver 127.0.0.1;") == "SUCCESS"

