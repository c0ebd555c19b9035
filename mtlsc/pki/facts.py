"""What mtlsc knows about a policy's CA bundles and CRLs once read: `CertInfo`, `CrlInfo`, per CA
`CaFacts`, and `Pki` for the whole policy. Checks, emitters and `diff` read only these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CertInfo:
    """One certificate of a bundle file, with names and serial as nginx prints them."""

    path: str
    index: int  # position among the certificates of the file, from 0
    pem: str  # re-encoded from the parsed certificate
    subject: str
    issuer: str
    serial: str
    fingerprint: str  # SHA-1 of the DER, lowercase hex, as $ssl_client_fingerprint
    not_before: datetime
    not_after: datetime
    is_ca: bool  # basicConstraints CA:TRUE
    path_length: int | None
    key_cert_sign: bool  # keyUsage allows certificate signing (True when there is no keyUsage)
    self_signed: bool  # issuer == subject and its own key verifies the signature
    ski: str | None  # hex
    aki: str | None  # hex key identifier
    ocsp_urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CrlInfo:
    """One CRL of a CRL file."""

    path: str
    pem: str
    issuer: str
    last_update: datetime
    next_update: datetime | None
    revoked_serials: frozenset[int]
    aki: str | None
    signed_by: str | None  # subject of the CA's bundle certificate whose key verifies the CRL
    index: int = 0  # position among the CRLs of the file, from 0


@dataclass(frozen=True, slots=True)
class CaFacts:
    name: str
    certs: tuple[CertInfo, ...]  # bundle file order, then order within each file
    crls: tuple[CrlInfo, ...]


@dataclass(frozen=True, slots=True)
class Pki:
    cas: tuple[CaFacts, ...]

    def ca(self, name: str) -> CaFacts | None:
        """The facts of a CA, or None when the policy has no CA of that name."""
        return next((c for c in self.cas if c.name == name), None)


def describe(cert: CertInfo) -> str:
    """`subject` (serial S, not after DATE): how diagnostics name a certificate."""
    return f"`{cert.subject}` (serial {cert.serial}, not after {cert.not_after:%Y-%m-%d %H:%M} UTC)"
