"""MTLS11x for OCSP: what `ocsp on|leaf` asks of client certificates, intermediates and the responder.

nginx's `ssl_ocsp` is one setting per server: the emitted server takes the `ocsp` line of the
first of its CAs (by name) for every CA it trusts. A failed OCSP lookup rejects the client
(docs/nginx-facts.md §10), so each of these is a lockout.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from mtlsc import ir
from mtlsc.checks.chains import ca_certs, servers_of
from mtlsc.checks.trust_files import bundle_span
from mtlsc.diagnostics import Finding, Related
from mtlsc.pki import CertInfo, describe


def _server_ocsp(cas) -> tuple[ir.Ca, ir.Ocsp] | None:
    # The emitted server takes the first `ocsp` of its CAs, by name, for all of them.
    return next(((ca, ca.ocsp) for ca, _, _ in cas if ca.ocsp), None)


def ocsp_without_responder_url(ctx):
    """What it catches: `ocsp on|leaf` without `responder`, for a CA whose certificates show no
    OCSP URL (AIA) anywhere, so nothing says its client certificates carry one.

    Why: without `ssl_ocsp_responder` nginx asks the URL in each client certificate; a certificate
    without one gets `certificate status request failed`, a hard failure (docs/nginx-facts.md §10, lockout
    trap 10). mtlsc cannot see client certificates, so it warns. The server's `ssl_ocsp` covers
    every CA of the server, also those without an `ocsp` line.

    Example: `ca a { bundle "root.pem"  ocsp leaf }`.

    Fix: give a `responder "http://IP:PORT/"`, or make sure the CA puts an OCSP URL in every client
    certificate and waive this warning saying so (with a `resolver` if those URLs name hosts).
    """
    seen = set()
    for server, cas in servers_of(ctx):
        found = _server_ocsp(cas)
        if found is None or found[1].responder:
            continue
        owner, ocsp = found
        for ca, certs, _ in cas:
            # nginx asks no responder about a self-signed leaf (docs/nginx-facts.md §F11)
            if ca.leaf or any(c.ocsp_urls for c in certs) or ca.name in seen:
                continue
            seen.add(ca.name)
            other = "" if ca is owner else f" (server `{server.names[0]}` checks OCSP for every CA it trusts)"
            dns = "" if ctx.policy.resolver else "; with no `resolver`, a URL that names a host fails too"
            yield Finding(ca.ocsp.span if ca is owner else ca.span,
                          f"`ocsp {ocsp.mode}` without `responder`: every client certificate of ca `{ca.name}` must "
                          f"carry an OCSP URL, or nginx rejects it{other}{dns}",
                          "add `responder \"http://IP:PORT/\"`, or waive this if the CA writes an OCSP URL in every "
                          "certificate" + ("" if ctx.policy.resolver else " (and add a `resolver` if those URLs name hosts)"),
                          related=() if ca is owner else (Related(ocsp.span, "OCSP is turned on here"),))


def _intermediate_certs(certs) -> list[CertInfo]:
    return [c for c in ca_certs(certs) if not c.self_signed]


def ocsp_intermediate_without_url(ctx):
    """What it catches: `ocsp on` without `responder` where an intermediate of the bundle carries
    no OCSP URL.

    Why: `ssl_ocsp on` asks about the intermediate too, not only the client (docs/nginx-facts.md §10), and
    without a responder the URL must come from the intermediate itself: none means `certificate
    status request failed` for every client below it (lockout trap 10).

    Example: `ca a { bundle "root.pem" "issuing.pem"  ocsp on }`, issuing.pem without AIA.

    Fix: `ocsp leaf` (check only client certificates), or a `responder` that answers for the
    intermediate as well.
    """
    for server, cas in servers_of(ctx):
        found = _server_ocsp(cas)
        if found is None or found[1].mode != "on" or found[1].responder:
            continue
        for ca, certs, _ in cas:
            for cert in _intermediate_certs(certs):
                if not cert.ocsp_urls:
                    yield Finding(bundle_span(ca, cert),
                                  f"`ocsp on` asks about intermediate {describe(cert)} too, and it names no OCSP URL: "
                                  "every client below it gets `certificate status request failed`",
                                  "write `ocsp leaf`, or a `responder` that answers for the intermediate too",
                                  related=(Related(found[1].span, "`ocsp on` here"),))


def _host_name(url: str) -> str | None:
    """The host of a URL when it is a name, not an IP address."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def ocsp_responder_host_name(ctx):
    """What it catches: an OCSP `responder` given by host name rather than an IP address.

    Why: nginx resolves the name when it loads the configuration: `nginx -t` and every reload
    fail with `host not found in OCSP responder` if it does not resolve then. Without a
    `resolver`, nginx keeps that address until the next reload (and logs `no resolver defined`
    on every lookup); with one, it looks the name up again through the resolver for every
    lookup, so the name must resolve there too (docs/nginx-facts.md §10, lockout trap 11).

    Example: `ocsp leaf responder "http://ocsp.example.com/"`.

    Fix: give the responder's IP address, or make sure the name resolves wherever nginx loads
    (and through the `resolver`, when there is one).
    """
    for ca in ctx.policy.cas:
        if ca.ocsp is None or not ca.ocsp.responder:
            continue
        host = _host_name(ca.ocsp.responder)
        if host is None:
            continue
        later = (f"and again through `resolver` for every lookup, so it must resolve there too" if ctx.policy.resolver
                 else "and keeps that address until the next reload")
        yield Finding(ca.ocsp.span,
                      f"OCSP responder host `{host}` is a name: nginx resolves it at load time (`nginx -t` fails "
                      f"if it does not resolve then) {later}",
                      "write the responder's IP address, or make sure the name resolves wherever nginx loads")


