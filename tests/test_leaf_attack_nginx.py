"""`ca NAME { leaf ... }` attacked as a hostile client would, on real nginx, through the echo
backend and real frameworks (docs/language.md "Trusted leaf certificates", docs/nginx-facts.md
§F11). Every client kind against every route kind, on one server holding two leaf CAs and an
ordinary CA and on other servers of the same address (SNI, Host, no SNI); certificates signed by
a listed leaf's key; session resumption across servers; identity headers sent by the client;
path variants in front of Flask/Werkzeug and Express; how leaf files are read into fingerprints.

Found and closed here:
- a hole: a holder's self-made certificate without basicConstraints but with a Netscape
  certificate type naming it an SSL CA is a CA to nginx, so the holder could mint a sub-CA named
  like another CA of the server and reach that CA's routes under any name
  (`test_leaf_with_netscape_ssl_ca_type_mints_into_another_cas_routes`); MTLS317 now refuses it;
- a hole beside it: a bundle root without basicConstraints (keyUsage keyCertSign, or that Netscape
  type) is a CA to OpenSSL but was no minter to the key binding, so its operator's look-alike of
  another CA's root reached that CA's routes
  (`test_a_root_without_basic_constraints_is_a_minter_for_the_key_binding`);
- a holder's name that is another CA's certificate's to OpenSSL (but for whitespace) locked that
  CA's clients out; MTLS201 now compares names as OpenSSL does;
- a leaf renewed beside the old one (or any name twice in the issuer map) made nginx refuse the
  config; the map names each once, and MTLS329 warns when OpenSSL cannot tell two leaves of one
  name apart."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlsc import pipeline
from mtlsc.checks import leaves
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.pki import issue_server, make_root, write_pem
from mtlsc.output import write_atomic
from support import drop_lines

pytestmark = pytest.mark.nginx
NOW = datetime.now(timezone.utc)
OK, BAD, REQ, FORBID, MISDIRECTED, NO_TLS = "ok", "bad", "req", "forbid", "421", "no tls"
ANSWERS = {BAD: (403, b"client certificate not accepted\n"), REQ: (403, b"client certificate required\n"),
           FORBID: (403, b"client certificate not allowed here\n")}
ALICE = "CN=alice,O=Laptops"
NAMES = ["api.test", "solo.test", "leafonly.test", "renewed.test", "pass.test"]
# Netscape certificate type (OpenSSL's nsCertType), as DER BIT STRINGs: sslClient plus one CA bit.
NS_CERT_TYPE = x509.ObjectIdentifier("2.16.840.1.113730.1.1")
NS_CLIENT_AND_SSL_CA = bytes.fromhex("03020284")
NS_CLIENT_AND_SMIME_CA = bytes.fromhex("03020182")


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(text: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(text)


def _ski(key) -> bytes:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest


def _cert(subject: str, key, *, issuer: str | None = None, signer=None, ca: bool | None = False,
          serial: int | None = None, valid=(timedelta(hours=-1), timedelta(days=30)), ski: bytes | None = b"",
          aki: bytes | None = None, eku: bool = True, ns: bytes | None = None) -> x509.Certificate:
    """A certificate; self-signed unless `issuer`/`signer` are given. `ca=None`: no basicConstraints;
    `ski`: b"" for the key's own identifier, None for none, else the bytes to copy."""
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer or subject))
         .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(NOW + valid[0]).not_valid_after(NOW + valid[1]))
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if ski is not None:
        b = b.add_extension(x509.SubjectKeyIdentifier(ski or _ski(key)), critical=False)
    if aki is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
    if ns is not None:
        b = b.add_extension(x509.UnrecognizedExtension(NS_CERT_TYPE, ns), critical=False)
    return b.sign(signer or key, hashes.SHA256())


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex()


class Pki:
    """Certificates written under `d`: `clients[label] = (cert path, key path)`, `certs[label]`."""

    def __init__(self, d: Path):
        self.d, self.clients, self.certs = d, {}, {}

    def client(self, label: str, cert: x509.Certificate, key, *chain: x509.Certificate) -> None:
        self.certs[label] = cert
        self.clients[label] = (write_pem(self.d / f"{label}.crt", cert, *chain), write_pem(self.d / f"{label}.key", key))

    def anchor(self, file: str, cert: x509.Certificate) -> None:
        write_pem(self.d / file, cert)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("leafattack")
    srv = issue_server(make_root("server ca", now=NOW), NAMES, now=NOW)
    write_pem(d / "srv.crt", srv.cert)
    write_pem(d / "srv.key", srv.key)
    p = Pki(d)
    keys = {n: _key() for n in ("alice", "alice renewed", "bob", "carol", "root", "sub", "copy")}
    for label, subject, serial in (("alice", ALICE, 0x1234), ("alice renewed", ALICE, None),
                                   ("bob", "CN=bob,O=Laptops", None), ("carol", "CN=carol,O=Phones", None)):
        cert = _cert(subject, keys[label], serial=serial)
        p.client(label, cert, keys[label])
        p.anchor(f"{label.replace(' ', '-')}.pem", cert)
    root = _cert("CN=staff root,O=Example Corp", keys["root"], ca=True, eku=False)
    p.anchor("staff-root.pem", root)
    root_aki = _ski(keys["root"])

    def staff(label: str, subject: str) -> None:
        key = _key()
        p.client(label, _cert(subject, key, issuer="CN=staff root,O=Example Corp", signer=keys["root"], aki=root_aki), key)

    staff("dave", "CN=dave,O=Example Corp")
    staff("staff client named alice", ALICE)
    # A sub-CA of staff named like alice: its client's subject AND issuer are alice's name.
    sub = _cert(ALICE, keys["sub"], issuer="CN=staff root,O=Example Corp", signer=keys["root"], ca=True, eku=False,
                aki=root_aki)
    key = _key()
    p.client("client of a staff sub-CA named alice", _cert(ALICE, key, issuer=ALICE, signer=keys["sub"],
                                                            aki=_ski(keys["sub"])), key, sub)
    # ... and one that copies alice's key identifier too: OpenSSL then takes alice as the issuer.
    copy = _cert(ALICE, keys["copy"], issuer="CN=staff root,O=Example Corp", signer=keys["root"], ca=True, eku=False,
                 aki=root_aki, ski=_ski(keys["alice"]))
    key = _key()
    p.client("client of a staff sub-CA named alice with its key id", _cert(
        "CN=mallory,O=Laptops", key, issuer=ALICE, signer=keys["copy"], aki=_ski(keys["alice"])), key, copy)
    # Unlisted self-signed copies of alice: subject, serial and key identifier, another key.
    for label, valid in (("alice's twin", None), ("expired copy of alice", (timedelta(days=-60), timedelta(days=-1))),
                         ("future copy of alice", (timedelta(days=1), timedelta(days=30)))):
        key = _key()
        p.client(label, _cert(ALICE, key, serial=0x1234, ski=_ski(keys["alice"]),
                              **({"valid": valid} if valid else {})), key)
    # Signed by alice's own key (alice is CA:FALSE): a client, and a sub-CA named like the staff root.
    key = _key()
    p.client("signed by alice", _cert("CN=bob,O=Laptops", key, issuer=ALICE, signer=keys["alice"],
                                      aki=_ski(keys["alice"])), key)
    minted_sub_key = _key()
    minted_sub = _cert("CN=staff root,O=Example Corp", minted_sub_key, issuer=ALICE, signer=keys["alice"], ca=True,
                       eku=False, aki=_ski(keys["alice"]))
    key = _key()
    p.client("dave under a sub-CA signed by alice", _cert("CN=dave,O=Example Corp", key,
                                                          issuer="CN=staff root,O=Example Corp",
                                                          signer=minted_sub_key, aki=_ski(minted_sub_key)),
             key, minted_sub)
    return p


