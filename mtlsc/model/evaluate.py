"""mtlsc's own model of what the emitted nginx config does with a request.

It is the specification users read (`mtlsc test`, `explain`), the oracle the emitted test script
is generated from, and what the differential tests compare with real nginx.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlsc import dn, ir, san
from mtlsc.model.locations import ascii_lower, alias_gated, is_alias, locations
from mtlsc.model.uri import forwarded_target, target_problem
from mtlsc.nginx_facts import FORWARD_FIELDS
from mtlsc.san import Sans


@dataclass(frozen=True, slots=True)
class Client:
    """A client certificate as nginx would see it. `verified_by` is the CA (of the server's trust
    file) under which the chain verifies, or None when verification fails (untrusted, expired,
    revoked). Fields are named like the `forward` fields and hold nginx's printed form; a field
    left "" is unknown, and a header forwarding it is left out."""

    subject: str
    issuer: str
    fingerprint: str = ""
    serial: str = ""
    verified_by: str | None = None
    cert: str = ""  # $ssl_client_escaped_cert: the PEM, URL-encoded
    not_before: str = ""  # $ssl_client_v_start: `Nov 27 02:47:00 2026 GMT`
    not_after: str = ""  # $ssl_client_v_end
    days_remaining: str = ""  # $ssl_client_v_remain: whole days
    # The issuer is not a certificate of the CA that verified the chain but a sub-CA that CA signed
    # (a look-alike of another CA's issuer, say): a server with several CAs refuses it on every
    # CA-bound route, by name or by key (docs/language.md "Several CAs on one server").
    foreign_issuer: bool = False
    expired: bool = False  # expired or not yet valid: refused even where nothing is verified (passthrough)
    sans: Sans = Sans()  # subjectAltNames (mtlsc.san), read in njs
    sha256: str = ""  # SHA-256 of the DER, lowercase hex ("" unknown)
    spki: str = ""  # SHA-256 of the DER SubjectPublicKeyInfo (the key), lowercase hex ("" unknown)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    reason: str  # ok | no_cert | bad_cert | forbidden | no_route | redirect
    route: ir.Route | None
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    target: str = ""  # what the backend receives, when it is reached and the raw target is known
    location: str = ""  # a redirect's Location (`reject no_cert 302 "URL"`)


NO_ROUTE = ir.Response(404, "no route")
# Refused before any route runs (docs/language.md "Paths"): the status and body the config returns.
BAD_TARGET = ir.Response(400, "request target not canonical")


@dataclass(frozen=True, slots=True)
class _RouteIndex:
    """A server's locations by path, so route lookups cost the path's length, not the route count
    (policies with 10,000 routes; benchmarks/). Built from `mtlsc.model.locations`, like the config."""

    exact: dict  # location name -> route, for `location =`
    prefix: dict  # location name -> route, for `location ^~`
    named: dict  # every location name -> route (for nginx's auto-redirect of `/p` to `/p/`)
    lengths: tuple  # the lengths of the prefix names, longest first
    headers: tuple  # identity_headers(server)
    aliases: tuple  # (locations whose aliases are refused, every location name): `alias_gated`


_INDEX: dict[int, tuple[ir.Server, _RouteIndex]] = {}  # id(server) -> (server, index); holds the server


def _index(server: ir.Server) -> _RouteIndex:
    hit = _INDEX.get(id(server))
    if hit is not None and hit[0] is server:
        return hit[1]
    exact, prefix, named = {}, {}, {}
    for loc in locations(server):
        (exact if loc.exact else prefix)[loc.name] = loc.route
        named.setdefault(loc.name, loc.route)
    lengths = tuple(sorted({len(p) for p in prefix}, reverse=True))
    index = _RouteIndex(exact, prefix, named, lengths, tuple(_identity_headers(server)), alias_gated(server))
    if len(_INDEX) >= 64:
        _INDEX.clear()
    _INDEX[id(server)] = (server, index)
    return index


def _identity_headers(server: ir.Server) -> list[str]:
    """The union lowering computed for every server compiled together, or (for an IR built by
    hand) this server's own names."""
    union = server.identity_headers
    if union:
        return list(union)
    names = {f.default_header.lower(): f.default_header for f in FORWARD_FIELDS.values()}
    for r in server.routes:
        for f in r.forward:
            names.setdefault(f.header.lower(), f.header)
    return [names[k] for k in sorted(names)]


def find_route(server: ir.Server, path: str) -> ir.Route | None:
    """nginx's choice among `location =` and `location ^~` blocks: exact, then longest prefix."""
    index = _index(server)
    route = index.exact.get(path)
    if route is not None:
        return route
    prefix, size = index.prefix, len(path)
    for end in index.lengths:  # the longest prefix first
        if end <= size:
            route = prefix.get(path[:end])
            if route is not None:
                return route
    return None


