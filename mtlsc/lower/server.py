"""Lowering of one `server` block and its routes."""

from __future__ import annotations

import difflib

from mtlsc import ast, ir, values
from mtlsc.diagnostics import Related
from mtlsc.emit import quote
from mtlsc.lower.backend_tls import lower_backend_tls
from mtlsc.lower.common import Ctx, nginx_string, once, resolve, suggest
from mtlsc.lower.headers import usable_header
from mtlsc.lower.nginx_block import lower_nginx_blocks
from mtlsc.lower.tls import lower_server_tls, own_hsts
from mtlsc.model.locations import INTERNAL_PREFIX
from mtlsc.nginx_facts import FORWARD_FIELDS
from mtlsc.parse import LIST_TYPO_CUTOFF, keywords_after

DEFAULT_INSTALL_DIR = "/etc/nginx/mtls"
# The case-variant gate (docs/language.md "Paths") writes a route path twice into one map regex,
# each character PCRE-escaped and then backslash-doubled by nginx quoting: 600 stays under 4 KiB.
ROUTE_PATH_MAX = 600
DEFAULT_REJECTIONS = ir.Rejections(
    no_cert=ir.Response(403, "client certificate required"),
    bad_cert=ir.Response(403, "client certificate not accepted"),
    forbidden=ir.Response(403, "client certificate not allowed here"),
)


def lower_server(ctx: Ctx, node: ast.Server, cas: dict, idents: dict) -> ir.Server | None:
    """A server block on its own; blocks naming the same server are merged afterwards."""
    where = f"server `{node.names[0].value}`"
    names = []
    for w in node.names:
        try:
            names.append(values.hostname(w.value))
        except values.ValueProblem as p:
            ctx.err("MTLS024", w.span, p.message, p.help)
    listens = []
    for stmt in (s for s in node.body if isinstance(s, ast.Listen)):
        try:
            address, port = values.listen(stmt.address.value)
            listens.append(ir.Listen(address, port, stmt.span))
        except values.ValueProblem as p:
            ctx.err("MTLS012", stmt.address.span, p.message, p.help)
    cert = once(ctx, node.body, ast.Certificate, where)
    backend = once(ctx, node.body, ast.Backend, where)
    handshake = once(ctx, node.body, ast.Handshake, where)
    install = once(ctx, node.body, ast.Install, where)
    paths = once(ctx, node.body, ast.BackendPaths, where)
    words = _backend_paths(ctx, paths) if paths else set()
    if handshake is not None and handshake.mode.value != "require":
        ctx.err("MTLS012", handshake.mode.span, f"`handshake {handshake.mode.value}` is not a handshake mode",
                "write `handshake require` to ask for a certificate on the whole listener; leave it out for per-route gates")
    server_backend = _backend(ctx, backend) if backend else ""
    routes = tuple(r for r in (_lower_route(ctx, r, cas, idents, server_backend) for r in node.body
                               if isinstance(r, ast.Route)) if r is not None)
    if cert is None:
        ctx.err("MTLS011", node.names[0].span, f"{where} has no `certificate`",
                'give the server certificate and key: `certificate "/etc/nginx/tls/api.crt" key "/etc/nginx/tls/api.key"`')
    if not routes and not any(isinstance(r, ast.Route) for r in node.body):
        ctx.err("MTLS011", node.names[0].span, f"{where} has no routes",
                "add at least one `route`; paths without a route are refused")
    server = ir.Server(
        names=tuple(names),
        listens=tuple(listens) or (ir.Listen(None, 443, node.span),),
        certificate=nginx_string(ctx, cert.cert, "the certificate path") if cert else "",
        key=nginx_string(ctx, cert.key, "the key path") if cert else "",
        backend=server_backend,
        handshake_require=handshake is not None,
        # the compiled files are `<install>/<name>_<port>.crl.pem`: room for the longest such name
        install_dir=nginx_string(ctx, install.directory, "the install directory", reserve=280) if install else DEFAULT_INSTALL_DIR,
        routes=routes,
        rejections=_rejections(ctx, node.body),
        span=node.span,
        handshake_span=handshake.span if handshake else None,
        certificate_span=cert.span if cert else None,
        backend_case_sensitive="case_sensitive" in words,
        backend_literal_semicolons="literal_semicolons" in words,
        backend_strict_slashes="strict_slashes" in words,
        backend_paths_span=paths.span if paths else None,
        backend_tls=lower_backend_tls(ctx, node.body),
        nginx=lower_nginx_blocks(ctx, node.body, where, "server"),
        tls=lower_server_tls(ctx, node.body, where),
    )
    for directives in (server.nginx, *(r.nginx for r in routes)):
        own_hsts(ctx, directives)
    return server


