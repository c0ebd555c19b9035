"""MTLS2xx: configurations that let in clients the policy did not mean to admit."""

from __future__ import annotations

import re

from mtlsc import dn, ir
from mtlsc.checks.leaves import leaf_routes_unbound
from mtlsc.pki.binding import KeyEntry, key_bound
from mtlsc.diagnostics import Finding, Related
from mtlsc.emit import nginx as emit_nginx
from mtlsc.emit import quote
from mtlsc.model.locations import is_segment, locations, slash_twins
from mtlsc.nginx_facts import FORWARD_FIELDS, cross_resumption_servers, resumption_cve_possible


def _routes_allowing(policy, identity):
    return [(s, r) for s in policy.servers for r in s.routes if any(i.name == identity.name for i in r.allow)]


# Values no deliberate pattern admits all of: a pattern that matches every one of them
# matches any value (`^.*$`, `^.+$`, `^[^/]*$`, `^(admin|.*)$` ...). Written as nginx prints them.
_UNRELATED_VALUES = ("x", "0", "Evil Corp", "mtlsc-probe.attacker")


def over_broad_identity_pattern(ctx):
    """What it catches: an attribute pattern that matches any value, such as `cn ~ "^.*$"`.

    Why: the constraint then only asks that the attribute be present, so every certificate the
    CA issued with that attribute passes: authentication without authorisation. mtlsc already
    refuses unanchored patterns and classes that admit an unescaped `,` (MTLS014), and confines
    `.` and negated classes to one value (docs/nginx-facts.md §7); what is left is a pattern too broad
    by design.

    Example: `identity ops { cn ~ "^.+$" }`

    Fix: write the values you mean (`^ops-[a-z0-9-]+$`), or, if every certificate of the CA may
    pass, say so with `allow any`.
    """
    for ident in ctx.policy.identities:
        for a in ident.attrs:
            if a.op != "re":
                continue
            rx = re.compile(dn.constraints_regex((dn.AttrConstraint("CN", "re", a.value),)))
            if all(rx.match(f"CN={v}") for v in _UNRELATED_VALUES):
                yield Finding(
                    a.span,
                    f"pattern `{a.value}` of identity `{ident.name}` matches any `{a.attr}`: "
                    f"every certificate with a `{a.attr}` passes",
                    "match the values you mean (e.g. `^ops-[a-z0-9-]+$`), or use `allow any` if every certificate may pass",
                    label="matches any value",
                )


_ORGANISATION = {"O", "OU", "DC"}


def cn_only_identity(ctx):
    """What it catches: an attribute identity that constrains no organisation (`O`, `OU` or
    `DC`), e.g. only `cn`, allowed on a route.

    Why: a CA names organisations in `O`/`OU`; a CN alone says nothing about whose certificate
    it is, so every holder of that CN from *any* organisation the CA serves passes. nginx only
    sees `$ssl_client_s_dn` (docs/nginx-facts.md §7); a CA trusted by several servers, or shared with
    partners, is exactly where two organisations get the same CN.

    Example: `identity billing { cn "billing" }` on `route /ledger/ { require internal allow billing }`.

    Fix: add the organisation (`o "Example Corp"` or `ou "services"`), or use `subject "..."`;
    waive the warning if the CA issues to one organisation only.
    """
    for ident in ctx.policy.identities:
        if ident.kind is not ir.IdentityKind.ATTRS or {a.attr for a in ident.attrs} & _ORGANISATION:
            continue
        # on a `leaf` CA's routes only the listed certificates pass, whatever their names
        allowing = [(s, r) for s, r in _routes_allowing(ctx.policy, ident) if r.ca is not None and not r.ca.leaf]
        if not allowing:
            continue
        ca = allowing[0][1].ca
        servers = {s.names[0] for s in ctx.policy.servers for r in s.routes if r.ca and r.ca.name == ca.name}
        shared = f"; `{ca.name}` is trusted by {len(servers)} servers" if len(servers) > 1 else ""
        attrs = ", ".join(sorted({f"`{a.attr}`" for a in ident.attrs}))
        yield Finding(
            ident.span,
            f"identity `{ident.name}` matches only {attrs}: any certificate of ca `{ca.name}` with that name passes, "
            f"whatever its organisation{shared}",
            "add the organisation (`o \"...\"` or `ou \"...\"`), or waive this if the CA issues to one organisation only",
            label="no `O`, `OU` or `DC` constraint",
            related=(Related(allowing[0][1].span, "allowed here"),),
        )


