"""The server's own certificate and key files (MTLS320-328), judged against its TLS profile.

They are nginx paths, read here only when this machine has them (`mtlsc check` on the nginx host,
`mtlsc apply`, the lab); on a CI machine they are usually absent, and then nothing is said. A file
that is there but cannot be read (a key only root may read) is a note.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from mtlsc import ir
from mtlsc.diagnostics import Finding
from mtlsc.pki.server_files import ServerFiles, server_files
from mtlsc.source import Span
from mtlsc.tls_profiles import PROFILES


def _with_files(ctx) -> Iterator[tuple[ir.Server, ServerFiles, Span]]:
    for server in ctx.policy.servers:
        files = server_files(server)
        if not files.absent:
            yield server, files, server.certificate_span or server.span


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _public_bytes(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# ----- the certificate and key files ---------------------------------------------------------------------

def server_files_not_checked(ctx):
    """What it catches (a note): a server certificate or key file that is on this machine but cannot
    be read by mtlsc (commonly a key only root may read).

    Why: the checks of the server's certificate (MTLS321-328) need both files; nginx's master process
    reads them as root when it starts (docs/nginx-facts.md §14), so the files themselves may be fine.

    Example: `certificate "/etc/nginx/tls/api.crt" key "/etc/nginx/tls/api.key"` with the key mode 0600
    root, checked as another user.

    Fix: nothing, or run `mtlsc check` as a user that may read them to have them checked.
    """
    for server, files, span in _with_files(ctx):
        for what in files.unreadable:
            yield Finding(span, f"server `{server.names[0]}`: {what}; its certificate checks did not run",
                          "run `mtlsc check` as a user that can read the file to have it checked", label="not read")


def server_certificate_unusable(ctx):
    """What it catches: a server certificate file with no PEM certificate, or a key file with no
    unencrypted PEM private key.

    Why: `nginx -t` fails on it (`PEM_read_bio_X509_AUX() failed`, `PEM_read_bio_PrivateKey() failed`),
    and with it the whole configuration (docs/nginx-facts.md §13, §14).

    Example: `certificate "/etc/nginx/tls/api.der" key ...` (a DER file).

    Fix: point `certificate` at the PEM certificate followed by its chain, and `key` at its PEM key,
    unencrypted and readable by root only.
    """
    for server, files, span in _with_files(ctx):
        for what in files.unusable:
            yield Finding(span, f"server `{server.names[0]}`: {what}", "use PEM files: the certificate and its chain, "
                          "and the unencrypted private key", label="nginx -t fails")


def server_key_mismatch(ctx):
    """What it catches: a server key that does not belong to the server certificate (the first
    certificate of the file).

    Why: `nginx -t` fails with `key values mismatch` (docs/nginx-facts.md §14), and a reload keeps the
    old configuration while a restart leaves the server down.

    Example: the key of last year's certificate beside this year's certificate.

    Fix: install the key the certificate was issued for.
    """
    for server, files, span in _with_files(ctx):
        if files.certs and files.key is not None:
            if _public_bytes(files.certs[0].public_key()) != _public_bytes(files.key.public_key()):
                yield Finding(span, f"server `{server.names[0]}`: the key `{server.key}` does not belong to the certificate "
                              f"{_subject(files.certs[0])} in `{server.certificate}`",
                              "install the key the certificate was issued for (or the certificate of this key)",
                              label="key values mismatch")


def _validity(cert: x509.Certificate) -> tuple[datetime, datetime]:
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def server_certificate_expired(ctx):
    """What it catches: a server certificate that has expired, or is not valid yet.

    Why: `nginx -t` does not look at dates (docs/nginx-facts.md §13); every client that checks the server's
    certificate, which mTLS clients do, refuses the handshake (`certificate has expired`).

    Example: a certificate whose notAfter was yesterday.

    Fix: renew it and reload nginx; automate renewal.
    """
    for server, files, span in _with_files(ctx):
        if files.certs:
            start, end = _validity(files.certs[0])
            if end < ctx.now or start > ctx.now:
                state = f"expired on {end:%Y-%m-%d}" if end < ctx.now else f"is not valid before {start:%Y-%m-%d %H:%M} UTC"
                yield Finding(span, f"server `{server.names[0]}`: its certificate {_subject(files.certs[0])} {state}: "
                              "clients refuse the handshake", "install a current certificate and reload nginx",
                              label="not valid now")


def server_certificate_expiring_soon(ctx):
    """What it catches: a server certificate that expires within the expiry window (14 days by default).

    Why: that day every client refuses the server (docs/nginx-facts.md §14); a certificate is renewed with
    weeks to spare (ACME clients renew at 30 days left).

    Example: a certificate whose notAfter is next week.

    Fix: renew it now, and check the renewal job.
    """
    for server, files, span in _with_files(ctx):
        if files.certs:
            end = _validity(files.certs[0])[1]
            if ctx.now <= end < ctx.now + ctx.expiry_window:
                yield Finding(span, f"server `{server.names[0]}`: its certificate expires on {end:%Y-%m-%d}, within "
                              f"{ctx.expiry_window.days} days", "renew it and reload nginx before then; check the renewal job",
                              label="expires soon")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:
        return False


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _issued_by(cert, cert)


def _public_root(cert: x509.Certificate) -> bool:
    """Whether a public root of this machine's trust stores issued `cert`: then no chain is needed."""
    from mtlsc.checks.trust_files import public_store

    store = public_store()
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    from mtlsc import dn

    try:
        issuer = dn.nginx_dn_of(cert.issuer).lower()
    except Exception:
        return False
    return any(aki is None or ski == aki.hex() for ski, _, _ in store.skis.get(issuer, []))


