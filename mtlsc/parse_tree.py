"""Step one, second half: lark's Tree -> the AST, one method per grammar rule (mtlsc/parse.py
runs the parser; the Tree never leaves these two modules)."""

from __future__ import annotations

from lark import Token, Transformer, v_args

from mtlsc import ast
from mtlsc.parse_fast import unescape
from mtlsc.source import Span


def token_span(path: str, tok: Token) -> Span:
    return Span(path, tok.line, tok.column, tok.end_line, tok.end_column)


def meta_span(path: str, meta) -> Span:
    if getattr(meta, "empty", True):
        return Span(path, 1, 1, 1, 1)
    return Span(path, meta.line, meta.column, meta.end_line, meta.end_column)



@v_args(meta=True)
class ToAst(Transformer):
    """One method per grammar rule. Terminals become Word/Str; rules become ast nodes."""

    def __init__(self, path: str, allow_tails: dict | None = None):
        super().__init__()
        self.path = path
        # parse_fast.Split.allow_tails: names taken out after an allow list's first name, claimed here
        self.allow_tails = allow_tails if allow_tails is not None else {}

    def _span(self, meta) -> Span:
        return meta_span(self.path, meta)

    # terminals
    def __default_token__(self, tok: Token):
        span = token_span(self.path, tok)
        if tok.type == "STRING":
            return ast.Str(unescape(tok.value), span)
        return ast.Word(tok.value, span)

    def start(self, meta, items):
        return ast.PolicyFile(self.path, tuple(items), self._span(meta))

    def nginx_target(self, meta, c):
        return ast.NginxTarget(c[0], self._span(meta), (c[1],) if c[1] is not None else ())

    def waive(self, meta, c):
        return ast.Waive(c[0], c[1], self._span(meta))

    def clear_headers(self, meta, c):
        return ast.ClearHeaders(tuple(c), self._span(meta))

    def ca(self, meta, c):
        return ast.Ca(c[0], tuple(c[1:]), self._span(meta))

    def bundle(self, meta, c):
        return ast.Bundle(tuple(c), self._span(meta))

    def leaf(self, meta, c):
        return ast.Leaf(tuple(c), self._span(meta))

    def depth(self, meta, c):
        return ast.Depth(c[0], self._span(meta))

    def crl(self, meta, c):
        return ast.Crl(tuple(c), self._span(meta))

    def ocsp(self, meta, c):
        return ast.Ocsp(c[0], c[1], c[2], self._span(meta))

    def resolver(self, meta, c):
        *addresses, timeout = c
        return ast.Resolver(tuple(addresses), timeout, self._span(meta))

    def identity(self, meta, c):
        return ast.Identity(c[0], tuple(c[1:]), self._span(meta))

    def subject(self, meta, c):
        return ast.Subject(c[0], self._span(meta))

    def attr_eq(self, meta, c):
        return ast.AttrEq(c[0], c[1], self._span(meta))

    def attr_re(self, meta, c):
        return ast.AttrRe(c[0], c[1], self._span(meta))

    def fingerprint(self, meta, c):
        return ast.Fingerprint(c[1], self._span(meta), c[0])

    def serial(self, meta, c):
        return ast.Serial(c[0], self._span(meta))

    def issuer(self, meta, c):
        return ast.Issuer(c[0], self._span(meta))

    def san(self, meta, c):
        return ast.San(c[0], c[1], self._span(meta))

    def server(self, meta, c):
        names = tuple(x for x in c if isinstance(x, ast.Word))
        return ast.Server(names, tuple(c[len(names):]), self._span(meta))

    def listen(self, meta, c):
        return ast.Listen(c[0], self._span(meta))

    def certificate(self, meta, c):
        return ast.Certificate(c[0], c[1], self._span(meta))

    def backend(self, meta, c):
        return ast.Backend(c[0], self._span(meta))

    def backend_paths(self, meta, c):
        return ast.BackendPaths(tuple(c), self._span(meta))

    def backend_ca(self, meta, c):
        return ast.BackendTls("backend_ca", tuple(c), self._span(meta))

    def backend_name(self, meta, c):
        return ast.BackendTls("backend_name", tuple(c), self._span(meta))

    def backend_client_certificate(self, meta, c):
        return ast.BackendTls("backend_client_certificate", tuple(c), self._span(meta))

    def backend_verify(self, meta, c):
        return ast.BackendTls("backend_verify", tuple(c), self._span(meta))

    def tls(self, meta, c):
        return ast.Tls(c[0], self._span(meta))

    def hsts(self, meta, c):
        return ast.Hsts(c[0], tuple(c[1:]), self._span(meta))

    def stapling(self, meta, c):
        return ast.Stapling(c[0], self._span(meta))

    def handshake(self, meta, c):
        return ast.Handshake(c[0], self._span(meta))

    def install(self, meta, c):
        return ast.Install(c[0], self._span(meta))

    def reject(self, meta, c):
        return ast.Reject(c[0], c[1], c[2], self._span(meta))

    def nginx_block(self, meta, c):
        return ast.NginxBlock(c[0], self._span(meta))

    def route(self, meta, c):
        exact, path, *body = c
        return ast.Route(exact is not None, path, tuple(body), self._span(meta))

    def public(self, meta, c):
        return ast.Public(self._span(meta))

    def passthrough(self, meta, c):
        return ast.Passthrough(self._span(meta))

    def optional(self, meta, c):
        return ast.Optional(c[0], self._span(meta))

    def require(self, meta, c):
        return ast.Require(c[0], self._span(meta))

    def allow(self, meta, c):
        tail = self.allow_tails.pop((c[0].span.line, c[0].span.col), None) if self.allow_tails else None
        if tail is None:
            return ast.Allow(tuple(c), self._span(meta))
        span = self._span(meta)
        if len(c) == 1:  # lark's statement ended at the first name: it ends at the last one
            last = tail[-1].span
            span = Span(span.path, span.line, span.col, last.end_line, last.end_col)
        return ast.Allow((c[0], *tail, *c[1:]), span)

    def forward(self, meta, c):
        return ast.Forward(tuple(c), self._span(meta))

    def field(self, meta, c):
        return ast.Field(c[0], c[1], self._span(meta))

    def _only_child(self, meta, c):
        return c[0]

    # rules that only wrap their one value
    responder = ocsp_cache = resolver_timeout = field_name = header = _only_child