def optional_forward_without_verify(ctx):
    """What it catches: an `optional` route that forwards certificate fields but not `verify`.

    Why: on an `optional` route the backend serves both verified clients and clients without a
    certificate. With mtlsc's config a certificate that fails verification never reaches it
    (nginx refuses it first, docs/nginx-facts.md §1), so the backend sees `SUCCESS` with the fields, or
    `NONE` with none of them. Without `X-Client-Verify` it can only guess from whether a header
    is present: "DN present means authenticated", the test that is wrong as soon as anything
    else proxies to it with `optional_no_ca` (§9, over-trust trap 5), and wrong for a verified
    certificate with an empty subject.

    Example: `route / { optional partners  forward subject }`

    Fix: add `verify` to the route's `forward` and have the backend test `X-Client-Verify: SUCCESS`.
    """
    for server in ctx.policy.servers:
        for route in server.routes:
            fields = [f.field for f in route.forward]
            if route.mode is ir.Mode.OPTIONAL and fields and "verify" not in fields:
                yield Finding(
                    route.span,
                    f"optional route `{route.path}` forwards {', '.join(f'`{f}`' for f in fields)} but not `verify`: "
                    "the backend cannot tell a verified client from one without a certificate but by a header's absence",
                    "add `verify` to `forward`, and accept only `X-Client-Verify: SUCCESS` in the backend",
                    label="no `verify` forwarded",
                )


def _expected_headers(server) -> dict[str, str]:
    """header (lowercased) -> value each proxied location must give it: the field's variable on
    routes forwarding it, else "" (which drops the client's copy, docs/nginx-facts.md §6)."""
    names = {f.default_header.lower() for f in FORWARD_FIELDS.values()}
    names |= {f.header.lower() for r in server.routes for f in r.forward}
    return dict.fromkeys(sorted(names), '""')


def _forwarded_variable(view, field: str) -> str:
    """`$ssl_client_...`, or for a field read in njs the server's js_set variable bound to it."""
    spec = FORWARD_FIELDS[field]
    if not spec.njs:
        return f"${spec.variable}"
    bound = [str(j.var) for j in (view.san.js_sets if view.san else ()) if str(j.function).endswith(".fwd_" + spec.variable)]
    return bound[0] if len(bound) == 1 else "(no js_set variable)"


def identity_header_not_set_or_cleared(ctx):
    """What it catches: a proxied location of the emitted config that neither sets nor clears
    one of its server's identity headers, or sets one the route does not forward. An
    assertion on the emitter: a policy cannot cause it.

    Why: a location with any `proxy_set_header` of its own inherits none from the server, and a
    header that is not set passes the client's own copy to the backend: `X-Client-Verify:
    SUCCESS` from anyone (docs/nginx-facts.md §6, over-trust trap 1).

    Example: an emitter change that writes `proxy_set_header` only for forwarded fields.

    Fix: a bug in mtlsc's emitter (mtlsc/emit/nginx.py): every location must set or clear
    every identity header of its server.
    """
    for server, view in _views(ctx):
        expected = _expected_headers(server)
        emitted = locations(server)
        for route, loc in zip([loc.route for loc in emitted], view.locations):
            want = dict(expected)
            want.update({f.header.lower(): _forwarded_variable(view, f.field) for f in route.forward})
            got = {str(name).lower(): str(value) for name, value in loc.headers}
            wrong = sorted(h for h in want if got.get(h) != want[h])
            if wrong or len(view.locations) != len(emitted):
                yield Finding(
                    route.span,
                    f"the emitted location for `{route.path}` does not set or clear {', '.join(f'`{h}`' for h in wrong) or 'its headers'}: "
                    "clients could send their own identity headers to the backend",
                    "this is a bug in mtlsc's emitter; report it and do not deploy this output",
                )


