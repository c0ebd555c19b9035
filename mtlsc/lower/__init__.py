"""Step two: AST -> IR. Resolve names, apply defaults, validate every value.

Several files may describe one compile: names are global across them, and server blocks with
the same names and listen addresses merge into one server. A conflict is an error that points
at both places; nothing is ever "first one wins".
"""

from __future__ import annotations

from mtlsc import ast, ir, values
from mtlsc.diagnostics import Diagnostic, Related
from mtlsc.lower.common import Ctx, file_path, once
from mtlsc.lower.headers import cleared_headers, with_identity_headers
from mtlsc.lower.identity import lower_identity
from mtlsc.lower.merge import merge_servers
from mtlsc.lower.server import lower_server
from mtlsc.nginx_facts import FORWARD_FIELDS, MIN_NGINX
from mtlsc.source import Span

DEFAULT_NGINX = (1, 22, 0)


def lower(files: list[ast.PolicyFile]) -> tuple[ir.Policy | None, list[Diagnostic]]:
    """Lower parsed files into one policy. Returns None when any error was found."""
    ctx = Ctx()
    targets = [i for f in files for i in f.items if isinstance(i, ast.NginxTarget)]
    version = _lower_target(ctx, targets)
    njs = _lower_modules(ctx, targets)
    cas = _unique(ctx, "ca", [(i, _lower_ca(ctx, i, f.path)) for f in files for i in f.items if isinstance(i, ast.Ca)])
    idents = _unique(
        ctx, "identity", [(i, lower_identity(ctx, i)) for f in files for i in f.items if isinstance(i, ast.Identity)]
    )
    _indistinguishable(ctx, idents)
    servers = [lower_server(ctx, s, cas, idents) for f in files for s in f.items if isinstance(s, ast.Server)]
    merged = merge_servers(ctx, [s for s in servers if s is not None])
    cleared = cleared_headers(ctx, [i for f in files for i in f.items if isinstance(i, ast.ClearHeaders)])
    merged = with_identity_headers(merged, cleared)
    _passthrough_alone(ctx, merged)
    waivers = tuple(w for f in files for w in _waivers(f.items, Span(f.path, 1, 1, 10**9, 1)))
    resolver = _lower_resolver(ctx, [i for f in files for i in f.items if isinstance(i, ast.Resolver)])
    _no_server(ctx, files)
    if not njs:
        _needs_njs(ctx, idents, merged)
    if ctx.diags:
        return None, ctx.diags
    policy = ir.Policy(
        version,
        tuple(cas[n] for n in sorted(cas)),
        tuple(idents[n] for n in sorted(idents)),
        tuple(merged),
        waivers,
        cleared,
        resolver,
        njs=njs,
    )
    return policy, []


def _lower_modules(ctx, targets: list[ast.NginxTarget]) -> bool:
    """`nginx "..." with njs`: said once is enough, but every file that names a target must agree."""
    said = []
    for t in targets:
        for m in t.modules:
            if m.value != "njs":
                ctx.err("MTLS012", m.span, f"`{m.value}` is not a module mtlsc uses",
                        "write `with njs` when the target nginx loads ngx_http_js_module; leave it out otherwise")
        said.append(any(m.value == "njs" for m in t.modules))
    if len(set(said)) > 1:
        first = next(t for t, s in zip(targets, said) if s != said[0] or t is targets[0])
        other = next(t for t, s in zip(targets, said) if s != said[0])
        ctx.err("MTLS023", other.span, "the policy files disagree on whether the target nginx has njs",
                "say `with njs` on every `nginx` target statement, or on none", related=[Related(first.span, "first target here")])
    return any(said)


def _passthrough_alone(ctx, servers: list[ir.Server]) -> None:
    """A `passthrough` route makes its server's listener `optional_no_ca`, where nginx no longer
    refuses certificates no CA vouches for: a route of the same server that requires or checks a CA
    would then see them too. Such routes belong on another server name or port."""
    for server in servers:
        through = next((r for r in server.routes if r.mode is ir.Mode.PASSTHROUGH), None)
        checked = next((r for r in server.routes if r.ca is not None), None)
        if through is not None and checked is not None:
            ctx.err("MTLS016", through.span, f"`passthrough` route `{through.path}` shares server `{server.names[0]}` "
                    f"with route `{checked.path}`, which checks ca `{checked.ca.name}`",
                    "serve passthrough routes on their own server name or port: nginx verifies no certificate "
                    "on a listener that passes them through (ssl_verify_client optional_no_ca)",
                    related=[Related(checked.span, "checks a CA")])


