"""`mtlsc import`: the identities a DN test of the original config becomes — an exact `subject`, or
attribute constraints that confine every value — and a sample DN that passes the test."""

from __future__ import annotations

import re

from mtlsc import dn
from mtlsc.audit import dn_tests
from mtlsc.audit.sample import example
from mtlsc.dn.regex import DnError, check_value_pattern

_ANY_VALUE = {"[^,]+", "[^,]*", ".+", ".*", "(.+)", "(.*)", "([^,]+)", "([^,]*)", "[^,]+?", ".+?", ".*?"}
_LITERAL = re.compile(r"(?:[A-Za-z0-9 _@:/-]|\\.)*")


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split_commas(p: str) -> list[str] | None:
    parts, cur, depth, i = [], [], 0, 0
    while i < len(p):
        ch = p[i]
        if ch == "\\" and i + 1 < len(p):
            cur.append(p[i:i + 2])
            i += 2
            continue
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            return None
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def identity_body(t: dn_tests.DnTest) -> tuple[str | None, list[str]]:
    """The identity statement for a DN test, or None, with what was changed on the way."""
    notes: list[str] = []
    if not t.regex:
        try:
            return f"subject {_q(dn.format_dn(dn.parse_dn(t.pattern)))}", notes
        except dn.DnError:
            copied = dn.copied_form(t.pattern)
            if copied is None:
                return None, [f"`{t.pattern}` is not a DN nginx prints"]
            return f"subject {_q(copied[1])}", [f"written as nginx prints it (the original `{t.pattern}` never matched)"]
    p = t.pattern
    if t.icase:
        notes.append("case-insensitive (`~*`) in the original; attribute constraints compare case-sensitively")
    start, end = p.startswith("^"), p.endswith("$") and not p.endswith("\\$")
    p = p[1:] if start else p
    p = p[:-1] if end else p
    for tail in ("(,|$)", "(?:,|$)", "(,.*)?", ","):
        if p.endswith(tail):
            p, end = p[: -len(tail)], False
            break
    parts = _split_commas(p)
    if parts is None:
        return None, [f"the regex `{t.pattern}` has alternatives"]
    parts = [x for x in parts if x != ""]
    constraints, literal = [], True
    for part in parts:
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)=(.*)", part)
        attr = dn.canonical_attribute(m[1]) if m else None
        if m is None or attr is None:
            return None, [f"`{part}` in `{t.pattern}` is not ATTRIBUTE=VALUE"]
        value = m[2]
        if value in _ANY_VALUE:
            literal = False
            continue
        if _LITERAL.fullmatch(value):
            constraints.append((attr, "eq", re.sub(r"\\(.)", r"\1", value)))
            continue
        try:
            check_value_pattern(f"^{value}$")
        except DnError as exc:
            return None, [f"the value pattern `{value}` cannot be confined to one attribute ({exc.message})"]
        constraints.append((attr, "re", f"^{value}$"))
        literal = False
    if not constraints:
        return None, [f"`{t.pattern}` constrains no attribute"]
    if start and end and literal and len(constraints) == len(parts):
        text = ",".join(f"{a}={v}" for a, _, v in constraints)
        try:
            return f"subject {_q(dn.format_dn(dn.parse_dn(text)))}", notes
        except dn.DnError:
            pass
    if not start or not end:
        notes.append("each named attribute must now occur exactly once, as a whole value")
    body = "  ".join(f"{a.lower()} {_q(v)}" if op == "eq" else f"{a.lower()} ~ {_q(v)}" for a, op, v in constraints)
    return body, notes


def _dn_sample(t: dn_tests.DnTest) -> str | None:
    if not t.regex:
        return t.pattern
    return example(t.pattern, t.icase)
