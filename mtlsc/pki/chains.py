"""Chains inside a policy's CA files: which CA certificate issued which, how deep a client sits below
its root, and what pathLen and name constraints let a CA certificate sign.

Shared by the checks (which report what these chains allow) and the emitter (which binds routes to
CA keys where another CA could copy a name: `mtlsc.pki.binding`).
"""

from __future__ import annotations

import functools
import warnings

from cryptography import x509

from mtlsc.pki import CertInfo


@functools.lru_cache(maxsize=1024)
def parsed(pem: str) -> x509.Certificate:
    """The cryptography object of a certificate (CertInfo.pem round-trips exactly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a non-positive serial: nginx loads such a certificate
        return x509.load_pem_x509_certificate(pem.encode())


def _issues(parent: CertInfo, child: CertInfo) -> bool:
    """Whether `parent` is the issuer OpenSSL would pick for `child`: name, then key identifier."""
    if parent.fingerprint == child.fingerprint or parent.subject.lower() != child.issuer.lower():
        return False
    return child.aki is None or parent.ski is None or child.aki == parent.ski


_ISSUERS: dict[int, tuple[tuple, dict[str, list[CertInfo]]]] = {}  # id(pool) -> (pool, index)


def _by_subject(pool) -> dict[str, list[CertInfo]]:
    """The distinct certificates of `pool` by lowercased subject. Built once per bundle (tuples are
    immutable, and the entry holds the tuple so its id cannot be reused): `root_path` runs for
    every CA certificate, and scanning the whole pool each time is quadratic in a bundle of
    thousands of certificates."""
    if isinstance(pool, tuple) and (hit := _ISSUERS.get(id(pool))) is not None and hit[0] is pool:
        return hit[1]
    index: dict[str, list[CertInfo]] = {}
    seen: set[str] = set()
    for c in pool:
        if c.fingerprint not in seen:
            seen.add(c.fingerprint)
            index.setdefault(c.subject.lower(), []).append(c)
    if isinstance(pool, tuple):
        if len(_ISSUERS) >= 8:
            _ISSUERS.clear()
        _ISSUERS[id(pool)] = (pool, index)
    return index


def root_path(cert: CertInfo, pool) -> list[CertInfo] | None:
    """The shortest path [cert, issuer, ..., self-signed root] inside `pool`, or None."""
    index = _by_subject(pool)
    paths, seen = [[cert]], {cert.fingerprint}
    while paths:
        nxt = []
        for path in paths:
            if path[-1].self_signed:
                return path
            for parent in index.get(path[-1].issuer.lower(), ()):
                if parent.fingerprint not in seen and _issues(parent, path[-1]):
                    seen.add(parent.fingerprint)
                    nxt.append([*path, parent])
        paths = nxt
    return None


def ca_certs(certs) -> list[CertInfo]:
    """The certificates OpenSSL takes for CAs: what may issue, and so what may mint a look-alike."""
    return [c for c in certs if openssl_ca(c)]


_NS_CERT_TYPE = x509.ObjectIdentifier("2.16.840.1.113730.1.1")  # Netscape certificate type


def openssl_ca(cert: CertInfo) -> bool:
    """Whether OpenSSL accepts the certificate as an issuer of TLS clients (its `check_ca`,
    non-strict): basicConstraints CA:TRUE or, without basicConstraints, a self-signed version 1
    certificate, a keyUsage with keyCertSign, or with no keyUsage a Netscape SSL CA type."""
    if cert.is_ca:
        return True
    obj = parsed(cert.pem)
    try:
        obj.extensions.get_extension_for_class(x509.BasicConstraints)
        return False  # CA:FALSE
    except x509.ExtensionNotFound:
        pass
    if cert.self_signed and obj.version is x509.Version.v1:
        return True  # OpenSSL still takes a self-signed version 1 certificate as a root
    try:
        return obj.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return _netscape_ssl_ca(obj)


def _netscape_ssl_ca(obj: x509.Certificate) -> bool:
    """nsCertType with the SSL CA bit (0x04 of the first byte): with neither basicConstraints nor
    keyUsage, OpenSSL takes the certificate for a CA on that alone (docs/nginx-facts.md §F11)."""
    try:
        der = obj.extensions.get_extension_for_oid(_NS_CERT_TYPE).value.value  # 03, length, unused bits, bits
    except x509.ExtensionNotFound:
        return False
    bits = der[3 + (der[1] & 0x7F if der[1] & 0x80 else 0):] if len(der) > 1 and der[0] == 0x03 else b""
    return bool(bits) and bool(bits[0] & 0x04)


def intermediates(path: list[CertInfo]) -> int:
    """Intermediates between a leaf issued by path[0] and the root, as nginx counts depth (docs/nginx-facts.md §3).
    Self-issued certificates (key rollover) do not count, as in OpenSSL."""
    return sum(1 for c in path[:-1] if c.subject.lower() != c.issuer.lower())


def needed_depth(certs) -> tuple[int, CertInfo] | None:
    """(depth the deepest CA certificate needs, that certificate), or None without any chain."""
    found = [(intermediates(p), c) for c in ca_certs(certs) if (p := root_path(c, certs))]
    return max(found, key=lambda x: x[0]) if found else None


def chain_allows_sub_ca(path: list[CertInfo]) -> bool:
    """Whether the pathLen constraints of `path` ([cert, ..., root]) let path[0] sign one more CA."""
    for k, cert in enumerate(path):
        below = intermediates(path[:k + 1]) + 1  # the existing ones, plus the new sub-CA
        if cert.path_length is not None and below > cert.path_length:
            return False
    return path[0].key_cert_sign


def in_subtree(name: x509.Name, subtree: x509.Name) -> bool:
    head = [r.rfc4514_string().lower() for r in subtree.rdns]
    return [r.rfc4514_string().lower() for r in name.rdns[:len(head)]] == head


def names_allow(path: list[CertInfo], name: x509.Name) -> bool:
    """Whether the name constraints along `path` let a sub-CA carry the subject `name`."""
    for cert in path:
        try:
            nc = parsed(cert.pem).extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        permitted = [g.value for g in nc.permitted_subtrees or () if isinstance(g, x509.DirectoryName)]
        excluded = [g.value for g in nc.excluded_subtrees or () if isinstance(g, x509.DirectoryName)]
        if permitted and not any(in_subtree(name, s) for s in permitted):
            return False
        if any(in_subtree(name, s) for s in excluded):
            return False
    return True