def route_accepts_another_ca(ctx):
    """What it catches: a route of a server with several CAs whose emitted location lacks the
    gate that refuses certificates from the server's other CAs. An assertion on the emitter: a
    policy cannot cause it.

    Why: the server's one trust file holds every CA of its routes (`ssl_client_certificate` is per
    server, docs/nginx-facts.md §2), so `$ssl_client_verify = SUCCESS` holds for any of them; only the
    issuer binding (a map over `$ssl_client_i_dn`, §E2) keeps a partner's certificate out of the
    employees' route, and, where another CA could copy the route's CA's name (MTLS232), the key
    check (`auth_request` to the njs module holding exactly that CA's public keys).

    On every route of a `leaf` CA the location must also refuse, by `$ssl_client_fingerprint`, every
    verified certificate that is not one of the CA's listed leaves (docs/language.md "Trusted leaf
    certificates"), whether or not the server has other CAs.

    Example: an emitter change that drops the `not_caN` gate of `route /internal/ { require internal }`
    on a server that also has `route /partner/ { require vendors }`.

    Fix: a bug in mtlsc's emitter (mtlsc/emit/nginx.py); report it and do not deploy this output.
    """
    for server, view in _views(ctx):
        for route in leaf_routes_unbound(server, view, ctx.pki):
            yield Finding(route.span, f"the emitted location for `{route.path}` would accept certificates other than "
                          f"the leaves of `{route.ca.name}`", "this is a bug in mtlsc's emitter; report it and do "
                          "not deploy this output")
        if len(server.cas) < 2:
            continue
        keys = {n: [k.spki for k in ks] for n, ks in key_bound(server, ctx.pki).items()
                if all(isinstance(k, KeyEntry) for k in ks)}  # else MTLS239
        checks = {str(c.ca): c for c in view.key_binding.checks} if view.key_binding else {}
        maps = {str(m.var): m for m in view.maps}
        issuer = next((m for m in view.maps if str(m.source) == "$ssl_client_i_dn"), None)
        tags = {}  # ca tag -> quoted subjects mapped to it
        for e in issuer.entries if issuer else ():
            tags.setdefault(str(e.value), set()).add(quote.map_key_folded(e.key))
        for i, ca in enumerate(server.cas):
            facts = ctx.pki.ca(ca.name)
            mine = {quote.map_key_folded(quote.map_key(c.subject)) for c in facts.certs} if facts else set()
            for route, loc in zip([loc.route for loc in locations(server)], view.locations):
                if route.ca is None or route.ca.name != ca.name:
                    continue
                check = checks.get(ca.name)
                unbound_key = ca.name in keys and (check is None or loc.key_check != check.uri
                                                   or [k["spki"] for k in view.key_binding.table[str(check.export)]] != keys[ca.name])
                if (not any(_binds(maps.get(str(g.var)), f"ca{i}") for g in loc.gates) or tags.get(f"ca{i}") != mine
                        or unbound_key):
                    yield Finding(
                        route.span,
                        f"the emitted location for `{route.path}` would accept certificates of the server's other CAs, "
                        f"not only `{ca.name}`",
                        "this is a bug in mtlsc's emitter; report it and do not deploy this output",
                    )


def _binds(view_map, tag: str) -> bool:
    """The gate map yields 0 (pass) for a verified certificate only when CA `tag` issued it:
    `"SUCCESS:caN" 0` next to `~^SUCCESS: 1` (exact keys win over regexes in a map)."""
    if view_map is None:
        return False
    entries = {str(e.key): str(e.value) for e in view_map.entries}
    passing = [k for k, v in entries.items() if v == "0"]
    return (passing == [str(quote.map_key(f"SUCCESS:{tag}"))]
            and entries.get(str(quote.map_regex("^SUCCESS:"))) == "1")


def require_without_allow(ctx):
    """What it catches: a `require CA` route with no `allow` list and no `allow any`.

    Why: nginx only checks that the certificate chains to the CA (`$ssl_client_verify =
    SUCCESS`, docs/nginx-facts.md §1); with no identity list every certificate the CA ever issued
    passes: authentication without authorisation. That is right only for a CA dedicated to
    this service, which the policy should say.

    Example: `route /partner/ { require partners }`

    Fix: list who may pass (`allow acme globex`), or write `allow any` to say that every
    certificate of the CA may.
    """
    for server in ctx.policy.servers:
        for route in server.routes:
            # a `leaf` CA's list is itself the list of who may pass
            if route.mode is ir.Mode.REQUIRE and not route.allow and not route.allow_any and not route.ca.leaf:
                yield Finding(
                    route.span,
                    f"route `{route.path}` requires a certificate of `{route.ca.name}` but allows no identities: "
                    "every certificate that CA issued passes",
                    f"list who may pass (`allow NAME...`), or write `allow any` if every `{route.ca.name}` certificate may",
                    label="no `allow` list",
                )


def segment_route_overlaps_prefix(ctx):
    """What it catches: a route written without a trailing slash (`route /p`) beside a route
    `route /p/` on the same server.

    Why: `route /p` covers the path segment `/p` and everything below it (`/p/...`), and so does
    `route /p/`: both would become nginx's `location ^~ /p/`, which nginx refuses as a duplicate (docs/nginx-facts.md §F5),
    and which of two different gates was meant for `/p/...` is not said.

    Example: `route /static { public }` and `route /static/ { require internal }`.

    Fix: keep one of them; to treat `/p` itself differently, write `route = /p` beside `route /p/`.
    """
    for server in ctx.policy.servers:
        slashed = {r.path: r for r in server.routes if r.match is ir.PathMatch.PREFIX and r.path.endswith("/")}
        for route in server.routes:
            other = slashed.get(route.path + "/") if is_segment(route) else None
            if other is not None:
                yield Finding(
                    route.span,
                    f"route `{route.path}` covers `{route.path}/...`, which route `{other.path}` also declares",
                    f"keep one of them; for `{route.path}` alone write `route = {route.path}`",
                    label="overlaps another route", related=[Related(other.span, "the other route")],
                )


