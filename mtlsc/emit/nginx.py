"""IR -> nginx config: one file per server plus one http-level file for what servers share.

The view model built here holds only `Safe` text (from `quote`) and numbers; all nginx syntax and
comments live in the templates beside this file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from mtlsc import ir
from mtlsc.emit import quote
from mtlsc.emit.http import HTTP_CONF, _default_listens, _hash_sizes, _listen_text, _sources, http_conf
from mtlsc.emit.tls import TlsView, listen_profiles, location_hsts, tls_view
from mtlsc.emit.identity_maps import MapEntry, MapView, _identity_maps, leaf_maps
from mtlsc.emit import san as san_emit
from mtlsc.emit.san import SanModule
from mtlsc.emit.quote import Safe
from mtlsc.emit.templates import render
from mtlsc.model.evaluate import BAD_TARGET, identity_headers
from mtlsc.model.locations import INTERNAL_PREFIX, alias_gated, alias_regex, locations
from mtlsc.nginx_facts import FORWARD_FIELDS, cross_resumption_servers, resumption_cve_possible
from mtlsc.pki import Pki, crl_file_pem, trust_file_pem
from mtlsc.pki.binding import KeyEntry, key_bound
from mtlsc.model.uri import NONCANONICAL
from mtlsc.tls_profiles import FFDHE2048_PEM


@dataclass
class Gate:
    var: Safe
    response: tuple[int, Safe]
    note: Safe


@dataclass
class LocationView:
    location: Safe
    note: Safe
    gates: list[Gate]
    headers: list[tuple[Safe, Safe]]
    backend: Safe
    key_check: Safe | None = None  # the internal URI that checks the certificate's signing key
    nginx: list[Safe] = field(default_factory=list)  # the route's own `nginx { }` directives
    nginx_origin: Safe = Safe("")
    hsts: Safe | None = None  # the server's HSTS again, where the route's own add_header drops the server's


_LAST_VIEWS: tuple = ()  # (policy, pki, views, taken prefixes) of the last call: two checks and the emitter share it


def server_views(policy: ir.Policy, pki: Pki, taken_prefixes: frozenset[str] = frozenset()) -> list["ServerView"]:
    """What the server template renders, per server: checks inspect it to guard the emitter.
    Built once per (policy, PKI): MTLS205, MTLS206 and `emit` ask for it in turn (at 10,000
    routes each build took 5% of a compile; benchmarks/). Callers only read it."""
    global _LAST_VIEWS
    if _LAST_VIEWS and _LAST_VIEWS[0] is policy and _LAST_VIEWS[1] is pki and _LAST_VIEWS[3] == taken_prefixes:
        return _LAST_VIEWS[2]
    prefixes = variable_prefixes(policy, taken_prefixes)
    no_tickets = cross_resumption_servers(policy) if resumption_cve_possible(policy.nginx_version) else set()
    views = [replace(_server_view(policy, s, pki, prefixes[s.slug]), tickets=s.slug not in no_tickets)
             for s in policy.servers]
    _LAST_VIEWS = (policy, pki, views, taken_prefixes)
    return views


def emit(policy: ir.Policy, pki: Pki, taken_prefixes: frozenset[str] = frozenset()) -> dict[str, str]:
    """`taken_prefixes`: variable prefixes of servers already in the same nginx from another
    compile (`mtlsc apply`); nginx lets a second `map` of one variable replace the first."""
    out: dict[str, str] = {}
    views = server_views(policy, pki, taken_prefixes)
    for server, view in zip(policy.servers, views):
        out[f"nginx/{server.slug}.conf"] = render("nginx_server.conf.j2", s=view)
        if server.cas:
            out[f"mtls/{server.slug}.ca.pem"] = trust_file_pem(pki, [c.name for c in server.cas])
            if any(c.crls for c in server.cas):
                out[f"mtls/{server.slug}.crl.pem"] = crl_file_pem(pki, [c.name for c in server.cas])
        if view.tls.dhparam:
            out[f"mtls/{server.slug}.dh.pem"] = FFDHE2048_PEM
        if view.san is not None:
            out[f"mtls/{server.slug}.san.js"] = render("san.js.j2", m=view.san, table=view.san.js())
        if view.key_binding:
            out[f"mtls/{server.slug}.keys.js"] = render("keys.js.j2", b=view.key_binding,
                                                         table=Safe(_js_table(view.key_binding.table)))
    out[HTTP_CONF] = http_conf(_sources(policy), _default_listens(policy), _hash_sizes(views), policy.host,
                               listen_profiles(policy))
    return out


@dataclass(frozen=True)
class ServerHttp:
    """What one server's file needs of HTTP_CONF, and the variable prefix it took."""

    listens: tuple[str, ...]
    hash_sizes: tuple[int, int]
    prefix: str
    tickets: bool


