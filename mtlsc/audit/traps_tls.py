"""TLS-setting traps of a hand-written nginx configuration (docs/nginx-facts.md §1, §11, §13)."""

from __future__ import annotations


from mtlsc.audit.flow import reaches
from mtlsc.audit.model import NGINX_DEFAULT_PROTOCOLS, Config, span_of
from mtlsc.audit.report import finding
from mtlsc.audit.traps import NO_CERT, PLAIN, proxied
from mtlsc.diagnostics import Diagnostic, Related


# ---- TLS settings: §1, §11, §13 --------------------------------------------------------------

def tls_settings(config: Config) -> list[Diagnostic]:
    out = []
    seen: set[int] = set()
    for srv in config.servers:
        if not srv.verifies:
            continue
        protocols = srv.setting("ssl_protocols")
        if protocols is None or "TLSv1.3" not in protocols.args:
            if protocols is None and id(srv) not in seen:
                message = (f"{srv.label} sets no `ssl_protocols`: nginx 1.22 (and every nginx before 1.23.4) then "
                           f"offers only {' '.join(NGINX_DEFAULT_PROTOCOLS)}, never TLS 1.3")
                span = span_of(srv.directive)
            elif protocols is not None and id(protocols) not in seen:
                seen.add(id(protocols))
                message = f"`ssl_protocols {' '.join(protocols.args)}` leaves TLS 1.3 off"
                span = span_of(protocols)
            else:
                span = None
            if span is not None:
                out.append(finding(
                    "MTLS547", span,
                    message + ": clients limited to TLS 1.3 fail the handshake (docs/nginx-facts.md §1, lockout trap 12)",
                    "`ssl_protocols TLSv1.2 TLSv1.3;`", "names TLSv1.3 in every server"))
        revocation = srv.setting("ssl_crl") or next((d for d in [srv.setting("ssl_ocsp")] if d and d.args
                                                      and d.args[0].lower() != "off"), None)
        at = srv.setting("ssl_verify_client")
        if revocation is None and at is not None and id(at) not in seen:
            seen.add(id(at))
            out.append(finding(
                "MTLS546", span_of(at),
                f"{srv.label} verifies client certificates with neither `ssl_crl` nor `ssl_ocsp`: a revoked or lost "
                "certificate keeps access until it expires (docs/nginx-facts.md §4)",
                "publish a CRL for every CA certificate of the chain and set `ssl_crl` (or `ssl_ocsp on`)",
                "writes a comment in each `ca` without a CRL asking for one (it cannot invent the file)"))
        if revocation is not None:
            for name in ("ssl_session_cache", "ssl_session_ticket_key"):
                d = srv.setting(name)
                if d is None or id(d) in seen:
                    continue
                if name == "ssl_session_cache" and not any(a.startswith("shared:") for a in d.args):
                    continue
                seen.add(id(d))
                out.append(finding(
                    "MTLS548", span_of(d),
                    f"`{' '.join((d.name, *d.args))}` keeps TLS sessions across reloads: a client whose certificate the "
                    "next CRL revokes still resumes as `SUCCESS` after the reload that loads it "
                    "(docs/nginx-facts.md §11, over-trust trap 11)",
                    "`ssl_session_cache off;` and no `ssl_session_ticket_key` (nginx's own ticket keys change at "
                    "each reload)", "emits neither"))
        for listen in srv.listens:
            if listen.ssl or id(listen.directive) in seen:
                continue
            leak = next((loc for loc in srv.locations if proxied(loc) and reaches(config, srv, loc, PLAIN)
                         and (srv.verify == "on" or not reaches(config, srv, loc, NO_CERT))), None)
            if leak is None:
                continue
            seen.add(id(listen.directive))
            out.append(finding(
                "MTLS549", span_of(listen.directive),
                f"{srv.label} verifies clients, but this listener has no `ssl`: there nothing is verified, and "
                f"`{leak.describe()}` answers a plain-HTTP request (docs/nginx-facts.md §13, over-trust trap 12)",
                "move the plain listener to a server of its own that only redirects to https",
                "emits only `listen ... ssl`", label="plain listener",
                related=(Related(span_of(leak.directive), "served without a certificate over plain HTTP"),)))
    return out
