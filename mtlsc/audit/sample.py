"""One short string a regex matches, for turning a finding into a concrete request or subject.

Built from Python's own parse of the pattern (nginx's PCRE and Python agree on the constructs
hand-written configs use). Returns None for patterns it cannot walk; callers then say less, never
something wrong: every example is checked against the pattern before it is shown.
"""

from __future__ import annotations

import re
import re._constants as c  # stable opcodes across CPython 3.11-3.13
import re._parser as p

_PREFER = "aA0-_.=/ "
_MAX_REPEAT_SHOWN = 2
_MAX_NODES = 2000


def _pick(ranges: list, negate: bool, avoid: str) -> str | None:
    allowed = []
    for ch in "abcxyzACMEOUSN0123456789-_.=/ ,\\:@":
        inside = any(_in(ch, item) for item in ranges)
        if inside != negate and ch not in avoid:
            allowed.append(ch)
    return allowed[0] if allowed else None


def _in(ch: str, item) -> bool:
    op, arg = item
    if op is c.LITERAL:
        return ord(ch) == arg
    if op is c.RANGE:
        return arg[0] <= ord(ch) <= arg[1]
    if op is c.CATEGORY:
        return {c.CATEGORY_DIGIT: ch.isdigit(), c.CATEGORY_NOT_DIGIT: not ch.isdigit(),
                c.CATEGORY_WORD: ch.isalnum() or ch == "_", c.CATEGORY_NOT_WORD: not (ch.isalnum() or ch == "_"),
                c.CATEGORY_SPACE: ch.isspace(), c.CATEGORY_NOT_SPACE: not ch.isspace()}.get(arg, False)
    return False


def _walk(items, out: list[str], budget: list[int], avoid: str) -> bool:
    for op, arg in items:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.NOT_LITERAL:
            out.append("a" if arg != ord("a") else "b")
        elif op is c.ANY:
            out.append("a")
        elif op is c.IN:
            negate = bool(arg) and arg[0][0] is c.NEGATE
            ch = _pick(arg[1:] if negate else arg, negate, avoid)
            if ch is None:
                return False
            out.append(ch)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            lo, hi, sub = arg
            n = max(lo, 1) if hi is c.MAXREPEAT or hi >= 1 else lo
            n = min(n, max(lo, _MAX_REPEAT_SHOWN)) if lo <= _MAX_REPEAT_SHOWN else lo
            for _ in range(n):
                if not _walk(sub, out, budget, avoid):
                    return False
        elif op is c.SUBPATTERN:
            if not _walk(arg[-1], out, budget, avoid):
                return False
        elif op is c.ATOMIC_GROUP:
            if not _walk(arg, out, budget, avoid):
                return False
        elif op is c.BRANCH:
            if not any(_walk(branch, trial := [], [budget[0]], avoid) and (out.extend(trial) or True)
                       for branch in arg[1]):
                return False
        elif op is c.AT:
            continue
        elif op in (c.ASSERT, c.ASSERT_NOT):
            continue  # look-arounds: the result is checked against the pattern anyway
        else:
            return False
    return True


def example(pattern: str, icase: bool = False, avoid: str = "") -> str | None:
    """A string `pattern` matches (re.search), or None."""
    try:
        tree = p.parse(pattern, re.I if icase else 0)
        rx = re.compile(pattern, re.I if icase else 0)
    except (re.error, RecursionError, OverflowError, ValueError):
        return None
    out: list[str] = []
    if not _walk(tree, out, [_MAX_NODES], avoid):
        return None
    text = "".join(out)
    return text if rx.search(text) else None