BACKEND_PATH_WORDS = ("case_sensitive", "literal_semicolons", "strict_slashes")


def _backend_paths(ctx: Ctx, stmt: ast.BackendPaths) -> set[str]:
    """The words of `backend_paths`: how the backend reads a path, so mtlsc need not refuse what it
    would read the same way nginx does (docs/language.md, "Paths")."""
    _no_duplicates(ctx, stmt.words, "`backend_paths` word")
    out = set()
    for w in stmt.words:
        if w.value in BACKEND_PATH_WORDS:
            out.add(w.value)
        else:
            ctx.err("MTLS012", w.span, f"`{w.value}` is not a `backend_paths` word",
                    suggest(w.value, BACKEND_PATH_WORDS) or "use `case_sensitive`, `literal_semicolons` or `strict_slashes`",
                    label="unknown word")
    return out


def _backend(ctx: Ctx, stmt: ast.Backend) -> str:
    try:
        return values.backend_url(stmt.url.value)
    except values.ValueProblem as p:
        ctx.err("MTLS012", stmt.url.span, p.message, p.help)
        return ""


def _rejections(ctx: Ctx, body) -> ir.Rejections:
    chosen = {}
    for stmt in (s for s in body if isinstance(s, ast.Reject)):
        reason = stmt.reason.value
        if reason not in ("no_cert", "bad_cert", "forbidden"):
            ctx.err("MTLS012", stmt.reason.span, f"`{reason}` is not a rejection reason",
                    suggest(reason, ("no_cert", "bad_cert", "forbidden")) or "use `no_cert`, `bad_cert` or `forbidden`")
            continue
        status = int(stmt.status.value)
        redirect = status in REDIRECTS
        if not redirect and not 400 <= status <= 599:
            ctx.err("MTLS012", stmt.status.span, f"status {status} does not refuse the request",
                    "use a 4xx or 5xx status, e.g. 403; or send clients without a certificate elsewhere with "
                    '`reject no_cert 302 "https://..."`')
            continue
        if status == 444:
            ctx.err("MTLS012", stmt.status.span, "status 444 would be sent as a status, not close the connection",
                    "nginx closes the connection for `return 444` only without a body, and mtlsc always sends one; "
                    "use a real status such as 403")
            continue
        if reason in chosen:
            ctx.err("MTLS013", stmt.span, f"`reject {reason}` is given twice", "keep one",
                    related=[Related(chosen[reason][1], "first given here")])
            continue
        if redirect:
            response = _redirect(ctx, stmt)
            if response is None:
                continue
        else:
            default = getattr(DEFAULT_REJECTIONS, reason)
            response = ir.Response(status, nginx_string(ctx, stmt.body, "the response body", reserve=2)
                                   if stmt.body else default.body)
        chosen[reason] = (response, stmt.span)
    return ir.Rejections(**{r: chosen[r][0] if r in chosen else getattr(DEFAULT_REJECTIONS, r)
                            for r in ("no_cert", "bad_cert", "forbidden")})


REDIRECTS = (301, 302, 303, 307, 308)