def _compile(d: Path, text: str, *, ok: bool = True):
    path = d / "p.mtls"
    path.write_text(text)
    result = pipeline.compile_policy([str(path)], now=datetime.now(timezone.utc))
    if ok:
        assert not result.failed, "\n".join(f"{x.code} {x.severity} {x.message}" for x in result.diagnostics)
        write_atomic(d / "out", result.outputs)
    return result


def _fill(text: str, **values) -> str:
    """`text` with each `{name}` replaced (policies are full of braces of their own)."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


@contextmanager
def _serving(d: Path, text: str, port: int, backend: int):
    """Compile `text` (with {d}, {port}, {backend} filled in) into d/out and run nginx on it."""
    _compile(d, _fill(text, d=d, port=port, backend=backend))
    with running_nginx(f"include {d}/out/nginx/*.conf;", d / "nginx", ports=[port]) as n:
        yield n


def _fresh(pki: Pki, tmp_path: Path) -> Path:
    """A work directory holding the module's certificates (each test compiles its own policy)."""
    for f in pki.d.iterdir():
        if f.is_file():
            (tmp_path / f.name).symlink_to(f)
    return tmp_path


def _get(port: int, sni: str | None, path: str, client, *, host: str | None = None, **kw):
    cert, key = client if client else (None, None)
    return request("127.0.0.1", port, path, server_name=sni, host_header=host or sni or "api.test", cert=cert,
                   key=key, **kw)


def _verdict(r) -> str:
    if r.status == 0:
        return NO_TLS
    if r.status == 421:
        return MISDIRECTED
    for name, answer in ANSWERS.items():
        if (r.status, r.body) == answer:
            return name
    return OK if r.status == 200 and r.body.startswith(b"GET ") else f"{r.status} {r.body[:80]!r}"


# --- the hole: a leaf that nginx takes for a CA -----------------------------------------------------

HOLE_POLICY = """nginx ">= 1.22"
ca laptops { leaf "{d}/holder.pem" }
ca staff { bundle "{d}/staff-root.pem"  depth 1 }
identity dave { subject "CN=dave,O=Example Corp" }
server api.test {
  listen 127.0.0.1:{port}
  certificate "{d}/srv.crt" key "{d}/srv.key"
  backend "http://127.0.0.1:{backend}"
  install "{d}/out/mtls"
  route /leaf/ { require laptops  allow any  forward subject }
  route /staff/ { require staff  allow dave  forward subject }
}
"""


def _holder_and_minted(pki: Pki, d: Path, ns: bytes | None, ca: bool | None):
    """A leaf holder's self-made certificate (`ns`: its Netscape type, `ca`: its basicConstraints),
    and dave under a sub-CA the holder signed, named like the staff root."""
    holder_key, sub_key, dave_key = _key(), _key(), _key()
    holder = _cert("CN=holder,O=Laptops", holder_key, ca=ca, ns=ns)
    write_pem(d / "holder.pem", holder)
    write_pem(d / "holder.key", holder_key)
    sub = _cert("CN=staff root,O=Example Corp", sub_key, issuer="CN=holder,O=Laptops", signer=holder_key, ca=True,
                eku=False, aki=_ski(holder_key))
    dave = _cert("CN=dave,O=Example Corp", dave_key, issuer="CN=staff root,O=Example Corp", signer=sub_key,
                 aki=_ski(sub_key))
    return (d / "holder.pem", d / "holder.key"), (write_pem(d / "minted.crt", dave, sub), write_pem(d / "minted.key", dave_key))


def test_leaf_with_netscape_ssl_ca_type_mints_into_another_cas_routes(pki, tmp_path, monkeypatch):
    """The hole. A holder makes their own certificate: no basicConstraints, an nsCertType of
    `client, sslCA`. OpenSSL's check_ca takes it for a CA (no basicConstraints, no keyUsage, a
    Netscape CA type), so with the staff CA's depth 1 on the server a sub-CA signed by the holder's
    key verifies; named like the staff root, its clients pass the issuer binding of `/staff/` and any
    subject identity there. mtlsc used to compile this silently (MTLS317 looked only at
    basicConstraints, keyUsage and version 1). Shown on nginx with MTLS317 switched off; now
    MTLS317 refuses the leaf."""
    d = _fresh(pki, tmp_path)
    holder, minted = _holder_and_minted(pki, d, NS_CLIENT_AND_SSL_CA, None)
    with running_echo_backend() as echo:
        port = free_port()
        text = _fill(HOLE_POLICY, d=d, port=port, backend=echo.port)
        result = _compile(d, text, ok=False)
        found = [x for x in result.diagnostics if x.code == "MTLS317"]
        assert result.failed and found, [(x.code, x.message) for x in result.diagnostics]
        assert "CN=holder,O=Laptops" in found[0].message
        # What MTLS317 stands between: the config mtlsc emits without it lets the minted dave in.
        monkeypatch.setattr(leaves, "openssl_ca", lambda cert: False)
        with _serving(d, HOLE_POLICY, port, echo.port):
            assert _verdict(_get(port, "api.test", "/leaf/x", holder)) == OK
            got = _get(port, "api.test", "/staff/x", minted)
            assert _verdict(got) == OK and b"X-Client-Subject: CN=dave,O=Example Corp\n" in got.body


@pytest.mark.parametrize("ns, ca, signs", [
    (NS_CLIENT_AND_SSL_CA, None, True),
    (NS_CLIENT_AND_SSL_CA, False, False),
    (NS_CLIENT_AND_SMIME_CA, None, False),
    (None, None, False),
    (None, False, False),
], ids=["ssl-ca-type", "ssl-ca-type-but-ca-false", "smime-ca-type", "no-basic-constraints", "ca-false"])
def test_which_leaves_nginx_lets_sign(pki, tmp_path, monkeypatch, ns, ca, signs):
    """What nginx verifies under a listed leaf's key, by the leaf's extensions: only an SSL CA
    Netscape type without basicConstraints makes it an issuer. CA:FALSE always wins, an S/MIME CA
    type is no CA for TLS clients, and a plain leaf (CA:FALSE, as `openssl req -x509 -addext
    basicConstraints=critical,CA:FALSE` makes it, or no basicConstraints at all) signs nothing: the
    chain through it is refused (`unsuitable certificate purpose`, OpenSSL checking the issuer's
    TLS client CA purpose). MTLS317 fires exactly for the issuer; in every other case the holder's
    own certificate verifies and is admitted."""
    d = _fresh(pki, tmp_path)
    holder, minted = _holder_and_minted(pki, d, ns, ca)
    with running_echo_backend() as echo:
        port = free_port()
        result = _compile(d, _fill(HOLE_POLICY, d=d, port=port, backend=echo.port), ok=False)
        assert ("MTLS317" in {x.code for x in result.diagnostics}) == signs
        monkeypatch.setattr(leaves, "openssl_ca", lambda cert: False)
        with _serving(d, HOLE_POLICY, port, echo.port) as n:
            assert _verdict(_get(port, "api.test", "/leaf/x", holder)) == OK
            assert _verdict(_get(port, "api.test", "/staff/x", minted)) == (OK if signs else BAD)
            if not signs:
                assert "client SSL certificate verify error: (26:unsuitable certificate purpose)" in n.error_log()


