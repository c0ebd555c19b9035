"""Reading one bundle or CRL file: its PEM blocks (or DER), each certificate or CRL described, and
every problem as an issue the caller places on the policy's string (MTLS301-305, MTLS035)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AuthorityInformationAccessOID

from mtlsc import dn
from mtlsc.dn import der
from mtlsc.diagnostics import Diagnostic, error, warning
from mtlsc.pki.facts import CertInfo, CrlInfo, describe


# ----- PEM blocks -----------------------------------------------------------------------------

# OpenSSL (and so nginx) ignores text outside BEGIN/END lines, so junk around blocks is harmless.
_MARKER = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 ]*)-----")
_CERT_LABELS = ("CERTIFICATE", "X509 CERTIFICATE")
_CRL_LABEL = "X509 CRL"


@dataclass(frozen=True, slots=True)
class _Block:
    label: str
    line: int  # of the BEGIN line, from 1
    pem: bytes | None  # None: damaged (no END line)


def _blocks(data: bytes) -> list[_Block]:
    """The PEM blocks of a file, in order; a BEGIN without its END is a damaged block."""
    out: list[_Block] = []
    start = None  # (label, offset, line) of the open block
    line, counted = 1, 0  # lines counted up to offset `counted`: linear, even for 50 MB of markers
    for m in _MARKER.finditer(data):
        kind, label = m.group(1), m.group(2).decode()
        if kind == b"BEGIN":
            if start:
                out.append(_Block(start[0], start[2], None))
            line, counted = line + data.count(b"\n", counted, m.start()), m.start()
            start = (label, m.start(), line)
        elif start:
            ok = label == start[0]
            out.append(_Block(start[0], start[2], data[start[1]:m.end()] + b"\n" if ok else None))
            start = None
    if start:
        out.append(_Block(start[0], start[2], None))
    return out


@dataclass(frozen=True, slots=True)
class _Issue:
    """A diagnostic before it is placed at the policy's file string."""

    code: str
    make: Callable[..., Diagnostic]  # diagnostics.error or diagnostics.warning
    message: str
    help: str = ""


def _utc(obj, name: str) -> datetime | None:
    # cryptography >= 42 has tz-aware `*_utc` properties; 41 gives naive UTC.
    if hasattr(obj, name + "_utc"):
        return getattr(obj, name + "_utc")
    naive = getattr(obj, name)
    return naive.replace(tzinfo=timezone.utc) if naive else None


