"""The user's own CAs, for `mtlsc lab` and `mtlsc mint-cast`: their certificate and CRL files as
they are, and the keys the user hands over (`--ca-key NAME=KEY[:CERT]`).

A test client of the user's CA is a real credential of that CA, so it can only be made with a
key the user gives; a certificate the user already has (a `cert:` file of a policy test) gets
the same answer from the lab as from the user's nginx only when the lab trusts exactly the
user's CA files. Nothing here writes to the user's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from mtlsc import dn, files, ir
from mtlsc.lab.pki import CaChain, Issued, UserCa

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class UserCaError(ValueError):
    """A `--ca-key` or CA file that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class CaKey:
    """`--ca-key NAME=KEY[:CERT]`: the private key of a certificate of ca NAME. CERT names that
    certificate when it is not in the CA's bundle (an issuing CA below the trusted ones)."""

    ca: str
    key: Path
    cert: Path | None = None


def parse_ca_key(text: str) -> CaKey:
    """`NAME=KEY` or `NAME=KEY:CERT` (a KEY path that exists as written may itself hold a `:`)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UserCaError(f"`{text}` is not NAME=KEY.pem or NAME=KEY.pem:CERT.pem")
    if Path(rest).exists() or ":" not in rest:
        return CaKey(name, Path(rest))
    key, _, cert = rest.rpartition(":")
    return CaKey(name, Path(key), Path(cert) if cert else None)


def read_certificates(path: str | Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file, or the one of a DER file."""
    data = files.read_bytes(str(path))
    try:
        return x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data else [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise UserCaError(f"{path}: not a certificate file ({exc})") from None


def read_private_key(path: str | Path):
    data = files.read_bytes(str(path))
    try:
        load = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
        return load(data, password=None)
    except TypeError:
        raise UserCaError(f"{path} is encrypted: mtlsc takes an unencrypted key; decrypt a copy that only you can "
                          f"read (`openssl pkey -in {path} -out COPY.pem`) and delete it afterwards") from None
    except ValueError as exc:
        raise UserCaError(f"{path}: not a private key ({exc})") from None


def read_crl(path: str | Path) -> x509.CertificateRevocationList | None:
    """The CRL of a PEM or DER file; None when it cannot be read (the checks say why)."""
    try:
        data = files.read_bytes(str(path))
        return x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
    except (OSError, ValueError):
        return None


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _root_first(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """The bundle's certificates ordered so each comes after the one that signed it (as the
    policy's bundle is written; users' files may hold them in any order)."""
    def depth(cert: x509.Certificate) -> int:
        for n in range(len(certs) + 1):  # bounded: a loop of names ends here
            parent = next((p for p in certs if p is not cert and p.subject == cert.issuer and _issued_by(cert, p)), None)
            if parent is None:
                return n
            cert = parent
        return len(certs)
    return sorted(certs, key=depth)


def _public(cert_or_key) -> bytes:
    return cert_or_key.public_key().public_bytes(*_SPKI)


def read_bundle(ca: ir.Ca) -> list[x509.Certificate]:
    """The certificates of the CA's bundle files, root first."""
    certs: list[x509.Certificate] = []
    for path in ca.bundle:
        try:
            certs += read_certificates(path)
        except OSError as exc:
            raise UserCaError(f"ca {ca.name}: cannot read {path}: {exc.strerror or exc}") from None
    if not certs:
        raise UserCaError(f"ca {ca.name}: its bundle holds no certificate")
    return _root_first(certs)


def load_user_ca(ca: ir.Ca, keys: list[CaKey], *, ocsp_in_lab: bool = False) -> UserCa:
    """The CA `ca` as its files have it, with the keys in `keys` (those for `ca.name`) attached to
    their certificates. `ocsp_in_lab`: the lab answers OCSP for this CA itself, which needs the
    key of every CA certificate it is asked about (`cast_gap` says which is missing)."""
    bundle = read_bundle(ca)
    held: dict[bytes, object] = {}
    below: list[Issued] = []
    for k in (k for k in keys if k.ca == ca.name):
        key = read_private_key(k.key)
        if k.cert is None:
            match = next((c for c in bundle if _public(c) == _public(key)), None)
            if match is None:
                raise UserCaError(f"{k.key} is not the key of a certificate in ca {ca.name}'s bundle; name its "
                                  f"certificate: --ca-key {ca.name}={k.key}:CERT.pem")
            held[match.public_bytes(serialization.Encoding.DER)] = key
            continue
        cert = read_certificates(k.cert)[0]
        if _public(cert) != _public(key):
            raise UserCaError(f"{k.key} is not the key of {k.cert}")
        if cert in bundle:
            held[cert.public_bytes(serialization.Encoding.DER)] = key
        elif any(_issued_by(cert, c) for c in bundle) and not below:
            below.append(Issued(cert, key))
        else:
            raise UserCaError(f"{k.cert} is neither in ca {ca.name}'s bundle nor signed by a certificate in it"
                              + (" (one such issuing CA per ca)" if below else ""))
    members = [Issued(c, held.get(c.public_bytes(serialization.Encoding.DER))) for c in bundle]
    chain = CaChain(members[0], tuple(members[1:]), tuple(below), user=True)
    if ca.leaf:  # a key of a listed leaf would sign certificates nginx refuses: they are not listed
        return UserCa(chain, {}, LEAF_GAP)
    return UserCa(chain, _resign(ca, chain), _ocsp_gap(ca, chain) if ocsp_in_lab else None)


LEAF_GAP = ("a `leaf` CA trusts exactly its holders' own certificates: of its cast the lab mints only what nginx "
            "must refuse (a twin, an expired copy); name the holders' certificates in a policy test (*.mtls-test.yaml)")


def _resign(ca: ir.Ca, chain: CaChain) -> dict[int, tuple[Issued, tuple[x509.RevokedCertificate, ...]]]:
    """The user's CRLs the lab can sign again (it has their issuer's key), with their entries."""
    out = {}
    keyed = [m for m in chain.members if m.key is not None]
    for i, path in enumerate(ca.crls):
        crl = read_crl(path)
        issuer = next((m for m in keyed if crl is not None and crl.issuer == m.cert.subject
                       and crl.is_signature_valid(m.cert.public_key())), None)
        if issuer is not None:
            out[i] = (issuer, tuple(crl))
    return out


def ocsp_gap_for(ca: ir.Ca, chain: CaChain, issuer: x509.Certificate) -> str | None:
    """Why the lab's OCSP responder cannot answer for a client `issuer` signed (None: it can).
    nginx asks about the client (`ocsp leaf`) and about each intermediate too (`ocsp on`); each
    answer is signed by a responder certificate of the asked certificate's issuer, so the lab
    needs that issuer's key."""
    path = [m for m in (*chain.members, *chain.below)]
    at = next((i for i, m in enumerate(path) if m.cert == issuer), None)
    if at is None:
        return None
    asked_of = [path[at]] + (list(reversed(path[:at])) if ca.ocsp is not None and ca.ocsp.mode == "on" else [])
    missing = next((m for m in asked_of if m.key is None), None)
    if missing is None:
        return None
    name = dn.nginx_dn_of(missing.cert.subject)
    return (f"ca {ca.name} checks OCSP and the lab answers it itself, which needs the key of `{name}`: "
            f"pass --ca-key {ca.name}=KEY.pem")


def _ocsp_gap(ca: ir.Ca, chain: CaChain) -> str | None:
    signer = chain.signer
    return ocsp_gap_for(ca, chain, signer.cert) if signer is not None else None