def server_chain_incomplete(ctx):
    """What it catches: a server certificate file that does not hold the chain up to a root: the
    issuer of the certificate (or of a chain certificate) is not the next certificate of the file.

    The last certificate of the file may have a root (which clients have) as its issuer.

    Why: nginx sends exactly the certificates of the file (docs/nginx-facts.md §14). A client that has only
    the root (curl, Go, Java, OpenSSL: every API client) fails with `unable to get local issuer
    certificate`; browsers may fetch the missing intermediate themselves and hide the problem. OCSP
    stapling needs the issuer from this file too.

    Example: `certificate "api.crt"` holding only the leaf issued by an intermediate CA.

    Fix: append the intermediate CA certificates to the file, leaf first (`cat api.crt issuing.crt`);
    no root is needed. A leaf issued directly by a private root your clients trust may waive this.
    """
    for server, files, span in _with_files(ctx):
        certs = files.certs
        if not certs:
            continue
        for i, cert in enumerate(certs):
            nxt = certs[i + 1] if i + 1 < len(certs) else None
            if _self_signed(cert) or (nxt is not None and _issued_by(cert, nxt)):
                continue
            # the last chain certificate's issuer is usually the root, which clients have
            if nxt is None and (i > 0 or _public_root(cert)):
                break
            what = "the certificate" if i == 0 else f"chain certificate {i + 1} ({_subject(cert)})"
            after = (f"the next certificate, {_subject(nxt)}, did not sign it" if nxt is not None
                     else "the file has no certificate of it")
            yield Finding(span, f"server `{server.names[0]}`: the issuer of {what}, {cert.issuer.rfc4514_string()}, is "
                          f"not in `{server.certificate}` ({after}): clients without it fail with `unable to get local "
                          "issuer certificate`", "append the intermediate CA certificates to the file, leaf first",
                          label="chain incomplete")
            break


_WEAK_SIGNATURES = ("md5", "sha1")


def server_certificate_outside_profile(ctx):
    """What it catches: a server certificate with a weak key or signature (RSA under 2048 bits, DSA,
    SHA-1 or MD5), or outside what the server's Mozilla profile asks of it: `modern` wants ECDSA on P-256
    or P-384, `old` RSA signed with SHA-256, and `modern` a lifetime of at most 90 days, the others 366.

    Why: the key and signature are the server's identity for every client. OpenSSL 3.0 on Debian refuses
    an RSA key under 2048 bits when nginx loads it (`ee key too small`, docs/nginx-facts.md §14); the profile's
    oldest clients may not accept another key type, and graders (sslyze's Mozilla check) fail it.

    Example: an RSA certificate on a `tls modern` server; a 1024-bit RSA key.

    Fix: issue the certificate with the key type the profile names (ECDSA P-256 for `modern` and
    `intermediate`, RSA 2048 for `old`), signed with SHA-256 or better, for the profile's lifetime.
    """
    for server, files, span in _with_files(ctx):
        if not files.certs:
            continue
        cert, p = files.certs[0], PROFILES[server.tls.profile]
        problems = []
        key = cert.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < p.rsa_min_bits:
                problems.append(f"a weak {key.key_size}-bit RSA key (at least {p.rsa_min_bits})")
            elif "rsa" not in p.cert_types:
                problems.append(f"an RSA key, where `{p.name}` asks for ECDSA")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if "ecdsa" not in p.cert_types:
                problems.append(f"an ECDSA key, where `{p.name}` asks for RSA")
            elif key.curve.name not in p.cert_curves:
                problems.append(f"an ECDSA key on {key.curve.name} (the profile: P-256 or P-384)")
        elif isinstance(key, dsa.DSAPublicKey):
            problems.append("a DSA key, which TLS clients no longer accept")
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            problems.append(f"an {type(key).__name__.removesuffix('PublicKey')} key, which browsers and most clients do not accept")
        algorithm = cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else ""
        if algorithm in _WEAK_SIGNATURES:
            problems.append(f"a weak {algorithm.upper()} signature")
        start, end = _validity(cert)
        if (end - start).days > p.max_lifespan_days:
            problems.append(f"a lifetime of {(end - start).days} days (the profile: at most {p.max_lifespan_days})")
        if problems:
            yield Finding(span, f"server `{server.names[0]}`: its certificate has " + "; ".join(problems),
                          f"issue it with {'ECDSA P-256' if 'ecdsa' in p.cert_types else 'RSA 2048'}, signed with SHA-256, "
                          f"valid at most {p.max_lifespan_days} days (Mozilla's `{p.name}` profile)",
                          label=f"outside `{p.name}`")


