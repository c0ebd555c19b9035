"""Certificates whose names do not re-encode: what OpenSSL prints for them, and mtlsc's answer.

cryptography 51 refuses name strings that do not fit their ASN.1 type (an IA5String holding
`é`) on load and on write, while OpenSSL, and so nginx, reads any byte of a one-byte string
type. Such certificates are made here by hand (a placeholder name patched in the DER and signed
again) and printed by the real `openssl x509 -nameopt RFC2253`, the printer nginx uses.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mtlsc import dn
from mtlsc.dn import der
from support import run_cli

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)
KEY = ec.generate_private_key(ec.SECP256R1())

# (ASN.1 tag, value bytes) of the CN: OpenSSL's reading of each, or None where OpenSSL refuses it
CASES = {
    "ia5-non-ascii": (0x16, "c3a9", r"CN=\C3\83\C2\A9,O=Acme"),
    "printable-at-sign": (0x13, "4040", "CN=@@,O=Acme"),
    "printable-star": (0x13, "2a2e61", "CN=*.a,O=Acme"),
    "t61-latin1": (0x14, "e9", r"CN=\C3\A9,O=Acme"),
    "numeric-letter": (0x12, "61", "CN=a,O=Acme"),
    "ia5-ff": (0x16, "ff", r"CN=\C3\BF,O=Acme"),
    "unknown-tag-dumped": (0x07, "41", "CN=#070141,O=Acme"),
    "visible-string": (0x1A, "41", None),
    "utctime": (0x17, "41", None),
    "octet-string": (0x04, "41", None),
    "bmp-ok": (0x1E, "00e9", r"CN=\C3\A9,O=Acme"),
    "universal-ok": (0x1C, "000000e9", r"CN=\C3\A9,O=Acme"),
    "utf8-nul": (0x0C, "00", r"CN=\00,O=Acme"),
    "bmp-odd-length": (0x1E, "00", None),
    "bmp-lone-surrogate": (0x1E, "d800", None),
    "universal-odd-length": (0x1C, "0000", None),
    "utf8-invalid": (0x0C, "ff", None),
    "utf8-surrogate": (0x0C, "eda080", None),
}


def _children(data: bytes, start: int, end: int) -> list[bytes]:
    return [data[at:stop] for _, at, _, stop in der.children(data, start, end)]


def _resign(signed: bytes, patch) -> bytes:
    """`signed` (a certificate or CRL) with its to-be-signed part patched, signed again by KEY."""
    _, outer, end = der.read_tlv(signed, 0)
    tbs, alg, _ = _children(signed, outer, end)
    tbs = patch(tbs)
    return der.encode(0x30, tbs + alg + der.encode(0x03, b"\0" + KEY.sign(tbs, ec.ECDSA(hashes.SHA256()))))


def _placeholder(n: int) -> tuple[x509.Name, bytes]:
    marker = "Q" * max(n, 1)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"), x509.NameAttribute(NameOID.COMMON_NAME, marker)])
    return name, der.encode(0x0C, marker.encode())


def _swap(tag: int, value: bytes, old: bytes):
    return lambda tbs: tbs.replace(old, der.encode(tag, value))


def crafted_ca(tag: int, value: bytes) -> bytes:
    """A self-signed CA certificate (DER) whose subject and issuer CN are `value` with ASN.1 `tag`."""
    name, old = _placeholder(len(value))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(KEY.public_key())
            .serial_number(7).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(KEY, hashes.SHA256()))
    return _resign(cert.public_bytes(serialization.Encoding.DER), _swap(tag, value, old))


def crafted_crl(tag: int, value: bytes) -> bytes:
    name, old = _placeholder(len(value))
    crl = (x509.CertificateRevocationListBuilder().issuer_name(name).last_update(NOW)
           .next_update(NOW + timedelta(days=30)).sign(KEY, hashes.SHA256()))
    return _resign(crl.public_bytes(serialization.Encoding.DER), _swap(tag, value, old))


def pem(data: bytes, label: str = "CERTIFICATE") -> bytes:
    b = base64.b64encode(data).decode()
    return (f"-----BEGIN {label}-----\n" + "\n".join(b[i:i + 64] for i in range(0, len(b), 64))
            + f"\n-----END {label}-----\n").encode()


@pytest.fixture(scope="module")
def made():
    return {case: crafted_ca(tag, bytes.fromhex(value)) for case, (tag, value, _) in CASES.items()}


# ----- the printer: mtlsc's reading of the bytes is OpenSSL's ---------------------------------


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl binary")
@pytest.mark.parametrize("case", CASES)
def test_openssl_prints_what_nginx_dn_of_prints(tmp_path, made, case):
    expected = CASES[case][2]
    path = tmp_path / "c.pem"
    path.write_bytes(pem(made[case]))
    run = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-subject", "-issuer", "-nameopt", "RFC2253"],
                         capture_output=True, text=True, timeout=30)
    data = made[case]
    (issuer_at, issuer_end), (subject_at, subject_end) = der.cert_names(data)
    if expected is None:
        assert run.returncode != 0  # OpenSSL (and nginx -t) refuses the certificate
        with pytest.raises(ValueError, match="OpenSSL, and so nginx, cannot read it"):  # noqa: PT012
            dn.nginx_dn_of(data[subject_at:subject_end])
        return
    assert run.stdout.splitlines() == [f"subject={expected}", f"issuer={expected}"]
    assert dn.nginx_dn_of(data[subject_at:subject_end]) == dn.nginx_dn_of(data[issuer_at:issuer_end]) == expected


def test_nginx_dn_of_a_name_cryptography_will_not_write():
    # the Name object exists; cryptography 51 refuses to encode it, nginx_dn_of encodes it itself
    attr = x509.NameAttribute(NameOID.COMMON_NAME, "é", x509.name._ASN1Type.IA5String)
    assert dn.nginx_dn_of(x509.Name([x509.RelativeDistinguishedName([attr])])) == r"CN=\C3\83\C2\A9"


@pytest.mark.parametrize("junk", [b"", b"\x30", b"\x30\x05\x31\x03", b"\x30\x84\xff\xff\xff\xff", b"\x31\x00"])
def test_broken_name_der_is_a_value_error(junk):
    with pytest.raises(ValueError):
        dn.nginx_dn_of(junk)


# ----- the product: `mtlsc check` / `compile` on a bundle holding such a certificate ---------

POLICY = """ca odd {
  bundle "odd.pem"
}