def _gate(route: ir.Route) -> tuple:
    return route.mode, route.ca.name if route.ca else None, tuple(sorted(i.name for i in route.allow)), route.allow_any


def slash_twins_with_different_gates(ctx):
    """What it catches: two routes of one server whose paths differ only by a trailing slash
    (`route = /admin` and `route /admin/`, or `route /p` and `route = /p/`) with different gates,
    on a server that does not declare `backend_paths strict_slashes`.

    Why: nginx matches `/admin` and `/admin/` as two paths, but Express's default (non-strict)
    routing, and others like it, serve both with whichever handler was registered first: the
    backend may run the handler of the route nginx did not judge (docs/nginx-facts.md §F2;
    docs/language.md "Paths").

    Example: `route = /admin { public }` beside `route /admin/ { require internal allow ops }`.

    Fix: give both routes the same gate, or declare `backend_paths strict_slashes` if the backend
    tells `/admin` from `/admin/`.
    """
    for server in ctx.policy.servers:
        if server.backend_strict_slashes:
            continue
        for short, slashed in slash_twins(server):
            if _gate(short.route) != _gate(slashed.route):
                yield Finding(
                    slashed.route.span,
                    f"`{short.name}` and `{slashed.name}` differ only by a trailing slash but have different gates: "
                    "a backend with non-strict routing serves both with one handler",
                    "give both routes the same gate, or declare `backend_paths strict_slashes` if the backend tells them apart",
                    label="trailing-slash twin", related=[Related(short.route.span, "the other route")],
                )


def unverified_https_backend(ctx):
    """What it catches: `backend_verify off` on a server whose routes proxy to an `https://`
    backend.

    Why: nginx does not verify a TLS backend unless told to (`proxy_ssl_verify` is off by
    default, docs/nginx-facts.md §F3 on what the backend trusts): whoever can answer on that hop gets the
    client's identity headers and can answer as the backend. mtlsc verifies by default; this
    says a policy turned it off.

    Example: `backend "https://ledger.internal:8443"` with `backend_verify off`.

    Fix: name the backend's CA with `backend_ca "FILE"` (and `backend_name` if the URL holds an
    address) and drop `backend_verify off`.
    """
    for server in ctx.policy.servers:
        tls = server.backend_tls
        if tls is not None and not tls.verify and any(r.backend.startswith("https://") for r in server.routes):
            yield Finding(tls.span, f"server `{server.names[0]}` sends client identities to an `https://` backend "
                          "whose certificate nginx does not verify",
                          "name the backend's CA with `backend_ca \"FILE\"` and remove `backend_verify off`",
                          label="unverified backend")


def session_tickets_off_for_cve(ctx):
    """What it catches: servers that share a listen address with servers checking clients
    differently (another CA, or `handshake require` on one only), while `nginx ">= X"` includes
    builds without the CVE-2025-23419 fix (before 1.26.3, and 1.27.0 to 1.27.3).

    Why: on such builds a TLS session made with one server of the address can be resumed under
    another server's name, skipping that server's client-certificate check (docs/nginx-facts.md §F8).
    mtlsc then turns session tickets off on those servers (the session cache is always off), so
    no session is resumed: every new connection costs a full handshake.

    Example: `nginx ">= 1.22"` with `api.example.com` (CA partners) and `admin.example.com`
    (CA staff) both on port 443.

    Fix: nothing, if the cost is acceptable; if every build you deploy to carries the fix, say so
    with `nginx ">= 1.26.3"` (resumption comes back), or give the servers their own addresses.
    """
    if not resumption_cve_possible(ctx.policy.nginx_version):
        return
    affected = cross_resumption_servers(ctx.policy)
    for server in ctx.policy.servers:
        if server.slug in affected:
            yield Finding(server.span, f"session tickets are off on `{server.names[0]}`: it shares an address with "
                          "servers that check clients differently, and the target nginx range includes builds "
                          "without the CVE-2025-23419 fix; every new connection is a full handshake",
                          'if every build you deploy to carries the fix, write `nginx ">= 1.26.3"`',
                          label="no session resumption")


def _views(ctx):
    """(server, emitted view model) pairs: what the nginx templates render, so assertion
    checks see the config as it will be written."""
    return zip(ctx.policy.servers, emit_nginx.server_views(ctx.policy, ctx.pki))