def _ext(obj, cls):
    try:
        return obj.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _self_signed(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
        return True
    except Exception:  # name mismatch, bad signature, key type cryptography cannot verify
        return cert.subject == cert.issuer and _legacy_signature(cert)


def _legacy_signature(cert: x509.Certificate) -> bool:
    """cryptography no longer verifies SHA-1 or MD5 signatures; OpenSSL never checks a trust
    anchor's own signature, so to nginx a self-named root signed that way is a root (ACCVRAIZ1)."""
    try:
        algorithm = cert.signature_hash_algorithm
    except Exception:
        return False
    return algorithm is not None and algorithm.name in ("sha1", "md5")


def _cert_info(cert: x509.Certificate, path: str, index: int) -> CertInfo:
    """Facts of one certificate. Raises ValueError on extensions or names cryptography cannot
    decode, and on a public key it cannot read (checks and CRL signature checks need the key)."""
    cert.public_key()  # decoded lazily: an unknown key type or a bad point would raise in a check
    cert.subject, cert.issuer  # likewise: the checks read them (name constraints, chains)
    data = cert.public_bytes(serialization.Encoding.DER)  # the bytes as loaded, as nginx reads them
    issuer, subject = (dn.nginx_dn_of(data[start:end]) for start, end in der.cert_names(data))
    bc = _ext(cert, x509.BasicConstraints)
    ku = _ext(cert, x509.KeyUsage)
    ski = _ext(cert, x509.SubjectKeyIdentifier)
    aki = _ext(cert, x509.AuthorityKeyIdentifier)
    aia = _ext(cert, x509.AuthorityInformationAccess) or []
    return CertInfo(
        path=path, index=index, pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        subject=subject, issuer=issuer,
        serial=dn.nginx_serial(cert.serial_number), fingerprint=cert.fingerprint(hashes.SHA1()).hex(),
        not_before=_utc(cert, "not_valid_before"), not_after=_utc(cert, "not_valid_after"),
        is_ca=bool(bc and bc.ca), path_length=bc.path_length if bc else None,
        key_cert_sign=ku.key_cert_sign if ku else True, self_signed=_self_signed(cert),
        ski=ski.digest.hex() if ski else None,
        aki=aki.key_identifier.hex() if aki and aki.key_identifier else None,
        ocsp_urls=tuple(d.access_location.value for d in aia
                        if d.access_method == AuthorityInformationAccessOID.OCSP),
    )


def _crl_info(crl: x509.CertificateRevocationList, path: str, index: int) -> CrlInfo:
    aki = _ext(crl, x509.AuthorityKeyIdentifier)
    crl.issuer  # decoded lazily, like a certificate's names
    data = crl.public_bytes(serialization.Encoding.DER)
    start, end = der.crl_issuer(data)
    return CrlInfo(
        path=path, pem=crl.public_bytes(serialization.Encoding.PEM).decode(), issuer=dn.nginx_dn_of(data[start:end]),
        last_update=_utc(crl, "last_update"), next_update=_utc(crl, "next_update"),
        revoked_serials=frozenset(r.serial_number for r in crl),
        aki=aki.key_identifier.hex() if aki and aki.key_identifier else None,
        signed_by=None, index=index,
    )


def _damaged(path: str, block: _Block, reason: str) -> _Issue:
    return _Issue("MTLS304", error, f"`{path}` line {block.line}: the `{block.label}` block is damaged: {reason}",
                  "nginx -t fails on a damaged PEM block; export the file again from the CA")


_UNREADABLE = ("MTLS304", "MTLS035")  # a block was there, mtlsc could not read it: no MTLS301/302 on top


def _unreadable_block(path: str, block: _Block, exc: Exception, kind: str) -> _Issue:
    """Why cryptography could not read a certificate or CRL (`kind`): MTLS035 when only its rules
    for name strings stand in the way, so nginx (OpenSSL takes any byte in a one-byte string type)
    loads what mtlsc cannot check; MTLS304 when OpenSSL cannot read it either."""
    try:
        data = der.pem_body(block.pem)
        names = list(der.cert_names(data)) if kind == "cert" else [der.crl_issuer(data)]
        printed = [dn.nginx_dn_of(data[start:end]) for start, end in names]
    except ValueError as why:  # broken DER, or a name OpenSSL cannot read: say which when we know
        return _damaged(path, block, str(why) if "OpenSSL" in str(why) else str(exc))
    try:
        plain = der.with_plain_names(data, names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "cert":
                _cert_info(x509.load_der_x509_certificate(plain), path, 0)
            else:
                _crl_info(x509.load_der_x509_crl(plain), path, 0)
    except Exception:  # something besides the names is wrong: hostile input, never a traceback
        return _damaged(path, block, str(exc))
    what = f"certificate `{printed[-1]}`" if kind == "cert" else f"the CRL of `{printed[0]}`"
    why = _misfit_text(der.misfit(data, names))
    return _Issue("MTLS035", error, f"`{path}` line {block.line}: nginx reads {what}, but mtlsc cannot check it: "
                  f"{why}, and cryptography {cryptography.__version__} refuses such names",
                  "re-issue it with UTF8String names (PrintableString only for `C`), or leave it out of the file")


def _misfit_text(bad: tuple[str, int, bytes] | None) -> str:
    if bad is None:
        return "a name value does not fit its ASN.1 type"
    oid, tag, value = bad
    attr = f"`{dn.canonical_attribute(oid) or oid}`"
    if tag not in der.TYPE_NAMES:
        return f"{attr} has a value of ASN.1 tag 0x{tag:02X} (`{value[:16].hex()}`), no string type"
    kind = der.TYPE_NAMES[tag]
    return f"{attr} is {'an' if kind[0] in 'AEIOU' else 'a'} {kind} holding `{value[:16].hex()}`, which its type does not allow"


def _parse_blocks(path: str, data: bytes, wanted: str) -> tuple[list, list[CertInfo], list[_Block], list[_Issue]]:
    """Split a file into (wanted objects, certificates seen, other blocks, issues).

    `wanted` is "cert" (a bundle: objects are CertInfo) or "crl" (objects are (x509 CRL, CrlInfo)).
    """
    objects, certs, others, issues = [], [], [], []
    add = _lister(issues)
    seen = [0]

    def unreadable(b: _Block, exc: Exception, kind: str) -> None:
        # Telling MTLS035 from MTLS304 parses the block again: only for the first few of a file
        seen[0] += 1
        if seen[0] > _MAX_LISTED:
            add("MTLS304", lambda: _damaged(path, b, str(exc)))
        else:
            issue = _unreadable_block(path, b, exc, kind)
            add(issue.code, lambda: issue)
    for b in _blocks(data):
        if b.pem is None:
            add("MTLS304", lambda b=b: _damaged(path, b, "no matching END line (truncated?)"))
        elif b.label in _CERT_LABELS:
            try:
                with warnings.catch_warnings():
                    # e.g. a non-positive serial: nginx loads such a certificate, so do we, quietly
                    warnings.simplefilter("ignore")
                    certs.append(_cert_info(x509.load_pem_x509_certificate(b.pem), path, len(certs)))
            except Exception as exc:  # hostile input must give a diagnostic, never a traceback
                unreadable(b, exc, "cert")
        elif b.label == _CRL_LABEL and wanted == "crl":
            try:
                crl = x509.load_pem_x509_crl(b.pem)
                # Facts now: cryptography decodes lazily, so a bad extension would raise later.
                objects.append((crl, _crl_info(crl, path, len(objects))))
            except Exception as exc:  # as above
                unreadable(b, exc, "crl")
        elif b.label.endswith("PRIVATE KEY"):
            add("MTLS303", lambda b=b: _Issue(
                "MTLS303", warning, f"`{path}` line {b.line} holds a private key (`{b.label}`)",
                "the compiled file leaves it out; remove it from the repository and rotate it"))
        else:
            others.append(b)
    return (certs if wanted == "cert" else objects), certs, others, issues


def _der_kind(data: bytes) -> tuple[str, CertInfo | None]:
    """("certificate"|"crl"|"", facts) for a file in DER (binary) form."""
    try:
        return "certificate", _cert_info(x509.load_der_x509_certificate(data), "", 0)
    except Exception:  # not a DER certificate (or one mtlsc cannot read)
        pass
    try:
        x509.load_der_x509_crl(data)
        return "crl", None
    except Exception:
        return "", None


def _no_cert_issue(path: str, data: bytes, others: list[_Block]) -> _Issue:
    """MTLS301: why a bundle file gives nginx no certificate (docs/nginx-facts.md §12)."""
    fix = "put the CA's certificates in it, in PEM (`-----BEGIN CERTIFICATE-----`)"
    if not data.strip():
        return _Issue("MTLS301", error, f"`{path}` is empty: nginx -t fails with `no certificate or crl found`", fix)
    if any(b.label == _CRL_LABEL for b in others):
        return _Issue("MTLS301", error,
                      f"`{path}` holds a CRL, not a certificate: nginx -t accepts it, and then every "
                      "client certificate fails verification", "name this file in `crl`, and the CA certificates in `bundle`")
    if others:
        labels = _labels(others)
        return _Issue("MTLS301", error, f"`{path}` holds no certificate, only {labels}", fix)
    kind, info = _der_kind(data)
    if kind == "certificate":
        return _Issue("MTLS301", error,
                      f"`{path}` holds certificate {describe(info)} in DER (binary) form; nginx reads PEM only",
                      f"convert it: `openssl x509 -inform der -in {path} -out {path}.pem`, and name the .pem file")
    if kind == "crl":
        return _Issue("MTLS301", error, f"`{path}` holds a DER CRL, not a certificate",
                      "name the CA certificates (PEM) in `bundle`; a CRL belongs in `crl`")
    return _Issue("MTLS301", error, f"`{path}` holds no PEM certificate: nginx -t fails with `no certificate or crl found`",
                  fix)


def _no_crl_issue(path: str, data: bytes, certs: list[CertInfo], others: list[_Block]) -> _Issue:
    """MTLS302: why a CRL file gives nginx no CRL (docs/nginx-facts.md §4, §13)."""
    fix = "put the CA's CRLs in it, in PEM (`-----BEGIN X509 CRL-----`)"
    if not data.strip():
        return _Issue("MTLS302", error, f"`{path}` is empty: nginx -t fails with `no certificate or crl found`", fix)
    if certs:
        return _Issue("MTLS302", error,
                      f"`{path}` holds certificate {describe(certs[0])}, not a CRL: nginx -t accepts this file, "
                      "and then every client is rejected with `unable to get certificate CRL`",
                      "name the CA's CRLs here; certificates belong in `bundle`")
    if others:
        labels = _labels(others)
        return _Issue("MTLS302", error, f"`{path}` holds no CRL, only {labels}", fix)
    kind, info = _der_kind(data)
    if kind == "crl":
        return _Issue("MTLS302", error, f"`{path}` holds a CRL in DER (binary) form; nginx reads PEM only",
                      f"convert it: `openssl crl -inform der -in {path} -out {path}.pem`, and name the .pem file")
    if kind == "certificate":
        return _Issue("MTLS302", error, f"`{path}` holds certificate {describe(info)} in DER form, not a CRL",
                      "name the CA's CRLs (PEM) here; certificates belong in `bundle`")
    return _Issue("MTLS302", error, f"`{path}` holds no PEM CRL: nginx -t fails with `no certificate or crl found`", fix)


_MAX_LISTED = 10  # issues of one code listed per file; one more issue counts the rest


def _labels(blocks: list[_Block], most: int = 5) -> str:
    """The distinct labels of `blocks`, at most `most` of them, for a message."""
    labels = list(dict.fromkeys(b.label for b in blocks))
    shown = ", ".join(f"`{label}`" for label in labels[:most])
    return shown + (f" and {len(labels) - most} other labels" if len(labels) > most else "")


def _lister(issues: list[_Issue]):
    """`add(code, build)`: append `build()`, or a shared placeholder once _MAX_LISTED issues of that
    code are listed (`_capped` counts it), so a million broken blocks do not build a million messages."""
    counts: dict[str, int] = {}
    placeholders: dict[str, _Issue] = {}

    def add(code: str, build) -> None:
        counts[code] = counts.get(code, 0) + 1
        if counts[code] <= _MAX_LISTED:
            issues.append(build())
        else:
            issues.append(placeholders.setdefault(code, _Issue(code, error, "")))
    return add


def _capped(path: str, issues: list[_Issue]) -> list[_Issue]:
    """At most _MAX_LISTED issues of each code for one file, plus one counting the others: a 50 MB
    file of broken blocks gives a short report, not millions of diagnostics."""
    out: list[_Issue] = []
    counts: dict[str, int] = {}
    for i in issues:
        counts[i.code] = counts.get(i.code, 0) + 1
        if counts[i.code] <= _MAX_LISTED:
            out.append(i)
    for code, n in counts.items():
        if n > _MAX_LISTED:
            first = next(i for i in issues if i.code == code)
            out.append(_Issue(code, first.make, f"`{path}`: {n - _MAX_LISTED} more {code} findings in this file "
                              f"(the first {_MAX_LISTED} are listed)", first.help))
    return out


def _read_bundle(path: str, data: bytes) -> tuple[list[CertInfo], list[_Issue]]:
    certs, _, others, issues = _parse_blocks(path, data, "cert")
    add = _lister(issues)
    for b in others:
        add("MTLS305", lambda b=b: _Issue(
            "MTLS305", warning, f"`{path}` line {b.line} holds a `{b.label}` block, not a certificate",
            "the compiled trust file leaves it out; keep only CA certificates in a bundle file"))
    if not certs and not any(i.code in _UNREADABLE for i in issues):
        issues = [_no_cert_issue(path, data, others), *[i for i in issues if i.code != "MTLS305"]]
    return certs, _capped(path, issues)


def _read_crls(path: str, data: bytes) -> tuple[list[tuple[x509.CertificateRevocationList, CrlInfo]], list[_Issue]]:
    crls, certs, others, issues = _parse_blocks(path, data, "crl")
    if not crls and not any(i.code in _UNREADABLE for i in issues):
        return [], _capped(path, [_no_crl_issue(path, data, certs, others), *issues])
    add = _lister(issues)
    for c in certs:
        # OpenSSL's X509_load_cert_crl_file, behind ssl_crl, adds such certificates to the trust store
        # (from the OpenSSL source, not measured in docs/nginx-facts.md).
        add("MTLS305", lambda c=c: _Issue("MTLS305", warning, f"`{path}` also holds certificate {describe(c)}",
                                          "the compiled CRL file leaves it out; keep certificates in `bundle`"))
    for b in others:
        add("MTLS305", lambda b=b: _Issue("MTLS305", warning, f"`{path}` line {b.line} holds a `{b.label}` block, not a CRL",
                                          "the compiled CRL file leaves it out"))
    return crls, _capped(path, issues)
