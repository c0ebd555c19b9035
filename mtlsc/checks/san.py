"""Checks on SAN identities (docs/language.md "SAN identities")."""

from __future__ import annotations

from mtlsc import ir
from mtlsc.diagnostics import Finding, Related


def spiffe_trust_domain_in_several_cas(ctx):
    """What it catches: SPIFFE identities of one trust domain allowed on routes of two or more CAs.

    Why: SPIFFE gives each trust domain one trust bundle; a SPIFFE ID is only as good as the CA that
    vouches for it. When two CAs are trusted for `spiffe://prod.example.org/...`, the weaker of
    the two (an old mesh CA, a partner's CA) can mint any workload of that domain, and nothing in
    the certificate tells the two apart: the gate reads the SAN, not the issuer (the issuer DN is
    copyable, docs/nginx-facts.md §E2).

    Example: `route /a/ { require mesh  allow web }` and `route /b/ { require legacy  allow web2 }`
    with `web` and `web2` both `spiffe://prod.example.org/...`.

    Fix: trust one CA per trust domain: allow that domain's identities only on routes of its CA,
    or give the other CA's workloads their own trust domain.
    """
    where: dict[str, dict[str, tuple[ir.Route, ir.Identity]]] = {}
    for server in ctx.policy.servers:
        for route in server.routes:
            if route.ca is None:
                continue
            for ident in route.allow:
                if ident.kind is ir.IdentityKind.SAN and ident.san.kind == "spiffe":
                    where.setdefault(ident.san.trust_domain, {}).setdefault(route.ca.name, (route, ident))
    for domain in sorted(where):
        cas = where[domain]
        if len(cas) < 2:
            continue
        names = sorted(cas, key=lambda n: (cas[n][0].span.path, cas[n][0].span.line, n) if cas[n][0].span else ("", 0, n))
        first_route, first_ident = cas[names[0]]
        for other in names[1:]:
            route, ident = cas[other]
            yield Finding(route.span,
                          f"SPIFFE trust domain `{domain}` is vouched for by ca `{names[0]}` and ca `{other}`: either "
                          f"can mint any workload of it",
                          f"trust one CA for `{domain}`: allow its identities only on routes of that CA",
                          label=f"identity `{ident.name}` of `{domain}` under ca `{other}`",
                          related=(Related(first_route.span, f"identity `{first_ident.name}` of `{domain}` under ca "
                                                             f"`{names[0]}`"),))
