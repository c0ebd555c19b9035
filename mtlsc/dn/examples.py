"""Examples of a value pattern: a few escaped-form strings it may match, simplest first, from the
tree mtlsc.dn.regex parses. `dn.match.example_value` and `diff` pick values to try from them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from mtlsc.dn.regex import _PREFER, _PREFER_PAIR, PRINTABLE, AnyChar, Chars, _is_backslash, _token_chars, parse_pattern


_CAP = 8


def _ordered(chars: frozenset[str], prefer: str) -> list[str]:
    return sorted(chars, key=lambda c: (prefer.find(c) if c in prefer else len(prefer) + ord(c)))[:4]


def _cands(node: object) -> list[str]:
    if isinstance(node, AnyChar):
        return ["a", "0", "-", "\\,"]
    if isinstance(node, Chars):
        return _ordered(_token_chars(node), _PREFER)
    if node.kind == "seq":
        parts = list(_seq_parts(node.items))
        return ["".join(combo) for combo in itertools.islice(itertools.product(*parts), _CAP)]
    if node.kind == "alt":
        lists = [_cands(b) for b in node.items]
        return [c for c in itertools.chain.from_iterable(itertools.zip_longest(*lists)) if c is not None][:_CAP]
    if node.kind in ("group", "atomic"):
        return _cands(node.items[0])
    item = _cands(node.items[0])
    hi = node.hi if node.hi is not None else node.lo + 3
    counts = sorted(range(node.lo, hi + 1), key=lambda n: (n == 0, n))[:3]  # prefer non-empty
    return [
        "".join(combo) for n in counts for combo in itertools.islice(itertools.product(item, repeat=n), 3)
    ][:_CAP]


def _seq_parts(items: tuple) -> Iterator[list[str]]:
    i = 0
    while i < len(items):
        if _is_backslash(items[i]) and i + 1 < len(items):
            nxt = items[i + 1]
            chars = frozenset(PRINTABLE) if isinstance(nxt, AnyChar) else nxt.chars
            yield ["\\" + c for c in _ordered(chars, _PREFER_PAIR + "0123456789ABCDEF")]
            i += 2
        else:
            yield _cands(items[i])
            i += 1


def candidates(pattern: str) -> list[str]:
    """A few escaped-form strings the confined pattern may match, simplest first; not all are
    things nginx prints (`\\q`, a bare leading `#`), so the caller checks each."""
    return _cands(parse_pattern(pattern))