def is_path_alias(server: ir.Server, path: str) -> bool:
    """Refused before routing: a backend may serve `path` as another location's path (a case
    variant, or an exact path with a trailing `/`: docs/language.md "Paths")."""
    gated, names = _index(server).aliases
    return any(is_alias(loc, path, names, server.backend_case_sensitive, server.backend_strict_slashes)
               for loc in _alias_candidates(server, gated, path))


_ALIAS_INDEX: dict[int, tuple] = {}  # id(gated) -> (gated, exact by folded name, prefix by folded name, lengths)


def _alias_candidates(server: ir.Server, gated: tuple, path: str) -> list:
    """The gated locations `path` could be an alias of: exact ones named like it or its slash twin,
    prefix ones whose name starts it, all compared folded. Looked up per path, so a request costs
    its path's length, not the route count (issue 13: tests.sh evaluated every location per case)."""
    fold = (lambda x: x) if server.backend_case_sensitive else ascii_lower
    hit = _ALIAS_INDEX.get(id(gated))
    if hit is None or hit[0] is not gated:
        exact, prefix = {}, {}
        for loc in gated:
            (exact if loc.exact else prefix).setdefault(fold(loc.name), []).append(loc)
        if len(_ALIAS_INDEX) >= 64:
            _ALIAS_INDEX.clear()
        hit = _ALIAS_INDEX[id(gated)] = (gated, exact, prefix, tuple(sorted({len(n) for n in prefix})))
    _, exact, prefix, lengths = hit
    lower = fold(path)
    twin = lower[:-1] if lower.endswith("/") else lower + "/"
    out = exact.get(lower, []) + (exact.get(twin, []) if lower != "/" else [])
    for n in lengths:
        if n > len(lower):
            break
        out += prefix.get(lower[:n], [])
    return out


def identity_matches(identity: ir.Identity, client: Client) -> bool:
    kind = identity.kind
    if kind is ir.IdentityKind.SUBJECT:
        return dn.matches_subject(client.subject, identity.subject)
    if kind is ir.IdentityKind.ATTRS:
        return dn.matches_constraints(client.subject, attr_constraints(identity))
    if kind is ir.IdentityKind.FINGERPRINT:
        return client.fingerprint.lower() == identity.fingerprint
    if kind is ir.IdentityKind.SHA256:
        return client.sha256.lower() == identity.fingerprint
    if kind is ir.IdentityKind.SPKI:
        return client.spki.lower() == identity.fingerprint
    if kind is ir.IdentityKind.SAN:
        return san.matches(identity.san, client.sans)
    return client.serial.upper() == identity.serial and client.issuer.lower() == identity.issuer.lower()


@dataclass(frozen=True, slots=True)
class AllowIndex:
    """A route's allow list indexed like nginx's hashed maps: exact keys by dict, patterns in a list."""

    subjects: dict
    fingerprints: dict
    serials: dict
    patterns: tuple

    def matches(self, client: Client) -> bool:
        return (client.subject.lower() in self.subjects
                or client.fingerprint.lower() in self.fingerprints
                or (client.serial.upper(), client.issuer.lower()) in self.serials
                or any(identity_matches(i, client) for i in self.patterns))


def allow_index(allow: tuple[ir.Identity, ...]) -> AllowIndex:
    kinds = ir.IdentityKind
    return AllowIndex(
        subjects={i.subject.lower(): i for i in allow if i.kind is kinds.SUBJECT},
        fingerprints={i.fingerprint: i for i in allow if i.kind is kinds.FINGERPRINT},
        serials={(i.serial, i.issuer.lower()): i for i in allow if i.kind is kinds.SERIAL},
        patterns=tuple(i for i in allow if i.kind in (kinds.ATTRS, kinds.SAN, kinds.SHA256, kinds.SPKI)),
    )


def attr_constraints(identity: ir.Identity) -> tuple:
    return tuple(dn.AttrConstraint(a.attr, a.op, a.value) for a in identity.attrs)


# What nginx puts in $ssl_client_verify on an `optional_no_ca` listener without a trust file for a
# client that sends its certificate alone (measured on nginx 1.22.1 + OpenSSL 3.0; a self-signed
# one gets `FAILED:self-signed certificate`, which the model does not tell apart).
PASSTHROUGH_VERIFY = "FAILED:unable to verify the first certificate"


def verify_value(client: Client | None, verified: str = "SUCCESS") -> str:
    return "NONE" if client is None else verified


def _headers(route: ir.Route, client: Client | None, verified: str = "SUCCESS") -> tuple[tuple[str, str], ...]:
    out = []
    for f in route.forward:
        value = verify_value(client, verified) if f.field == "verify" else _field(client, f.field)
        if value:  # nginx omits a header whose value is empty (docs/nginx-facts.md §6)
            out.append((f.header, value))
    return tuple(out)