def ocsp_host_name_without_resolver(ctx):
    """What it catches: a server that checks OCSP without `responder`, where a certificate of
    its CAs names its OCSP responder by host name (AIA), and the policy has no `resolver`.

    Why: without `responder` nginx asks at the URL each certificate carries, and it looks a host
    name up, at handshake time, only through `resolver`: without one every lookup fails (`no
    resolver defined to resolve HOST`), `$ssl_client_verify` is `FAILED:certificate status
    request failed` and every client is refused (docs/nginx-facts.md §10). With `ocsp on` nginx asks at
    the intermediate's own URL; with `ocsp leaf` a CA that names its responder by host name in its certificates
    does so in its client certificates too. A `responder` by host name is resolved when nginx
    loads instead, and needs no resolver (MTLS115).

    Example: `ca a { bundle "root.pem" "issuing.pem"  ocsp leaf }`, issuing.pem with the OCSP
    URL `http://ocsp.example.com/`, and no `resolver` in the policy.

    Fix: add `resolver "IP"` with the DNS servers nginx should ask, or a `responder` given by IP
    address.
    """
    if ctx.policy.resolver is not None:
        return
    seen = set()
    for server, cas in servers_of(ctx):
        found = _server_ocsp(cas)
        if found is None or found[1].responder:
            continue
        for ca, certs, _ in cas:
            for cert in certs:
                hosts = sorted({h for u in cert.ocsp_urls if (h := _host_name(u))})
                if not hosts or (ca.name, cert.fingerprint) in seen:
                    continue
                seen.add((ca.name, cert.fingerprint))
                asked = ("nginx asks about it at" if found[1].mode == "on" and not cert.self_signed
                         else "so the client certificates of ca `" + ca.name + "` most likely name")
                yield Finding(bundle_span(ca, cert),
                              f"{describe(cert)} names its OCSP responder by host name (`{hosts[0]}`), {asked} "
                              f"a host too, and with no `resolver` nginx cannot look it up: every OCSP lookup fails "
                              f"(`no resolver defined to resolve {hosts[0]}`) and every client is refused",
                              "add `resolver \"IP\"` (the DNS servers nginx should ask), or a `responder` by IP address",
                              related=(Related(found[1].span, f"`ocsp {found[1].mode}` here, without `responder`"),))


def ocsp_checks_intermediates(ctx):
    """What it catches (a note): `ocsp on` on a server whose bundle holds intermediates.

    Why: `ssl_ocsp on` queries the status of each intermediate as well as the client's, and any
    failed answer rejects the client (docs/nginx-facts.md §10): the responder must answer for the
    intermediates too. `ocsp leaf` asks only about the client certificate.

    Example: `ca a { bundle "root.pem" "issuing.pem"  ocsp on responder "http://10.0.0.5/" }`.

    Fix: none needed if the responder answers for the intermediates; else write `ocsp leaf`.
    """
    seen = set()
    for server, cas in servers_of(ctx):
        found = _server_ocsp(cas)
        if found is None or found[1].mode != "on" or found[0].name in seen:
            continue
        seen.add(found[0].name)
        inter = [c for _, certs, _ in cas for c in _intermediate_certs(certs)
                 if found[1].responder or c.ocsp_urls]
        if inter:
            names = ", ".join(f"`{c.subject}`" for c in inter)
            yield Finding(found[1].span,
                          f"`ocsp on`: nginx also asks the responder about intermediate(s) {names}; a failed answer "
                          "rejects every client below them",
                          "make sure the responder answers for them, or write `ocsp leaf`")


def ocsp_settings_differ_within_server(ctx):
    """What it catches: CAs of one server whose `ocsp` lines differ (one has none, or another mode,
    responder or cache).

    Why: `ssl_ocsp`, `ssl_ocsp_responder` and `ssl_ocsp_cache` are per server in nginx: one setting applies to every
    client certificate of the server, whatever CA issued it. A CA without OCSP would have its
    clients checked anyway (and refused when they carry no OCSP URL), or a CA's responder asked
    about another CA's certificates (docs/nginx-facts.md §10).

    Example: `ca a { ... ocsp leaf }` and `ca b { ... }` on routes of one server.

    Fix: give every CA of the server the same `ocsp` line, or serve the CAs on different servers.
    """
    for server, cas in servers_of(ctx):
        settings = {(ca.ocsp.mode, ca.ocsp.responder, ca.ocsp.cache) if ca.ocsp else None: ca for ca, _, _ in cas}
        if len(settings) < 2:
            continue
        first = _server_ocsp(cas)
        for key, ca in settings.items():
            if first is None or ca is first[0]:
                continue
            said = (f"`ocsp {key[0]}`" + (f" with responder `{key[1]}`" if key[1] else "")
                    + (f", cache `{key[2]}`" if key[2] != first[1].cache else "")) if key else "no `ocsp`"
            yield Finding(ca.ocsp.span if ca.ocsp else ca.span,
                          f"ca `{ca.name}` has {said}, but server `{server.names[0]}` applies one OCSP setting "
                          f"to all its CAs, taken from ca `{first[0].name}`",
                          "give every CA of the server the same `ocsp` line, or serve them on different servers",
                          related=(Related(first[1].span, "the setting the server uses"),))