def _redirect(ctx: Ctx, stmt: ast.Reject) -> ir.Response | None:
    """`reject no_cert 302 "https://..."`: a client without a certificate is sent to a page that
    explains how to get one (ingress-nginx's auth-tls-error-page). Only for `no_cert`: a refused
    certificate or identity is an answer, not a detour."""
    if stmt.reason.value != "no_cert":
        ctx.err("MTLS012", stmt.status.span, f"`reject {stmt.reason.value}` cannot redirect",
                "only `no_cert` may redirect (to a page on getting a certificate); use a 4xx status here")
        return None
    url = stmt.body.value if stmt.body else ""
    if not url.startswith("https://") or len(url) <= len("https://") or any(c.isspace() for c in url):
        ctx.err("MTLS012", stmt.body.span if stmt.body else stmt.status.span,
                "a redirect needs an absolute `https://` URL", 'write `reject no_cert 302 "https://example.org/get-a-certificate"`')
        return None
    return ir.Response(int(stmt.status.value), nginx_string(ctx, stmt.body, "the redirect URL", reserve=2))


def _lower_route(ctx: Ctx, node: ast.Route, cas: dict, idents: dict, server_backend: str) -> ir.Route | None:
    try:
        path = values.route_path(node.path.value)
    except values.ValueProblem as p:
        sp = node.path.span
        ctx.err("MTLS021", type(sp)(sp.path, sp.line, sp.col + p.offset, sp.line, sp.col + p.offset + 1), p.message, p.help)
        return None
    too_long = quote.length_problem(path)
    if too_long:
        ctx.err("MTLS020", node.path.span, f"the route path {too_long}", "shorten the path")
        return None
    if len(path) > ROUTE_PATH_MAX:
        ctx.err("MTLS020", node.path.span, f"the route path is {len(path)} characters long; mtlsc allows {ROUTE_PATH_MAX}",
                "shorten the path: the case-variant gate writes it twice, escaped, into one nginx argument (4 KiB)")
        return None
    if (path.lower() + "/").startswith(INTERNAL_PREFIX):
        ctx.err("MTLS036", node.path.span, f"`{path}` is under `{INTERNAL_PREFIX}`, where mtlsc keeps internal locations "
                "(the key check of several CAs on one server)", "choose another path")
        return None
    where = f"route `{path}`"
    if _misspelt_statement(ctx, node, idents):
        return None
    modes = [s for s in node.body if isinstance(s, (ast.Public, ast.Optional, ast.Require, ast.Passthrough))]
    if len(modes) != 1:
        if not modes:
            ctx.err("MTLS015", node.path.span, f"{where} says nothing about client certificates",
                    "add `public`, `optional CA`, `require CA` or `passthrough`")
        else:
            ctx.err("MTLS015", modes[1].span, f"{where} has more than one mode", "keep one of `public`, `optional`, `require`",
                    related=[Related(modes[0].span, "first mode here")])
        return None
    mode_stmt = modes[0]
    mode = {ast.Public: ir.Mode.PUBLIC, ast.Optional: ir.Mode.OPTIONAL, ast.Require: ir.Mode.REQUIRE,
            ast.Passthrough: ir.Mode.PASSTHROUGH}[type(mode_stmt)]
    ca = None if mode in (ir.Mode.PUBLIC, ir.Mode.PASSTHROUGH) else resolve(ctx, mode_stmt.ca, cas, "ca", "MTLS018")
    allow_stmt = once(ctx, node.body, ast.Allow, where)
    forward_stmt = once(ctx, node.body, ast.Forward, where)
    backend_stmt = once(ctx, node.body, ast.Backend, where)
    allow, allow_any = (), False
    if allow_stmt is not None:
        if mode is not ir.Mode.REQUIRE:
            ctx.err("MTLS016", allow_stmt.span, f"`allow` needs `require`: {where} is {mode.value}",
                    "an allow list only means something when a certificate is required; use `require CA`")
        allow_any = any(w.value == "any" for w in allow_stmt.names)
        if allow_any and len(allow_stmt.names) > 1:
            ctx.err("MTLS016", allow_stmt.span, "`allow any` cannot be combined with named identities",
                    "`any` already admits every certificate of the CA")
        allow = tuple(i for i in (resolve(ctx, w, idents, "identity", "MTLS019")
                                  for w in allow_stmt.names if w.value != "any") if i is not None)
        _no_duplicates(ctx, allow_stmt.names, "identity")
    forward = _forward(ctx, forward_stmt, mode, where) if forward_stmt else ()
    backend = _backend(ctx, backend_stmt) if backend_stmt else server_backend  # "": settled after merging
    if mode not in (ir.Mode.PUBLIC, ir.Mode.PASSTHROUGH) and ca is None:
        return None
    return ir.Route(
        match=ir.PathMatch.EXACT if node.exact else ir.PathMatch.PREFIX,
        path=path, mode=mode, ca=ca, allow=allow, allow_any=allow_any,
        forward=forward, backend=backend, span=node.span,
        nginx=lower_nginx_blocks(ctx, node.body, where, "location"),
    )


