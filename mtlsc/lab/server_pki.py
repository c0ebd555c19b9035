"""The lab's server certificates, shaped as each server's TLS profile asks (mtlsc.tls_profiles): what
sslyze's Mozilla check and mtlsc's own server-certificate checks (MTLS32x) expect of a real deployment.

A root and an issuing CA per key type, as public CAs do; each server's certificate file holds its
certificate and the issuing CA (the chain nginx sends, and where it finds the issuer for stapling).
`modern` and `intermediate` servers get ECDSA P-256, `old` servers RSA 2048 signed with RSA; every
certificate lives 90 days, which every profile accepts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlsc import ir
from mtlsc.lab import certs as lab
from mtlsc.tls_profiles import PROFILES

SERVER_DAYS = 90


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _ca(issuer: lab.Issued | None, cn: str, key, now: datetime) -> lab.Issued:
    b = (lab._base(lab._name(cn, lab.LAB_ORG), issuer, key, now - lab.BACKDATE, now + timedelta(days=3650), None)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True)
         .add_extension(lab._ca_usage(), critical=True))
    return lab._signed(b, issuer.key if issuer else key, key)


def _leaf(issuer: lab.Issued, names: list[str], key, now: datetime, ocsp_url: str | None) -> lab.Issued:
    unique = list(dict.fromkeys(names))
    rsa_key = isinstance(key, rsa.RSAPrivateKey)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=rsa_key,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    b = (lab._base(lab._name(unique[0], lab.LAB_ORG), issuer, key, now - lab.BACKDATE,
                   now - lab.BACKDATE + timedelta(days=SERVER_DAYS), None)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(usage, critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
         .add_extension(x509.SubjectAlternativeName([lab._san(n) for n in unique]), critical=False))
    if ocsp_url:
        b = b.add_extension(lab._aia(ocsp_url), critical=False)
    return lab._signed(b, issuer.key, key)


def write_server_pki(policy: ir.Policy, out_dir: Path, *, now: datetime,
                     ocsp_url: str | None = None) -> dict[str, tuple[lab.Issued, lab.Issued]]:
    """`server-ca.pem` (the roots) and `server/<slug>.crt|.key` for every server of `policy`; returns
    slug -> (certificate, issuing CA), for an OCSP responder to answer for. `ocsp_url` goes in the
    AIA of the certificates of servers with `stapling on`."""
    kinds = {"rsa" if "ecdsa" not in PROFILES[s.tls.profile].cert_types else "ecdsa" for s in policy.servers} or {"ecdsa"}
    cas: dict[str, tuple[lab.Issued, lab.Issued]] = {}
    for kind in sorted(kinds):
        new_key = _rsa_key if kind == "rsa" else lab._new_key
        suffix = " (RSA)" if kind == "rsa" else ""
        root = _ca(None, f"mtlsc lab server CA{suffix}", new_key(), now)
        cas[kind] = (root, _ca(root, f"mtlsc lab server issuing CA{suffix}", new_key(), now))
    lab.write_pem(out_dir / "server-ca.pem", *(cas[k][0].cert for k in sorted(cas)))
    issued = {}
    for server in policy.servers:
        kind = "rsa" if "ecdsa" not in PROFILES[server.tls.profile].cert_types else "ecdsa"
        issuing = cas[kind][1]
        key = _rsa_key() if kind == "rsa" else lab._new_key()
        leaf = _leaf(issuing, [*server.names, "127.0.0.1", "localhost"], key, now,
                     ocsp_url if server.tls.stapling else None)
        lab.write_pem(out_dir / "server" / f"{server.slug}.crt", leaf.cert, issuing.cert)
        lab.write_pem(out_dir / "server" / f"{server.slug}.key", leaf.key)
        issued[server.slug] = (leaf, issuing)
    return issued
