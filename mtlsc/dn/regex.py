r"""User value patterns, confined to one attribute value of nginx's `$ssl_client_s_dn`.

A pattern is an anchored regex (`^...$`) over one value *as nginx prints it* (escaped, pure
ASCII; docs/nginx-facts.md §7). It is parsed into a small tree and re-emitted in a canonical syntax
that PCRE2 (nginx) and Python `re` read the same way, with every element confined to the value:

- a value is a run of tokens `[^,+\\]` or `\\.` (an escape pair: `\,`, `\\`, `\C3`, ...);
- `.` is one token, and a negated class never matches `,` `+` `\`;
- a literal `\` must be directly followed by the one character it escapes, which forms a pair;
- anything that could match an unescaped `,` or `+`, start a pair without finishing it, or look
  outside the value (lookarounds, backreferences, inner anchors) is refused with a `DnError`.

So the emitted body only ever matches whole tokens. Started right after `ATTR=`, it can neither
end inside an escape pair nor run past the unescaped `,`/`+` ending the value: this keeps
`CN=mallory\,O=Acme,...` from satisfying `O` patterns (docs/nginx-facts.md §7). Lower layer of mtlsc.dn.
"""

from __future__ import annotations

import re
# Private, but its opcodes are stable across CPython 3.11-3.13; it classifies single atoms only.
import re._constants as sre_c
import re._parser as sre_parse
from collections.abc import Iterator
from dataclasses import dataclass

VALUE_TOKEN = r"(?:[^,+\\]|\\.)"  # one character of an escaped value, an escape pair counting as one
SPECIAL = frozenset(",+\\")  # never an unescaped character of a value
ALWAYS_ESCAPED = frozenset('"<>;')  # nginx prints these only as `\"` etc.
PRINTABLE = tuple(chr(c) for c in range(0x20, 0x7F))  # the alphabet of every nginx-form DN
_MAX_BOUND = 1000  # PCRE2 caps {m,n} at 65535; values are far shorter anyway
_PREFER = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:=@/#' ()*!$%&?[]^`{|}~"
_PREFER_PAIR = ',+"\\<>;# ='