def server_http(policy: ir.Policy, pki: Pki, taken_prefixes: frozenset[str] = frozenset()) -> dict[str, ServerHttp]:
    """Per server slug: what `emit` with these arguments shares with other servers. The sizes of
    several servers together are the largest of each (both only grow with their input)."""
    prefixes = variable_prefixes(policy, taken_prefixes)
    views = server_views(policy, pki, taken_prefixes)
    return {s.slug: ServerHttp(tuple(_listen_text(l) for l in s.listens), _hash_sizes([v]), prefixes[s.slug],
                               v.tickets) for s, v in zip(policy.servers, views)}


def _js_table(table: dict[str, list[dict]]) -> str:
    """The key table as a JS object literal: JSON of base64 and fixed words, sorted for stable output."""
    return json.dumps(table, indent=4, sort_keys=True)


@dataclass
class ServerView:
    slug: Safe
    origin: Safe
    names: list[Safe]
    listens: list[Safe]
    certificate: Safe
    key: Safe
    verify: Safe | None
    ca_file: Safe | None
    crl_file: Safe | None
    depth: int
    ocsp: ir.Ocsp | None
    ocsp_mode: Safe | None
    ocsp_responder: Safe | None
    ocsp_cache: Safe | None  # `shared:<zone>:<size>`, or `off`
    resolver: list[Safe]  # DNS servers for host names in OCSP URLs; empty: none
    resolver_timeout: Safe | None
    no_cert: tuple[int, Safe]
    bad_cert: tuple[int, Safe]
    maps: list[MapView]
    target_gates: list[Gate]
    locations: list[LocationView]
    catch_all: bool
    cas_note: list[Safe]
    upstream_tls: "UpstreamTls | None" = None
    key_binding: "KeyBinding | None" = None
    san: SanModule | None = None  # SAN identities, SHA-256 pins, SAN forwarding: js_set in njs (emit/san.py)
    tickets: bool = True  # off where CVE-2025-23419 could let a session skip a client check
    nginx: list[Safe] = field(default_factory=list)  # the server's own `nginx { }` directives
    nginx_origin: Safe = Safe("")
    tls: TlsView | None = None


# The system trust store of Debian and Ubuntu: what `https://` backends are verified against when the
# policy names no `backend_ca` (other systems: name it).
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass
class UpstreamTls:
    verify: bool
    ca: Safe
    name: Safe | None
    certificate: Safe | None
    key: Safe | None


def _upstream_tls(server: ir.Server) -> UpstreamTls | None:
    """proxy_ssl_* for a server with an `https://` backend: verified unless the policy says not."""
    if not any(r.backend.startswith("https://") for r in server.routes):
        return None
    tls = server.backend_tls or ir.BackendTls()
    return UpstreamTls(
        verify=tls.verify, ca=quote.nginx_text(tls.ca or SYSTEM_CA_FILE),
        name=quote.nginx_text(tls.name) if tls.name else None,
        certificate=quote.nginx_text(tls.certificate) if tls.certificate else None,
        key=quote.nginx_text(tls.key) if tls.key else None,
    )


@dataclass
class KeyCheck:
    uri: Safe
    export: Safe  # the njs function, `ca<index>`
    function: Safe  # `<module>.<export>`, as js_content names it
    ca: Safe


@dataclass
class KeyBinding:
    """Routes of CAs another CA of the server could impersonate check the client certificate's
    signing key in njs (mtlsc.pki.binding); the module lives beside the trust file."""

    module: Safe
    file: Safe
    checks: list[KeyCheck]
    table: dict[str, list[dict]]  # ca0 -> [key entry fields]: the data of the njs module