def _dns_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)], \
        [str(a) for a in san.get_values_for_type(x509.IPAddress)]


def covers(patterns: list[str], name: str) -> bool:
    """Whether a SAN DNS name covers a server name (RFC 6125: `*` is the whole leftmost label)."""
    name = name.lower().rstrip(".")
    for p in patterns:
        if p == name:
            return True
        if p.startswith("*.") and not name.startswith("*.") and "." in name:
            if name.split(".", 1)[1] == p[2:]:
                return True
    return False


def server_name_not_covered(ctx):
    """What it catches: a server name that the server certificate's subjectAltName does not cover
    (`*.example.com` covers `a.example.com`, not `a.b.example.com` nor `example.com`; a wildcard server
    name needs the same wildcard in the certificate).

    Why: nginx sends the certificate whatever name the client asked for (docs/nginx-facts.md §14); a client
    that checks the name, which every HTTPS client does, refuses the handshake. A certificate without
    subjectAltName names nothing for modern clients (they ignore the CN).

    Example: `server api.example.com www.example.com { ... }` with a certificate for `api.example.com` only.

    Fix: reissue the certificate with every server name in its subjectAltName, or split the server.
    """
    for server, files, span in _with_files(ctx):
        if not files.certs:
            continue
        names, addresses = _dns_names(files.certs[0])
        missing = [n for n in server.names if not covers(names, n) and not _is_address_in(n, addresses)]
        if missing:
            shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "") if names else "no DNS name"
            yield Finding(span, f"server `{server.names[0]}`: its certificate does not cover "
                          + ", ".join(f"`{n}`" for n in missing) + f" (it names {shown}): clients refuse the handshake",
                          "reissue the certificate with every server name in its subjectAltName, or serve the other "
                          "names with a server block and certificate of their own", label="name not in the certificate")


def _is_address_in(name: str, addresses: list[str]) -> bool:
    try:
        return str(ipaddress.ip_address(name)) in addresses
    except ValueError:
        return False


def _ocsp_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    except x509.ExtensionNotFound:
        return []
    return [d.access_location.value for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP]


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    return rest.rsplit(":", 1)[0].strip("[]") if not rest.startswith("[") else rest[1:].split("]", 1)[0]


def stapling_not_possible(ctx):
    """What it catches: `stapling on` for a certificate nginx cannot staple: it names no OCSP responder
    (no OCSP URL in its AIA; Let's Encrypt's certificates carry none since 2025), its issuer is not in the
    certificate file, or the responder is named by a host name (which must resolve when nginx loads).

    Why: nginx then ignores `ssl_stapling` with a warning at every start and reload (`no OCSP responder
    URL in the certificate`, `issuer certificate not found`, `host not found in OCSP responder`), and
    clients get no stapled answer (docs/nginx-facts.md §14). mtlsc never takes the issuer from
    `ssl_trusted_certificate`: that file also verifies client certificates (§8).

    Example: `stapling on` with a certificate file holding only the leaf.

    Fix: append the issuing CA to the certificate file; leave stapling off for a certificate without an
    OCSP URL; for a host name, give a top-level `resolver` (the name must also resolve when nginx loads).
    """
    for server, files, span in _with_files(ctx):
        if not server.tls.stapling or not files.certs:
            continue
        where = server.tls.stapling_span or span
        cert, problems = files.certs[0], []
        urls = _ocsp_urls(cert)
        if not urls:
            problems.append("the certificate names no OCSP responder (`no OCSP responder URL in the certificate`)")
        if not any(_issued_by(cert, c) for c in files.certs[1:]):
            problems.append(f"`{server.certificate}` does not hold its issuer (`issuer certificate not found`)")
        hosts = [h for h in map(_host, urls[:1]) if h and not _is_ip(h)]
        if hosts and not ctx.policy.resolver:
            problems.append(f"the responder is named by host name `{hosts[0]}` and there is no top-level `resolver`: "
                            "nginx looks it up once when it loads (stapling is ignored if that fails) and keeps the address "
                            "until the next reload")
        if problems:
            yield Finding(where, f"server `{server.names[0]}`: nginx cannot staple OCSP for its certificate: "
                          + "; ".join(problems), "append the issuing CA to the certificate file; leave `stapling` off "
                          "for a certificate without an OCSP URL", label="ssl_stapling ignored")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
