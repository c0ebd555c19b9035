"""MTLS1xx: configurations under which legitimate clients are refused (and MTLS149, waivers that
silence nothing, so a stale acknowledgement cannot hide the next finding)."""

from __future__ import annotations

from mtlsc import dn, ir
from mtlsc.diagnostics import Finding, Related
from mtlsc.model.evaluate import find_route, probe_path
from mtlsc.model.locations import ascii_lower


def public_route_behind_required_listener(ctx):
    """What it catches: `handshake require` on a server that also has public or optional routes.

    Why: `ssl_verify_client on` applies to the whole listener; nginx refuses a client without a
    certificate before any location runs, so health checks and CI lose the public paths
    (docs/nginx-facts.md §1, lockout trap 7). Bare nginx answers 400 "No required SSL certificate was
    sent"; mtlsc's config turns that into the server's `no_cert` rejection (403 unless `reject
    no_cert` says otherwise), which the finding names.

    Example: `server a { handshake require  route = /healthz { public } ... }`

    Fix: remove `handshake require`; mtlsc then gates each route with its own check.
    """
    for server in ctx.policy.servers:
        if not server.handshake_require:
            continue
        for route in server.routes:
            if route.mode is not ir.Mode.REQUIRE:
                refused = server.rejections.no_cert
                yield Finding(
                    route.span,
                    f"route `{route.path}` is {route.mode.value} but the whole listener requires a client certificate: "
                    f"clients without one get {refused.status} (the `no_cert` rejection) before the route runs",
                    f"remove `handshake require` from `{server.names[0]}`; mtlsc then gates each route on its own",
                    label=f"clients without a certificate get {refused.status} here",
                    related=(Related(server.handshake_span, "the listener requires a certificate here"),),
                )


# Paths that health checkers, load balancers and ACME clients request without a certificate.
PROBE_PATHS = ("/health", "/healthz", "/live", "/livez", "/ping", "/ready", "/readyz", "/.well-known")


def _is_probe(path: str) -> bool:
    return path.rstrip("/") in PROBE_PATHS


def probe_route_requires_certificate(ctx):
    """What it catches: a route on a usual probe path (`/healthz`, `/ready`, `/.well-known/`, ...)
    that requires a client certificate.

    Why: health checkers, load balancers and ACME clients send no certificate; nginx refuses them
    (`no_cert`, or 400 "No required SSL certificate was sent" without mtlsc's error pages) and the
    service is marked down (docs/nginx-facts.md §1, lockout trap 7). A warning, not an error: the policy
    says `require` on purpose, and some probes (mesh sidecars) do present a certificate. A
    *public* probe route behind `handshake require` is MTLS101, an error.

    Example: `route = /healthz { require internal  allow any }`

    Fix: make the probe route `public` (and drop `handshake require` if the server has it).
    """
    for server in ctx.policy.servers:
        for route in server.routes:
            if route.mode is ir.Mode.REQUIRE and _is_probe(route.path):
                status = server.rejections.no_cert.status
                where = "the whole listener and the route require" if server.handshake_require else "the route requires"
                yield Finding(
                    route.span,
                    f"probe path `{route.path}` requires a client certificate: health checks without one get {status}",
                    f"make `{route.path}` public" + (" and remove `handshake require`" if server.handshake_require else ""),
                    label=f"{where} a certificate",
                )


def no_public_health_route(ctx):
    """What it catches: a server whose every route requires a client certificate, with no route a
    health check could use.

    Why: load balancer and orchestrator health checks carry no client certificate; with no
    public route they all fail and the service is taken out of rotation (docs/nginx-facts.md §1,
    lockout trap 7).

    Example: `server a { route / { require internal allow any } }`

    Fix: add `route = /healthz { public }` (mtlsc then serves it without a certificate), or waive
    this warning if health is probed elsewhere.
    """
    for server in ctx.policy.servers:
        routes = server.routes
        if routes and all(r.mode is ir.Mode.REQUIRE for r in routes) and not any(_is_probe(r.path) for r in routes):
            yield Finding(
                server.span,
                f"every route of `{server.names[0]}` requires a client certificate: health checks without one get "
                f"{server.rejections.no_cert.status}",
                "add a public health route such as `route = /healthz { public }`",
                label="no route here answers without a certificate",
            )


