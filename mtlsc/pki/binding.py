"""Which CAs of a server could stand in for each other, and the public keys that stop them.

nginx verifies a client against one trust file per server and shows a route only names: a route is
bound to its CA by `$ssl_client_i_dn`. Any CA in that file that may sign a sub-CA can give the
sub-CA another CA's name (root or issuing CA, key identifiers included: all copyable), and its
clients then pass that CA's routes with a byte-identical issuer DN. What cannot be copied is the
key: where such a copy is possible, the emitted config also checks, at request time, that the
client certificate's signature verifies under a public key of the route's CA (njs WebCrypto,
docs/language.md "Several CAs on one server").
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mtlsc import ir
from mtlsc.dn import der
from mtlsc.pki.chains import ca_certs, chain_allows_sub_ca, intermediates, names_allow, parsed, root_path
from mtlsc.pki import CertInfo

# Curves njs WebCrypto verifies ECDSA on, with the size of r and s in its raw signature form.
_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


@dataclass(frozen=True, slots=True)
class Impersonation:
    """`minter` (a certificate of ca `by`) can sign a sub-CA named like `copied` (of ca `of`), and
    that sub-CA's clients still fit in the server's verify depth."""

    by: ir.Ca
    minter: CertInfo
    of: ir.Ca
    copied: tuple[CertInfo, ...]  # every certificate of `of` whose name it may copy


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One CA public key as the njs check imports it."""

    kty: str  # RSA | EC
    curve: str  # WebCrypto namedCurve, "" for RSA
    size: int  # bytes of r and s in an ECDSA signature, 0 for RSA
    spki: str  # base64 DER SubjectPublicKeyInfo
    subject: str  # base64 DER of the certificate's subject: a client certificate naming it as issuer tries this key first


def impersonations(cas: list[tuple[ir.Ca, tuple[CertInfo, ...]]]) -> list[Impersonation]:
    """For a server's CAs (with their certificates), every (CA certificate, other CA) pair where the
    certificate may sign a look-alike of the other CA's names. Deterministic: CA order, then
    certificate order."""
    if len(cas) < 2:
        return []
    depth = max(ca.depth for ca, _ in cas)
    out = []
    for ca, certs in cas:
        # a `leaf` CA mints nothing (a CA:TRUE leaf is refused, MTLS317), and its routes are bound
        # by fingerprint, which no copy passes
        if ca.leaf:
            continue
        for cert in ca_certs(certs):
            path = root_path(cert, certs)
            # The copy's clients sit one level deeper than cert's own: that must fit in the depth.
            if not path or intermediates(path) + 1 > depth or not chain_allows_sub_ca(path):
                continue
            for other, other_certs in cas:
                if other.name == ca.name or other.leaf:
                    continue
                copied = tuple(c for c in other_certs if names_allow(path, parsed(c.pem).subject))
                if copied:
                    out.append(Impersonation(ca, cert, other, copied))
    return out


def key_entry(cert: CertInfo) -> KeyEntry | None:
    """The certificate's public key for the njs check, or None when njs cannot verify with it
    (Ed25519, Ed448, DSA, another curve)."""
    x = parsed(cert.pem)
    key = x.public_key()
    raw = x.public_bytes(serialization.Encoding.DER)
    _, (start, end) = der.cert_names(raw)  # the bytes as signed: what a client certificate's issuer repeats
    subject = base64.b64encode(raw[start:end]).decode()
    spki = base64.b64encode(key.public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    if isinstance(key, rsa.RSAPublicKey):
        return KeyEntry("RSA", "", 0, spki, subject)
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        curve, size = _CURVES[key.curve.name]
        return KeyEntry("EC", curve, size, spki, subject)
    return None


def key_bound(server: ir.Server, pki) -> dict[str, tuple[KeyEntry | CertInfo, ...]]:
    """ca name -> the keys its routes on `server` are bound to, for each CA another CA of the server
    could impersonate. A CertInfo in place of a KeyEntry is a key njs cannot use (MTLS239)."""
    cas = [(ca, facts.certs) for ca in server.cas if (facts := pki.ca(ca.name)) is not None]
    victims = {imp.of.name for imp in impersonations(cas)}
    out: dict[str, tuple[KeyEntry | CertInfo, ...]] = {}
    for ca, certs in cas:
        if ca.name in victims:
            keys: dict[str, KeyEntry | CertInfo] = {}
            for cert in certs:
                entry = key_entry(cert)
                keys.setdefault(entry.spki if entry else cert.fingerprint, entry or cert)
            out[ca.name] = tuple(keys.values())
    return out