def _key_binding(server: ir.Server, pki: Pki, prefix: str, ca_index: dict[str, int]) -> KeyBinding | None:
    bound = {name: keys for name, keys in key_bound(server, pki).items()
             if all(isinstance(k, KeyEntry) for k in keys)}  # else MTLS239 stops the compile
    if not bound:
        return None
    module = prefix.rstrip("_")
    names = sorted(bound, key=lambda n: ca_index[n])
    return KeyBinding(
        module=quote.bare(module),
        file=quote.nginx_text(f"{server.install_dir.rstrip('/')}/{server.slug}.keys.js"),
        checks=[KeyCheck(quote.nginx_word(f"{INTERNAL_PREFIX}key/ca{ca_index[n]}"), quote.bare(f"ca{ca_index[n]}"),
                         quote.bare(f"{module}.ca{ca_index[n]}"), quote.comment(n)) for n in names],
        table={f"ca{ca_index[n]}": [{"kty": k.kty, "curve": k.curve, "size": k.size, "spki": k.spki, "subject": k.subject}
                                    for k in bound[n]] for n in names},
    )


def _response(r: ir.Response) -> tuple[int, Safe]:
    """`return STATUS "body\n"`, or for a redirect `return 302 "URL"` (nginx sends it as Location)."""
    return r.status, quote.nginx_text(r.body) if r.redirect else quote.nginx_body(r.body)


def variable_prefixes(policy: ir.Policy, taken: frozenset[str] = frozenset()) -> dict[str, str]:
    """A short, unique variable prefix per server. nginx hashes variable names in buckets of 64
    bytes by default (`variables_hash_bucket_size`), so names must stay under about 46 characters:
    `mtls_<first label, 12 chars>_<port>_`, with a counter when two servers (or one in `taken`)
    would share one."""
    out: dict[str, str] = {}
    for server in policy.servers:
        label = quote.ident_from(server.names[0].replace("*.", "wild.").split(".")[0])[:12]
        base = f"mtls_{label}_{server.listens[0].port}"
        prefix, n = base, 1
        while prefix + "_" in out.values() or prefix + "_" in taken:
            n += 1
            prefix = f"{base}{n}"
        out[server.slug] = prefix + "_"
    return out


def _server_view(policy: ir.Policy, server: ir.Server, pki: Pki, prefix: str) -> ServerView:
    cas = server.cas
    maps: list[MapView] = []
    ca_index = {c.name: i for i, c in enumerate(cas)}
    needs_unverified = any(r.mode is ir.Mode.REQUIRE for r in server.routes)
    if needs_unverified:
        maps.append(MapView(Safe("1 unless the client presented a certificate that verified"),
                            Safe("$ssl_client_verify"), quote.nginx_var(prefix + "unverified"), 1,
                            [MapEntry(Safe("SUCCESS"), 0)]))
    if len(cas) > 1:
        maps += _ca_binding_maps(server, pki, prefix, ca_index)
    maps += leaf_maps(server, pki, prefix, ca_index)
    target_gates = _target_gates(server, prefix, maps)
    san_module = san_emit.module_for(server, prefix)
    identity_gate = _identity_maps(server, prefix, maps, san_module)
    binding = _key_binding(server, pki, prefix, ca_index) if len(cas) > 1 else None
    key_checks = {c.ca: c.uri for c in binding.checks} if binding else {}
    views = [_location(server, loc, prefix, ca_index, identity_gate, key_checks, san_module)
             for loc in locations(server)]
    ocsp = next((c.ocsp for c in cas if c.ocsp), None)
    install = server.install_dir.rstrip("/")
    return ServerView(
        slug=quote.comment(server.slug),
        origin=quote.comment(str(server.span)),
        names=[quote.bare(n) for n in server.names],
        listens=[quote.bare(_listen_text(l)) for l in server.listens],
        certificate=quote.nginx_text(server.certificate),
        key=quote.nginx_text(server.key),
        verify=_verify_mode(server),
        ca_file=quote.nginx_text(f"{install}/{server.slug}.ca.pem") if cas else None,
        crl_file=quote.nginx_text(f"{install}/{server.slug}.crl.pem") if any(c.crls for c in cas) else None,
        depth=max((c.depth for c in cas), default=1),
        ocsp=ocsp,
        ocsp_mode=quote.bare(ocsp.mode) if ocsp else None,
        ocsp_responder=quote.nginx_text(ocsp.responder) if ocsp and ocsp.responder else None,
        ocsp_cache=_ocsp_cache(ocsp, prefix) if ocsp else None,
        resolver=[quote.bare(a) for a in policy.resolver.addresses] if ocsp and policy.resolver else [],
        resolver_timeout=quote.bare(policy.resolver.timeout) if ocsp and policy.resolver else None,
        no_cert=_response(server.rejections.no_cert),
        bad_cert=_response(server.rejections.bad_cert),
        maps=maps,
        target_gates=target_gates,
        locations=views,
        catch_all=not any(not loc.exact and loc.name == "/" for loc in locations(server)),
        cas_note=[quote.comment(f"ca {c.name}: " + (f"{len(c.bundle)} leaf file(s), each certificate its own anchor"
                                                     if c.leaf else f"depth {c.depth}, {len(c.crls)} CRL file(s)"))
                  for c in cas],
        upstream_tls=_upstream_tls(server),
        key_binding=binding,
        san=san_module if san_module.functions else None,
        nginx=[quote.nginx_directive(d.words) for d in server.nginx],
        nginx_origin=_nginx_origin(server.nginx),
        tls=tls_view(policy, server, ocsp is not None),
    )