def bad_certificate_refused_on_public_routes(ctx):
    """What it catches: a server with public routes that also verifies client certificates.

    Why: nginx verifies a presented certificate during the handshake and refuses a failed one
    (untrusted, expired, revoked) before any location runs, public ones included (docs/nginx-facts.md §1,
    §2, lockout trap 7). The emitted config cannot avoid it: `optional_no_ca` would deliver
    unverified certificates to every route (§9). mtlsc's config answers such clients with the
    server's `bad_cert` rejection on every path. A note: nothing in the policy is wrong, but a probe or
    browser that still sends a stale certificate loses the public routes too.

    Example: `route = /healthz { public }` next to `route /api/ { require partners }`.

    Fix: make sure clients of the public routes send no certificate, or serve the public routes
    on another server name or port, where no certificate is asked for.
    """
    for server in ctx.policy.servers:
        public = [r for r in server.routes if r.mode is ir.Mode.PUBLIC]
        gated = [r for r in server.routes if r.ca is not None]
        if not public or not gated or server.handshake_require:
            continue
        bad = server.rejections.bad_cert
        paths = ", ".join(f"`{r.path}`" for r in public)
        yield Finding(
            public[0].span,
            f"a client presenting an untrusted or expired certificate gets {bad.status} on public routes too ({paths})",
            "tell clients of public routes to send no certificate, or serve those routes on a server name without client verification",
            label="refused before this route runs when a bad certificate is presented",
            related=(Related(gated[0].span, "this route makes nginx verify client certificates on the whole server"),),
        )


def _routes_allowing(policy, identity):
    return [(s, r) for s in policy.servers for r in s.routes if any(i.name == identity.name for i in r.allow)]


def issuer_not_in_ca(ctx):
    """What it catches: a `serial` + `issuer` identity whose issuer is no certificate of the CA of
    a route that allows it.

    Why: nginx accepts only chains that end in the server's CA file and allows no partial chains
    (docs/nginx-facts.md §3), so the client certificate's issuer (`$ssl_client_i_dn`) is a certificate
    of that CA, or an intermediate the client sends itself. With `depth 0` no client-sent
    intermediate is accepted and the identity can never match: its clients are refused as
    `forbidden`.

    Example: `identity old { serial "0A" issuer "CN=Retired CA,O=Acme" }` allowed on a route of
    `ca partners` whose bundle holds no `CN=Retired CA,O=Acme`.

    Fix: correct the issuer DN (as `openssl x509 -noout -issuer -nameopt RFC2253` prints it), or
    add the issuing CA to the bundle.
    """
    for ident in ctx.policy.identities:
        if ident.kind is not ir.IdentityKind.SERIAL:
            continue
        seen = set()
        for server, route in _routes_allowing(ctx.policy, ident):
            facts = ctx.pki.ca(route.ca.name)
            if facts is None or route.ca.name in seen:
                continue
            seen.add(route.ca.name)
            if any(c.subject.lower() == ident.issuer.lower() for c in facts.certs):
                continue
            outcome = ("so no certificate it accepts can match" if route.ca.depth == 0 else
                       "so only clients that send that issuer as an intermediate themselves can match")
            yield Finding(
                ident.span,
                f"identity `{ident.name}` names issuer `{ident.issuer}`, which is no certificate of ca `{route.ca.name}`: "
                f"{outcome}",
                f"write the issuer DN exactly as the CA's certificate names it, or add that CA to `{route.ca.name}`'s bundle",
                label="issuer not in the CA's bundle",
                related=(Related(route.span, f"allowed here, on a route of ca `{route.ca.name}`"),),
            )


