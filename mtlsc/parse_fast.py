"""What lark would read slowly, read without it: one-line identity blocks and long allow lists.

A policy for 50,000 clients is mostly `identity NAME { subject "DN" }` (or `fingerprint`) lines
and an `allow` naming them all, and lark spent most of a compile on them (benchmarks/,
r10-i50000). `mtlsc.parse` finds them here and hands lark the text with those bytes blanked
(every newline and column kept):
- a one-line identity block becomes the very node and spans lark's transformer would build, and
  is merged back among lark's top-level statements in source order;
- an allow list keeps its `allow` and first name for lark; the names after it are blanked and put
  back by the transformer when lark's `allow` starts at that first name. A run lark did not read
  as an allow list (inside a string, an `nginx { }` body...) makes the caller read the whole text
  with lark.
Anything else (comments, another statement on the line, a string split over lines...) is left to
lark; tests/test_parse_fast.py checks on generated policies that both ways give the same AST,
spans included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mtlsc import ast
from mtlsc.source import Span

# The grammar's own terminals, with blanks as lark skips them between tokens: a keyword needs a
# blank after it only where a name would otherwise run on (`identity a{subject"x"}` is one block).
# The string is the STRING terminal less `\r` (kept out: only lark decides about odd line ends).
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_STRING = r'"[^"\\\n\r]*(?:\\[^\n\r][^"\\\n\r]*)*"'
_BLOCK = re.compile(
    rf'^[ \t]*(?P<kw>identity)[ \t]+(?P<name>{_NAME})[ \t]*\{{[ \t]*'
    rf'(?:(?P<subject>subject)[ \t]*(?P<dn>{_STRING})'
    rf'|(?P<fingerprint>fingerprint)(?:[ \t]+(?P<algorithm>{_NAME}))?[ \t]*(?P<digits>{_STRING}))'
    r'[ \t]*(?P<close>\})[ \t\r]*$',
    re.M,
)
# `allow` and its first name, then two or more names separated by blanks (a comment ends the run:
# lark's to read). A keyword among them ends the run too: lark reads it as the next statement.
_WORD_END = r"(?![A-Za-z0-9_-])"
_LIST_MIN = 3  # names after the first: shorter lists are not worth a second look
_ALLOW = re.compile(rf"(?<![A-Za-z0-9_-])allow[ \t\r\n]+{_NAME}{_WORD_END}(?:[ \t\r\n]+{_NAME}{_WORD_END}){{{_LIST_MIN},}}")
_WORD = re.compile(_NAME)


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
    """What was taken out of a text, and the text lark still has to read."""

    identities: list[ast.Identity]
    # (line, col) of an allow list's first name -> the names after it, blanked in `rest`
    allow_tails: dict[tuple[int, int], tuple[ast.Word, ...]]
    rest: str


def split(path: str, text: str, keywords: frozenset[str] = frozenset()) -> Split | None:
    """The one-line identity blocks and allow-list tails of `text`, and the text with each
    blanked, or None if there are none. `keywords`: the grammar's keywords (they end a list)."""
    found, cuts = [], []  # cuts: (start, end) offsets to blank, in order
    if "identity" in text:
        line, counted = 1, 0
        for m in _BLOCK.finditer(text):
            line += text.count("\n", counted, m.start())
            counted = m.start()
            found.append(_identity(path, line, m))
            cuts.append((m.start("kw"), m.end("close")))
    tails, blanked = _allow_tails(path, text, keywords) if "allow" in text else ({}, [])
    cuts += blanked
    if not found and not tails:
        return None
    cuts.sort()
    if any(a[1] > b[0] for a, b in zip(cuts, cuts[1:])):
        return None  # a list running into a block: not what either looks like, lark's to read
    pieces, copied = [], 0
    for start, end in cuts:
        pieces += [text[copied:start], _blank(text[start:end])]
        copied = end
    pieces.append(text[copied:])
    return Split(found, tails, "".join(pieces))


def _blank(text: str) -> str:
    """`text` with everything but its line ends made spaces: lines and columns stay where they were."""
    if "\n" not in text:
        return " " * len(text)
    return "\n".join(" " * len(part) for part in text.split("\n"))


def _allow_tails(path: str, text: str, keywords: frozenset[str]
                 ) -> tuple[dict[tuple[int, int], tuple[ast.Word, ...]], list[tuple[int, int]]]:
    """Each long allow list's names after its first, by the first name's (line, col), and the
    (start, end) offsets to blank for them."""
    tails, cuts = {}, []
    line, line_start, counted = 1, 0, 0

    def position(offset: int) -> tuple[int, int]:
        nonlocal line, line_start, counted
        newlines = text.count("\n", counted, offset)
        if newlines:
            line += newlines
            line_start = text.rindex("\n", counted, offset) + 1
        counted = offset
        return line, offset - line_start + 1

    for m in _ALLOW.finditer(text):
        words = list(_WORD.finditer(text, m.start(), m.end()))[1:]  # after `allow`
        if any(w[0] in keywords for w in words):
            words = words[:next(i for i, w in enumerate(words) if w[0] in keywords)]
        if len(words) < 1 + _LIST_MIN:
            continue
        first = position(words[0].start())
        names = []
        for w in words[1:]:
            at_line, col = position(w.start())
            names.append(ast.Word(w[0], Span(path, at_line, col, at_line, col + len(w[0]))))
        tails[first] = tuple(names)
        cuts.append((words[1].start(), words[-1].end()))
    return tails, cuts


def _identity(path: str, line: int, m: re.Match) -> ast.Identity:
    # columns from the groups' offsets in one go: 50,000 calls of a helper per span showed up
    base = m.start() - 1
    text = m.string
    (kw, _), name, (_, close) = m.span("kw"), m.span("name"), m.span("close")
    if m.start("subject") >= 0:
        (subject, _), dn = m.span("subject"), m.span("dn")
        stmt = ast.Subject(ast.Str(unescape(text[dn[0]:dn[1]]), Span(path, line, dn[0] - base, line, dn[1] - base)),
                           Span(path, line, subject - base, line, dn[1] - base))
    else:
        (start, _), digits, algorithm = m.span("fingerprint"), m.span("digits"), m.span("algorithm")
        word = None if algorithm[0] < 0 else ast.Word(text[algorithm[0]:algorithm[1]],
                                                      Span(path, line, algorithm[0] - base, line, algorithm[1] - base))
        stmt = ast.Fingerprint(ast.Str(unescape(text[digits[0]:digits[1]]),
                                       Span(path, line, digits[0] - base, line, digits[1] - base)),
                               Span(path, line, start - base, line, digits[1] - base), word)
    return ast.Identity(ast.Word(text[name[0]:name[1]], Span(path, line, name[0] - base, line, name[1] - base)),
                        (stmt,), Span(path, line, kw - base, line, close - base))


def merge(path: str, parsed: ast.PolicyFile, identities: list[ast.Identity]) -> ast.PolicyFile | None:
    """`parsed` (lark's reading of the blanked text) with `identities` put back in source order,
    or None when one of them sits inside a statement lark read: it was not a top-level block
    (in an `nginx { }` body, say), and only lark, reading the whole text, can say what it is."""
    if not identities:
        return parsed
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
