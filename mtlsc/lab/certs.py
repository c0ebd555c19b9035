"""Certificate primitives for the lab's throwaway PKIs: EC P-256 keys, SHA-256 signatures; roots,
intermediates, client, server and OCSP signer certificates, CRLs, PEM files. Every function takes
the current time as `now`, so dates are reproducible in tests (keys and serial numbers are random).
Never for production: keys are written unencrypted."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from mtlsc.san import Sans


# Certificates start a little before `now`, so a machine whose clock lags slightly still accepts them.
BACKDATE = timedelta(hours=1)
LAB_ORG = "mtlsc lab"
MAX_SERIAL = 2**159 - 1  # RFC 5280: at most 20 octets, positive


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key: an EC key mtlsc made, or the user's own CA key, of any
    type (`mtlsc lab --ca-key`); None for a CA certificate of the user's whose key mtlsc lacks."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes | None

    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def key_pem(self) -> str:
        """PKCS#8, unencrypted."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()


@dataclass(frozen=True, slots=True)
class CaChain:
    """A root and the intermediates below it, root-most first.

    A chain mtlsc minted has every key. A `user` chain is the user's own CA files as they are
    (mtlsc.lab.userca): only the keys the user handed over, and maybe an issuing CA `below` the
    bundle whose certificate its clients send along."""

    root: Issued
    intermediates: tuple[Issued, ...] = ()
    below: tuple[Issued, ...] = ()
    user: bool = False

    @property
    def issuing(self) -> Issued:
        """The CA that issues leaves: the last intermediate, or the root."""
        return self.intermediates[-1] if self.intermediates else self.root

    @property
    def members(self) -> tuple[Issued, ...]:
        """Root first, then each intermediate: the order of a policy's `bundle` files."""
        return (self.root, *self.intermediates)

    @property
    def signer(self) -> Issued | None:
        """Who issues test clients: the deepest certificate whose key is known (a minted chain:
        `issuing`); None when no key is."""
        return next((m for m in reversed((*self.members, *self.below)) if m.key is not None), None)

    @property
    def sent_with_leaves(self) -> tuple[x509.Certificate, ...]:
        """Certificates a client of `signer` sends after its own: those below the bundle."""
        return tuple(m.cert for m in self.below) if self.signer in self.below else ()


def _name(cn: str, org: str) -> x509.Name:
    # DER order is root-most first, so nginx prints this as `CN=...,O=...`. CN is capped at 64.
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])])


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def new_client_key() -> ec.EllipticCurvePrivateKey:
    """A key for a client certificate the lab mints more than once (an SPKI pin's holder)."""
    return _new_key()


