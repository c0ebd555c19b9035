"""Path traps of a hand-written nginx configuration (docs/nginx-facts.md §2, §F1): a regex location
that takes a request away from a gated prefix, and raw targets forwarded from public locations."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from mtlsc.audit.flow import Client
from mtlsc.audit.model import Config, Location, Server, span_of
from mtlsc.audit.report import finding
from mtlsc.audit.sample import example
from mtlsc.audit.traps import ANY_CERT, NO_CERT, _backend, proxied, refuses
from mtlsc.diagnostics import Diagnostic, Related


# ---- §2, §F1: paths ---------------------------------------------------------------------------

def _gated(config: Config, srv: Server, loc: Location) -> Client | None:
    """A client this location refuses (so someone is kept out), None when it lets everyone in."""
    for client in (NO_CERT, ANY_CERT):
        if srv.verify == "on" and client is NO_CERT:
            continue
        if refuses(config, srv, loc, client):
            return client
    return None


def _longest_prefix(srv: Server, path: str) -> Location | None:
    best = None
    for loc in srv.locations:
        if loc.parents or loc.modifier not in ("", "^~") or not path.startswith(loc.path):
            continue
        if best is None or len(loc.path) > len(best.path):
            best = loc
    return best


def regex_takeover(config: Config) -> list[Diagnostic]:
    out = []
    for srv in config.servers:
        regexes = [loc for loc in srv.locations if loc.is_regex and not loc.parents]
        for prefix in (loc for loc in srv.locations if loc.modifier == "" and not loc.parents):
            kept_out = _gated(config, srv, prefix)
            if kept_out is None:
                continue
            for rx_loc in regexes:
                if refuses(config, srv, rx_loc, kept_out):
                    continue
                path = _taken_path(srv, prefix, rx_loc)
                if path is None:
                    continue
                out.append(finding(
                    "MTLS530", span_of(rx_loc.directive),
                    f"`{rx_loc.describe()}` takes `{path}` away from `{prefix.describe()}`, which refuses "
                    f"{kept_out.kind}: regex locations beat plain prefixes, so such a client gets `{path}` through "
                    "this one (docs/nginx-facts.md §2, over-trust trap 8)",
                    f"write the gated prefix as `location ^~ {prefix.path}`, or repeat its gate in this location",
                    "writes every route as `=` or `^~`, which no regex location can take over",
                    label="takes over gated paths",
                    related=(Related(span_of(prefix.directive), "gated here"),)))
    return out


def _taken_path(srv: Server, prefix: Location, rx_loc: Location) -> str | None:
    icase = rx_loc.modifier == "~*"
    sample = example(rx_loc.path, icase)
    if sample is None:
        return None
    try:
        rx = re.compile(rx_loc.path, re.I if icase else 0)
    except re.error:
        return None
    base = prefix.path if prefix.path.endswith("/") else prefix.path + "/"
    for cand in (base + sample.lstrip("/"), base + "x" + sample, base + "x/" + sample.lstrip("/")):
        if "\n" in cand or " " in cand:
            continue
        if rx.search(cand) and _longest_prefix(srv, cand) is prefix:
            return cand
    return None


def raw_target(config: Config) -> list[Diagnostic]:
    out = []
    for srv in config.servers:
        gated = [(loc, p) for loc in srv.locations if not loc.is_regex for p in proxied(loc)
                 if p.name == "proxy_pass" and _gated(config, srv, loc) is not None and loc.path.startswith("/")]
        if not gated:
            continue
        for loc in srv.locations:
            if loc.is_regex or _gated(config, srv, loc) is not None:
                continue
            for p in proxied(loc):
                if p.name != "proxy_pass" or not p.args or "$" in p.args[0]:
                    continue
                parts = urlsplit(p.args[0])
                if parts.path not in ("",):
                    continue  # a URI part: nginx forwards the normalised path
                other = next((g for g, gp in gated if _backend(gp) == _backend(p) and g is not loc), None)
                if other is None:
                    continue
                g_path = other.path if other.path.endswith("/") else other.path + "/"
                target = g_path + ".." + (loc.path if loc.path.startswith("/") else "/" + loc.path)
                out.append(finding(
                    "MTLS531", span_of(p),
                    f"`{loc.describe()}` lets every client in and forwards the request target as sent: `GET {target}` "
                    f"is judged by nginx as `{loc.path}` but reaches {_backend(p)}, the backend of gated "
                    f"`{other.describe()}`, as `{target}`, which a backend that routes unnormalised targets serves "
                    "as a gated path (docs/nginx-facts.md §F1)",
                    f"give this `proxy_pass` a URI part (`proxy_pass {p.args[0].rstrip('/')}{loc.path if loc.modifier != '=' else loc.path};`) "
                    "so nginx forwards the normalised path, or refuse `..` segments",
                    "forwards the path nginx routed on and refuses targets a backend may read otherwise",
                    label="raw request target", related=(Related(span_of(other.directive), "gated here"),)))
    return out