NJS_PACKAGE = "libnginx-mod-http-js"


def _needs_njs(ctx, idents: dict, servers: list[ir.Server]) -> None:
    """MTLS030: SAN identities, SHA-256 and SPKI pins and SAN forwarding are read in njs, which
    stock nginx lacks: the policy must say the target loads it, or nginx -t would stop at `unknown directive`."""
    help = (f'load njs in the target nginx (Debian/Ubuntu: `apt-get install {NJS_PACKAGE}`, then '
            f'`load_module modules/ngx_http_js_module.so;`) and say so: `nginx ">= 1.22" with njs`')
    used = {i.name for s in servers for r in s.routes for i in r.allow}
    for name in sorted(used):
        ident = idents.get(name)
        if ident is not None and ident.needs_njs:
            what = {ir.IdentityKind.SHA256: "a SHA-256 pin",
                    ir.IdentityKind.SPKI: "an SPKI (public-key) pin"}.get(ident.kind, "a SAN identity")
            ctx.err("MTLS030", ident.span, f"identity `{name}` is {what}: nginx reads it only through njs, "
                    "and the policy does not say the target has njs", help, label="needs njs")
    for s in servers:
        for r in s.routes:
            for f in r.forward:
                if FORWARD_FIELDS[f.field].njs:
                    ctx.err("MTLS030", f.span, f"`forward {f.field}` is read through njs, and the policy does not say "
                            "the target has njs", help, label="needs njs")


def _no_server(ctx, files: list[ast.PolicyFile]) -> None:
    """MTLS011 when nothing compiled together defines a server. An error, not a warning: the
    output would hold no server block, so deploying it in place of a working one refuses every
    client; and with no route no check runs, so a clean report would vouch for nothing. A file of
    shared `ca`/`identity` blocks is checked together with the files that use them (their names
    resolve only then), and then this does not fire. Reported only when nothing else is wrong:
    while other errors stand nothing is compiled, and files written to show one problem (or
    shared definitions checked alone to see their own errors) need not hear it too."""
    if ctx.diags or not files or any(isinstance(i, ast.Server) for f in files for i in f.items):
        return
    first = files[0]
    help = ("add a `server` block, or check and compile this file together with the files that define "
            "the servers: names are shared by every file compiled together")
    if not any(f.items for f in files):
        what = "the policy file holds" if len(files) == 1 else "the policy files hold"
        ctx.err("MTLS011", Span(first.path, 1, 1, 1, 1), f"{what} no statement: the compiled config would serve nothing",
                "write the policy (a `ca`, its `identity` blocks and a `server` with routes), or name the right file",
                label="nothing to compile here")
        return
    item = next(i for f in files for i in f.items)
    ctx.err("MTLS011", item.span, "no `server` is defined: the compiled config would serve nothing", help,
            label="the policy starts here; no file compiled with it has a `server`")


def _waivers(nodes, scope: Span):
    """Each `waive` applies to findings inside the block that holds it (the file, at top level)."""
    for node in nodes:
        if isinstance(node, ast.Waive):
            yield ir.Waiver(node.code.value, node.reason.value, scope, node.span)
        elif isinstance(node, (ast.Ca, ast.Identity, ast.Server, ast.Route)):
            yield from _waivers(node.body, node.span)


def _identity_key(ident: ir.Identity) -> tuple | None:
    """What nginx compares for an exact identity; two identities with one key are the same one."""
    if ident.kind is ir.IdentityKind.SUBJECT:
        return ("subject", ident.subject.lower())  # map keys compare ASCII case-insensitively
    if ident.kind is ir.IdentityKind.FINGERPRINT:
        return ("fingerprint", ident.fingerprint)
    if ident.kind is ir.IdentityKind.SERIAL:
        return ("serial", ident.serial, ident.issuer.lower())
    if ident.kind is ir.IdentityKind.SHA256:
        return ("sha256", ident.fingerprint)
    if ident.kind is ir.IdentityKind.SPKI:
        return ("spki", ident.fingerprint)
    if ident.kind is ir.IdentityKind.SAN:
        return ("san", ident.san.kind, ident.san.value, ident.san.pattern)
    return None