# --- every client kind on every route kind, on four servers of one address --------------------------

def _server(name: str, routes: str) -> str:
    return "server " + name + """ {
  listen 127.0.0.1:{port}
  certificate "{d}/srv.crt" key "{d}/srv.key"
  backend "http://127.0.0.1:{backend}"
  install "{d}/out/mtls"
""" + routes + "}\n"


MATRIX_POLICY = """nginx ">= 1.22"
ca laptops { leaf "{d}/alice.pem" "{d}/bob.pem" }
ca phones { leaf "{d}/carol.pem" }
ca staff { bundle "{d}/staff-root.pem"  depth 1 }
identity alice { subject "CN=alice,O=Laptops" }
identity dave { subject "CN=dave,O=Example Corp" }
""" + _server("api.test", """  route = /healthz { public }
  route /leaf/ { require laptops  allow any  forward subject fingerprint verify }
  route /alice/ { require laptops  allow alice  forward subject fingerprint }
  route /maybe/ { optional laptops  forward subject fingerprint verify }
  route /phone/ { require phones  allow any  forward subject fingerprint }
  route /staff/ { require staff  allow any  forward subject fingerprint }
  route /dave/ { require staff  allow dave  forward subject fingerprint }
  route / { public }
""") + _server("solo.test", """  route /staff/ { require staff  allow any  forward subject fingerprint }
  route / { public }
""") + _server("leafonly.test", """  route /leaf/ { require laptops  allow any  forward subject fingerprint }
  route /maybe/ { optional laptops  forward subject fingerprint verify }
  route / { public }
""") + _server("pass.test", """  route / { passthrough  forward cert verify }
""")

# Every certificate nginx refuses to verify on api.test; each gets `bad` on every route of it.
FAILED_ON_API = ("alice's twin", "expired copy of alice", "future copy of alice",
                 "client of a staff sub-CA named alice with its key id", "signed by alice",
                 "dave under a sub-CA signed by alice")
API_PATHS = ("/leaf/x", "/alice/x", "/maybe/x", "/phone/x", "/staff/x", "/dave/x", "/x", "/healthz")
API = {
    None: (REQ, REQ, OK, REQ, REQ, REQ, OK, OK),
    "alice": (OK, OK, OK, BAD, BAD, BAD, OK, OK),
    "bob": (OK, FORBID, OK, BAD, BAD, BAD, OK, OK),
    "carol": (BAD, BAD, BAD, OK, BAD, BAD, OK, OK),
    "dave": (BAD, BAD, BAD, BAD, OK, OK, OK, OK),
    "staff client named alice": (BAD, BAD, BAD, BAD, OK, FORBID, OK, OK),
    # verified (staff root -> sub-CA), but its issuer DN is alice's name: bound to laptops, not listed
    "client of a staff sub-CA named alice": (BAD, BAD, BAD, BAD, BAD, BAD, OK, OK),
    **{label: (BAD,) * 8 for label in FAILED_ON_API},
}
SOLO_PATHS = ("/staff/x", "/x")
# The staff CA's own subtree, look-alikes of alice included: without alice in its trust file the
# sub-CA copying her key id is the only issuer OpenSSL finds. Every other kind: bad.
SOLO = {None: (REQ, OK), "dave": (OK, OK), "staff client named alice": (OK, OK),
        "client of a staff sub-CA named alice": (OK, OK), "client of a staff sub-CA named alice with its key id": (OK, OK)}
LEAFONLY_PATHS = ("/leaf/x", "/maybe/x", "/x")
LEAFONLY = {None: (REQ, OK, OK), "alice": (OK, OK, OK), "bob": (OK, OK, OK)}  # every other kind: bad


@pytest.fixture(scope="module")
def matrix(pki, tmp_path_factory):
    """nginx serving MATRIX_POLICY through the echo backend: (port, echo, nginx)."""
    d = _fresh(pki, tmp_path_factory.mktemp("matrix"))
    with running_echo_backend() as echo:
        port = free_port()
        with _serving(d, MATRIX_POLICY, port, echo.port) as n:
            yield port, echo, n


def _check(port, echo, sni: str, paths, expected: dict, pki: Pki, host: str | None = None) -> list[str]:
    """Every client of `pki` (and none) on `paths` of `sni`; the mismatches with `expected`
    (a client not in it expects `bad` everywhere). A 200 must reach the backend with the client's
    own subject and fingerprint; a refusal must not reach it at all."""
    problems = []
    for label in [None, *pki.clients]:
        want = expected.get(label, (BAD,) * len(paths))
        for path, verdict in zip(paths, want):
            before = len(echo.snapshot())
            got = _get(port, sni, path, pki.clients[label] if label else None, host=host)
            seen = echo.snapshot()[before:]
            if _verdict(got) != verdict:
                problems.append(f"{label} {sni} {path}: {_verdict(got)} (expected {verdict})")
            elif verdict == OK and label and "fingerprint" in _forwarded(sni, path):
                cert = pki.certs[label]
                if seen[-1].header_values("X-Client-Fingerprint") != [_fingerprint(cert)]:
                    problems.append(f"{label} {sni} {path}: fingerprint {seen[-1].header_values('X-Client-Fingerprint')}")
            elif verdict != OK and seen:
                problems.append(f"{label} {sni} {path}: refused ({verdict}) but reached the backend")
    return problems


def _forwarded(sni: str, path: str) -> str:
    return "" if path in ("/x", "/healthz") or sni == "pass.test" else "subject fingerprint"


def test_every_client_kind_on_every_route_of_the_shared_server(pki, matrix):
    port, echo, n = matrix
    assert _check(port, echo, "api.test", API_PATHS, API, pki) == []
    log = n.error_log()
    # a certificate signed by alice's key: alice is CA:FALSE, OpenSSL refuses the chain through it
    assert 'verify error: (26:unsuitable certificate purpose)' in log
    # the sub-CA that copies alice's key identifier: OpenSSL takes alice as the issuer, and her key did not sign
    assert 'verify error: (7:certificate signature failure)' in log
    assert 'verify error: (18:self-signed certificate)' in log  # the twin
    assert 'verify error: (10:certificate has expired)' in log and 'verify error: (9:certificate is not yet valid)' in log