def _verify_mode(server: ir.Server) -> Safe | None:
    if server.passthrough:
        return Safe("optional_no_ca")  # no trust file: nginx verifies nothing, the backend decides
    if not server.cas:
        return None
    return Safe("on") if server.handshake_require else Safe("optional")


def _nginx_origin(directives: tuple[ir.NginxDirective, ...]) -> Safe:
    """Where the policy wrote them: `file:line`, once per block."""
    places = list(dict.fromkeys(f"{d.span.path}:{d.span.line}" for d in directives if d.span))
    return quote.comment(", ".join(places[:3]) + (" ..." if len(places) > 3 else ""))


def _ocsp_cache(ocsp: ir.Ocsp, prefix: str) -> Safe:
    """A shared zone per server, named after its variable prefix: nginx refuses one zone name
    declared with two sizes, and servers of a policy may size their caches differently."""
    return Safe("off") if ocsp.cache == "off" else quote.bare(f"shared:{prefix}ocsp:{ocsp.cache}")


# A map regex is one nginx argument (under 4 KiB): the case-variant alternatives go in chunks.
_CASE_CHUNK = 3000


def _target_gates(server: ir.Server, prefix: str, maps: list[MapView]) -> list[Gate]:
    """Refuse, before any location runs, what nginx and a backend could route differently: raw
    targets in a non-canonical form, and case variants of a location's path (docs/language.md
    "Paths"). Everything else reaches its location, whose proxy_pass forwards the normalised path."""
    response = (BAD_TARGET.status, quote.nginx_body(BAD_TARGET.body))
    rules = [r for r in NONCANONICAL if not (r.semicolon and server.backend_literal_semicolons)]
    target = MapView(Safe("1 when the request target as sent is not in canonical form"), Safe("$request_uri"),
                     quote.nginx_var(prefix + "bad_target"), 0,
                     [MapEntry(quote.map_regex(r.pattern), 1, quote.comment(r.why)) for r in rules])
    maps.append(target)
    gates = [Gate(target.var, response, Safe("raw target not canonical"))]
    gated, names = alias_gated(server)
    alternatives = [alias_regex(loc, names, server.backend_case_sensitive, server.backend_strict_slashes)
                    for loc in gated]
    if alternatives:
        case = MapView(Safe("1 when a backend may serve the path as another location's: a letter-case variant, "
                            "or an exact path plus `/`"), Safe("$uri"), quote.nginx_var(prefix + "path_alias"), 0)
        chunk: list[str] = []
        for alt in alternatives + [None]:
            if chunk and (alt is None or sum(map(len, chunk)) + len(alt) > _CASE_CHUNK):
                case.entries.append(MapEntry(quote.map_regex("^(?:" + "|".join(chunk) + ")"), 1))
                chunk = []
            if alt is not None:
                chunk.append(alt)
        maps.append(case)
        gates.append(Gate(case.var, response, Safe("alias of another location's path")))
    return gates