def _indistinguishable(ctx, idents: dict) -> None:
    """nginx cannot tell such identities apart, and their map keys would clash at `nginx -t`."""
    seen: dict[tuple, ir.Identity] = {}
    for name in sorted(idents, key=lambda n: (idents[n].span.path, idents[n].span.line) if idents[n].span else ("", 0)):
        ident = idents[name]
        key = _identity_key(ident)
        if key is None:
            continue
        if key in seen:
            ctx.err("MTLS025", ident.span, f"identities `{seen[key].name}` and `{ident.name}` match the same certificates",
                    "keep one identity and allow it wherever either was allowed (DNs compare case-insensitively)",
                    related=[Related(seen[key].span, f"`{seen[key].name}` is defined here")])
        seen.setdefault(key, ident)


def _lower_target(ctx, targets: list[ast.NginxTarget]) -> tuple[int, int, int]:
    found: list[tuple[tuple[int, int, int], ast.NginxTarget]] = []
    for t in targets:
        try:
            found.append((values.nginx_version(t.version.value), t))
        except values.ValueProblem as p:
            ctx.err("MTLS012", t.version.span, p.message, p.help)
    for version, t in found:
        if version < MIN_NGINX:
            ctx.err(
                "MTLS031", t.version.span, f"nginx {'.'.join(map(str, version))} is older than mtlsc supports",
                f"mtlsc needs nginx >= {'.'.join(map(str, MIN_NGINX))}: `ssl_reject_handshake` closes the no-SNI hole (docs/nginx-facts.md §5)",
            )
        if version != found[0][0]:
            ctx.err("MTLS023", t.span, "the policy files name different nginx targets",
                    "state one target version for everything compiled together",
                    related=[Related(found[0][1].span, "first target here")])
    return found[0][0] if found else DEFAULT_NGINX


def _lower_resolver(ctx, nodes: list[ast.Resolver]) -> ir.Resolver | None:
    """One `resolver` for everything compiled together: nginx's DNS servers are the host's."""
    lowered: list[ir.Resolver] = []
    for node in nodes:
        addresses: dict[str, ast.Str] = {}
        for a in node.addresses:
            try:
                address = values.resolver_address(a.value)
            except values.ValueProblem as p:
                ctx.err("MTLS012", a.span, p.message, p.help)
                continue
            if address in addresses:
                ctx.err("MTLS013", a.span, f"DNS server `{address}` is listed twice", "list it once",
                        related=[Related(addresses[address].span, "first listed here")])
            addresses.setdefault(address, a)
        timeout = ir.DEFAULT_RESOLVER_TIMEOUT
        if node.timeout is not None:
            try:
                timeout = values.resolver_timeout(node.timeout.value)
            except values.ValueProblem as p:
                ctx.err("MTLS012", node.timeout.span, p.message, p.help)
        lowered.append(ir.Resolver(tuple(addresses), timeout, node.span))
    for node, r in zip(nodes[1:], lowered[1:]):
        if r != lowered[0]:
            ctx.err("MTLS023", node.span, "the policy files name different `resolver`s",
                    "nginx asks one set of DNS servers: state one `resolver` for everything compiled together",
                    related=[Related(nodes[0].span, "first `resolver` here")])
    return lowered[0] if lowered else None


def _unique(ctx, kind: str, pairs) -> dict:
    table, first = {}, {}
    for node, lowered in pairs:
        name = node.name.value
        if name in first:
            ctx.err("MTLS010", node.name.span, f"{kind} `{name}` is defined twice",
                    f"rename one of them; names are shared by every file compiled together",
                    related=[Related(first[name].name.span, "first defined here")])
            continue
        first[name] = node
        if lowered is not None:
            table[name] = lowered
        else:
            ctx.refused.add((kind, name))
    return table