def test_every_client_kind_on_the_other_servers_of_the_address(pki, matrix):
    port, echo, _ = matrix
    assert _check(port, echo, "solo.test", SOLO_PATHS, SOLO, pki) == []
    assert _check(port, echo, "leafonly.test", LEAFONLY_PATHS, LEAFONLY, pki) == []


# (client, SNI, Host, path, verdict): the handshake is verified against the SNI's server; a Host of
# another server that verifies clients gets 421 from nginx, and no SNI or an unknown one reaches
# mtlsc's default server, which refuses the handshake.
SNI_HOST = [
    ("alice", "leafonly.test", "solo.test", "/staff/x", MISDIRECTED),
    ("alice", "leafonly.test", "api.test", "/staff/x", MISDIRECTED),
    ("alice", "leafonly.test", "solo.test.", "/staff/x", MISDIRECTED),
    ("alice", "leafonly.test", "solo.test:443", "/staff/x", MISDIRECTED),
    ("alice", "leafonly.test", "pass.test", "/x", MISDIRECTED),
    ("alice", "api.test", "leafonly.test", "/leaf/x", MISDIRECTED),
    ("carol", "api.test", "leafonly.test", "/leaf/x", MISDIRECTED),
    ("dave", "solo.test", "api.test", "/dave/x", MISDIRECTED),
    ("dave", "solo.test", "leafonly.test", "/leaf/x", MISDIRECTED),
    ("client of a staff sub-CA named alice", "solo.test", "api.test", "/alice/x", MISDIRECTED),
    ("client of a staff sub-CA named alice", "solo.test", "leafonly.test", "/leaf/x", MISDIRECTED),
    ("alice's twin", "pass.test", "leafonly.test", "/leaf/x", MISDIRECTED),
    ("alice's twin", "pass.test", "api.test", "/alice/x", MISDIRECTED),
    ("alice", None, "leafonly.test", "/leaf/x", NO_TLS),
    ("alice", None, "api.test", "/alice/x", NO_TLS),
    ("dave", None, "solo.test", "/staff/x", NO_TLS),
    ("alice", "other.test", "leafonly.test", "/leaf/x", NO_TLS),
    ("alice", "127.0.0.1", "leafonly.test", "/leaf/x", NO_TLS),
    # the same server under other spellings: served as itself, still gated
    ("alice", "LEAFONLY.TEST", "leafonly.test", "/leaf/x", OK),
    ("alice", "leafonly.test", "LeafOnly.Test.", "/leaf/x", OK),
    ("dave", "LEAFONLY.TEST", "leafonly.test", "/leaf/x", BAD),
    ("bob", "api.test", "API.TEST", "/alice/x", FORBID),
]


@pytest.mark.parametrize("client, sni, host, path, verdict", SNI_HOST)
def test_sni_host_and_no_sni(pki, matrix, client, sni, host, path, verdict):
    port, echo, _ = matrix
    before = len(echo.snapshot())
    got = _get(port, sni, path, pki.clients[client], host=host)
    assert _verdict(got) == verdict, (got.status, got.body[:100], got.error)
    assert len(echo.snapshot()) == before + (verdict == OK)


# --- session resumption across the servers of one address -----------------------------------------

# Tickets on (only fixed builds targeted, MTLS238 silent). renewed.test trusts alice's renewed
# certificate: the same subject, so the same CA names, the same server certificate, and so the same
# session id context as leafonly.test in nginx; only the fingerprint tells them apart.
RESUME_POLICY = """nginx ">= 1.26.3"
ca laptops { leaf "{d}/alice.pem" }
ca renewed { leaf "{d}/alice-renewed.pem" }
ca staff { bundle "{d}/staff-root.pem"  depth 1 }
""" + _server("leafonly.test", """  route /leaf/ { require laptops  allow any  forward fingerprint }
  route / { public }
""") + _server("renewed.test", """  route /leaf/ { require renewed  allow any  forward fingerprint }
  route / { public }
""") + _server("solo.test", """  route /staff/ { require staff  allow any  forward subject }
  route / { public }
""") + _server("api.test", """  route /leaf/ { require laptops  allow any  forward fingerprint }
  route /staff/ { require staff  allow any  forward subject }
  route / { public }
""")


@pytest.fixture(scope="module")
def resumption(pki, tmp_path_factory):
    d = _fresh(pki, tmp_path_factory.mktemp("resume"))
    with running_echo_backend() as echo:
        port = free_port()
        with _serving(d, RESUME_POLICY, port, echo.port) as n:
            yield port, echo, n


def _session(port: int, client, sni: str, path: str, **kw):
    """A session of `client` on `sni` (TLS 1.3 tickets come after the handshake: a second
    connection resumes the first and carries the ticket on), and whether it resumed there."""
    first = _get(port, sni, path, client, **kw)
    assert _verdict(first) == OK, (first.status, first.error)
    second = _get(port, sni, path, client, session=first.session, **kw)
    third = _get(port, sni, path, client, session=second.session or first.session, **kw)
    assert _verdict(second) == _verdict(third) == OK
    return third.session or second.session or first.session, second.session_reused or third.session_reused


@pytest.mark.parametrize("version, tickets, verdict", [("TLSv1.2", True, MISDIRECTED), ("TLSv1.2", False, BAD),
                                                      ("TLSv1.3", True, NO_TLS)],
                         ids=["tls12-tickets", "tls12-session-id", "tls13"])
def test_a_leafs_session_offered_to_another_server_gets_nothing_there(pki, resumption, version, tickets, verdict):
    """alice's session from leafonly.test, offered to each other server of the address for a route
    alice has no business on there, renewed.test (same session id context) included; and the
    renewed leaf's session of renewed.test offered to leafonly.test. On its own server the session
    resumes (with tickets), so the offer is real. What nginx 1.22 (with the CVE-2025-23419 fix) does:
    TLS 1.2 resumes the ticket but keeps the server it was made on (`client attempted to request the
    server name different from the one that was negotiated`: 421); TLS 1.3 refuses the handshake;
    a TLS 1.2 session id is never resumed (`ssl_session_cache off`), so the client is verified
    afresh and refused. No request reaches the backend."""
    port, echo, n = resumption
    kw = dict(tls_version=version, tickets=tickets)
    offers = []
    session, resumed = _session(port, pki.clients["alice"], "leafonly.test", "/leaf/x", **kw)
    assert resumed == tickets
    offers += [("alice", session, sni, path) for sni, path in
               (("renewed.test", "/leaf/x"), ("solo.test", "/staff/x"), ("api.test", "/staff/x"))]
    session, resumed = _session(port, pki.clients["alice renewed"], "renewed.test", "/leaf/x", **kw)
    assert resumed == tickets
    offers.append(("alice renewed", session, "leafonly.test", "/leaf/x"))
    before = len(echo.snapshot())
    for label, session, sni, path in offers:
        got = _get(port, sni, path, pki.clients[label], session=session, **kw)
        assert _verdict(got) == verdict, (label, sni, path, got.status, got.body, got.error)
        assert got.session_reused == (verdict == MISDIRECTED)
    assert len(echo.snapshot()) == before


# --- real frameworks behind the leaf routes: forged identity headers, path variants ------------------

