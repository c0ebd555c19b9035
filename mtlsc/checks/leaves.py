"""`ca NAME { leaf ... }`: the listed self-signed client certificates, each its own trust anchor.

nginx checks a listed leaf like any certificate it verifies: its dates, its extended key usage
(purpose `sslclient`), its signature under its own key (docs/nginx-facts.md §F11). What it cannot
do is tell a leaf from a CA, or get a CRL for it. The CA-bundle checks of trust_files.py and
chains.py skip these CAs; these judge them instead.
"""

from __future__ import annotations

from collections.abc import Iterator

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlsc import ir
from mtlsc.checks.trust_files import _when, bundle_span, crl_span
from mtlsc.diagnostics import Finding, Related
from mtlsc.emit import quote
from mtlsc.model.locations import locations
from mtlsc.pki import CertInfo, describe
from mtlsc.pki.chains import openssl_ca, parsed


def leaves(ctx) -> Iterator[tuple[ir.Ca, CertInfo]]:
    """(leaf CA, one of its listed certificates), for every `leaf` CA whose files were read."""
    for ca in ctx.policy.cas:
        facts = ctx.pki.ca(ca.name) if ca.leaf else None
        for cert in facts.certs if facts else ():
            yield ca, cert


def _extended_key_usage(cert: CertInfo) -> list[x509.ObjectIdentifier] | None:
    try:
        return list(parsed(cert.pem).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None


def leaf_without_client_auth(ctx):
    """What it catches: a `leaf` certificate whose extendedKeyUsage leaves out clientAuth.

    Why: nginx verifies client certificates for the TLS client purpose, and OpenSSL refuses a
    certificate whose extendedKeyUsage does not list clientAuth (`anyExtendedKeyUsage` does not
    count): its holder gets `unsuitable certificate purpose`, a lockout (docs/nginx-facts.md §F11).
    A certificate with no extendedKeyUsage at all passes.

    Example: `leaf "alice.pem"` made with `-addext extendedKeyUsage=serverAuth`.

    Fix: have the holder make the certificate again with `-addext extendedKeyUsage=clientAuth`.
    """
    for ca, cert in leaves(ctx):
        usages = _extended_key_usage(cert)
        if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            listed = ", ".join(getattr(u, "_name", u.dotted_string) for u in usages) or "nothing"
            yield Finding(bundle_span(ca, cert),
                          f"{describe(cert)} has an extendedKeyUsage without clientAuth ({listed}): nginx refuses "
                          "its holder (`unsuitable certificate purpose`)",
                          "make the certificate again with `-addext extendedKeyUsage=clientAuth`",
                          label="no clientAuth")


def leaf_ca_beside_crl(ctx):
    """What it catches: a `leaf` CA on a server where another CA turns CRL checking on (`crl`).

    Why: `ssl_crl` is one per server and wants a CRL for every anchor of the trust file, the
    listed leaves included: every leaf holder gets `unable to get certificate CRL`, a lockout
    (docs/nginx-facts.md §F11, §4). Only a leaf's own key
    could sign its CRL, and the server's operator does not hold it.

    Example: `ca laptops { leaf "alice.pem" }` and `ca staff { bundle "root.pem"  crl "root.crl" }`
    on routes of one server.

    Fix: serve the `leaf` CA's routes on their own server name or port, whose trust file has no CRL.
    """
    for server in ctx.policy.servers:
        with_crl = next((ca for ca in server.cas if ca.crls), None)
        if with_crl is None:
            continue
        facts = ctx.pki.ca(with_crl.name)
        on = crl_span(with_crl, facts.crls[0]) if facts and facts.crls else with_crl.span
        for ca in (c for c in server.cas if c.leaf):
            route = next(r for r in server.routes if r.ca is not None and r.ca.name == ca.name)
            yield Finding(route.span,
                          f"server `{server.names[0]}` checks CRLs (ca `{with_crl.name}`), and no CRL can exist for "
                          f"the leaves of ca `{ca.name}`: every one of them gets `unable to get certificate CRL`",
                          f"serve the routes of ca `{ca.name}` on their own server name or port",
                          label="leaf CA on a server that checks CRLs",
                          related=(Related(on, "CRL checking is turned on here"),))


def leaf_not_self_signed(ctx):
    """What it catches: a `leaf` certificate that is not self-signed: issued by a CA, or naming
    itself as issuer without its own key verifying its signature.

    Why: a listed leaf is its own trust anchor; one issued by a CA anchors nothing in nginx and its
    holder gets `unable to verify the first certificate`, as for a leaf in a bundle
    (docs/nginx-facts.md §12).

    Example: `leaf "alice.pem"` where alice.pem was issued by the company CA.

    Fix: trust the CA that issued it with `bundle` in a CA of its own, and name the client with an
    `identity` (its subject or fingerprint); or have the holder make a self-signed certificate.
    """
    for ca, cert in leaves(ctx):
        if not cert.self_signed:
            yield Finding(bundle_span(ca, cert),
                          f"{describe(cert)} is not self-signed (issuer `{cert.issuer}`): it anchors nothing, its "
                          "holder gets `unable to verify the first certificate`",
                          f"trust its issuer with `bundle` in a CA of its own and name the client with an `identity`",
                          label="not self-signed")


def leaf_is_a_ca(ctx):
    """What it catches: a `leaf` certificate OpenSSL takes for a CA: basicConstraints CA:TRUE, a
    keyUsage with keyCertSign and no basicConstraints, a version 1 certificate, or a Netscape
    certificate type with the SSL CA bit and neither basicConstraints nor keyUsage.

    Why: nginx would verify every certificate it signs as well (docs/nginx-facts.md §12, §F11),
    not only its holder's. The fingerprint gate still admits only the listed certificate on the
    CA's routes, but the holder (who made the certificate) could sign a sub-CA named like another
    CA of the server and reach that CA's routes under any name.

    Example: `leaf "company-root.pem"`.

    Fix: list it with `bundle` in a CA of its own (and name its clients with identities), or list
    the client certificates themselves under `leaf`.
    """
    for ca, cert in leaves(ctx):
        if cert.self_signed and openssl_ca(cert):
            yield Finding(bundle_span(ca, cert),
                          f"{describe(cert)} is a CA certificate, not a client's own: it would anchor every "
                          "certificate it signs",
                          "list it with `bundle` in a CA of its own, or list the client certificates under `leaf`",
                          label="a CA, not a leaf")


def leaf_not_valid_now(ctx):
    """What it catches: a `leaf` certificate that has expired, or is not valid yet.

    Why: nginx checks the listed leaf's own dates: its holder gets `certificate has expired` or
    `certificate is not yet valid` (docs/nginx-facts.md §F11).
    `nginx -t` does not look at dates.

    Example: `leaf "alice.pem"` whose notAfter was last week.

    Fix: have the holder make a new certificate and list it instead (its fingerprint changes, so
    identities pinned by fingerprint change too).
    """
    for ca, cert in leaves(ctx):
        if cert.not_after < ctx.now:
            yield Finding(bundle_span(ca, cert), f"{describe(cert)} has expired: its holder gets `certificate has expired`",
                          "list the holder's renewed certificate instead", label=f"expired {_when(cert.not_after)}")
        elif cert.not_before > ctx.now:
            yield Finding(bundle_span(ca, cert),
                          f"{describe(cert)} is not valid before {_when(cert.not_before)}: its holder gets "
                          "`certificate is not yet valid` until then",
                          "list it once it is valid, and keep the current certificate until then",
                          label="not valid yet")


def leaf_expiring_soon(ctx):
    """What it catches: a `leaf` certificate that expires within the expiry window (default 14 days).

    Why: on that day its holder gets `certificate has expired` (docs/nginx-facts.md §F11); nobody
    but the holder can renew it.

    Example: `leaf "alice.pem"` with a notAfter next week.

    Fix: ask the holder for a renewed certificate and list it beside the old one until the switch
    (made with `openssl req -x509`, so nginx can tell the two apart: MTLS329).
    """
    for ca, cert in leaves(ctx):
        if ctx.now <= cert.not_after < ctx.now + ctx.expiry_window:
            yield Finding(bundle_span(ca, cert),
                          f"{describe(cert)} expires within {ctx.expiry_window.days} days: then its holder gets "
                          "`certificate has expired`",
                          "list the holder's renewed certificate beside it before then", label="expires soon")


def leaf_routes_unbound(server: ir.Server, view, pki) -> list[ir.Route]:
    """The routes of `leaf` CAs whose emitted location (in `view`, the server's template view)
    lacks a gate whose map passes a verified certificate exactly when it is a listed leaf: for
    MTLS206, an assertion on the emitter."""
    maps = {str(m.var): m for m in view.maps}
    source = str(quote.nginx_concat("ssl_client_verify", "ssl_client_fingerprint"))
    out = []
    for route, loc in zip([loc.route for loc in locations(server)], view.locations):
        if route.ca is None or not route.ca.leaf:
            continue
        facts = pki.ca(route.ca.name)
        listed = {str(quote.map_key(f"SUCCESS:{c.fingerprint}")) for c in facts.certs} if facts else set()
        if not any(_passes_only(maps.get(str(g.var)), source, listed) for g in loc.gates):
            out.append(route)
    return out


def _passes_only(view_map, source: str, listed: set[str]) -> bool:
    """The map reads `source`, yields 0 for exactly the `listed` keys and 1 for any other verified one."""
    if view_map is None or str(view_map.source) != source:
        return False
    entries = {str(e.key): str(e.value) for e in view_map.entries}
    return ({k for k, v in entries.items() if v == "0"} == listed
            and entries.get(str(quote.map_regex("^SUCCESS:"))) == "1" and str(view_map.default) == "0")


def leaves_share_a_name(ctx):
    """What it catches: two `leaf` certificates of one CA with the same subject, where one does not
    name its own key in an authorityKeyIdentifier that tells it from the other.

    Why: OpenSSL looks a trust anchor up by name and takes the first certificate of that name whose
    key identifier does not contradict the presented one's. A holder whose certificate names no key
    may be matched to the other leaf, and is refused (`self-signed certificate`): one of the two
    holders gets in, whichever OpenSSL meets first (docs/nginx-facts.md §F11). It happens when a
    renewed certificate is listed beside the old one.

    Example: `leaf "alice-2025.pem" "alice-2026.pem"`, both `CN=alice`, made without an
    authorityKeyIdentifier (`openssl req -x509` writes one; other tools may not).

    Fix: have the holder make the new certificate with `openssl req -x509`, which names its own key
    (`authorityKeyIdentifier = keyid`), or switch at once: list only the new certificate.
    """
    for ca in (c for c in ctx.policy.cas if c.leaf):
        facts = ctx.pki.ca(ca.name)
        by_name: dict[str, dict[str, CertInfo]] = {}
        for cert in facts.certs if facts else ():
            # OpenSSL compares names case-insensitively, runs of spaces as one; a file twice is one leaf
            by_name.setdefault(" ".join(cert.subject.lower().split()), {})[cert.fingerprint] = cert
        for same in (list(g.values()) for g in by_name.values() if len(g) > 1):
            for cert in same:
                others = [o for o in same if o is not cert]
                if cert.aki and cert.aki == cert.ski and all(o.ski and o.ski != cert.aki for o in others):
                    continue
                yield Finding(bundle_span(ca, cert),
                              f"{describe(cert)} has the name of {describe(others[0])}, another leaf of ca `{ca.name}`, "
                              "and no authorityKeyIdentifier naming its own key: nginx may take the other for its "
                              "anchor and refuse its holder (`self-signed certificate`)",
                              "have the holder make it with `openssl req -x509` (which names its own key), or list "
                              "only one certificate of the name", label="same name as another leaf")