def _lower_ca(ctx, node: ast.Ca, policy_path: str) -> ir.Ca | None:
    where = f"ca `{node.name.value}`"
    bundle = once(ctx, node.body, ast.Bundle, where)
    depth = once(ctx, node.body, ast.Depth, where)
    crl = once(ctx, node.body, ast.Crl, where)
    ocsp = once(ctx, node.body, ast.Ocsp, where)
    leaf = once(ctx, node.body, ast.Leaf, where)
    if leaf is not None:
        return _lower_leaf_ca(ctx, node, leaf, policy_path)
    if bundle is None:
        ctx.err("MTLS011", node.name.span, f"{where} has no `bundle`",
                'name the CA certificates: `bundle "ca/root.pem" "ca/issuing.pem"`, or the self-signed client '
                'certificates to trust as themselves: `leaf "clients/alice.pem"`')
        return None
    depth_value = 1  # nginx's default ssl_verify_depth (docs/nginx-facts.md §3)
    if depth is not None:
        depth_value = int(depth.value.value)
        if depth_value > 10:
            ctx.err("MTLS012", depth.value.span, f"depth {depth_value} is not a sensible chain length",
                    "depth counts intermediates between the client certificate and the root: 0, 1 or 2 is usual")
    lowered_ocsp = None
    if ocsp is not None:
        if ocsp.mode.value not in ("on", "leaf"):
            ctx.err("MTLS012", ocsp.mode.span, f"`{ocsp.mode.value}` is not an OCSP mode",
                    "write `ocsp on` (leaf and intermediates) or `ocsp leaf`; leave the line out for no OCSP")
        responder = None
        if ocsp.responder is not None:
            try:
                responder = values.ocsp_responder(ocsp.responder.value)
            except values.ValueProblem as p:
                ctx.err("MTLS012", ocsp.responder.span, p.message, p.help)
        cache = ir.DEFAULT_OCSP_CACHE
        if ocsp.cache is not None:
            try:
                cache = values.ocsp_cache(ocsp.cache.value)
            except values.ValueProblem as p:
                ctx.err("MTLS012", ocsp.cache.span, p.message, p.help)
        lowered_ocsp = ir.Ocsp(ocsp.mode.value, responder, cache, span=ocsp.span)
    crl_files = crl.files if crl else ()
    return ir.Ca(
        name=node.name.value,
        bundle=tuple(file_path(ctx, s, policy_path) for s in bundle.files),
        depth=depth_value,
        crls=tuple(file_path(ctx, s, policy_path) for s in crl_files),
        ocsp=lowered_ocsp,
        span=node.span,
        bundle_spans=tuple(s.span for s in bundle.files),
        crl_spans=tuple(s.span for s in crl_files),
        depth_span=depth.span if depth is not None else None,
    )




# What each statement means in a CA bundle, and why a `leaf` CA has no use for it.
_NOT_FOR_LEAF = {
    ast.Bundle: ("`bundle` and `leaf` in one CA", "a CA trusts either CA certificates (`bundle`) or self-signed client "
                 "certificates (`leaf`): put the other kind in a `ca` block of its own"),
    ast.Depth: ("`depth` in a `leaf` CA", "remove it: a listed leaf is its own anchor, with no certificate between "
                "(mtlsc emits depth 0 for it)"),
    ast.Crl: ("`crl` in a `leaf` CA", "remove it: to revoke a leaf, remove it from the `leaf` list and reload nginx; "
              "only the leaf's own key could sign a CRL for it"),
    ast.Ocsp: ("`ocsp` in a `leaf` CA", "remove it: nginx asks no responder about a self-signed certificate; to revoke "
               "a leaf, remove it from the `leaf` list and reload nginx"),
}


def _lower_leaf_ca(ctx, node: ast.Ca, leaf: ast.Leaf, policy_path: str) -> ir.Ca | None:
    """`ca NAME { leaf "alice.pem" ... }`: Caddy's trusted leaf certificates. The files go where a
    bundle's would (the server's trust file); depth 0 verifies them (docs/nginx-facts.md §F11); the
    emitter binds the CA's routes to their fingerprints."""
    refused = False
    for stmt in node.body:
        if type(stmt) in _NOT_FOR_LEAF:
            message, fix = _NOT_FOR_LEAF[type(stmt)]
            ctx.err("MTLS026", stmt.span, f"{message} (ca `{node.name.value}`)", fix,
                    related=[Related(leaf.span, "the leaf certificates are listed here")])
            refused = True
    if refused:
        return None
    return ir.Ca(
        name=node.name.value,
        bundle=tuple(file_path(ctx, s, policy_path) for s in leaf.files),
        depth=0,
        crls=(),
        ocsp=None,
        span=node.span,
        bundle_spans=tuple(s.span for s in leaf.files),
        leaf=True,
    )
