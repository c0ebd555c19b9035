"""The server's own TLS in nginx terms (docs/language.md "Server TLS"): a view of its Mozilla profile
(mtlsc.tls_profiles) for the server template, and the part of it every default server of an
address must carry, since nginx takes protocols, TLS 1.3 suites and groups from there
(docs/nginx-facts.md §14)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mtlsc import ir
from mtlsc.emit import quote
from mtlsc.emit.quote import Safe
from mtlsc.tls_profiles import CURVES, PROFILES, TLS13_SUITES


@dataclass
class TlsView:
    profile: Safe
    protocols: Safe
    ciphers: Safe  # TLS 1.2 and older
    tls13_only: bool
    suites: Safe  # TLS 1.3
    curves: Safe
    prefer_server_ciphers: bool
    dhparam: Safe | None = None  # the DH parameter file, for `old`'s DHE suites
    hsts: Safe | None = None
    server_tokens: bool = True  # False: the policy's `nginx { }` sets server_tokens itself
    stapling: bool = False
    resolver: list[Safe] = field(default_factory=list)  # for stapling, when the OCSP block does not write it
    resolver_timeout: Safe | None = None


@dataclass
class DefaultServer:
    listen: Safe
    tls: TlsView


def default_tls(profile: str) -> TlsView:
    """The settings of a profile; a default server carries its protocols, suites and curves."""
    p = PROFILES[profile]  # mtlsc's own constants: no user text
    return TlsView(Safe(p.name), Safe(" ".join(p.protocols)),
                   Safe(PROFILES["intermediate"].cipher_string if not p.ciphers else p.cipher_string),
                   not p.ciphers, Safe(":".join(TLS13_SUITES)), Safe(":".join(CURVES)), p.prefer_server_ciphers)


def listen_profiles(policy: ir.Policy) -> dict[str, str]:
    """The TLS profile of the servers on each listen address, as mtlsc writes the address (MTLS241
    makes the servers of one address agree)."""
    return {(f"{l.address}:{l.port}" if l.address else str(l.port)): s.tls.profile
            for s in policy.servers for l in s.listens}


def tls_view(policy: ir.Policy, server: ir.Server, ocsp: bool) -> TlsView:
    tls = server.tls
    view = default_tls(tls.profile)
    view.dhparam = (quote.nginx_text(f"{server.install_dir.rstrip('/')}/{server.slug}.dh.pem")
                    if PROFILES[tls.profile].dh_params else None)
    view.hsts = hsts_value(server)
    view.server_tokens = not any(d.name == "server_tokens" for d in server.nginx)
    view.stapling = tls.stapling
    if tls.stapling and not ocsp and policy.resolver:
        view.resolver = [quote.bare(a) for a in policy.resolver.addresses]
        view.resolver_timeout = quote.bare(policy.resolver.timeout)
    return view


def hsts_value(server: ir.Server) -> Safe | None:
    return quote.nginx_text(server.tls.hsts.value) if server.tls.hsts else None


def location_hsts(server: ir.Server, route: ir.Route) -> Safe | None:
    """HSTS again in a location whose route adds headers: nginx's add_header inheritance keeps none
    of the server's there."""
    return hsts_value(server) if any(d.name == "add_header" for d in route.nginx) else None