def _misspelt_statement(ctx: Ctx, node: ast.Route, idents: dict) -> bool:
    """`allow` and `forward` read every name up to the next statement, so a misspelt statement
    after them (`allow acme  forwad subject`, `forward verify  requie partners`) reads as more
    names, and the route as one without that statement. Report the typo once, as the statement
    it looks like (keywords from the grammar), instead of each name and the missing statement."""
    for stmt in node.body:
        if isinstance(stmt, ast.Allow):
            words = [w for w in stmt.names if w.value != "any" and w.value not in idents
                     and ("identity", w.value) not in ctx.refused and not suggest(w.value, idents)]
            what = "`allow` reads every name up to the next statement"
        elif isinstance(stmt, ast.Forward):
            words = [f.name for f in stmt.fields
                     if f.name.value not in FORWARD_FIELDS and not suggest(f.name.value, FORWARD_FIELDS)]
            what = "`forward` reads every field name up to the next statement"
        else:
            continue
        for w in words:
            statements = keywords_after("server a { route / {")
            close = difflib.get_close_matches(w.value.lower(), statements, n=1, cutoff=LIST_TYPO_CUTOFF)
            if close:
                ctx.err("MTLS003", w.span, f"`{w.value}` is read as a name: is it a misspelt `{close[0]}`?",
                        f"did you mean `{close[0]}`? {what}, so a misspelt statement and its arguments read as names",
                        label="read as a name")
                return True
    return False


def _no_duplicates(ctx: Ctx, words, kind: str) -> None:
    seen = {}
    for w in words:
        if w.value in seen:
            ctx.err("MTLS013", w.span, f"{kind} `{w.value}` is listed twice", "list it once",
                    related=[Related(seen[w.value].span, "first listed here")])
        seen.setdefault(w.value, w)


def _forward(ctx: Ctx, stmt: ast.Forward, mode: ir.Mode, where: str) -> tuple[ir.Forward, ...]:
    if mode is ir.Mode.PUBLIC:
        ctx.err("MTLS016", stmt.span, f"{where} is public: it forwards no identity",
                "public routes clear every identity header; remove `forward` or require a certificate")
        return ()
    out, headers = [], {}
    for f in stmt.fields:
        spec = FORWARD_FIELDS.get(f.name.value)
        if spec is None:
            ctx.err("MTLS017", f.name.span, f"`{f.name.value}` is not a certificate field mtlsc can forward",
                    suggest(f.name.value, FORWARD_FIELDS) or "fields: " + ", ".join(FORWARD_FIELDS))
            continue
        header = f.header.value if f.header else spec.default_header
        if not usable_header(ctx, header, f.header.span if f.header else f.span, spec.name):
            continue
        key = header.lower()
        if key in headers:
            ctx.err("MTLS013", f.span, f"header `{header}` is forwarded twice", "give each field its own header",
                    related=[Related(headers[key], "first here")])
            continue
        headers[key] = f.span
        out.append(ir.Forward(spec.name, header, f.span))
    return tuple(out)
