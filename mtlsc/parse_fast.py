"""Identity one-liners without lark: `identity NAME { subject "DN" }` on a line of its own.

A policy for 50,000 clients is mostly such lines, and lark spent two thirds of a compile on them
(benchmarks/, r10-i50000). `mtlsc.parse` finds them here, builds the very nodes and spans its
transformer would, hands lark the text with those bytes blanked (every newline and column kept),
and merges the nodes back in source order. Anything else (comments, another statement on the
line, a string split over lines...) is left to lark; tests/test_parse_fast.py checks on generated
policies that both ways give the same AST, spans included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mtlsc import ast
from mtlsc.source import Span

# The grammar's own terminals, with blanks as lark skips them between tokens: a keyword needs a
# blank after it only where a name would otherwise run on (`identity a{subject"x"}` is one block).
# The string is the STRING terminal less `\r` (kept out: only lark decides about odd line ends).
_BLOCK = re.compile(
    r'^[ \t]*(?P<kw>identity)[ \t]+(?P<name>[A-Za-z_][A-Za-z0-9_-]*)[ \t]*\{[ \t]*'
    r'(?P<subject>subject)[ \t]*(?P<dn>"[^"\\\n\r]*(?:\\[^\n\r][^"\\\n\r]*)*")[ \t]*(?P<close>\})[ \t\r]*$',
    re.M,
)


def unescape(raw: str) -> str:
    """The value of a STRING token: `\\"` and `\\\\` are escapes; any other backslash stays."""
    body, out, i = raw[1:-1], [], 0
    if "\\" not in body:
        return body
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in '"\\':
            out.append(body[i + 1])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Split:
    """The identity blocks taken out of a text, and the text lark still has to read."""

    identities: list[ast.Identity]
    rest: str


def split(path: str, text: str) -> Split | None:
    """The one-line identity blocks of `text` and the text with each blanked, or None if none."""
    if "identity" not in text:
        return None
    found, pieces, copied, line, counted = [], [], 0, 1, 0
    for m in _BLOCK.finditer(text):
        line += text.count("\n", counted, m.start())
        counted = m.start()
        found.append(_identity(path, line, m))
        pieces += [text[copied:m.start("kw")], " " * (m.end("close") - m.start("kw"))]
        copied = m.end("close")
    if not found:
        return None
    pieces.append(text[copied:])
    return Split(found, "".join(pieces))


def _identity(path: str, line: int, m: re.Match) -> ast.Identity:
    # columns from the groups' offsets in one go: 50,000 calls of a helper per span showed up
    base = m.start() - 1
    (kw, _), name, (subject, _), dn, (_, close) = (m.span(g) for g in ("kw", "name", "subject", "dn", "close"))
    text = m.string
    subject_node = ast.Subject(ast.Str(unescape(text[dn[0]:dn[1]]), Span(path, line, dn[0] - base, line, dn[1] - base)),
                               Span(path, line, subject - base, line, dn[1] - base))
    return ast.Identity(ast.Word(text[name[0]:name[1]], Span(path, line, name[0] - base, line, name[1] - base)),
                        (subject_node,), Span(path, line, kw - base, line, close - base))


def merge(path: str, parsed: ast.PolicyFile, identities: list[ast.Identity]) -> ast.PolicyFile | None:
    """`parsed` (lark's reading of the blanked text) with `identities` put back in source order,
    or None when one of them sits inside a statement lark read: it was not a top-level block
    (in an `nginx { }` body, say), and only lark, reading the whole text, can say what it is."""
    items, rest = [], list(parsed.items)
    j = 0
    for ident in identities:
        at = (ident.span.line, ident.span.col)
        while j < len(rest) and (rest[j].span.line, rest[j].span.col) < at:
            items.append(rest[j])
            j += 1
        if items and (items[-1].span.end_line, items[-1].span.end_col) > at:
            return None
        items.append(ident)
    items += rest[j:]
    first, last = items[0].span, items[-1].span
    return ast.PolicyFile(path, tuple(items), Span(path, first.line, first.col, last.end_line, last.end_col))
