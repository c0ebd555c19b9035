"""The lab PKI generator: chain shapes, CRLs, and the file layout `build_lab_pki` promises."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlsc import dn, ir
from mtlsc.model.evaluate import Client, identity_matches
from mtlsc.lab.pki import (
    CaChain, build_lab_pki, issue_client, issue_server, make_chain, make_crl, make_root, write_pem,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _verifies(leaf: x509.Certificate, chain: CaChain, at: datetime = NOW) -> bool:
    """RFC 5280 path validation by cryptography when it can take a SAN-less client certificate
    (>= 45: custom extension policies), else signature and date checks along the chain."""
    try:
        from cryptography.x509 import verification as v
        ext = v.ExtensionPolicy
        builder = (v.PolicyBuilder().store(v.Store([chain.root.cert])).time(at)
                   .extension_policies(ca_policy=ext.webpki_defaults_ca(), ee_policy=ext.permit_all()))
    except (ImportError, AttributeError):
        builder = None
    if builder is not None:
        try:
            builder.build_client_verifier().verify(leaf, [i.cert for i in chain.intermediates])
            return True
        except v.VerificationError:
            return False
    certs = [leaf, *[i.cert for i in reversed(chain.intermediates)], chain.root.cert]
    try:
        for child, parent in zip(certs, certs[1:]):
            child.verify_directly_issued_by(parent)
    except Exception:
        return False
    return all(c.not_valid_before_utc <= at <= c.not_valid_after_utc for c in certs)


@pytest.fixture(scope="module")
def chain() -> CaChain:
    return make_chain("acme", 2, now=NOW)


def test_chain_shape(chain):
    assert len(chain.intermediates) == 2 and chain.issuing is chain.intermediates[-1]
    assert chain.members == (chain.root, *chain.intermediates)
    root = chain.root.cert
    assert dn.nginx_dn_of(root.subject) == "CN=acme root,O=mtlsc lab"
    assert root.subject == root.issuer
    root.verify_directly_issued_by(root)
    for parent, child in zip(chain.members, chain.members[1:]):
        child.cert.verify_directly_issued_by(parent.cert)
        aki = child.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = parent.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest
    for m in chain.members:
        bc = m.cert.extensions.get_extension_for_class(x509.BasicConstraints)
        ku = m.cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert bc.critical and bc.value.ca and ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert make_chain("solo", 0, now=NOW).issuing is not None


def test_root_options():
    root = make_root("x", now=NOW, org="Acme", days=10, path_length=0)
    assert dn.nginx_dn_of(root.cert.subject) == "CN=x,O=Acme"
    assert root.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert root.cert.not_valid_after_utc == NOW + timedelta(days=10)


def test_client_certificate(chain):
    leaf = issue_client(chain.issuing, _name("alice"), now=NOW, serial=0x0A00000001, ocsp_url="http://127.0.0.1:1/")
    cert = leaf.cert
    assert cert.serial_number == 0x0A00000001 and cert.issuer == chain.issuing.cert.subject
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert "http://127.0.0.1:1/" in str(cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value)
    assert _verifies(cert, chain)
    assert "BEGIN CERTIFICATE" in leaf.cert_pem() and "BEGIN PRIVATE KEY" in leaf.key_pem()


def test_expired_client(chain):
    leaf = issue_client(chain.issuing, _name("old"), now=NOW, not_before=NOW - timedelta(days=30), days=1)
    assert leaf.cert.not_valid_after_utc < NOW
    assert not _verifies(leaf.cert, chain)


def test_untrusted_client_fails(chain):
    other = make_chain("evil", 1, now=NOW)
    leaf = issue_client(other.issuing, _name("alice"), now=NOW)
    assert not _verifies(leaf.cert, chain)


def test_server_certificate(chain):
    srv = issue_server(chain.root, ["api.example.com", "*.example.com", "127.0.0.1", "localhost", "localhost"], now=NOW)
    san = srv.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.example.com", "*.example.com", "localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ExtendedKeyUsageOID.SERVER_AUTH in srv.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value


def test_crl_revokes_and_expires(chain):
    crl = make_crl(chain.issuing, [5, 7, 5], now=NOW)
    assert sorted(r.serial_number for r in crl) == [5, 7]
    assert crl.is_signature_valid(chain.issuing.key.public_key())
    assert crl.next_update_utc == NOW + timedelta(days=30) and crl.last_update_utc == NOW
    old = make_crl(chain.root, [], now=NOW, next_update=-timedelta(days=1))
    assert old.last_update_utc < old.next_update_utc < NOW


def test_write_pem(tmp_path, chain):
    leaf = issue_client(chain.issuing, _name("a"), now=NOW)
    bundle = write_pem(tmp_path / "deep" / "dir" / "bundle.pem", chain.root.cert, chain.issuing.cert,
                       make_crl(chain.root, [], now=NOW))
    assert len(x509.load_pem_x509_certificates(bundle.read_bytes())) == 2
    assert b"BEGIN X509 CRL" in bundle.read_bytes()
    key = write_pem(tmp_path / "a.key", leaf.key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        write_pem(tmp_path / "x.pem", "not a certificate")


# ----- build_lab_pki -------------------------------------------------------------------------

SERIAL_ISSUER = "CN=Acme Issuing CA,O=Acme"


def _policy(tmp: Path) -> ir.Policy:
    ca = ir.Ca("acme", (str(tmp / "pki/root.pem"), str(tmp / "pki/int.pem")), 1,
               (str(tmp / "pki/root.crl"), str(tmp / "pki/int.crl")), None)
    other = ir.Ca("other", (str(tmp / "pki/other.pem"),), 0, (), None)
    idents = (
        ir.Identity("alice", ir.IdentityKind.SUBJECT, subject="CN=alice,O=Acme"),
        ir.Identity("ops", ir.IdentityKind.ATTRS, attrs=(ir.AttrMatch("O", "eq", "Acme"),
                                                        ir.AttrMatch("CN", "re", "^ops-[a-z]+$"))),
        ir.Identity("pinned", ir.IdentityKind.SERIAL, serial="0A00000001", issuer=SERIAL_ISSUER),
        ir.Identity("fp", ir.IdentityKind.FINGERPRINT, fingerprint="ab" * 20),
    )
    rej = ir.Rejections(ir.Response(401, "no"), ir.Response(403, "bad"), ir.Response(403, "forbidden"))
    routes = (
        ir.Route(ir.PathMatch.PREFIX, "/a/", ir.Mode.REQUIRE, ca, idents, False, (), "http://127.0.0.1:9"),
        ir.Route(ir.PathMatch.PREFIX, "/o/", ir.Mode.REQUIRE, other, (), True, (), "http://127.0.0.1:9"),
    )
    server = ir.Server(("api.example.com",), (ir.Listen(None, 8443),), "/c.pem", "/k.pem", "http://127.0.0.1:9",
                       False, "/etc/nginx/mtls", routes, rej)
    return ir.Policy((1, 22, 1), (ca, other), idents, (server,))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lab")
    policy = _policy(tmp)
    return policy, build_lab_pki(policy, tmp / "out", now=NOW)


def test_layout(lab):
    policy, pki = lab
    names = sorted(str(p.relative_to(pki.out_dir)) for p in pki.out_dir.rglob("*") if p.is_file())
    assert names == sorted([
        *(f"clients/acme/{n}.{e}" for n in ("client", "expired", "revoked", "id-alice", "id-ops", "id-pinned",
                                            "near-alice-1", "near-alice-2", *(f"near-ops-{n}" for n in range(1, 11)),
                                            "lookalike-by-other")
          for e in ("crt", "key")),
        *(f"clients/other/{n}.{e}" for n in ("client", "expired", "lookalike-by-acme") for e in ("crt", "key")),
        "clients/untrusted/client.crt", "clients/untrusted/client.key",
        "server-ca.pem", "server/api.example.com_8443.crt", "server/api.example.com_8443.key",
    ])
    assert pki.unsatisfiable == ("fp",)
    assert pki.clients_dir == pki.out_dir / "clients" and pki.server_ca == pki.out_dir / "server-ca.pem"
    for ca in policy.cas:
        chain = pki.chains[ca.name]
        assert [_load(Path(p)) for p in ca.bundle] == [m.cert for m in chain.members]
    assert stat.S_IMODE(pki.client("acme/client")[1].stat().st_mode) == 0o600


def test_clients_verify_as_intended(lab):
    _, pki = lab
    chain = pki.chains["acme"]
    for name in ("client", "revoked", "id-alice", "id-ops", "id-pinned"):
        assert _verifies(_load(pki.client(f"acme/{name}")[0]), chain), name
    assert not _verifies(_load(pki.client("acme/expired")[0]), chain)
    assert not _verifies(_load(pki.client("untrusted/client")[0]), chain)
    assert _verifies(_load(pki.client("other/client")[0]), pki.chains["other"])
    assert dn.nginx_dn_of(_load(pki.client("untrusted/client")[0]).subject) == "CN=alice,O=Acme"


def test_lookalikes_copy_the_issuing_ca_name_under_the_other_root(lab):
    _, pki = lab
    leaf, sub = x509.load_pem_x509_certificates(pki.client("acme/lookalike-by-other")[0].read_bytes())
    acme, other = pki.chains["acme"], pki.chains["other"]
    assert sub.subject == acme.issuing.cert.subject and sub.issuer == other.root.cert.subject
    assert sub.public_key() != acme.issuing.cert.public_key() and leaf.issuer == sub.subject
    sub.verify_directly_issued_by(other.root.cert)
    leaf.verify_directly_issued_by(sub)


def test_identities_are_satisfied(lab):
    policy, pki = lab
    by_name = {i.name: i for i in policy.identities}
    for name in ("alice", "ops"):
        cert = _load(pki.client(f"acme/id-{name}")[0])
        assert identity_matches(by_name[name], Client(dn.nginx_dn_of(cert.subject), "")), name
    stranger = dn.nginx_dn_of(_load(pki.client("acme/client")[0]).subject)
    assert not any(identity_matches(i, Client(stranger, "")) for i in policy.identities[:2])
    pinned = _load(pki.client("acme/id-pinned")[0])
    assert dn.nginx_serial(pinned.serial_number) == "0A00000001"
    assert dn.nginx_dn_of(pinned.issuer) == SERIAL_ISSUER
    # the issuer DN of the pin went to the issuing intermediate, not the root
    assert dn.nginx_dn_of(pki.chains["acme"].issuing.cert.subject) == SERIAL_ISSUER


def test_crls_one_per_ca_certificate(lab):
    policy, pki = lab
    ca, chain = policy.cas[0], pki.chains["acme"]
    root_crl, int_crl = (x509.load_pem_x509_crl(Path(p).read_bytes()) for p in ca.crls)
    assert root_crl.is_signature_valid(chain.root.key.public_key())
    assert int_crl.is_signature_valid(chain.issuing.key.public_key())
    revoked = _load(pki.client("acme/revoked")[0]).serial_number
    assert [r.serial_number for r in int_crl] == [revoked]
    assert list(root_crl) == []


def test_server_certificate_from_lab_ca(lab):
    _, pki = lab
    crt, _ = pki.server("api.example.com_8443")
    cert, issuing = x509.load_pem_x509_certificates(crt.read_bytes())  # the chain nginx sends
    cert.verify_directly_issued_by(issuing)
    issuing.verify_directly_issued_by(_load(pki.server_ca))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.example.com", "localhost"]


def test_fewer_crls_than_certificates_is_kept(tmp_path):
    ca = ir.Ca("gap", (str(tmp_path / "r.pem"), str(tmp_path / "i.pem")), 1, (str(tmp_path / "r.crl"),), None)
    rej = ir.Rejections(ir.Response(401, "n"), ir.Response(403, "b"), ir.Response(403, "f"))
    route = ir.Route(ir.PathMatch.PREFIX, "/", ir.Mode.REQUIRE, ca, (), True, (), "http://127.0.0.1:9")
    server = ir.Server(("x.test",), (ir.Listen("127.0.0.1", 9443),), "/c", "/k", "http://127.0.0.1:9",
                       False, "/m", (route,), rej)
    pki = build_lab_pki(ir.Policy((1, 22, 1), (ca,), (), (server,)), tmp_path / "out", now=NOW)
    crl = x509.load_pem_x509_crl((tmp_path / "r.crl").read_bytes())
    assert crl.is_signature_valid(pki.chains["gap"].root.key.public_key())
    assert list(crl) == []  # the revoked client is the intermediate's: no CRL file for it
    assert pki.client("gap/revoked")[0].exists()
