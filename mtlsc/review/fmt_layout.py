"""The canonical text of one statement for `mtlsc fmt`: quoting, the one-line form of a block or
list, and nginx { } blocks laid out one directive per line (their meaning compared before and after)."""

from __future__ import annotations

import re


from mtlsc import ast
from mtlsc.nginx_conf import Comment, ConfError, Directive
from mtlsc.nginx_conf import parse as parse_nginx

WIDTH = 100  # a one-line block, or a list statement, must fit in this many columns
INDENT = "  "
_LIST_WORDS = {ast.Bundle: "bundle", ast.Leaf: "leaf", ast.Crl: "crl", ast.ClearHeaders: "clear_headers", ast.Allow: "allow",
               ast.BackendPaths: "backend_paths", ast.Forward: "forward"}  # statements that may go one item per line
_BLOCKS = (ast.Ca, ast.Identity, ast.Server, ast.Route)


def quote(value: str) -> str:
    """A string literal for `value`, the same for every spelling of it. The lexer's escapes are
    `\\"` and `\\\\`; any other backslash stands for itself. So a lone backslash before an ordinary
    character is written as it is (DN and regex escapes stay readable: `"CN=Smith\\, John"`,
    `"^\\d+$"`), and every other run of backslashes (before `"`, at the end, or two or more) is
    written doubled."""

    def run(m: re.Match) -> str:
        lone = len(m.group()) == 1 and m.end() < len(value) and value[m.end()] != '"'
        return m.group() if lone else m.group() * 2

    return '"' + re.sub(r"\\+", run, value).replace('"', '\\"') + '"'


def _opt(prefix: str, s: ast.Str | None) -> str:
    return f" {prefix}{quote(s.value)}" if s is not None else ""


def _list(node) -> tuple[str, list[tuple[str, object]]] | None:
    """A list statement as (keyword, [(item text, item node)]); None for other statements."""
    match node:
        case ast.Bundle(items) | ast.Leaf(items) | ast.Crl(items) | ast.ClearHeaders(items):
            return _LIST_WORDS[type(node)], [(quote(s.value), s) for s in items]
        case ast.Allow(items) | ast.BackendPaths(items):
            return _LIST_WORDS[type(node)], [(w.value, w) for w in items]
        case ast.Forward(fields):
            return "forward", [(f.name.value + _opt("as ", f.header), f) for f in fields]
    return None


def _flat(node) -> str:
    """A statement on one line: single spaces between its tokens."""
    match node:
        case _ if _list(node) is not None:
            keyword, items = _list(node)
            return " ".join([keyword] + [text for text, _ in items])
        case ast.NginxTarget(version):
            return f"nginx {quote(version.value)}" + "".join(f" with {m.value}" for m in node.modules)
        case ast.Waive(code, reason):
            return f"waive {code.value} {quote(reason.value)}"
        case ast.Depth(value):
            return f"depth {value.value}"
        case ast.Ocsp(mode, responder, cache):
            return f"ocsp {mode.value}" + _opt("responder ", responder) + (f" cache {cache.value}" if cache else "")
        case ast.Resolver(addresses, timeout):
            return "resolver " + " ".join(quote(a.value) for a in addresses) + (f" timeout {timeout.value}" if timeout else "")
        case ast.Subject(dn) | ast.Issuer(dn):
            return f"{'subject' if isinstance(node, ast.Subject) else 'issuer'} {quote(dn.value)}"
        case ast.AttrEq(attr, value):
            return f"{attr.value} {quote(value.value)}"
        case ast.AttrRe(attr, pattern):
            return f"{attr.value} ~ {quote(pattern.value)}"
        case ast.Fingerprint(value):
            return "fingerprint " + (f"{node.algorithm.value} " if node.algorithm else "") + quote(value.value)
        case ast.Serial(value):
            return f"serial {quote(value.value)}"
        case ast.San(kind, value):
            return f"san {kind.value} {quote(value.value)}"
        case ast.Listen(address):
            return f"listen {address.value}"
        case ast.Certificate(cert, key):
            return f"certificate {quote(cert.value)} key {quote(key.value)}"
        case ast.Backend(url):
            return f"backend {quote(url.value)}"
        case ast.BackendTls(keyword, values):  # `backend_client_certificate "C" key "K"`: two values
            return f"{keyword} " + " key ".join(quote(v.value) if isinstance(v, ast.Str) else v.value for v in values)
        case ast.Handshake(mode):
            return f"handshake {mode.value}"
        case ast.Tls(profile):
            return f"tls {profile.value}"
        case ast.Hsts(max_age, options):
            return " ".join(["hsts", max_age.value, *(w.value for w in options)])
        case ast.Stapling(mode):
            return f"stapling {mode.value}"
        case ast.Install(directory):
            return f"install {quote(directory.value)}"
        case ast.Reject(reason, status, body):
            return f"reject {reason.value} {status.value}" + _opt("", body)
        case ast.NginxBlock(body):
            items = _nginx_items(body.value)
            if items is None or any(isinstance(i, Comment) or i.block is not None for i in items):
                return f"nginx {body.value}"  # as written: lowering reports what is wrong with it
            return "nginx {" + "".join(f" {_directive(d)}" for d in items) + (" }" if items else "}")
        case ast.Public():
            return "public"
        case ast.Optional(ca) | ast.Require(ca):
            return f"{'optional' if isinstance(node, ast.Optional) else 'require'} {ca.value}"
    raise TypeError(f"no layout for {type(node).__name__}")  # a grammar rule fmt does not know yet


def _nginx_items(body: str) -> list | None:
    """The directives and comments of an `nginx { }` block's text, or None when nginx could not read it."""
    try:
        return parse_nginx(body[1:-1])
    except ConfError:
        return None


def _directive(d: Directive) -> str:
    return " ".join(w.raw for w in d.words) + (";" if d.block is None else " { ... }")


def _nginx_block_lines(node: ast.NginxBlock, indent: int) -> str:
    """An `nginx { }` block: one directive or comment per line, words as written, one space apart."""
    items = _nginx_items(node.body.value)
    if items is None or any(isinstance(i, Directive) and i.block is not None for i in items):
        return f"nginx {node.body.value}"
    if not items:
        return "nginx {}"
    inner, lines, prev_end = INDENT * (indent + 1), [], 0
    for i in items:
        if isinstance(i, Comment) and i.line == prev_end and lines:  # a comment after a directive stays there
            lines[-1] += "  " + i.text.rstrip()
        else:
            lines.append(inner + (i.text.rstrip() if isinstance(i, Comment) else _directive(i)))
        prev_end = i.end_line if isinstance(i, Directive) else 0
    return "nginx {\n" + "\n".join(lines) + "\n" + INDENT * indent + "}"


def _nginx_meaning(body: str):
    """What fmt must keep of an `nginx { }` block: its directives' words and its comments, in order."""
    items = _nginx_items(body)
    if items is None:
        return body
    return tuple(i.text.rstrip() if isinstance(i, Comment) else
                 (tuple(w.raw for w in i.words), i.block is not None) for i in items)


def _header(node) -> tuple[str, object]:
    """A block's header text and its last node (the `{` comes right after it)."""
    match node:
        case ast.Ca(name) | ast.Identity(name):
            return f"{'ca' if isinstance(node, ast.Ca) else 'identity'} {name.value}", name
        case ast.Server(names):
            return "server " + " ".join(n.value for n in names), names[-1]
        case ast.Route(exact, path):
            return f"route {'= ' if exact else ''}{path.value}", path
    raise TypeError(type(node).__name__)
