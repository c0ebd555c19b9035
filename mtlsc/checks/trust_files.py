"""MTLS3xx: facts of one CA certificate or one CRL, as read from the policy's files.

`mtlsc.pki` reports, at load time, files nginx cannot use at all (MTLS301-305, MTLS901). The
checks here judge each certificate and CRL it did read: dates, CA flags, signatures. Chain-level
questions (coverage, depth, roots, public CAs) live in `chains.py`.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from mtlsc import dn, ir
from mtlsc.pki.chains import openssl_ca, parsed
from mtlsc.diagnostics import Finding
from mtlsc.pki import CertInfo, CrlInfo, describe
from mtlsc.source import Span, point


# ----- helpers shared with chains.py ------------------------------------------------------------

def bundle_span(ca: ir.Ca, cert: CertInfo) -> Span:
    """The `bundle` string of the file that holds `cert` (else the CA block, else the file)."""
    return _file_span(ca.bundle, ca.bundle_spans, cert.path, ca)


def crl_span(ca: ir.Ca, crl: CrlInfo) -> Span:
    """The `crl` string of the file that holds `crl`."""
    return _file_span(ca.crls, ca.crl_spans, crl.path, ca)


def _file_span(paths, spans, path: str, ca: ir.Ca) -> Span:
    if path in paths:
        i = paths.index(path)
        if i < len(spans or ()) and spans[i] is not None:
            return spans[i]
    return ca.span or point(path)


def ca_files(ctx, leaves: bool = False) -> Iterator[tuple[ir.Ca, tuple[CertInfo, ...], tuple[CrlInfo, ...]]]:
    """(CA, its certificates, its CRLs) for every CA of the policy whose files were read. `leaf` CAs
    only with `leaves`: the CA-certificate checks do not apply to them (checks/leaves.py judges them)."""
    for ca in ctx.policy.cas:
        facts = ctx.pki.ca(ca.name)
        if facts is not None and (leaves or not ca.leaf):
            yield ca, facts.certs, facts.crls


# ----- the public web PKI, as this machine knows it -------------------------------------------------

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def system_trust_dirs() -> tuple[str, ...]:
    """Directories that hold public trust stores (Debian, RHEL, certifi)."""
    return ("/etc/ssl/certs", "/etc/pki/tls", "/etc/pki/ca-trust", "/usr/share/ca-certificates",
            "/usr/local/share/ca-certificates", os.path.dirname(_certifi_where()))


def in_system_trust_dir(path: str) -> str | None:
    """The system trust directory `path` lies in (as written or after symlinks), or None."""
    for candidate in {os.path.abspath(path), os.path.realpath(path)}:
        for d in system_trust_dirs():
            if candidate == d or candidate.startswith(d.rstrip("/") + "/"):
                return d
    return None


@dataclass(frozen=True, slots=True)
class PublicStore:
    """Public CA certificates by SHA-1 fingerprint, by (subject, public key) and by subject."""

    fingerprints: dict[str, tuple[str, str]]  # fingerprint -> (subject, store file)
    keys: dict[tuple[str, bytes], tuple[str, str]]  # (subject lowercased, SPKI DER) -> (subject, store)
    skis: dict[str, list[tuple[str | None, str, str]]]  # subject lowercased -> [(ski hex, subject, store)]


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_store(paths) -> PublicStore:
    """Read public trust stores (PEM bundles); unreadable or odd entries are skipped."""
    store = PublicStore({}, {}, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few public roots have non-positive serials
        for path in paths:
            try:
                with open(path, "rb") as f:
                    certs = x509.load_pem_x509_certificates(f.read())
            except (OSError, ValueError):
                continue
            for cert in certs:
                try:
                    subject = dn.nginx_dn_of(cert.subject)
                    where = (subject, path)
                    store.fingerprints[cert.fingerprint(hashes.SHA1()).hex()] = where
                    store.keys[(subject.lower(), _spki(cert))] = where
                    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
                except x509.ExtensionNotFound:
                    ski = None
                except Exception:  # a certificate cryptography cannot decode: not worth failing a check for
                    continue
                store.skis.setdefault(subject.lower(), []).append((ski, subject, path))
    return store


@functools.cache
def public_store() -> PublicStore:
    """certifi's Mozilla store and the system store, read once, and kept in the user's cache
    (`mtlsc.cache`) until either file changes: parsing ~300 certificates took a tenth of a cold
    `mtlsc check` (benchmarks/)."""
    from mtlsc import __version__, cache

    paths = [_certifi_where(), SYSTEM_BUNDLE]
    entry = cache.entry("public-store", "\n".join([__version__, *map(cache.file_stamp, paths)]))
    store = cache.load_pickle(entry)
    if not isinstance(store, PublicStore):
        store = load_public_store(paths)
        cache.store_pickle(entry, store)
    return store


def _certifi_where() -> str:
    import certifi  # only when a public store is consulted

    return certifi.where()


def public_match(cert: CertInfo) -> str | None:
    """How `cert` belongs to the public web PKI (a sentence), or None."""
    store = public_store()
    hit = store.fingerprints.get(cert.fingerprint) or store.keys.get((cert.subject.lower(), _spki(parsed(cert.pem))))
    if hit:
        return f"is the public CA `{hit[0]}` of `{hit[1]}`"
    for ski, subject, path in store.skis.get(cert.issuer.lower(), ()):
        if not cert.self_signed and (cert.aki is None or ski is None or cert.aki == ski):
            return f"is issued by the public CA `{subject}` of `{path}`"
    return None


def describe_crl(crl: CrlInfo) -> str:
    nxt = f"{crl.next_update:%Y-%m-%d %H:%M} UTC" if crl.next_update else "never"
    return f"CRL of `{crl.issuer}` in `{crl.path}` (next update {nxt})"


def _when(t) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC"


# ----- CRLs ---------------------------------------------------------------------------------------

def crl_expired(ctx):
    """What it catches: a CRL whose nextUpdate is in the past.

    Why: nginx reads the CRL file at load time and `nginx -t` does not look at dates (docs/nginx-facts.md
    §13); once nextUpdate has passed, every good client of that CA gets `CRL has expired` (§4,
    lockout trap 2). Only already-revoked certificates still get their proper `certificate revoked`.

    Example: `crl "ca/root.crl" "ca/issuing.crl"` where issuing.crl's nextUpdate was last week.

    Fix: publish a fresh CRL from the CA (and automate it: CRLs live days, not years), then reload nginx.
    """
    for ca, _, crls in ca_files(ctx):
        for crl in crls:
            if crl.next_update is not None and crl.next_update < ctx.now:
                yield Finding(crl_span(ca, crl),
                              f"{describe_crl(crl)} has expired: every client of that CA gets `CRL has expired`",
                              "publish a fresh CRL from the CA and reload nginx; automate CRL renewal",
                              label=f"expired {_when(crl.next_update)}")


def crl_not_yet_valid(ctx):
    """What it catches: a CRL whose lastUpdate (thisUpdate) is in the future.

    Why: OpenSSL refuses a CRL that is not valid yet (`CRL is not yet valid`), so every client of
    that CA is rejected as with an expired CRL (docs/nginx-facts.md §4; OpenSSL's rule, not measured there).
    It usually means a clock problem on the CA or a CRL dated for a planned rollover.

    Example: a CRL signed with lastUpdate tomorrow.

    Fix: reissue the CRL with a lastUpdate in the past; check the CA's clock.
    """
    for ca, _, crls in ca_files(ctx):
        for crl in crls:
            if crl.last_update > ctx.now:
                yield Finding(crl_span(ca, crl),
                              f"{describe_crl(crl)} is not valid before {_when(crl.last_update)}: every client of "
                              "that CA is rejected until then",
                              "reissue the CRL with a lastUpdate in the past; check the CA's clock",
                              label="lastUpdate in the future")


def crl_expiring_soon(ctx):
    """What it catches: a CRL whose nextUpdate falls within the expiry window (default 14 days).

    Why: the day it passes, every good client of that CA gets `CRL has expired` (docs/nginx-facts.md §4),
    and nginx keeps the old file until it is reloaded (§11): a fresh file on disk is not enough.

    Example: a CRL with nextUpdate in three days.

    Fix: publish a fresh CRL and reload nginx before nextUpdate; automate both.
    """
    for ca, _, crls in ca_files(ctx):
        for crl in crls:
            nxt = crl.next_update
            if nxt is not None and ctx.now <= nxt < ctx.now + ctx.expiry_window:
                yield Finding(crl_span(ca, crl),
                              f"{describe_crl(crl)} expires within {ctx.expiry_window.days} days: then every "
                              "client of that CA gets `CRL has expired`",
                              "publish a fresh CRL before then and reload nginx (nginx reads CRLs only at load)",
                              label=f"expires {_when(nxt)}")


def crl_not_signed_by_bundle(ctx):
    """What it catches: a CRL whose signature no certificate of the CA's bundle verifies.

    Why: OpenSSL uses a CRL only when the certificate named as its issuer verifies its signature;
    otherwise the CA's clients get `unable to get certificate CRL` or `CRL signature failure`
    (docs/nginx-facts.md §4). Typical causes: the CRL of another CA, of an older key (a reissued CA), or
    a bundle that lacks the CRL's issuer.

    Example: `bundle "ca/root.pem"  crl "ca/other-root.crl"`.

    Fix: list the CRL under the CA that signed it, and that CA's certificate in its `bundle`.
    """
    for ca, certs, crls in ca_files(ctx):
        for crl in crls:
            if crl.signed_by is not None:
                continue
            named = [c for c in certs if c.subject.lower() == crl.issuer.lower()]
            if named:
                why = f"certificate {describe(named[0])} has that name but a different key"
            else:
                why = "no certificate of the bundle has that name"
            yield Finding(crl_span(ca, crl),
                          f"{describe_crl(crl)} is not signed by any certificate of ca `{ca.name}`: {why}",
                          "list this CRL under the CA that signed it, and that CA's certificate in its `bundle`",
                          label="nginx cannot use this CRL")


# ----- CA certificates ----------------------------------------------------------------------------

def _subtree(cert: CertInfo) -> str:
    return "every client" if cert.self_signed else "every client below it"


def ca_certificate_expired(ctx):
    """What it catches: a certificate of a CA bundle whose notAfter is in the past.

    Why: `nginx -t` accepts an expired CA, and every client whose chain runs through it then gets
    `certificate has expired`, the same string as for an expired client certificate (docs/nginx-facts.md
    §12, lockout trap 6).

    Example: `bundle "ca/old-root.pem"` expired last month.

    Fix: replace it with the CA's renewed certificate (same key and name, or a new chain).
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in certs:
            if cert.not_after < ctx.now:
                yield Finding(bundle_span(ca, cert),
                              f"CA certificate {describe(cert)} has expired: {_subtree(cert)} gets `certificate has expired`",
                              "put the CA's renewed certificate in the bundle", label="expired")


def ca_certificate_not_yet_valid(ctx):
    """What it catches: a certificate of a CA bundle whose notBefore is in the future.

    Why: OpenSSL checks the dates of every certificate in the chain; until notBefore, every client
    below it gets `certificate is not yet valid` (the date rule of docs/nginx-facts.md §12, applied to notBefore).

    Example: a renewed intermediate deployed before its start date.

    Fix: deploy it on or after its notBefore, or keep the current certificate until then.
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in certs:
            if cert.not_before > ctx.now:
                yield Finding(bundle_span(ca, cert),
                              f"CA certificate {describe(cert)} is not valid before {_when(cert.not_before)}: "
                              f"{_subtree(cert)} is rejected until then",
                              "keep the current certificate in the bundle until the new one is valid",
                              label="not valid yet")


def ca_certificate_expiring_soon(ctx):
    """What it catches: a certificate of a CA bundle that expires within the expiry window.

    Why: on that day every client below it gets `certificate has expired` (docs/nginx-facts.md §12), all at once.

    Example: an issuing CA whose notAfter is next week.

    Fix: renew the CA certificate and roll the bundle out (old and new side by side) before then.
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in certs:
            if ctx.now <= cert.not_after < ctx.now + ctx.expiry_window:
                yield Finding(bundle_span(ca, cert),
                              f"CA certificate {describe(cert)} expires within {ctx.expiry_window.days} days: "
                              f"then {_subtree(cert)} gets `certificate has expired`",
                              "renew it and add the renewed certificate to the bundle before then",
                              label="expires soon")


def not_a_ca_certificate(ctx):
    """What it catches: a self-signed certificate in a bundle without basicConstraints CA:TRUE.

    Why: `nginx -t` accepts it, and every client it signed gets `unsuitable certificate purpose`
    (docs/nginx-facts.md §12, lockout trap 6): OpenSSL will not use a non-CA certificate as an issuer.

    Example: a home-made "CA" generated with `openssl req -x509` and a config that sets CA:FALSE.

    Fix: reissue the CA certificate with `basicConstraints = critical, CA:TRUE`; or, if it is a
    client's own self-signed certificate, trust it as itself with `leaf` in a CA of its own.
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in certs:
            if cert.self_signed and not openssl_ca(cert):
                yield Finding(bundle_span(ca, cert),
                              f"{describe(cert)} is not a CA certificate (no basicConstraints CA:TRUE): the clients "
                              "it signed get `unsuitable certificate purpose`",
                              "reissue it with `basicConstraints = critical, CA:TRUE`; if it is a client's own "
                              "self-signed certificate, list it with `leaf` in a CA of its own", label="not a CA")


def ca_without_key_cert_sign(ctx):
    """What it catches: a CA certificate whose keyUsage leaves out keyCertSign.

    Why: OpenSSL refuses an issuer whose keyUsage does not allow certificate signing, so every
    client it signed is rejected, as with a non-CA issuer (docs/nginx-facts.md §12).

    Example: an intermediate with `keyUsage = digitalSignature, cRLSign`.

    Fix: reissue it with `keyUsage = critical, keyCertSign, cRLSign`.
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in certs:
            if cert.is_ca and not cert.key_cert_sign:
                yield Finding(bundle_span(ca, cert),
                              f"CA certificate {describe(cert)} has a keyUsage without keyCertSign: the clients it "
                              "signed are rejected", "reissue it with `keyUsage = critical, keyCertSign, cRLSign`",
                              label="keyUsage lacks keyCertSign")


def leaf_certificate_in_bundle(ctx):
    """What it catches: an end-entity certificate (CA:FALSE, issued by another CA) in a CA bundle.

    Why: `nginx -t` accepts it and even advertises its name to clients, but it can anchor nothing:
    the client whose own certificate it is gets `unable to verify the first certificate`
    (docs/nginx-facts.md §12, lockout trap 6). A leaf pinned this way is better written as an identity.

    Example: `bundle "clients/alice.pem"`.

    Fix: put the CA that issued it in `bundle`, and name the client with an `identity` (subject or fingerprint).
    A client's own self-signed certificate goes under `leaf` (`ca laptops { leaf "alice.pem" }`).
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in certs:
            if not cert.self_signed and not openssl_ca(cert):
                yield Finding(bundle_span(ca, cert),
                              f"{describe(cert)} is an end-entity certificate, not a CA: it anchors nothing, its "
                              "holder gets `unable to verify the first certificate`",
                              f"put its issuer `{cert.issuer}` in `bundle` and name the client with an `identity` "
                              "(`leaf` takes only self-signed client certificates)",
                              label="a leaf certificate")