def spki_sha256(public_key) -> str:
    """SHA-256 of a public key's DER SubjectPublicKeyInfo, as an SPKI pin writes it."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def signing_hash(key) -> hashes.HashAlgorithm | None:
    """The digest to sign with `key`: SHA-256, none for EdDSA keys (they hash internally)."""
    return None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The issuer's own subject key identifier when it has one: a user's CA may compute its SKI
    another way than RFC 5280's SHA-1, and OpenSSL builds chains by matching the two."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _base(subject: x509.Name, issuer: Issued | None, key: ec.EllipticCurvePrivateKey,
          not_before: datetime, not_after: datetime, serial: int | None) -> x509.CertificateBuilder:
    """Builder with the fields every lab certificate has: names, dates, serial, SKI and AKI."""
    public = key.public_key()
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer.cert.subject if issuer else subject)
         .public_key(public)
         .serial_number(serial if serial is not None else x509.random_serial_number())
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))
    if issuer is not None:
        b = b.add_extension(_aki(issuer.cert), critical=False)
    return b


def _signed(b: x509.CertificateBuilder, signer_key, key) -> Issued:
    return Issued(b.sign(signer_key, signing_hash(signer_key)), key)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                         crl_sign=True, encipher_only=False, decipher_only=False)


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                         crl_sign=False, encipher_only=False, decipher_only=False)


def _aia(ocsp_url: str) -> x509.AuthorityInformationAccess:
    return x509.AuthorityInformationAccess(
        [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))])


def _make_ca(issuer: Issued | None, subject: x509.Name, now: datetime, days: int,
             path_length: int | None, ocsp_url: str | None = None) -> Issued:
    key = _new_key()
    b = (_base(subject, issuer, key, now - BACKDATE, now + timedelta(days=days), None)
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(_ca_usage(), critical=True))
    if ocsp_url:
        b = b.add_extension(_aia(ocsp_url), critical=False)
    return _signed(b, issuer.key if issuer else key, key)


def make_root(cn: str, *, now: datetime, org: str = LAB_ORG, days: int = 3650,
              path_length: int | None = None, subject: x509.Name | None = None) -> Issued:
    """A self-signed CA. `subject` overrides `cn`/`org` (to mimic a real CA's DN)."""
    return _make_ca(None, subject or _name(cn, org), now, days, path_length)


def make_intermediate(issuer: Issued, cn: str, *, now: datetime, org: str = LAB_ORG, days: int = 3650,
                      path_length: int | None = None, subject: x509.Name | None = None,
                      ocsp_url: str | None = None) -> Issued:
    """A CA signed by `issuer`. `subject` overrides `cn`/`org`; `ocsp_url` goes in its AIA."""
    return _make_ca(issuer, subject or _name(cn, org), now, days, path_length, ocsp_url)


def make_chain(prefix: str, intermediates: int, *, now: datetime,
               subjects: Mapping[int, x509.Name] | None = None, ocsp_url: str | None = None) -> CaChain:
    """A root `<prefix> root` and `intermediates` CAs below it, each signed by the previous one.

    `subjects` optionally replaces the DN of member i (0 = root), e.g. so that a certificate
    pinned by serial and issuer DN can be minted. `ocsp_url` goes in each intermediate's AIA
    (`ocsp on` asks about intermediates too).
    """
    subjects = subjects or {}
    root = make_root(f"{prefix} root", now=now, subject=subjects.get(0))
    chain = [root]
    for i in range(1, intermediates + 1):
        chain.append(make_intermediate(chain[-1], f"{prefix} intermediate {i}", now=now, subject=subjects.get(i),
                                       ocsp_url=ocsp_url))
    return CaChain(root, tuple(chain[1:]))


def issue_client(issuer: Issued | None, subject: x509.Name, *, now: datetime, days: int = 365,
                 not_before: datetime | None = None, serial: int | None = None,
                 ocsp_url: str | None = None, sans: Sans = Sans(), key=None) -> Issued:
    """A client (leaf) certificate valid from `not_before` (default: just before `now`) for `days`;
    self-signed when `issuer` is None (a `leaf` CA's listed certificate).

    An expired certificate: `not_before=now - timedelta(days=30), days=1`. `sans` go in its
    subjectAltName, critical when the subject is empty (RFC 5280 §4.2.1.6), as in SPIFFE SVIDs.
    `key`: the client's key, for a renewal (default: a new one).
    """
    key = key or _new_key()
    start = not_before or now - BACKDATE
    b = (_base(subject, issuer, key, start, start + timedelta(days=days), serial)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(_leaf_usage(), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if ocsp_url:
        b = b.add_extension(_aia(ocsp_url), critical=False)
    if sans.names:
        b = b.add_extension(x509.SubjectAlternativeName([_general_name(k, v) for k, v in sans.names]),
                            critical=len(subject) == 0)
    return _signed(b, issuer.key if issuer else key, key)


def _general_name(kind: str, value: str) -> x509.GeneralName:
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    if kind == "dns":
        return x509.DNSName(value)
    if kind == "email":
        return x509.RFC822Name(value)
    return x509.IPAddress(ipaddress.ip_address(bytes.fromhex(value)))


def issue_ocsp_signer(issuer: Issued, *, now: datetime, days: int = 365) -> Issued:
    """A delegated OCSP responder certificate of `issuer` (RFC 6960 §4.2.2.2): it signs the
    answers about certificates `issuer` issued, as production responders do, so the CA key
    never has to sit on the responder."""
    key = _new_key()
    cn = f"OCSP responder of {issuer.cert.subject.rfc4514_string()}"
    b = (_base(_name(cn, LAB_ORG), issuer, key, now - BACKDATE, now + timedelta(days=days), None)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(_leaf_usage(), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
         .add_extension(x509.OCSPNoCheck(), critical=False))
    return _signed(b, issuer.key, key)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_server(issuer: Issued, names: list[str], *, now: datetime, days: int = 365) -> Issued:
    """A server certificate for DNS names and IP addresses (SAN), CN = the first name."""
    key = _new_key()
    unique = list(dict.fromkeys(names))
    b = (_base(_name(unique[0], LAB_ORG), issuer, key, now - BACKDATE, now + timedelta(days=days), None)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(_leaf_usage(), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
         .add_extension(x509.SubjectAlternativeName([_san(n) for n in unique]), critical=False))
    return _signed(b, issuer.key, key)


def make_crl(issuer: Issued, revoked_serials: Iterable[int], *, now: datetime,
             next_update: timedelta = timedelta(days=30),
             last_update: datetime | None = None,
             keep: Iterable[x509.RevokedCertificate] = ()) -> x509.CertificateRevocationList:
    """A CRL of `issuer` listing `revoked_serials`, and the entries `keep` (of the user's own CRL)
    as they are. A negative `next_update` gives an expired CRL (last updated twice that long ago)."""
    if last_update is None:
        last_update = now if next_update >= timedelta(0) else now + 2 * next_update
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(issuer.cert.subject)
         .last_update(last_update)
         .next_update(now + next_update)
         # A CRL number that grows with time, so a reissued CRL supersedes the old one.
         .add_extension(x509.CRLNumber(int(last_update.timestamp())), critical=False)
         .add_extension(_aki(issuer.cert), critical=False))
    kept = {r.serial_number: r for r in keep}
    for serial in sorted(kept):
        b = b.add_revoked_certificate(kept[serial])
    for serial in sorted(set(revoked_serials) - set(kept)):
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last_update).build())
    return b.sign(issuer.key, signing_hash(issuer.key))


def _pem_of(obj) -> tuple[bytes, bool]:
    """(PEM bytes, is it secret) for a certificate, CRL or private key."""
    if isinstance(obj, (x509.Certificate, x509.CertificateRevocationList)):
        return obj.public_bytes(serialization.Encoding.PEM), False
    if hasattr(obj, "private_bytes"):  # any private key type
        return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()), True
    raise TypeError(f"cannot write {type(obj).__name__} as PEM")


def write_pem(path: str | Path, *objects) -> Path:
    """Write certificates, CRLs and keys concatenated; a file holding a key is made mode 0600."""
    path = Path(path)
    parts = [_pem_of(o) for o in objects]
    secret = any(s for _, s in parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create with the final mode, so a key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        if secret:
            os.fchmod(f.fileno(), 0o600)
        f.write(b"".join(p for p, _ in parts))
    return path