class DnError(ValueError):
    """A DN or a value pattern mtlsc cannot use; `offset` is 0-based into the offending text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.message = message
        self.offset = offset


def pcre_literal(s: str) -> str:
    """Escape `s` so that PCRE2 and Python `re` both match it literally."""
    out = []
    for ch in s:
        if ch.isascii() and (ch.isalnum() or ch == "_"):
            out.append(ch)
        elif ch.isascii() and ch.isprintable():
            out.append("\\" + ch)  # backslash + ASCII punctuation is a literal in both dialects
        elif ch.isascii():
            out.append(f"\\x{ord(ch):02x}")  # control characters: never raw in config text
        else:
            out.append(ch)
    return "".join(out)


# ---- tree -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chars:
    """A single-character atom (literal, escape or class): the printable ASCII it matches."""

    start: int
    text: str
    chars: frozenset[str]
    negated: bool  # `[^...]`: narrowed to non-special characters instead of refused
    category: bool  # a bare `\W` `\S` `\D`


@dataclass(frozen=True, slots=True)
class AnyChar:
    """`.`: one value token, an escape pair counting as one."""

    start: int


@dataclass(frozen=True, slots=True)
class Node:
    """`seq`, `alt`, `group` or `atomic` over `items`; `repeat` over items[0] with bounds."""

    kind: str
    start: int
    items: tuple
    lo: int = 1
    hi: int | None = 1
    mode: str = ""  # "", "?" (lazy) or "+" (possessive)


# ---- lexer and parser -----------------------------------------------------------------------

# Python reads `{m}`, `{m,}`, `{,n}`, `{m,n}` and even `{}` / `{,}` as bounds; PCRE2 10.42 reads
# `{,n}` and `{}` literally. Bounds are re-emitted as `{m,n}` / `{m,}`, so only Python's reading counts.
_QUANT = re.compile(r"(?:([*+?])|\{(\d*)(?:(,)(\d*))?\})([?+]?)")
_GROUP = re.compile(r"\(\?(?::|P<\w+>|>|([a-zA-Z]*)(?:-([a-zA-Z]*))?:)")
_REFUSED_GROUPS = (("(?=", "lookaheads"), ("(?!", "lookaheads"), ("(?<=", "lookbehinds"), ("(?<!", "lookbehinds"),
                   ("(?P=", "backreferences"), ("(?(", "conditionals"), ("(?#", "regex comments"))


def _escape_end(p: str, i: int) -> int:
    """Index just past the escape starting at p[i] == '\\' (the pattern already compiled)."""
    c = p[i + 1]
    if c in "xuU":
        return i + {"x": 4, "u": 6, "U": 10}[c]
    if c == "N":
        return p.index("}", i) + 1
    if c == "0":
        j = i + 2
        while j < min(i + 4, len(p)) and p[j] in "01234567":
            j += 1
        return j
    if c.isdigit():
        raise DnError("backreferences and octal escapes are not supported (use `\\xHH`)", i)
    return i + 2


def _class_end(p: str, i: int) -> int:
    j = i + 1 + (p[i + 1] == "^")
    j += p[j] == "]"  # a `]` first in a class is a literal
    while p[j] != "]":
        j = _escape_end(p, j) if p[j] == "\\" else j + 1
    return j + 1


def _atom(p: str, i: int, flags: int) -> Chars:
    """The single-character atom at p[i]."""
    end = _escape_end(p, i) if p[i] == "\\" else _class_end(p, i) if p[i] == "[" else i + 1
    text = p[i:end]
    op, av = sre_parse.parse(text, flags).data[0]
    if op is sre_c.AT:
        raise DnError(f"anchor `{text}` is not supported inside a pattern", i)
    negated = op is sre_c.NOT_LITERAL or (op is sre_c.IN and av[0][0] is sre_c.NEGATE)
    category = text in ("\\W", "\\S", "\\D")
    rx = re.compile(text, flags)
    return Chars(i, text, frozenset(c for c in PRINTABLE if rx.fullmatch(c)), negated, category)


def _tokens(p: str, i: int, flags: int) -> Iterator[tuple]:
    """Yield (kind, start, payload) tokens; kinds: atom any bol eol open close alt quant."""
    while i < len(p):
        c = p[i]
        if c == "(":
            for prefix, what in _REFUSED_GROUPS:
                if p.startswith(prefix, i):
                    raise DnError(f"{what} are not supported: a pattern sees only its own value", i)
            m = _GROUP.match(p, i)
            if m and (m[1] or m[2]) and set((m[1] or "") + (m[2] or "")) - {"i"}:
                raise DnError("only the `i` flag is supported", i)
            yield "open", i, m
            i = m.end() if m else i + 1
        elif c in ")|^$.":
            yield {")": "close", "|": "alt", "^": "bol", "$": "eol", ".": "any"}[c], i, None
            i += 1
        elif c in "*+?{":
            m = _QUANT.match(p, i)
            if m is None or not (m[1] or m[2] or m[3]):  # Python reads `{}`, `{x}` literally
                raise DnError("write a literal `{` as `\\{`", i)
            yield "quant", i, m
            i = m.end()
        else:
            yield "atom", i, None
            i = (_escape_end(p, i) if c == "\\" else _class_end(p, i) if c == "[" else i + 1)


def _parse_alt(toks: list, k: int, p: str, flags: int) -> tuple[Node, int]:
    branches = []
    while True:
        start = toks[k][1] if k < len(toks) else len(p)
        items = []
        while k < len(toks) and toks[k][0] not in ("alt", "close"):
            node, k = _parse_item(toks, k, p, flags)
            items.append(node)
        branches.append(Node("seq", start, tuple(items)))
        if k < len(toks) and toks[k][0] == "alt":
            k += 1
            continue
        return (branches[0] if len(branches) == 1 else Node("alt", branches[0].start, tuple(branches))), k


def _parse_item(toks: list, k: int, p: str, flags: int) -> tuple[object, int]:
    kind, start, m = toks[k]
    if kind in ("bol", "eol"):
        raise DnError("`^` and `$` may only start and end the whole pattern (write `^(?:a|b)$`)", start)
    if kind == "quant":
        raise DnError("nothing to repeat", start)
    if kind == "open":
        inner = flags
        if m is not None and (m[1] is not None or m[2] is not None):
            inner = (flags | re.I) if m[1] else flags
            inner = inner & ~re.I if m[2] else inner
        body, k = _parse_alt(toks, k + 1, p, inner)
        node = Node("atomic" if m is not None and m[0] == "(?>" else "group", start, (body,))
        k += 1  # the `)`, present because the pattern compiled
    else:
        node = AnyChar(start) if kind == "any" else _atom(p, start, flags)
        k += 1
    if k < len(toks) and toks[k][0] == "quant":
        q = toks[k][2]
        lo, hi = _bounds(q)
        if max(lo, hi or 0) > _MAX_BOUND:
            raise DnError(f"repetition bounds above {_MAX_BOUND} are not supported", toks[k][1])
        node = Node("repeat", start, (node,), lo, hi, q[5])
        k += 1
    return node, k


def _bounds(q: re.Match) -> tuple[int, int | None]:
    if q[1]:
        return {"*": (0, None), "+": (1, None), "?": (0, 1)}[q[1]]
    lo = int(q[2] or 0)
    return (lo, lo) if not q[3] else (lo, int(q[4]) if q[4] else None)


_MAX_NESTING = 32  # groups within groups: Python's and mtlsc's regex parsers recurse per level


def _too_deep(p: str) -> int | None:
    """Offset of the first `(` nested more than _MAX_NESTING deep, skipping escapes and classes."""
    depth = i = 0
    while i < len(p):
        c = p[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":  # a class: `]` first (after an optional `^`) is a literal
            i += 1 + (p[i + 1:i + 2] == "^")
            i += p[i:i + 1] == "]"
            while i < len(p) and p[i] != "]":
                i += 2 if p[i] == "\\" else 1
        elif c == "(":
            depth += 1
            if depth > _MAX_NESTING:
                return i
        elif c == ")":
            depth -= 1
        i += 1
    return None


def parse_pattern(pattern: str) -> Node:
    """Check `pattern` and return its tree (the part between the outer `^` and `$`)."""
    deep = _too_deep(pattern)
    if deep is not None:
        raise DnError(f"groups nested more than {_MAX_NESTING} deep are not supported", deep)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise DnError(f"invalid regex: {exc.msg}", exc.pos or 0) from None
    except OverflowError:  # `a{99999999999}`: a bound beyond what `re` can count
        raise DnError(f"repetition bounds above {_MAX_BOUND} are not supported", 0) from None
    except RecursionError:  # not expected within _MAX_NESTING, but never a traceback
        raise DnError("the regex is too complex", 0) from None
    flags, pos = 0, 0
    m = re.match(r"\(\?([a-zA-Z]+)\)", pattern)
    if m:
        if set(m[1]) - {"i"}:
            raise DnError("only the `(?i)` flag is supported", 2)
        flags, pos = re.I, m.end()
    toks = list(_tokens(pattern, pos, flags))
    if not toks or toks[0][0] != "bol":
        raise DnError("a pattern must be anchored: start it with `^`", pos)
    if len(toks) < 2 or toks[-1][0] != "eol":
        raise DnError("a pattern must be anchored: end it with `$`", len(pattern))
    return _parse_alt(toks[1:-1], 0, pattern, flags)[0]


# ---- confinement: tree -> PCRE/Python regex -------------------------------------------------


def _is_backslash(node: object) -> bool:
    return isinstance(node, Chars) and node.chars == {"\\"} and not node.negated


def _class(chars: frozenset[str]) -> str:
    """A character class both dialects read alike, negated when that is shorter (the DN has
    only printable ASCII, so what a `[^...]` adds beyond it never occurs)."""
    if len(chars) == 1:
        return pcre_literal(next(iter(chars)))
    if len(chars) > len(PRINTABLE) // 2:
        return "[^" + _class_body(frozenset(PRINTABLE) - chars) + "]"
    return "[" + _class_body(chars) + "]"


def _class_body(chars: frozenset[str]) -> str:
    codes, parts, i = sorted(map(ord, chars)), [], 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1 and chr(codes[j + 1]).isalnum() == chr(codes[i]).isalnum():
            j += 1
        lo, hi = (pcre_literal(chr(codes[i])), pcre_literal(chr(codes[j])))
        parts.append(lo if i == j else f"{lo}{hi}" if j == i + 1 else f"{lo}-{hi}")
        i = j + 1
    return "".join(parts)


def _token_chars(node: Chars) -> frozenset[str]:
    """The characters an atom may match as a whole token (not inside an escape pair)."""
    bad = node.chars & SPECIAL
    chars = node.chars - SPECIAL if node.negated else node.chars  # `[^a]` must not swallow a separator or half a pair
    if node.category and bad:
        raise DnError(f"`{node.text}` can match `,` `+` or `\\`: use a negated class such as `[^a-z]`", node.start)
    if bad and len(chars) == 1 and chars <= {",", "+"}:
        ch = min(chars)
        raise DnError(f"`{ch}` occurs in a value only escaped: write `\\\\{ch}`", node.start)
    if bad and not node.negated:
        raise DnError("a character class may not contain `,` `+` or `\\` (write escape pairs as `\\\\,`)", node.start)
    if not chars:
        raise DnError(_never_printed(node.text), node.start)
    if chars <= ALWAYS_ESCAPED:
        ch = min(chars)
        raise DnError(f"nginx always prints `{ch}` escaped: write `\\\\{ch}`", node.start)
    return chars


def _never_printed(text: str) -> str:
    if len(text) == 1 and not text.isascii():
        hexes = "".join(f"\\\\{b:02X}" for b in text.encode())
        return f"nginx prints non-ASCII characters as hex escapes: write `{text}` as `{hexes}`"
    return f"`{text}` matches no character nginx prints (values are printable ASCII; control characters appear as `\\\\0A`)"


def _emit(node: object) -> str:
    if isinstance(node, AnyChar):
        return VALUE_TOKEN
    if isinstance(node, Chars):
        if _is_backslash(node):
            raise DnError("a `\\\\` must be directly followed by the one character it escapes", node.start)
        return _class(_token_chars(node))
    if node.kind == "seq":
        return "".join(_emit_seq(node.items))
    if node.kind == "alt":
        return "(?:" + "|".join(_emit(b) for b in node.items) + ")"
    if node.kind == "repeat" and _is_backslash(node.items[0]):
        raise DnError("a quantifier after `\\\\` repeats the backslash; to match nginx's escape pair "
                      "`\\+`, write `\\\\\\+`", node.start)
    inner = _emit(node.items[0])
    if node.kind == "atomic":
        return f"(?>{inner})"
    if node.kind == "group":
        return inner if _is_unit(node.items[0]) else f"(?:{inner})"
    return (inner if _is_unit(node.items[0]) else f"(?:{inner})") + _quantifier(node)


def _is_unit(node: object) -> bool:
    """Whether the emitted text of `node` is one regex atom that a quantifier may follow."""
    if isinstance(node, Node) and node.kind == "seq":
        return len(node.items) == 1 and _is_unit(node.items[0]) and not _is_backslash(node.items[0])
    return not (isinstance(node, Node) and node.kind == "repeat")


def _quantifier(node: Node) -> str:
    short = {(0, None): "*", (1, None): "+", (0, 1): "?"}.get((node.lo, node.hi))
    bounds = f"{{{node.lo}}}" if node.lo == node.hi else f"{{{node.lo},{'' if node.hi is None else node.hi}}}"
    return (short or bounds) + node.mode


def _emit_seq(items: tuple) -> Iterator[str]:
    i = 0
    while i < len(items):
        if _is_backslash(items[i]):
            nxt = items[i + 1] if i + 1 < len(items) else None
            if not isinstance(nxt, (Chars, AnyChar)):
                raise DnError("a `\\\\` must be directly followed by the one character it escapes", items[i].start)
            if isinstance(nxt, Chars) and not nxt.chars:
                raise DnError(_never_printed(nxt.text), nxt.start)
            yield "\\\\" + ("." if isinstance(nxt, AnyChar) else _class(nxt.chars))
            i += 2
        else:
            yield _emit(items[i])
            i += 1


def confine(pattern: str) -> str:
    """The body of `pattern` (no anchors) re-emitted so it only matches whole value tokens."""
    return _emit(parse_pattern(pattern))


def check_value_pattern(pattern: str) -> None:
    """Raise DnError (offset into `pattern`) if the pattern is not anchored or not confinable."""
    confine(pattern)
