"""`mtlsc diff` of a server's own TLS (`tls`, `hsts`, `stapling`): a profile that accepts more, or
HSTS that asks browsers for less, is widening; the reverse is narrowing (old clients, or plain-HTTP
subdomains, may be locked out); stapling is neutral (it changes no one's access)."""

from __future__ import annotations

from mtlsc import ir
from mtlsc.review.change import NARROWING, NEUTRAL, WIDENING, Change
from mtlsc.tls_profiles import PROFILES


def tls_change(server: str, old_srv: ir.Server, new_srv: ir.Server) -> list[Change]:
    o, n = old_srv.tls, new_srv.tls
    out = []
    if o.profile != n.profile:
        op, np_ = PROFILES[o.profile], PROFILES[n.profile]
        if np_.rank > op.rank:
            out.append(Change(WIDENING, server, None, "tls", f"TLS profile `{o.profile}` -> `{n.profile}`: now accepts "
                              f"{', '.join(p for p in np_.protocols if p not in op.protocols) or 'more cipher suites'} "
                              "and weaker cipher suites", o.profile, n.profile))
        else:
            out.append(Change(NARROWING, server, None, "tls", f"TLS profile `{o.profile}` -> `{n.profile}`: clients "
                              f"older than {np_.oldest_clients.split(',')[0]} can no longer connect", o.profile, n.profile))
    out += _hsts(server, o.hsts, n.hsts)
    if o.stapling != n.stapling:
        out.append(Change(NEUTRAL, server, None, "stapling", "OCSP stapling " + ("on" if n.stapling else "off"),
                          "on" if o.stapling else "off", "on" if n.stapling else "off"))
    return out


def _hsts(server: str, o: ir.Hsts | None, n: ir.Hsts | None) -> list[Change]:
    show = lambda h: h.value if h else "off"  # noqa: E731
    if o == n:
        return []
    if n is None or o is None:
        kind = WIDENING if n is None else NARROWING
        what = "no longer sent: browsers may fall back to plain HTTP once their stored max-age runs out" if n is None \
            else "now sent: browsers refuse plain HTTP to this name for max-age"
        return [Change(kind, server, None, "hsts", f"HSTS {what}", show(o), show(n))]
    weaker = (n.max_age < o.max_age or (o.include_subdomains and not n.include_subdomains)
              or (o.preload and not n.preload))
    kind = WIDENING if weaker else NARROWING
    return [Change(kind, server, None, "hsts", f"HSTS `{o.value}` -> `{n.value}`", show(o), show(n))]
