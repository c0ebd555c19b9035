"""MTLS1xx: configurations under which legitimate clients are refused."""

from __future__ import annotations

from mtlsc import ir
from mtlsc.diagnostics import Finding, Related


def public_route_behind_required_listener(ctx):
    """What it catches: `handshake require` on a server that also has public or optional routes.

    Why: `ssl_verify_client on` applies to the whole listener; nginx answers 400 "No required SSL
    certificate was sent" before any location runs, so health checks and CI lose the public
    paths (nginx-facts §1, lockout trap 7).

    Example: `server a { handshake require  route = /healthz { public } ... }`

    Fix: remove `handshake require`; mtlsc then gates each route with its own check.
    """
    for server in ctx.policy.servers:
        if not server.handshake_require:
            continue
        for route in server.routes:
            if route.mode is not ir.Mode.REQUIRE:
                yield Finding(
                    route.span,
                    f"route `{route.path}` is {route.mode.value} but the whole listener requires a client certificate",
                    f"remove `handshake require` from `{server.names[0]}`; mtlsc then gates each route on its own",
                    label="clients without a certificate get 400 here",
                    related=(Related(server.handshake_span, "the listener requires a certificate here"),),
                )


def crl_missing_for_some_ca(ctx):
    """What it catches: a server where some CA has CRLs and another CA of the same server has none.

    Why: `ssl_crl` is one file per server, and once it is set nginx demands a CRL for every CA in
    every chain; clients of a CA without a CRL get `unable to get certificate CRL` (nginx-facts §4).

    Example: `ca a { crl "a.crl" }  ca b { }` both used by routes of one server.

    Fix: give every CA of the server its CRLs (one per CA certificate), or move the CA to its own server.
    """
    for server in ctx.policy.servers:
        cas = server.cas
        with_crl = [c for c in cas if c.crls]
        if not with_crl:
            continue
        for ca in cas:
            if not ca.crls:
                yield Finding(
                    ca.span,
                    f"ca `{ca.name}` has no CRL, but server `{server.names[0]}` checks CRLs for `{with_crl[0].name}`",
                    f"every client of `{ca.name}` would be rejected with `unable to get certificate CRL`; add its CRLs",
                    label="no `crl` here",
                    related=(Related(with_crl[0].span, "CRL checking is turned on by this CA"),),
                )
