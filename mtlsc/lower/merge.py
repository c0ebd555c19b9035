"""Server blocks naming the same server are one server.

A server is identified by its names and listen addresses. Blocks with the same identity merge
their routes; every other declaration must agree, or both places are reported. Blocks that share
some (name, address) pair without being the same server are reported too: nginx would pick one
of them silently.
"""

from __future__ import annotations

from dataclasses import replace

from mtlsc import ir
from mtlsc.diagnostics import Related
from mtlsc.lower.common import Ctx
from mtlsc.lower.nginx_block import REPEATABLE
from mtlsc.lower.server import DEFAULT_INSTALL_DIR, DEFAULT_REJECTIONS
from mtlsc.lower.tls import merge_tls

_SCALARS = ("certificate", "key", "backend", "handshake_require", "install_dir", "rejections", "backend_tls")


def _key(s: ir.Server):
    return tuple(sorted(s.names)), tuple(sorted(str(l) for l in s.listens))


def merge_servers(ctx: Ctx, servers: list[ir.Server]) -> list[ir.Server]:
    groups: dict[tuple, list[ir.Server]] = {}
    for s in servers:
        groups.setdefault(_key(s), []).append(s)
    merged = [_merge_group(ctx, g) for g in groups.values()]
    _report_overlaps(ctx, merged)
    return merged


def _merge_group(ctx: Ctx, group: list[ir.Server]) -> ir.Server:
    first = group[0]
    values = {name: getattr(first, name) for name in _SCALARS}
    routes = list(first.routes)
    for other in group[1:]:
        for name in _SCALARS:
            mine, theirs = values[name], getattr(other, name)
            if _unset(name, theirs):
                continue
            if _unset(name, mine):
                values[name] = theirs
            elif mine != theirs:
                ctx.err("MTLS023", other.span, f"server `{other.names[0]}` is declared twice with a different {name.replace('_', ' ')}",
                        "blocks naming the same server are merged; make them agree or move the declaration into one file",
                        related=[Related(first.span, "the other declaration")])
        routes.extend(other.routes)
    _report_duplicate_routes(ctx, routes)
    routes = [_with_backend(ctx, r, values["backend"]) for r in routes]
    return ir.Server(
        names=first.names, listens=first.listens, routes=tuple(routes), span=first.span,
        nginx=_nginx(ctx, group), tls=merge_tls(ctx, group),
        handshake_span=next((s.handshake_span for s in group if s.handshake_span), None),
        certificate_span=next((s.certificate_span for s in group if s.certificate_span), None), **values,
        **_backend_paths(ctx, group),
    )


def _nginx(ctx: Ctx, group: list[ir.Server]) -> tuple[ir.NginxDirective, ...]:
    """Every block's `nginx { }` directives, in file order; one that nginx takes once, twice, is reported."""
    out: list[ir.NginxDirective] = []
    seen: dict[str, ir.NginxDirective] = {}
    for s in group:
        for d in s.nginx:
            if d.name in seen and d.name not in REPEATABLE and not any(x is seen[d.name] for x in s.nginx):
                ctx.err("MTLS013", d.span, f"`{d.name}` is given in two blocks of server `{s.names[0]}`",
                        "they are merged into one nginx server, which takes it once; keep one",
                        related=[Related(seen[d.name].span, "first given here")])
                continue
            seen.setdefault(d.name, d)
            out.append(d)
    return tuple(out)


def _paths_words(s: ir.Server) -> tuple[bool, bool, bool]:
    return s.backend_case_sensitive, s.backend_literal_semicolons, s.backend_strict_slashes


def _backend_paths(ctx: Ctx, group: list[ir.Server]) -> dict:
    """`backend_paths` as one declaration: blocks that state it must state the same words."""
    stated = [s for s in group if s.backend_paths_span is not None]
    for other in stated[1:]:
        if _paths_words(other) != _paths_words(stated[0]):
            ctx.err("MTLS023", other.backend_paths_span,
                    f"server `{other.names[0]}` is declared twice with different `backend_paths`",
                    "blocks naming the same server are merged; make them agree or move the declaration into one file",
                    related=[Related(stated[0].backend_paths_span, "the other declaration")])
    case, semicolons, slashes = _paths_words(stated[0]) if stated else (False, False, False)
    return {"backend_case_sensitive": case, "backend_literal_semicolons": semicolons, "backend_strict_slashes": slashes,
            "backend_paths_span": stated[0].backend_paths_span if stated else None}


def _with_backend(ctx: Ctx, route: ir.Route, server_backend: str) -> ir.Route:
    """A route without its own backend uses the server's, which another file may declare."""
    if route.backend:
        return route
    if not server_backend:
        ctx.err("MTLS011", route.span, f"route `{route.path}` has no backend",
                'give the server a `backend "http://127.0.0.1:8080"`, or the route its own')
    return replace(route, backend=server_backend)


def _unset(name: str, value) -> bool:
    """Defaults do not conflict with an explicit value in another block."""
    return value in ("", False, None) or (name == "install_dir" and value == DEFAULT_INSTALL_DIR) or (
        name == "rejections" and value == DEFAULT_REJECTIONS)


def _report_duplicate_routes(ctx: Ctx, routes: list[ir.Route]) -> None:
    seen: dict[tuple, ir.Route] = {}
    for r in routes:
        key = (r.match, r.path)
        if key in seen:
            ctx.err("MTLS022", r.span, f"route `{r.location}` is declared twice",
                    "merge the two routes into one", related=[Related(seen[key].span, "first declared here")])
        seen.setdefault(key, r)


def _report_overlaps(ctx: Ctx, servers: list[ir.Server]) -> None:
    owner: dict[tuple[str, str], ir.Server] = {}
    for s in servers:
        for name in s.names:
            for listen in s.listens:
                pair = (name, str(listen))
                if pair in owner and owner[pair] is not s:
                    ctx.err("MTLS023", s.span, f"`{name}` on `{listen}` belongs to two different server blocks",
                            "give both blocks the same names and listen addresses (they then merge), or separate them",
                            related=[Related(owner[pair].span, "the other server")])
                owner.setdefault(pair, s)