FRAMEWORK_POLICY = """nginx ">= 1.22"
ca laptops { leaf "{d}/alice.pem" "{d}/bob.pem" }
ca phones { leaf "{d}/carol.pem" }
ca staff { bundle "{d}/staff-root.pem"  depth 1 }
identity alice { subject "CN=alice,O=Laptops" }
""" + _server("api.test", """  route = /healthz { public }
  route /leaf/ { require laptops  allow any  forward subject fingerprint verify }
  route /alice/ { require laptops  allow alice  forward subject fingerprint verify }
  route /maybe/ { optional laptops  forward subject fingerprint verify }
  route /phone/ { require phones  allow any  forward subject }
  route / { public }
""") + _server("solo.test", """  route /staff/ { require staff  allow any }
  route / { public }
""")
FRAMEWORK_SPECS = ["= /healthz", "/leaf/", "/alice/", "/maybe/", "/phone/", "/staff/", "/"]


@pytest.fixture(scope="module", params=["flask", "express"])
def framework(request, pki, tmp_path_factory):
    """nginx serving FRAMEWORK_POLICY in front of one real framework: (port, framework name)."""
    from real_backends import BackendUnavailable, running_backend

    d = _fresh(pki, tmp_path_factory.mktemp(request.param))
    try:
        with running_backend(request.param, FRAMEWORK_SPECS, d / "backend") as backend:
            port = free_port()
            with _serving(d, FRAMEWORK_POLICY, port, backend.port):
                yield port, request.param
    except BackendUnavailable as exc:
        (pytest.skip if exc.skippable else pytest.fail)(str(exc))


def _send(port: int, target: str, client, *, sni: str | None = "api.test", host: str | None = "",
          headers=(), version: str = "HTTP/1.1"):
    from real_backends import get_request, raw_request

    raw = get_request(target, (sni if host == "" else host), headers, version)
    return raw_request(port, sni, raw, cert=client)


def _raw_verdict(resp) -> str:
    if resp.status == 0:
        return NO_TLS
    for name, answer in ANSWERS.items():
        if (resp.status, resp.body) == answer:
            return name
    if resp.backend is not None:
        return f"{OK} {resp.backend['handler']} {resp.backend['target']}"
    return str(resp.status)


def _forged(alice_fp: str) -> list[tuple[str, str]]:
    """What a client other than alice sends to pass for her, in the spellings a backend may read."""
    return [("X-Client-Subject", ALICE), ("x-client-subject", ALICE), ("X-Client-Fingerprint", alice_fp),
            ("X-Client-Verify", "SUCCESS"), ("X_Client_Subject", ALICE), ("X-CLIENT-VERIFY", "SUCCESS"),
            ("X-SSL-Client-S-DN", ALICE), ("ssl-client-subject-dn", ALICE), ("ssl_client_verify", "SUCCESS"),
            ("X-Forwarded-Client-Cert", f"Hash={alice_fp};Subject=\"{ALICE}\""), ("X-Client-Fingerprint", alice_fp)]


# (client, SNI, target, verdict, the identity headers the backend must see: name -> client whose value)
FORGED_CASES = [
    ("bob", "api.test", "/leaf/x", "ok /leaf/ /leaf/x", "bob"),
    ("bob", "api.test", "/alice/x", FORBID, None),
    ("carol", "api.test", "/leaf/x", BAD, None),
    ("carol", "api.test", "/phone/x", "ok /phone/ /phone/x", "carol"),
    (None, "api.test", "/leaf/x", REQ, None),
    (None, "api.test", "/maybe/x", "ok /maybe/ /maybe/x", None),
    ("bob", "api.test", "/maybe/x", "ok /maybe/ /maybe/x", "bob"),
    (None, "api.test", "/x", "ok / /x", None),
    ("bob", "api.test", "/healthz", "ok = /healthz /healthz", None),
    ("bob", "solo.test", "/x", BAD, None),  # bob is no client of solo.test's CA
    (None, "solo.test", "/x", "ok / /x", None),
    # solo.test's public catch-all proxies to the same backend, whose /alice/ handler then runs: with
    # no identity at all (every identity header set empty), which is all a shared backend may rely on
    (None, "solo.test", "/alice/x", "ok /alice/ /alice/x", None),
]


@pytest.mark.parametrize("client, sni, target, verdict, identity", FORGED_CASES,
                         ids=[f"{c}-{s}-{t}" for c, s, t, _, _ in FORGED_CASES])
def test_forged_identity_headers_never_reach_the_framework(pki, framework, client, sni, target, verdict, identity):
    port, name = framework
    alice_fp = _fingerprint(pki.certs["alice"])
    resp = _send(port, target, pki.clients[client] if client else None, sni=sni, headers=_forged(alice_fp))
    assert _raw_verdict(resp) == verdict, (name, resp.status, resp.text[:200])
    if resp.backend is None:
        return
    got = [(k, v) for k, v in resp.backend["headers"]]
    leaked = [(k, v) for k, v in got if "alice" in v or alice_fp in v or "SUCCESS" in v and identity is None]
    assert leaked == [], (name, leaked)
    values = {k.lower(): v for k, v in got}
    if identity:
        cert = pki.certs[identity]
        assert values.get("x-client-subject") == cert.subject.rfc4514_string(), (name, got)
        if target != "/phone/x":
            assert values.get("x-client-fingerprint") == _fingerprint(cert), (name, got)
            assert values.get("x-client-verify") == "SUCCESS"
    elif target == "/maybe/x":
        assert values.get("x-client-verify") == "NONE" and "x-client-subject" not in values, (name, got)
    assert sum(k.lower() == "x-client-subject" for k, _ in got) <= 1, (name, got)


@pytest.mark.parametrize("line", ["X-Client-Subject : " + ALICE, "X-Client-Subject\t: " + ALICE,
                                  " X-Client-Subject: " + ALICE])
def test_identity_header_with_whitespace_in_its_name_is_refused(pki, framework, line):
    """A header name followed by whitespace, or a folded line, which some parsers read as the
    identity header: nginx answers 400 and nothing reaches the framework."""
    name, value = line.split(":", 1)
    resp = _send(framework[0], "/maybe/x", pki.clients["bob"], headers=[(name, value.strip())])
    assert resp.status == 400 and resp.backend is None, (framework[1], resp.status, resp.text[:200])


