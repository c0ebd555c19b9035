"""MTLS2xx: configurations that let in clients the policy did not mean to admit."""

from __future__ import annotations

from mtlsc.diagnostics import Finding, Related


def issuer_dn_shared_between_cas(ctx):
    """What it catches: two CAs of one server that contain certificates with the same subject DN.

    Why: nginx shows a route only `$ssl_client_i_dn`; mtlsc binds each route to its CA by the issuer
    DN, which cannot tell two issuers with the same DN apart (nginx-facts §E2).

    Example: `ca a { bundle "a.pem" }` and `ca b { bundle "copy-of-a.pem" }` on one server.

    Fix: serve the two CAs on different server names or ports.
    """
    for server in ctx.policy.servers:
        owner = {}
        for ca in server.cas:
            facts = ctx.pki.ca(ca.name)
            if facts is None:
                continue
            for cert in facts.certs:
                key = cert.subject.lower()
                if key in owner and owner[key].name != ca.name:
                    yield Finding(
                        ca.span,
                        f"ca `{ca.name}` and ca `{owner[key].name}` both hold a certificate named `{cert.subject}`",
                        "nginx cannot tell their clients apart; serve them on different server names or ports",
                        related=(Related(owner[key].span, "the other CA"),),
                    )
                owner.setdefault(key, ca)