# Characters a request path may hold after nginx normalises it (RFC 3986 pchar, unreserved and
# sub-delims): a prefix route is reached by its path plus any of them no longer route claims.
def route_never_reached(ctx):
    """What it catches: a route no request path can reach, because other routes of the server
    take every path it covers.

    Why: nginx picks an exact location first, then the longest `^~` prefix (docs/nginx-facts.md §2); a
    route shadowed everywhere never runs, so its gate and backend are dead and whoever relies on
    them is locked out. Lowering already refuses the one way a policy can write it (two routes
    with one match and path, MTLS022); this check guards the IR that the emitter and the test
    script consume.

    Example: two `route = /api` blocks of one server that reach the IR.

    Fix: remove the shadowed route or give it its own path.
    """
    for server in ctx.policy.servers:
        for route in server.routes:
            if probe_path(server, route) is None:
                yield Finding(
                    route.span,
                    f"route `{route.path}` is never reached: other routes of `{server.names[0]}` take every path it covers",
                    "remove the route or give it a path of its own",
                    label="shadowed everywhere",
                )


def routes_differ_only_in_case(ctx):
    """What it catches: two routes of one server whose paths differ only in letter case
    (`/api/` and `/API/`), on a server that does not declare `backend_paths case_sensitive`.

    Why: mtlsc refuses (400) a path that differs only in case from a path a route covers,
    because a case-insensitive backend (Express's default, IIS) would serve it as that route
    while nginx, which matches case-sensitively, applied another route's gate (docs/nginx-facts.md §F2;
    docs/language.md "Paths"). With both spellings declared, every request to one of them is such a variant.

    Example: `route /api/ { public }` and `route /API/ { require internal }`.

    Fix: give the routes different paths, or declare `backend_paths case_sensitive` if the
    backend really tells `/api/` and `/API/` apart.
    """
    for server in ctx.policy.servers:
        if server.backend_case_sensitive:
            continue
        first: dict[str, ir.Route] = {}
        for route in server.routes:
            other = first.setdefault(ascii_lower(route.path), route)
            if other is not route and other.path != route.path:
                yield Finding(
                    route.span,
                    f"routes `{other.path}` and `{route.path}` differ only in letter case: requests to one "
                    "of them are refused as case variants of the other",
                    "give them different paths, or declare `backend_paths case_sensitive` if the backend tells them apart",
                    label="same path, other case", related=[Related(other.span, "the other route")],
                )


_ROOT_MOST = {"C", "DC"}
_MOST_SPECIFIC = {"CN", "UID", "emailAddress"}


def _root_first(text: str) -> bool:
    if dn.canonical_attribute(text.partition("=")[0]) not in _ROOT_MOST:
        return False  # the first attribute of a DN is what it starts with: no need to parse it
    try:
        rdns = dn.parse_dn(text)
    except dn.DnError:
        return False
    return len(rdns) > 1 and rdns[0][0][0] in _ROOT_MOST and rdns[-1][0][0] in _MOST_SPECIFIC