# (target as sent, verdict without a certificate, with bob's, with alice's): /alice/ admits only
# alice. A 200 names the handler that ran and the target it received.
ALICE_OK = "ok /alice/ /alice/x"
PATH_CASES = [
    ("/alice/x", REQ, FORBID, ALICE_OK),
    ("//alice/x", REQ, FORBID, ALICE_OK),
    ("/%61lice/x", REQ, FORBID, ALICE_OK),
    ("/alice//x", REQ, FORBID, "ok /alice/ /alice/x"),
    ("/alice/x?next=/../leaf/", REQ, FORBID, "ok /alice/ /alice/x?next=/../leaf/"),
    ("https://api.test/alice/x", REQ, FORBID, ALICE_OK),
    ("/alice", "301", "301", "301"),
    ("/alicex", "ok / /alicex", "ok / /alicex", "ok / /alicex"),
    ("/leaf", "301", "301", "301"),
    ("/leafx/../alice/x", "400", "400", "400"),
    ("/leaf/../alice/x", "400", "400", "400"),
    ("/leaf/%2e%2e/alice/x", "400", "400", "400"),
    ("/leaf/.%2E/alice/x", "400", "400", "400"),
    ("/leaf/..%2falice/x", "400", "400", "400"),
    ("/maybe/..;/alice/x", "400", "400", "400"),
    ("/alice;x/y", "400", "400", "400"),
    ("/alice/x;y", "400", "400", "400"),
    ("/ALICE/x", "400", "400", "400"),
    ("/Alice/x", "400", "400", "400"),
    ("/alice%2fx", "400", "400", "400"),
    ("/alice%5cx", "400", "400", "400"),
    ("/alice\\x", "400", "400", "400"),
    ("/alice/%00", "400", "400", "400"),
    ("/alice/%c0%af", "400", "400", "400"),
    ("https://solo.test/alice/x", "421", "421", "421"),
]