server api.example.com {
  certificate "/etc/nginx/tls/api.crt" key "/etc/nginx/tls/api.key"
  backend "http://127.0.0.1:8080"
  route /partner/ { require odd }
}
"""


def _loads(data: bytes) -> bool:
    try:
        cert = x509.load_der_x509_certificate(data)
        cert.subject, cert.issuer
        return True
    except Exception:  # ValueError; KeyError for an unknown tag in cryptography 48
        return False


@pytest.mark.parametrize("command", ["check", "compile"])
@pytest.mark.parametrize("case", CASES)
def test_check_and_compile_give_a_located_diagnostic(tmp_path, made, case, command):
    (tmp_path / "odd.pem").write_bytes(pem(made[case]))
    (tmp_path / "p.mtls").write_text(POLICY)
    args = ["compile", "p.mtls", "-o", "out"] if command == "compile" else ["check", "p.mtls"]
    code, out, err = run_cli(*args, cwd=tmp_path)
    assert "Traceback" not in out + err and code in (0, 1), err
    expected = CASES[case][2]
    located = "--> p.mtls:2:10"
    if expected is None:  # OpenSSL refuses it too: damaged, nginx -t would fail
        assert "error[MTLS304]" in err and located in err and "OpenSSL, and so nginx, cannot read it" in err, err
        assert "MTLS301" not in err
        assert code == 1
    elif _loads(made[case]):  # this cryptography reads it: mtlsc goes on, with the name nginx prints
        assert "MTLS035" not in err and "MTLS304" not in err, err
        code, out, err = run_cli("explain", "p.mtls", cwd=tmp_path)
        assert "Traceback" not in out + err
    else:
        assert "error[MTLS035]" in err and located in err and "MTLS301" not in err, err
        assert f"nginx reads certificate `{expected}`" in err and "re-issue it with UTF8String names" in err
        assert code == 1 and not (tmp_path / "out").exists()


def test_misfit_names_the_attribute_and_type(tmp_path, made):
    if _loads(made["ia5-non-ascii"]):
        pytest.skip("this cryptography still reads IA5String with non-ASCII")
    (tmp_path / "odd.pem").write_bytes(pem(made["printable-at-sign"]) + pem(made["ia5-non-ascii"]))
    (tmp_path / "p.mtls").write_text(POLICY)
    code, _, err = run_cli("check", "p.mtls", cwd=tmp_path)
    assert "odd.pem` line 1: nginx reads certificate `CN=@@,O=Acme`" in err
    assert "`CN` is a PrintableString holding `4040`" in err
    assert "nginx reads certificate `CN=\\C3\\83\\C2\\A9,O=Acme`" in err
    assert "`CN` is an IA5String holding `c3a9`" in err


@pytest.mark.parametrize("case", ["ia5-non-ascii", "printable-at-sign", "t61-latin1", "bmp-odd-length", "utf8-invalid"])
def test_crl_issuer_that_does_not_re_encode(tmp_path, made, case):
    tag, value, expected = CASES[case]
    (tmp_path / "odd.pem").write_bytes(pem(made["bmp-ok"]))
    (tmp_path / "odd.crl").write_bytes(pem(crafted_crl(tag, bytes.fromhex(value)), "X509 CRL"))
    (tmp_path / "p.mtls").write_text(POLICY.replace('bundle "odd.pem"', 'bundle "odd.pem"\n  crl "odd.crl"'))
    code, out, err = run_cli("check", "p.mtls", cwd=tmp_path)
    assert "Traceback" not in out + err and code in (0, 1), err
    if expected is None:
        assert "error[MTLS304]" in err and "--> p.mtls:3:7" in err, err
    elif "MTLS035" in err:
        assert "--> p.mtls:3:7" in err and f"nginx reads the CRL of `{expected}`" in err, err
    assert "MTLS302" not in err