def _field(client: Client | None, name: str) -> str:
    if client is None:
        return ""
    if name.startswith("san_"):
        return san.forwarded(client.sans, name[4:])
    if name == "spiffe_id":
        return san.encode_value(client.sans.spiffe_id)
    if name == "fingerprint_sha256":
        return client.sha256
    if name == "spki_sha256":
        return client.spki
    return getattr(client, name, "")


def _reject(server: ir.Server, reason: str, route: ir.Route | None) -> Outcome:
    response = getattr(server.rejections, reason)
    if response.redirect:  # nginx's own "302 Found" page, the URL in Location
        return Outcome(response.status, reason, route, location=response.body)
    return Outcome(response.status, reason, route, body=response.body)


def evaluate(server: ir.Server, path: str, client: Client | None, index: AllowIndex | None = None,
             target: str | None = None) -> Outcome:
    """What the emitted config answers to `path` on `server` for `client` (None: no certificate).

    `path` is the normalised path nginx routes on; `target`, when given, is the request target
    as the client sent it (its raw form may be refused, and the outcome then says what the
    backend receives). `index` is `allow_index(route.allow)` for the route `path` reaches, when
    the caller evaluates many clients on one route (it is built here otherwise)."""
    verifies = bool(server.cas)  # ssl_verify_client is off when no route names a CA
    if server.passthrough:  # optional_no_ca: only an expired (or not yet valid) certificate is refused
        if client is not None and client.expired:
            return _reject(server, "bad_cert", find_route(server, path))
        verifies = False
    elif verifies and client is not None and client.verified_by not in {c.name for c in server.cas}:
        # nginx rejects a failed verification before any location runs, public ones too (docs/nginx-facts.md §1)
        return _reject(server, "bad_cert", find_route(server, path))
    if not verifies and not server.passthrough:
        client = None  # no certificate is requested, so none is seen
    if server.handshake_require and client is None:
        return _reject(server, "no_cert", find_route(server, path))
    if (target is not None and target_problem(target, server.backend_literal_semicolons)
            or is_path_alias(server, path)):
        return Outcome(BAD_TARGET.status, "bad_target", None, body=BAD_TARGET.body)
    out = _route(server, path, client, index)
    if out.reason == "ok" and target is not None:
        return Outcome(out.status, out.reason, out.route, out.headers, out.body, forwarded_target(target))
    return out


def _route(server: ir.Server, path: str, client: Client | None, index: AllowIndex | None) -> Outcome:
    route = find_route(server, path)
    redirect_to = _index(server).named.get(path + "/")
    if redirect_to is not None and path not in _index(server).named:
        # proxy_pass in `location ^~ /p/` makes nginx answer `/p` with 301 to `/p/` (auto_redirect),
        # before the location's gates run; only a location for `/p` itself takes the request.
        return Outcome(301, "redirect", redirect_to)
    if route is None:
        return Outcome(NO_ROUTE.status, "no_route", None, body=NO_ROUTE.body)
    if route.mode is ir.Mode.PUBLIC:
        return Outcome(200, "ok", route)
    if route.mode is ir.Mode.PASSTHROUGH:
        return Outcome(200, "ok", route, _headers(route, client, PASSTHROUGH_VERIFY))
    if client is None:
        if route.mode is ir.Mode.OPTIONAL:
            return Outcome(200, "ok", route, _headers(route, None))
        return _reject(server, "no_cert", route)
    if client.verified_by != route.ca.name or (client.foreign_issuer and len(server.cas) > 1):
        return _reject(server, "bad_cert", route)
    if route.allow and not (index or allow_index(route.allow)).matches(client):
        return _reject(server, "forbidden", route)
    return Outcome(200, "ok", route, _headers(route, client))


# One character of each kind a path may continue with: a prefix route shadowed for most paths may
# still own those that continue with, say, `-` or `.`.
_NEXT_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!&'()*+,;=:@/"


def probe_path(server: ir.Server, route: ir.Route) -> str | None:
    """A request path that nginx hands to `route` (not redirected elsewhere), or None when other
    routes take every path it covers."""
    if route.match is ir.PathMatch.EXACT:
        candidates = [route.path]
    else:
        sep = "" if route.path.endswith("/") else "/"
        candidates = [route.path + sep + "mtlsc-probe", route.path] + [route.path + c for c in _NEXT_CHARS]
    return next((p for p in candidates if find_route(server, p) is route
                 and evaluate(server, p, None).reason not in ("redirect", "bad_target")), None)


def identity_headers(server: ir.Server) -> list[str]:
    """Every identity header name of every server compiled together, plus the well-known ones of
    other proxies, sorted: each proxied location sets or clears all of them, because a location's
    own proxy_set_header lines replace the server's, and another server of the same nginx may
    proxy to the same backend (docs/nginx-facts.md §6, §F3)."""
    return list(_index(server).headers)