@pytest.mark.parametrize("target, none, bob, alice", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_paths_around_a_leaf_route_through_the_framework(pki, framework, target, none, bob, alice):
    """The gated handler runs for alice only, and only on the path nginx judged; nothing else
    reaches it from api.test, whatever spelling (Werkzeug and Express both decode and route)."""
    port, name = framework
    for label, want in ((None, none), ("bob", bob), ("alice", alice)):
        resp = _send(port, target, pki.clients[label] if label else None)
        assert _raw_verdict(resp) == want, (name, label, resp.status, resp.text[:200])


def test_http10_without_host_gets_421(pki, framework):
    """No Host: nginx serves the request by the address's default server (mtlsc's), not by the SNI's,
    and answers 421 to everyone."""
    port, name = framework
    for label, want in ((None, "421"), ("bob", "421"), ("alice", "421")):
        resp = _send(port, "/alice/x", pki.clients[label] if label else None, host=None, version="HTTP/1.0")
        assert _raw_verdict(resp) == want, (name, label, resp.status, resp.text[:200])


# --- how leaf files become fingerprints --------------------------------------------------------------

def _pem(der: bytes, label: str = "CERTIFICATE", width: int = 64, newline: str = "\n") -> bytes:
    import base64
    import textwrap

    body = newline.join(textwrap.wrap(base64.b64encode(der).decode(), width))
    return f"-----BEGIN {label}-----{newline}{body}{newline}-----END {label}-----{newline}".encode()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


QUIRKS_POLICY = """nginx ">= 1.22" with njs
ca laptops { leaf "{d}/pair.pem" }
ca phones { leaf "{d}/carols.pem" }
identity alice1 { fingerprint "{sha1}" }
identity alice256 { fingerprint sha256 "{sha256}" }
""" + _server("api.test", """  route /leaf/ { require laptops  allow any  forward fingerprint }
  route /fp1/ { require laptops  allow alice1  forward fingerprint }
  route /fp256/ { require laptops  allow alice256  forward fingerprint }
  route /phone/ { require phones  allow any  forward fingerprint }
""")


def test_leaf_files_in_odd_shapes_give_nginxs_fingerprints(pki, tmp_path):
    """One leaf file holding two certificates among junk text and a private key, CRLF line ends,
    the `X509 CERTIFICATE` label and 76-column base64; another holding one certificate twice.
    Each holder is admitted, and the fingerprint nginx computes (`$ssl_client_fingerprint`,
    forwarded) is the map key mtlsc wrote; fingerprint identities written in upper case with
    colons (SHA-1 and SHA-256) narrow the route to alice. A certificate with bytes after its DER,
    which OpenSSL would read, does not compile (mtlsc cannot be sure of its fingerprint)."""
    d = _fresh(pki, tmp_path)
    alice, bob, carol = (pki.certs[n] for n in ("alice", "bob", "carol"))
    key = pki.clients["alice"][1].read_bytes()
    (d / "pair.pem").write_bytes(b"Alice's laptop, enrolled 2026\n" + _pem(_der(alice), "X509 CERTIFICATE", 76, "\r\n")
                                 + key + b"\nand Bob's:\n" + _pem(_der(bob), width=76))
    (d / "carols.pem").write_bytes(_pem(_der(carol)) + _pem(_der(carol)))
    colons = lambda digest: ":".join(f"{b:02X}" for b in digest)  # noqa: E731
    text = _fill(QUIRKS_POLICY, sha1=colons(alice.fingerprint(hashes.SHA1())),
                 sha256=colons(alice.fingerprint(hashes.SHA256())))
    (d / "trailing.pem").write_bytes(_pem(_der(alice) + b"\x05\x00"))
    bad = _compile(d, _fill(text.replace("pair.pem", "trailing.pem"), d=d, port=1, backend=1), ok=False)
    assert bad.failed and {"MTLS304", "MTLS035"} & {x.code for x in bad.diagnostics}
    with running_echo_backend() as echo:
        port = free_port()
        result = _compile(d, _fill(text, d=d, port=port, backend=echo.port))
        assert "MTLS303" in {x.code for x in result.diagnostics}  # the key in the leaf file, left out
        conf = next((d / "out" / "nginx").glob("api.test_*.conf")).read_text()
        trust = next((d / "out" / "mtls").glob("api.test_*.ca.pem")).read_bytes()
        assert b"PRIVATE" not in trust and trust.count(b"BEGIN CERTIFICATE") == 3
        with running_nginx(f"include {d}/out/nginx/*.conf;", d / "nginx", ports=[port]):
            for label, path, verdict in (("alice", "/leaf/x", OK), ("bob", "/leaf/x", OK), ("carol", "/phone/x", OK),
                                         ("alice", "/fp1/x", OK), ("bob", "/fp1/x", FORBID),
                                         ("alice", "/fp256/x", OK), ("bob", "/fp256/x", FORBID),
                                         ("carol", "/leaf/x", BAD), ("alice's twin", "/fp1/x", BAD)):
                got = _get(port, "api.test", path, pki.clients[label])
                assert _verdict(got) == verdict, (label, path, got.status, got.body)
                if verdict == OK:
                    fp = _fingerprint(pki.certs[label])
                    assert echo.snapshot()[-1].header_values("X-Client-Fingerprint") == [fp]
                    assert f'"SUCCESS:{fp}" 0;' in conf


RENEWAL_POLICY = """nginx ">= 1.22"
ca laptops { leaf "{d}/old.pem" "{d}/new.pem" }
ca staff { bundle "{d}/staff-root.pem" "{d}/staff-root-renewed.pem" "{d}/staff-root.pem"  depth 1 }
""" + _server("api.test", """  route /leaf/ { require laptops  allow any  forward fingerprint }
  route /staff/ { require staff  allow any  forward subject }
""")


def _as_openssl_makes_it(label: str, d: Path) -> tuple[Path, Path]:
    """A self-signed leaf of alice's name with an authorityKeyIdentifier naming its own key, as
    `openssl req -x509` writes one: OpenSSL then tells two anchors of one name apart by it."""
    key = _key()
    cert = _cert(ALICE, key, aki=_ski(key))
    write_pem(d / f"{label}.pem", cert)
    return d / f"{label}.pem", write_pem(d / f"{label}.key", key)


def test_renewed_certificates_listed_beside_the_old_ones_on_a_server_with_two_cas(pki, tmp_path):
    """MTLS319's advice: list the holder's renewed leaf beside the old one until the switch; same for
    a CA renewed under its old name, and a bundle naming a file twice. The issuer map used to get
    one entry per certificate, so the same name twice, and nginx refused the whole config
    (`conflicting parameter "cn=alice,o=laptops"`: its map keys are case-insensitive). Now each
    name is mapped once, both leaves' holders get in, and each CA's clients only on its routes."""
    d = _fresh(pki, tmp_path)
    old, new = _as_openssl_makes_it("old", d), _as_openssl_makes_it("new", d)
    key = _key()
    write_pem(d / "staff-root-renewed.pem", _cert("CN=staff root,O=Example Corp", key, ca=True, eku=False))
    client_key = _key()
    client = _cert("CN=erin,O=Example Corp", client_key, issuer="CN=staff root,O=Example Corp", signer=key,
                   aki=_ski(key))
    erin = (write_pem(d / "erin.crt", client), write_pem(d / "erin.key", client_key))
    with running_echo_backend() as echo:
        port = free_port()
        with _serving(d, RENEWAL_POLICY, port, echo.port):
            conf = next((d / "out" / "nginx").glob("api.test_*.conf")).read_text()
            assert conf.count('"CN=alice,O=Laptops" ca0;') == 1 and conf.count('"CN=staff root,O=Example Corp" ca1;') == 1
            for client_files, path, verdict in ((old, "/leaf/x", OK), (new, "/leaf/x", OK), (new, "/staff/x", BAD),
                                                (pki.clients["dave"], "/staff/x", OK), (erin, "/staff/x", OK),
                                                (erin, "/leaf/x", BAD), (pki.clients["alice"], "/leaf/x", BAD)):
                got = _get(port, "api.test", path, client_files)
                assert _verdict(got) == verdict, (client_files[0].name, path, got.status, got.body)


SAME_NAME_POLICY = """nginx ">= 1.22"
ca laptops { leaf "{d}/first.pem" "{d}/second.pem" }
""" + _server("leafonly.test", """  route /leaf/ { require laptops  allow any  forward fingerprint }
""")


@pytest.mark.parametrize("key_ids", [False, True], ids=["no-authority-key-id", "own-authority-key-id"])
def test_two_leaves_of_one_name_need_their_own_key_ids(pki, tmp_path, key_ids):
    """Two listed leaves with one subject (a renewal listed beside the old certificate): OpenSSL
    looks the anchor up by name, and without an authorityKeyIdentifier naming its own key a
    holder's certificate may be matched to the other anchor, then refused (`self-signed
    certificate`): exactly one of the two holders gets in. With the key identifiers (as `openssl
    req -x509` writes them) both do. MTLS329 warns of the first case."""
    d = _fresh(pki, tmp_path)
    holders = []
    for label in ("first", "second"):
        key = _key()
        write_pem(d / f"{label}.pem", _cert(ALICE, key, aki=_ski(key) if key_ids else None))
        holders.append((d / f"{label}.pem", write_pem(d / f"{label}.key", key)))
    port = free_port()
    result = _compile(d, _fill(SAME_NAME_POLICY, d=d, port=port, backend=9), ok=False)
    assert not result.failed
    assert ("MTLS329" in {x.code for x in result.diagnostics}) == (not key_ids)
    write_atomic(d / "out", result.outputs)
    with running_nginx(f"include {d}/out/nginx/*.conf;", d / "nginx", ports=[port]) as n:
        # the backend (port 9) is down: 502 means every gate passed
        verdicts = sorted(_get(port, "leafonly.test", "/leaf/x", h).status for h in holders)
        assert verdicts == ([502, 502] if key_ids else [403, 502]), verdicts
        if not key_ids:
            assert "verify error: (18:self-signed certificate)" in n.error_log()


# --- identities a look-alike satisfies: only the fingerprint gate is left --------------------------

LOOKALIKE_POLICY = """nginx ">= 1.22"
ca laptops { leaf "{d}/alice.pem" "{d}/bob.pem" }
ca staff { bundle "{d}/staff-root.pem"  depth 1 }
identity alice_sn { serial "1234"  issuer "CN=alice,O=Laptops" }
identity alice_dn { subject "CN=alice,O=Laptops" }
identity laptops_o { o "Laptops" }
""" + _server("api.test", """  route /sn/ { require laptops  allow alice_sn  forward subject serial }
  route /dn/ { require laptops  allow alice_dn  forward subject }
  route /o/ { require laptops  allow laptops_o  forward subject }
  route /staff/ { require staff  allow laptops_o  forward subject }
""")


def test_a_lookalike_satisfying_every_identity_is_stopped_by_the_fingerprint_gate(pki, tmp_path):
    """A client under a staff sub-CA named alice, with alice's subject and serial: its issuer DN,
    subject and serial are byte for byte alice's, so it passes the issuer binding onto the leaf
    routes and every identity naming alice (serial and issuer, subject, attributes). The routes
    refuse it by fingerprint; with the gate removed from the emitted config, it gets in. On the
    staff route it is refused too: its issuer name binds it to the leaf CA."""
    d = _fresh(pki, tmp_path)
    key, sub_key, client_key = _key(), _key(), _key()  # a staff root of its own: the module's key is not kept
    (d / "staff-root.pem").unlink()
    write_pem(d / "staff-root.pem", _cert("CN=staff root,O=Example Corp", key, ca=True, eku=False))
    sub = _cert(ALICE, sub_key, issuer="CN=staff root,O=Example Corp", signer=key, ca=True, eku=False, aki=_ski(key))
    copy = _cert(ALICE, client_key, issuer=ALICE, signer=sub_key, serial=0x1234, aki=_ski(sub_key))
    lookalike = (write_pem(d / "lookalike.crt", copy, sub), write_pem(d / "lookalike.key", client_key))
    assert copy.serial_number == pki.certs["alice"].serial_number and copy.issuer == pki.certs["alice"].issuer
    paths = ("/sn/x", "/dn/x", "/o/x", "/staff/x")
    with running_echo_backend() as echo:
        port = free_port()
        with _serving(d, LOOKALIKE_POLICY, port, echo.port) as n:
            assert [_verdict(_get(port, "api.test", p, pki.clients["alice"])) for p in paths] == [OK, OK, OK, BAD]
            assert [_verdict(_get(port, "api.test", p, pki.clients["bob"])) for p in paths] == [FORBID, FORBID, OK, BAD]
            assert [_verdict(_get(port, "api.test", p, lookalike)) for p in paths] == [BAD, BAD, BAD, BAD]
            assert n.wait_for_log('verify=SUCCESS sni=api.test host=api.test reused=. proto=TLSv1.3 s_dn="CN=alice')
        conf = next((d / "out" / "nginx").glob("api.test_*.conf"))
        gate = "_not_leaf0) {"
        assert conf.read_text().count(gate) == 3
        drop_lines(conf, gate)
        with running_nginx(f"include {d}/out/nginx/*.conf;", tmp_path / "nginx-without-gate", ports=[port]):
            assert [_verdict(_get(port, "api.test", p, lookalike)) for p in paths] == [OK, OK, OK, BAD]


# --- a holder's name that is another CA's to OpenSSL ----------------------------------------------

SPACED_POLICY = """nginx ">= 1.22"
ca laptops { leaf "{d}/spaced.pem" }
ca staff { bundle "{d}/root-no-aki.pem"  depth 1 }
""" + _server("api.test", """  route /leaf/ { require laptops  allow any }
  route /staff/ { require staff  allow any  forward subject }
""")


def test_a_leaf_named_like_another_cas_certificate_but_for_spaces_is_mtls201(pki, tmp_path, monkeypatch):
    """A holder names their self-made leaf `CN=staff root,O=Example  Corp` (two spaces). nginx's
    maps tell it from the staff root (other bytes), but OpenSSL compares names with runs of
    whitespace as one (and ASCII case folded): looking for the issuer of a staff client that names
    no key (no authorityKeyIdentifier), it takes the leaf and the client is refused (`certificate
    signature failure`): the holder locks the staff CA's clients out. MTLS201 used to compare the
    names as printed; it now compares them as OpenSSL does. Shown with MTLS201 off."""
    d = _fresh(pki, tmp_path)
    root_key, client_key, leaf_key = _key(), _key(), _key()
    write_pem(d / "root-no-aki.pem", _cert("CN=staff root,O=Example Corp", root_key, ca=True, eku=False))
    dave = _cert("CN=dave,O=Example Corp", client_key, issuer="CN=staff root,O=Example Corp", signer=root_key, ski=None)
    dave_files = (write_pem(d / "dave-no-aki.crt", dave), write_pem(d / "dave-no-aki.key", client_key))
    write_pem(d / "spaced.pem", _cert("CN=staff root,O=Example  Corp", leaf_key))
    holder = (d / "spaced.pem", write_pem(d / "spaced.key", leaf_key))
    port = free_port()
    result = _compile(d, _fill(SPACED_POLICY, d=d, port=port, backend=9), ok=False)
    assert result.failed and "MTLS201" in {x.code for x in result.diagnostics}
    from mtlsc.checks import chains

    monkeypatch.setattr(chains, "_name_keys", lambda cert: (cert.subject.lower(),))  # MTLS201 as it was
    with running_echo_backend() as echo:
        with _serving(d, SPACED_POLICY, port, echo.port) as n:
            assert _verdict(_get(port, "api.test", "/leaf/x", holder)) == OK
            assert _verdict(_get(port, "api.test", "/staff/x", dave_files)) == BAD
            assert "verify error: (7:certificate signature failure)" in n.error_log()


# --- a CA nginx takes for one without basicConstraints, beside another -----------------------------

KEY_BINDING_POLICY = """nginx ">= 1.22" with njs
ca laptops { leaf "{d}/alice.pem" }
ca a { bundle "{d}/a-root.pem"  depth 1 }
ca b { bundle "{d}/b-root.pem"  depth 1 }
""" + _server("api.test", """  route /leaf/ { require laptops  allow any }
  route /a/ { require a  allow any  forward subject }
  route /b/ { require b  allow any  forward subject }
""")


def _old_style_root(subject: str, key, how: str) -> x509.Certificate:
    """A root without basicConstraints that OpenSSL still takes for a CA: by its keyUsage
    (keyCertSign) or by its Netscape certificate type (SSL CA)."""
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(subject))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(days=30))
         .add_extension(x509.SubjectKeyIdentifier(_ski(key)), critical=False))
    if how == "key-usage":
        b = b.add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    else:
        b = b.add_extension(x509.UnrecognizedExtension(NS_CERT_TYPE, bytes.fromhex("03020204")), critical=False)
    return b.sign(key, hashes.SHA256())


