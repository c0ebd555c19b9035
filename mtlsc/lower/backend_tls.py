"""Lowering of the `backend_ca` / `backend_name` / `backend_client_certificate` / `backend_verify`
statements of a server: how nginx verifies an `https://` backend before it sends the client's
identity to it (docs/language.md "Backends over TLS")."""

from __future__ import annotations

from mtlsc import ast, ir, values
from mtlsc.diagnostics import Related
from mtlsc.lower.common import Ctx, nginx_string


def lower_backend_tls(ctx: Ctx, body) -> ir.BackendTls | None:
    stmts = [s for s in body if isinstance(s, ast.BackendTls)]
    if not stmts:
        return None
    seen: dict[str, ast.BackendTls] = {}
    for s in stmts:
        if s.keyword in seen:
            ctx.err("MTLS013", s.span, f"`{s.keyword}` is given twice", "keep one",
                    related=[Related(seen[s.keyword].span, "first given here")])
        seen.setdefault(s.keyword, s)
    out = ir.BackendTls(span=stmts[0].span)
    if "backend_verify" in seen:
        word = seen["backend_verify"].values[0]
        if word.value not in ("on", "off"):
            ctx.err("MTLS012", word.span, f"`backend_verify {word.value}` is not `on` or `off`",
                    "leave it out (the backend is verified) or write `backend_verify off` to say it is not, on purpose")
        out = ir.BackendTls(verify=word.value != "off", span=seen["backend_verify"].span)  # what MTLS237 points at
    ca = _string(ctx, seen, "backend_ca", "the backend CA path")
    name = None
    if "backend_name" in seen:
        node = seen["backend_name"].values[0]
        try:
            name = values.hostname(node.value)
        except values.ValueProblem as p:
            ctx.err("MTLS024", node.span, p.message, p.help)
    cert = key = None
    if "backend_client_certificate" in seen:
        cert_node, key_node = seen["backend_client_certificate"].values
        cert = nginx_string(ctx, cert_node, "the backend client certificate path")
        key = nginx_string(ctx, key_node, "the backend client key path")
    return ir.BackendTls(out.verify, ca, name, cert, key, out.span)


def _string(ctx: Ctx, seen: dict, keyword: str, what: str) -> str | None:
    return nginx_string(ctx, seen[keyword].values[0], what) if keyword in seen else None
