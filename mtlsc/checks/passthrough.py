"""Checks on `passthrough` routes (docs/language.md "Passthrough routes")."""

from __future__ import annotations

from mtlsc import ir
from mtlsc.diagnostics import Finding


def passthrough_route_unverified(ctx):
    """What it catches: a `passthrough` route: nginx asks for a client certificate and hands it to
    the backend without verifying it against any CA (`ssl_verify_client optional_no_ca`).

    Why: anyone can mint a certificate with any subject, SAN or serial; nginx only refuses one that
    is expired or not yet valid, and `$ssl_client_verify` says `FAILED:...` for every other one
    (docs/nginx-facts.md §1). A backend that reads the subject or SAN headers as an identity, or
    treats a present certificate as authenticated, is open to everyone. Without `forward cert` the
    backend cannot even verify it.

    Example: `route /legacy/ { passthrough  forward subject }`.

    Fix: verify in nginx (`require CA`, with `allow`) where you can; else forward `cert` and `verify`
    and have the backend verify the certificate against its own trust store, ignoring the other
    headers until it has.
    """
    for server in ctx.policy.servers:
        for route in server.routes:
            if route.mode is not ir.Mode.PASSTHROUGH:
                continue
            fields = {f.field for f in route.forward}
            missing = [f for f in ("cert", "verify") if f not in fields]
            why = (f"; it does not forward {' or '.join(f'`{m}`' for m in missing)}, so the backend cannot verify it"
                   if missing else "")
            yield Finding(route.span,
                          f"route `{route.path}` hands client certificates to the backend unverified: any self-made "
                          f"certificate reaches it{why}",
                          "verify in nginx with `require CA` where you can; else forward `cert verify` and verify the "
                          "certificate in the backend before trusting any identity header",
                          label="no CA verifies these certificates")