@pytest.mark.parametrize("how", ["key-usage", "netscape-type"])
def test_a_root_without_basic_constraints_is_a_minter_for_the_key_binding(pki, tmp_path, monkeypatch, how):
    """ca a's root has no basicConstraints; OpenSSL takes it for a CA all the same (keyUsage
    keyCertSign, or a Netscape SSL CA type). Its operator signs a sub-CA named like ca b's root, and
    the sub-CA's client passes the issuer binding of `/b/`. mtlsc's key binding (MTLS232) looked
    only at CA:TRUE certificates for who could mint, so `/b/` was not bound and the client got in
    (shown with the old rule); now b's routes check the signature under b's key in njs."""
    from mtlsc.pki import chains as pki_chains

    d = _fresh(pki, tmp_path)
    a_key, b_key, sub_key = _key(), _key(), _key()
    write_pem(d / "a-root.pem", _old_style_root("CN=a root,O=A", a_key, how))
    write_pem(d / "b-root.pem", _cert("CN=b root,O=B", b_key, ca=True, eku=False))
    clients = {}
    for label, cert, key in (("amy", "CN=amy,O=A", a_key), ("bea", "CN=bea,O=B", b_key)):
        k = _key()
        issuer = "CN=a root,O=A" if label == "amy" else "CN=b root,O=B"
        clients[label] = (write_pem(d / f"{label}.crt", _cert(cert, k, issuer=issuer, signer=key, aki=_ski(key))),
                          write_pem(d / f"{label}.key", k))
    sub = _cert("CN=b root,O=B", sub_key, issuer="CN=a root,O=A", signer=a_key, ca=True, eku=False, aki=_ski(a_key))
    k = _key()
    clients["mallory"] = (write_pem(d / "mallory.crt", _cert("CN=mallory,O=B", k, issuer="CN=b root,O=B",
                                                             signer=sub_key, aki=_ski(sub_key)), sub),
                          write_pem(d / "mallory.key", k))
    expected = {"amy": (OK, BAD), "bea": (BAD, OK), "mallory": (BAD, BAD), "alice": (BAD, BAD)}
    clients["alice"] = pki.clients["alice"]
    with running_echo_backend() as echo:
        port = free_port()
        result = _compile(d, _fill(KEY_BINDING_POLICY, d=d, port=port, backend=echo.port))
        assert any(x.code == "MTLS232" and "of ca `a` can sign" in x.message for x in result.diagnostics), \
            [x.message for x in result.diagnostics if x.code == "MTLS232"]
        with _serving(d, KEY_BINDING_POLICY, port, echo.port):
            for label, want in expected.items():
                got = tuple(_verdict(_get(port, "api.test", p, clients[label])) for p in ("/a/x", "/b/x"))
                assert got == want, (label, got)
        monkeypatch.setattr(pki_chains, "ca_certs", lambda certs: [c for c in certs if c.is_ca])  # the old rule
        from mtlsc.pki import binding

        monkeypatch.setattr(binding, "ca_certs", pki_chains.ca_certs)
        with _serving(d, KEY_BINDING_POLICY, port, echo.port):
            assert _verdict(_get(port, "api.test", "/b/x", clients["mallory"])) == OK
