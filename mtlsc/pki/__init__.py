"""CA bundle and CRL files -> facts: the only reader of certificate files in mtlsc.

Every file problem becomes a located diagnostic (the file's string in the policy), never an
exception: MTLS901 unreadable, MTLS301 bundle without a certificate, MTLS302 CRL file without a
CRL, MTLS303 private key in a file, MTLS304 damaged PEM block, MTLS305 a block of the wrong kind,
MTLS035 a certificate nginx reads whose name strings cryptography refuses.
Names are printed from the certificate's own bytes (mtlsc.dn.der), never from a re-encoding.
The compiled trust and CRL files are rebuilt from the parsed objects, so junk, keys and stray
blocks in the user's files never reach nginx.

Modules: `facts` (what is known once read), `pem` (reading one file's blocks), `chains` (paths
from a leaf to a root), `binding` (which CA's key signed a certificate). This module places every
issue on the policy and writes the compiled trust and CRL files.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import replace

from cryptography import x509

from mtlsc import files, ir
from mtlsc.diagnostics import Diagnostic, error
from mtlsc.pki.facts import CaFacts, CertInfo, CrlInfo, Pki, describe  # noqa: F401 (re-exported)
from mtlsc.pki.pem import _Issue, _read_bundle, _read_crls
from mtlsc.source import Span, point


# ----- the policy's files ---------------------------------------------------------------------

def _read(path: str, cache: dict[str, bytes | OSError]) -> bytes | OSError:
    if path not in cache:
        try:
            cache[path] = files.read_bytes(path)
        except OSError as exc:
            cache[path] = exc
    return cache[path]


def _unreadable(path: str, exc: OSError, what: str) -> _Issue:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EINVAL, errno.EFBIG):  # refused by mtlsc.files: a device, FIFO, directory, huge file
        fix = f"name a regular PEM file (mtlsc reads regular files up to {files.MAX_BYTES // 2**20} MiB)"
    else:
        fix = "check the path (relative paths start at the policy file's directory) and the file's permissions"
    return _Issue("MTLS901", error, f"cannot read {what} `{path}`: {reason}", fix)


def _signer(crl: x509.CertificateRevocationList, certs: list[tuple[x509.Certificate, CertInfo]]) -> str | None:
    for cert, info in certs:
        try:
            if crl.is_signature_valid(cert.public_key()):
                return info.subject
        except Exception:  # a key type cryptography cannot verify with
            continue
    return None


def _span(spans: tuple[Span, ...], i: int, ca: ir.Ca, path: str) -> Span:
    # IR built by hand (tests) may lack spans; fall back to the CA block, then to the file itself.
    if i < len(spans or ()) and spans[i] is not None:
        return spans[i]
    return ca.span or point(path)


def _place(issues: list[_Issue], span: Span) -> list[Diagnostic]:
    return [i.make(i.code, span, i.message, i.help) for i in issues]


def _load_ca(ca: ir.Ca, cache: dict) -> tuple[CaFacts, list[Diagnostic]]:
    diags: list[Diagnostic] = []
    certs: list[CertInfo] = []
    for i, path in enumerate(ca.bundle):
        data = _read(path, cache)
        found, issues = ([], [_unreadable(path, data, "leaf file" if ca.leaf else "CA bundle")]) if isinstance(data, OSError) else _read_bundle(path, data)
        certs += found
        diags += _place(issues, _span(ca.bundle_spans, i, ca, path))
    # The CertInfo pem round-trips exactly, so CRL signatures can be checked against it.
    parsed = [(x509.load_pem_x509_certificate(c.pem.encode()), c) for c in certs]
    crls: list[CrlInfo] = []
    for i, path in enumerate(ca.crls):
        data = _read(path, cache)
        found, issues = ([], [_unreadable(path, data, "CRL file")]) if isinstance(data, OSError) else _read_crls(path, data)
        crls += [replace(info, signed_by=_signer(crl, parsed)) for crl, info in found]
        diags += _place(issues, _span(ca.crl_spans, i, ca, path))
    return CaFacts(ca.name, tuple(certs), tuple(crls)), diags


def load_pki(policy: ir.Policy) -> tuple[Pki, list[Diagnostic]]:
    """Read every CA bundle and CRL file of the policy (each file once) into facts + diagnostics."""
    cache: dict[str, bytes | OSError] = {}
    cas, diags = [], []
    for ca in policy.cas:
        facts, d = _load_ca(ca, cache)
        cas.append(facts)
        diags += d
    return Pki(tuple(cas)), diags


def _selected(pki: Pki, cas: Iterable) -> list[CaFacts]:
    names = [c if isinstance(c, str) else c.name for c in cas]
    return [f for f in (pki.ca(n) for n in names) if f is not None]


def _joined(pems_with_keys) -> str:
    """PEM texts joined in order, each once (the same certificate may sit in two CAs' bundles)."""
    seen, out = set(), []
    for key, pem in pems_with_keys:
        if key not in seen:
            seen.add(key)
            out.append(pem)
    return "".join(out)


def trust_file_pem(pki: Pki, cas: Iterable) -> str:
    """The compiled `ssl_client_certificate` file: every certificate of `cas` (names, in the order
    given; file order within each), each once."""
    return _joined((c.fingerprint, c.pem) for facts in _selected(pki, cas) for c in facts.certs)


def crl_file_pem(pki: Pki, cas: Iterable) -> str:
    """The compiled `ssl_crl` file: every CRL of `cas`, in the order given, each once."""
    return _joined((c.pem, c.pem) for facts in _selected(pki, cas) for c in facts.crls)