def _ca_binding_maps(server, pki, prefix, ca_index) -> list[MapView]:
    """Several CAs share the trust file: bind each route to its CA by the issuer DN (docs/nginx-facts.md §E2)."""
    issuer = MapView(Safe("which of this server's CAs issued the client certificate"),
                     Safe("$ssl_client_i_dn"), quote.nginx_var(prefix + "issuer_ca"), Safe('""'))
    seen: set[tuple[bytes, int]] = set()
    for ca in server.cas:
        facts = pki.ca(ca.name)
        for cert in facts.certs if facts else ():
            key = quote.map_key(cert.subject)
            # nginx refuses a key twice ("conflicting parameter"); a CA renewed under its old name, or a
            # renewed leaf beside the old one, repeats it (two CAs sharing a name are MTLS201)
            if (quote.map_key_folded(key), ca_index[ca.name]) not in seen:
                seen.add((quote.map_key_folded(key), ca_index[ca.name]))
                issuer.entries.append(MapEntry(key, quote.bare(f"ca{ca_index[ca.name]}"), quote.comment(f"ca {ca.name}")))
    maps = [issuer]
    for ca in server.cas:
        i = ca_index[ca.name]
        maps.append(MapView(quote.comment(f"1 when a verified certificate was not issued by ca {ca.name}"),
                            quote.nginx_concat("ssl_client_verify", prefix + "issuer_ca"),
                            quote.nginx_var(f"{prefix}not_ca{i}"), 0,
                            [MapEntry(quote.map_key(f"SUCCESS:ca{i}"), 0), MapEntry(quote.map_regex("^SUCCESS:"), 1)]))
    return maps


def _location(server, loc: Location, prefix, ca_index, identity_gate, key_checks, san_module) -> LocationView:
    route = loc.route
    rej = server.rejections
    gates: list[Gate] = []
    if route.mode is ir.Mode.REQUIRE:
        gates.append(Gate(quote.nginx_var(prefix + "unverified"), _response(rej.no_cert), Safe("no verified certificate")))
    if route.ca is not None and len(server.cas) > 1:
        gates.append(Gate(quote.nginx_var(f"{prefix}not_ca{ca_index[route.ca.name]}"), _response(rej.bad_cert),
                          quote.comment(f"certificate from another CA than {route.ca.name}")))
    if route.ca is not None and route.ca.leaf:
        gates.append(Gate(quote.nginx_var(f"{prefix}not_leaf{ca_index[route.ca.name]}"), _response(rej.bad_cert),
                          quote.comment(f"certificate not listed in leaf ca {route.ca.name}")))
    if route.allow:
        gates.append(Gate(identity_gate[tuple(sorted(i.name for i in route.allow))], _response(rej.forbidden),
                          quote.comment("identity not on the allow list")))
    forwarded = {f.header.lower(): san_emit.forward_variable(san_module, prefix, f.field) if FORWARD_FIELDS[f.field].njs
                 else FORWARD_FIELDS[f.field].variable for f in route.forward}
    headers = [(quote.header_name(h), quote.nginx_var(forwarded[h.lower()]) if h.lower() in forwarded else Safe('""'))
               for h in identity_headers(server)]
    mode = route.mode.value + (f" {route.ca.name}" if route.ca else "")
    allow = " allow any" if route.allow_any else (" allow " + " ".join(i.name for i in route.allow) if route.allow else "")
    return LocationView(
        location=Safe(("= " if loc.exact else "^~ ") + quote.nginx_word(loc.name)),
        note=quote.comment(f"route {route.path} ({route.span}): {mode}{allow}"),
        gates=gates,
        headers=headers,
        # The URI part makes nginx forward the normalised path it routed on, not the raw target.
        backend=quote.nginx_word(route.backend + loc.name),
        key_check=key_checks.get(route.ca.name) if route.ca else None,
        nginx=[quote.nginx_directive(d.words) for d in route.nginx],
        nginx_origin=_nginx_origin(route.nginx),
        hsts=location_hsts(server, route),
    )