def dn_written_root_first(ctx):
    """What it catches: a `subject` or `issuer` DN written root-most first, e.g.
    `C=US,O=Acme,CN=alice`.

    Why: nginx prints `$ssl_client_s_dn` and `$ssl_client_i_dn` with the RDNs in reverse of their
    order in the certificate (docs/nginx-facts.md §7). Certificates list the root-most RDN first, so for
    them nginx prints `CN=alice,O=Acme,C=US`; `C=...` first and `CN=...` last is the order of
    `openssl x509 -subject` without `-nameopt RFC2253` and of the legacy variables. Written this
    way, the identity matches only certificates whose name is encoded the other way round (most
    specific RDN first, as `openssl req -subj "/CN=alice/O=Acme/C=US"` makes it): nginx prints
    those `C=US,O=Acme,CN=alice` (tests/test_diagnostics_cases.py shows it on the real nginx). A
    warning, not an error, because such certificates exist and mtlsc cannot see the clients'
    certificates; it stays quiet when the CA's own certificates are named that way.

    Example: `identity alice { subject "C=US,O=Acme,CN=alice" }`

    Fix: reverse the RDNs (`CN=alice,O=Acme,C=US`), or copy the DN from
    `openssl x509 -noout -subject -nameopt RFC2253`; keep it root-first only if the clients'
    certificates really are named in reverse.
    """
    for ident in ctx.policy.identities:
        text = ident.subject if ident.kind is ir.IdentityKind.SUBJECT else ident.issuer
        if ident.kind not in (ir.IdentityKind.SUBJECT, ir.IdentityKind.SERIAL) or not _root_first(text):
            continue
        cas = {r.ca.name for _, r in _routes_allowing(ctx.policy, ident)}
        certs = [c for name in sorted(cas) if ctx.pki.ca(name) for c in ctx.pki.ca(name).certs]
        if any(_root_first(c.subject) for c in certs):
            continue  # this CA names things root-first itself, so nginx prints them that way
        rdns = dn.parse_dn(text)
        what = "subject" if ident.kind is ir.IdentityKind.SUBJECT else "issuer"
        fixed = dn.format_dn(rdns[::-1])
        yield Finding(
            ident.span,
            f"the {what} of identity `{ident.name}` is written root-first: nginx prints `{fixed}` for a certificate "
            f"named the usual way, so this matches only certificates whose {what} is encoded in reverse",
            f"write it most specific first: `{fixed}`; keep it only if the certificates really are named in reverse "
            f"(`openssl x509 -noout -{what} -nameopt RFC2253` prints what nginx sees)",
            label="root first: how `openssl x509` prints a DN by default, not how nginx prints it",
        )


# nginx answers 421 to a request whose Host names another server than the SNI when that server
# verifies client certificates since 1.11.0 (CHANGES 1.11.0: "the 421 Misdirected Request
# response now used when rejecting requests to a virtual server different from one negotiated
# during an SSL handshake"); it answered 400 before. tests/test_checks_ir_nginx.py proves 421 on 1.22.
MISDIRECTED_421_SINCE = (1, 11, 0)


def _shares_address(a, b) -> bool:
    return any(x.port == y.port and (x.address is None or y.address is None or x.address == y.address)
               for x in a.listens for y in b.listens)


def target_predates_421(ctx):
    """What it catches: two servers on one listen address, one verifying client certificates,
    compiled for an nginx older than 1.11.0.

    Why: when the SNI names one server and Host another that verifies certificates, nginx 1.11.0
    and later answer 421 Misdirected Request, which HTTP/2 clients that reuse a connection across
    names retry on a new connection; older nginx answers 400, which they do not retry, so those
    clients are locked out (docs/nginx-facts.md §5, lockout trap 9). mtlsc needs 1.19.4 anyway (MTLS031
    refuses older targets first): this check guards the day that floor moves.

    Example: `nginx ">= 1.10"` with `server a.test { listen 443 ... }` and
    `server b.test { listen 443  route / { require ca } }`.

    Fix: target nginx 1.11.0 or later (mtlsc needs 1.19.4), or give the verifying server its own port.
    """
    if ctx.policy.nginx_version >= MISDIRECTED_421_SINCE:
        return
    servers = ctx.policy.servers
    for gated in (s for s in servers if s.cas):
        other = next((s for s in servers if s is not gated and _shares_address(s, gated)), None)
        if other is not None:
            version = ".".join(map(str, ctx.policy.nginx_version))
            yield Finding(
                gated.span,
                f"nginx {version} answers 400, not 421, when the SNI names `{other.names[0]}` and Host `{gated.names[0]}`: "
                "clients reusing connections across names are locked out",
                "target nginx 1.19.4 or later (`nginx \">= 1.22\"`), or give this server its own port",
                related=(Related(other.span, "shares the listen address"),),
            )
