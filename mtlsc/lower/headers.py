"""Header names: which ones a policy may use, and the union every proxied location clears.

A header name reaches nginx as `proxy_set_header NAME ...`. Names that mean something to HTTP,
to nginx or to the backend's framework are refused (MTLS032): a certificate field there breaks
the request instead of describing the client. And because `proxy_set_header` is per location and
per server (docs/nginx-facts.md §F3), every server compiled together clears every identity header any of
them forwards, plus the names other proxies use: a client cannot send one through a server that
does not forward it to a backend another server shares.
"""

from __future__ import annotations

from dataclasses import replace

from mtlsc import ast, ir
from mtlsc.diagnostics import Related
from mtlsc.emit import quote
from mtlsc.lower.common import Ctx
from mtlsc.nginx_facts import FORWARD_FIELDS, WELL_KNOWN_IDENTITY_HEADERS, reserved_header

_DEFAULT_OWNER = {f.default_header.lower(): f.name for f in FORWARD_FIELDS.values()}


def usable_header(ctx: Ctx, name: str, span, field: str | None) -> bool:
    """True when `name` may carry `field` (or, with no field, be cleared); else report why.

    `span` is the string's own span, so the caret lands on the name."""
    problem = quote.header_problem(name)
    if problem:
        ctx.err("MTLS020", span, f"header name `{name}` {problem}", "use letters, digits and `-`, e.g. `X-Client-Subject`")
        return False
    example = FORWARD_FIELDS[field].default_header if field else "X-Client-Subject"
    why = reserved_header(name)
    if why:
        fix = (f"pick a name of your own, e.g. `{example}`" if field else
               "list only headers that carry a client identity: this one is part of every request")
        ctx.err("MTLS032", span, f"`{name}` {why}", fix, label="a reserved header name")
        return False
    owner = _DEFAULT_OWNER.get(name.lower())
    if field and owner and owner != field:
        ctx.err("MTLS032", span, f"`{name}` is mtlsc's header for `forward {owner}`: backends read it as that "
                "field, so no other field may arrive under its name",
                f"pick a name of your own, e.g. `{example}`", label="a reserved header name")
        return False
    return True


def cleared_headers(ctx: Ctx, nodes: list[ast.ClearHeaders]) -> tuple[str, ...]:
    """The `clear_headers` names of every file, in order; each may be listed once (MTLS013)."""
    out, first = [], {}
    for node in nodes:
        for s in node.names:
            key = s.value.lower()
            if key in first:
                ctx.err("MTLS013", s.span, f"header `{s.value}` is listed twice in `clear_headers`", "list it once",
                        related=[Related(first[key].span, "first listed here")])
                continue
            first[key] = s
            if usable_header(ctx, s.value, s.span, None):
                out.append(s.value)
    return tuple(out)


def union(servers: list[ir.Server], cleared: tuple[str, ...]) -> tuple[str, ...]:
    """Every identity header of the servers compiled together, first spelling kept, sorted by
    lowercase name: the defaults, every forwarded name, the well-known ones, then `clear_headers`."""
    names = [f.default_header for f in FORWARD_FIELDS.values()]
    names += [f.header for s in servers for r in s.routes for f in r.forward]
    names += list(WELL_KNOWN_IDENTITY_HEADERS) + list(cleared)
    first: dict[str, str] = {}
    for n in names:
        first.setdefault(n.lower(), n)
    return tuple(first[k] for k in sorted(first))


def with_identity_headers(servers: list[ir.Server], cleared: tuple[str, ...]) -> list[ir.Server]:
    headers = union(servers, cleared)
    return [replace(s, identity_headers=headers) for s in servers]
