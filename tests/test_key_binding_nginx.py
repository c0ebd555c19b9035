"""One CA never speaks for another (issue 11 §1, docs/language.md "Several CAs on one server").

On a server trusting CA a (root + issuing CA) and CA b, b signs a sub-CA that copies the name of a's
issuing CA, or of a's root, or that name and its key identifier too, and gives a client a's staff
subject. nginx verifies that chain (it ends at b's root) and `$ssl_client_i_dn` is byte-identical
to a real a client's, so the name binding alone let it in. The key check refuses it on every route
of a and b, on real nginx, through the echo backend (which must never see it); and real clients of
every key type njs verifies (RSA PKCS#1 and PSS, ECDSA P-256/P-384/P-521) still pass, so the check
does not lock anyone out. Certificates made with plain openssl (a PKI mtlsc did not mint) too."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from mtlsc import pipeline
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.pki import issue_server, make_root, write_pem
from mtlsc.output import write_atomic
from support import drop_lines

pytestmark = pytest.mark.nginx
NOW = datetime.now(timezone.utc)
STAFF = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
                   x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Staff"),
                   x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
REFUSED = (403, b"client certificate not accepted\n")


class Cert:
    """A certificate with its key, built field by field so look-alikes can copy anything copyable."""

    def __init__(self, cert: x509.Certificate, key):
        self.cert, self.key = cert, key

    @property
    def ski(self) -> bytes:
        return self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _key(kind: str):
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}[kind])


def _hash(kind: str):
    return {"p384": hashes.SHA384(), "p521": hashes.SHA512()}.get(kind, hashes.SHA256())


def _cert(subject: x509.Name, issuer: Cert | None, *, ca: bool, kind: str = "p256", ski: bytes | None = None,
          aki: bytes | None = None, pss: bool = False) -> Cert:
    key = _key(kind)
    ski = ski or x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    signer = issuer.key if issuer else key
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer.cert.subject if issuer else subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier(ski), critical=False))
    if issuer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier(aki or issuer.ski, None, None), critical=False)
    if pss:
        return Cert(b.sign(signer, hashes.SHA256(),
                           rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)), key)
    signer_kind = "rsa" if isinstance(signer, rsa.RSAPrivateKey) else kind
    hash_ = _hash(signer_kind) if isinstance(signer, ec.EllipticCurvePrivateKey) else hashes.SHA256()
    if isinstance(signer, ec.EllipticCurvePrivateKey):
        hash_ = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[signer.curve.key_size]
    return Cert(b.sign(signer, hash_), key)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mtlsc lab"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_client(d: Path, label: str, leaf: Cert, *chain: Cert) -> tuple[Path, Path]:
    # The client sends its chain: nginx needs the look-alike sub-CA from the client to verify.
    return write_pem(d / f"{label}.crt", leaf.cert, *(c.cert for c in chain)), write_pem(d / f"{label}.key", leaf.key)


POLICY = """nginx ">= 1.22"
ca a {{ bundle "{d}/a-root.pem" "{d}/a-issuing.pem"  depth 1 }}
ca b {{ bundle "{d}/b-root.pem"  depth 0 }}
identity staff {{ o "Example Corp"  ou "Staff" }}
server api.test {{
  listen 127.0.0.1:{port}
  certificate "{d}/srv.crt" key "{d}/srv.key"
  backend "http://127.0.0.1:{echo}"
  install "{d}/out/mtls"
  route = /healthz {{ public }}
  route /a/ {{ require a  allow staff  forward subject verify }}
  route /b/ {{ require b  allow any  forward subject verify }}
  route / {{ optional a  forward verify }}
}}
"""


def _serve(d: Path, echo_port: int) -> int:
    port = free_port()
    srv = issue_server(make_root("server ca", now=NOW), ["api.test"], now=NOW)
    write_pem(d / "srv.crt", srv.cert)
    write_pem(d / "srv.key", srv.key)
    (d / "p.mtls").write_text(POLICY.format(d=d, port=port, echo=echo_port))
    result = pipeline.compile_policy([str(d / "p.mtls")], now=datetime.now(timezone.utc))
    assert not result.failed, [(x.code, x.message) for x in result.diagnostics]
    codes = {x.code for x in result.diagnostics}
    assert "MTLS232" in codes, "the layout is one where b can copy a's names"
    write_atomic(d / "out", result.outputs)
    assert "api.test_" in " ".join(result.outputs) and any(p.endswith(".keys.js") for p in result.outputs)
    return port


def _get(port: int, path: str, client: tuple[Path, Path] | None):
    cert, key = client if client else (None, None)
    r = request("127.0.0.1", port, path, server_name="api.test", cert=cert, key=key)
    return r.status, r.body


@pytest.fixture(scope="module")
def cast(tmp_path_factory):
    d = tmp_path_factory.mktemp("keybind")
    a_root = _cert(_name("a root"), None, ca=True)
    a_issuing = _cert(_name("a issuing"), a_root, ca=True)
    b_root = _cert(_name("b root"), None, ca=True)
    write_pem(d / "a-root.pem", a_root.cert)
    write_pem(d / "a-issuing.pem", a_issuing.cert)
    write_pem(d / "b-root.pem", b_root.cert)
    clients = {
        "a staff": _write_client(d, "a-staff", _cert(STAFF, a_issuing, ca=False)),
        "a staff from a's root": _write_client(d, "a-root-staff", _cert(STAFF, a_root, ca=False)),
        "b client": _write_client(d, "b-client", _cert(_name("b client"), b_root, ca=False)),
    }
    lookalikes = {
        "copies a's issuing CA name": _cert(a_issuing.cert.subject, b_root, ca=True),
        "copies a's root name": _cert(a_root.cert.subject, b_root, ca=True),
        "copies a's issuing CA name and key id": _cert(a_issuing.cert.subject, b_root, ca=True, ski=a_issuing.ski),
        "copies a's root name and key id": _cert(a_root.cert.subject, b_root, ca=True, ski=a_root.ski),
    }
    for n, (label, sub) in enumerate(lookalikes.items()):
        leaf = _cert(STAFF, sub, ca=False)
        clients[f"look-alike that {label}"] = _write_client(d, f"lookalike-{n}", leaf, sub)
    # and the other way round: a's root copies b's root name for a b route (a sub-CA under a's
    # issuing CA would sit too deep for the server's depth 1)
    sub = _cert(b_root.cert.subject, a_root, ca=True)
    clients["look-alike under a that copies b's root name"] = _write_client(d, "lookalike-b", _cert(_name("b client"), sub, ca=False), sub)
    return d, clients


LOOKALIKES = ["look-alike that copies a's issuing CA name", "look-alike that copies a's root name",
              "look-alike that copies a's issuing CA name and key id", "look-alike that copies a's root name and key id"]


def test_lookalike_sub_cas_are_refused_on_every_route_of_either_ca(cast):
    d, clients = cast
    with running_echo_backend() as echo:
        port = _serve(d, echo.port)
        with running_nginx(f"include {d}/out/nginx/*.conf;", d / "nginx", ports=[port]) as nginx:
            # the real clients pass: the key check locks nobody out
            assert _get(port, "/a/x", clients["a staff"])[0] == 200
            assert _get(port, "/a/x", clients["a staff from a's root"])[0] == 200
            assert _get(port, "/b/x", clients["b client"])[0] == 200
            assert _get(port, "/other", clients["a staff"])[0] == 200
            assert _get(port, "/other", None)[0] == 200
            assert _get(port, "/a/x", clients["b client"]) == REFUSED
            seen = len(echo.snapshot())
            for name in LOOKALIKES:
                for path in ("/a/x", "/other", "/b/x"):
                    assert _get(port, path, clients[name]) == REFUSED, (name, path)
            # the name-only copies verified (SUCCESS) and were refused by the gates and the key check
            assert nginx.access_log().count('/a/x HTTP/1.1" 403 verify=SUCCESS') >= 3, nginx.access_log()
            for path in ("/b/x", "/a/x", "/other"):
                assert _get(port, path, clients["look-alike under a that copies b's root name"]) == REFUSED, path
            assert len(echo.snapshot()) == seen, "a look-alike reached the backend"
            # a public route stays public for them: nginx verified the chain
            assert _get(port, "/healthz", clients[LOOKALIKES[0]])[0] == 200


def test_without_the_key_check_the_lookalike_gets_in(cast, tmp_path):
    """The hole the key check closes, shown on the same nginx: drop the auth_request lines and a
    look-alike that copies a name reaches /a/ with X-Client-Verify SUCCESS (and the one under a
    reaches /b/). One that copies the key identifier too is refused by nginx itself: OpenSSL picks
    the trusted certificate with that name and key id as the issuer, and its signature check fails."""
    d, clients = cast
    with running_echo_backend() as echo:
        port = _serve(d, echo.port)
        conf = next((d / "out" / "nginx").glob("api.test_*.conf"))
        drop_lines(conf, "auth_request ")
        with running_nginx(f"include {d}/out/nginx/*.conf;", tmp_path / "nginx", ports=[port]) as nginx:
            for name in LOOKALIKES:
                if "key id" in name:
                    assert _get(port, "/a/x", clients[name]) == REFUSED, name
                    assert nginx.wait_for_log("verify=FAILED:certificate signature failure"), nginx.access_log()
                else:
                    assert _get(port, "/a/x", clients[name])[0] == 200, name
                    assert echo.snapshot()[-1].header_values("X-Client-Verify") == ["SUCCESS"]
            assert _get(port, "/b/x", clients["look-alike under a that copies b's root name"])[0] == 200


@pytest.mark.parametrize("kind", ["rsa", "rsa-pss", "p384", "p521"])
def test_every_key_type_njs_checks_lets_real_clients_in(tmp_path, kind):
    """No lockout: RSA (PKCS#1 v1.5 and PSS signatures), ECDSA P-384/SHA-384 and P-521/SHA-512 CAs."""
    d = tmp_path
    ca_kind = "rsa" if kind.startswith("rsa") else kind
    a_root = _cert(_name("a root"), None, ca=True, kind=ca_kind)
    a_issuing = _cert(_name("a issuing"), a_root, ca=True, kind=ca_kind, pss=kind == "rsa-pss")
    b_root = _cert(_name("b root"), None, ca=True)
    for f, c in (("a-root", a_root), ("a-issuing", a_issuing), ("b-root", b_root)):
        write_pem(d / f"{f}.pem", c.cert)
    good = _write_client(d, "good", _cert(STAFF, a_issuing, ca=False, pss=kind == "rsa-pss"))
    sub = _cert(a_issuing.cert.subject, b_root, ca=True)
    bad = _write_client(d, "bad", _cert(STAFF, sub, ca=False), sub)
    with running_echo_backend() as echo:
        port = _serve(d, echo.port)
        with running_nginx(f"include {d}/out/nginx/*.conf;", d / "nginx", ports=[port]):
            assert _get(port, "/a/x", good)[0] == 200
            assert _get(port, "/a/x", bad) == REFUSED


def test_an_issuer_name_encoded_unlike_the_ca_subject_still_passes(tmp_path):
    """The key check tries the key whose certificate's subject DER equals the client certificate's
    issuer DER first; OpenSSL matches names after canonicalising them, so a client whose issuer
    is the same name in another string type verifies too, and the check must not lock it out."""
    d = tmp_path
    a_root = _cert(_name("a root"), None, ca=True)
    a_issuing = _cert(_name("a issuing"), a_root, ca=True)
    b_root = _cert(_name("b root"), None, ca=True)
    for f, c in (("a-root", a_root), ("a-issuing", a_issuing), ("b-root", b_root)):
        write_pem(d / f"{f}.pem", c.cert)
    printable = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mtlsc lab", _type=_ASN1Type.PrintableString),
                           x509.NameAttribute(NameOID.COMMON_NAME, "A ISSUING", _type=_ASN1Type.PrintableString)])
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(STAFF).issuer_name(printable).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(hours=1))
            .not_valid_after(NOW + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier(a_issuing.ski, None, None), critical=False)
            .sign(a_issuing.key, hashes.SHA256()))
    assert leaf.issuer.public_bytes() != a_issuing.cert.subject.public_bytes()
    client = _write_client(d, "odd", Cert(leaf, key))
    with running_echo_backend() as echo:
        port = _serve(d, echo.port)
        with running_nginx(f"include {d}/out/nginx/*.conf;", d / "nginx", ports=[port]) as nginx:
            assert _get(port, "/a/x", client)[0] == 200, nginx.error_log()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def test_a_pki_made_with_plain_openssl(tmp_path):
    """The user's PKI: CAs, clients and the look-alike made with the openssl command line."""
    d = tmp_path
    ext = d / "ext.cnf"
    ext.write_text("[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                   "[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=clientAuth\n")
    days = ["-days", "30"]
    for name, subj in (("a-root", "/O=Example Corp/CN=Corp Root CA"), ("b-root", "/O=Partner Inc/CN=Partner Root")):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-subj", subj, *days, "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)

    def issue(name: str, subj: str, signer: str, section: str, key: str = "ec") -> None:
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key == "ec" else ["-newkey", "rsa:2048"]
        _openssl("req", "-new", *newkey, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{signer}.pem", "-CAkey", f"{signer}.key",
                 "-CAcreateserial", "-out", f"{name}.pem", *days, "-sha256", "-extfile", "ext.cnf",
                 "-extensions", section, cwd=d)

    issue("a-issuing", "/O=Example Corp/CN=Corp Issuing CA", "a-root", "ca", key="rsa")
    issue("alice", "/O=Example Corp/OU=Staff/CN=alice", "a-issuing", "leaf")
    issue("fake-issuing", "/O=Example Corp/CN=Corp Issuing CA", "b-root", "ca")  # b copies a's issuing CA name
    issue("mallory", "/O=Example Corp/OU=Staff/CN=mallory", "fake-issuing", "leaf")
    (d / "mallory-chain.pem").write_text((d / "mallory.pem").read_text() + (d / "fake-issuing.pem").read_text())
    with running_echo_backend() as echo:
        port = _serve(d, echo.port)
        with running_nginx(f"include {d}/out/nginx/*.conf;", d / "nginx", ports=[port]):
            assert _get(port, "/a/x", (d / "alice.pem", d / "alice.key"))[0] == 200
            assert _get(port, "/a/x", (d / "mallory-chain.pem", d / "mallory.key")) == REFUSED
