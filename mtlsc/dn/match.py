"""Attribute identities over nginx's `$ssl_client_s_dn`: the model and the `map` regex.

The rule: every attribute an identity names must occur **exactly once** in the subject, counting
every AVA (the members of a multi-valued RDN too: `CN=a+CN=b` holds two CNs), and that one
occurrence must satisfy every constraint on the attribute; attributes the identity does not name
may occur any number of times. "Some AVA matches" is not enough: `CN=mallory,CN=globex-a,...`
would pass `cn ~ "^globex-..."` while a backend reading the first CN sees `mallory`
(docs/nginx-facts.md §F6). `matches_constraints` (the model) and `constraints_regex` (the gate) each
implement the rule on their own; tests/test_dn_repeated*.py hold them to each other and to nginx.

Imported through mtlsc.dn, which re-exports every public name here; the value helpers come from
mtlsc.dn.attributes, below both.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from mtlsc.dn.attributes import _canonical, _parse_value, escape_value
from mtlsc.dn.examples import candidates
from mtlsc.dn.regex import VALUE_TOKEN, DnError, confine, pcre_literal


@dataclass(frozen=True, slots=True)
class AttrConstraint:
    """One condition on a subject: `eq` compares raw values exactly; `re` is an anchored pattern
    over the value as nginx prints it (escaped), confined by mtlsc.dn.regex."""

    attr: str
    op: Literal["eq", "re"]
    value: str

    def __post_init__(self) -> None:
        if self.op not in ("eq", "re"):
            raise ValueError(f"unknown constraint op {self.op!r}")


def matches_subject(dn: str, subject: str) -> bool:
    """Exact subject match: ASCII case-insensitive, like an nginx `map` string key (docs/nginx-facts.md §7)."""
    return dn.encode("utf-8", "surrogatepass").lower() == subject.encode("utf-8", "surrogatepass").lower()


# One AVA of an nginx-form DN. The attribute is everything up to the first `=`; the value is a
# run of tokens (possessive: it always runs to the unescaped `,`/`+` that ends it).
_AVA = r"[^,+\\=]++=" + VALUE_TOKEN + "*+"
_AVA_RE = re.compile(r"([^,+\\=]+)=(" + VALUE_TOKEN + r"*+)(?:[,+]|$)")
_END = "(?:[,+]|$)"


def _avas(dn: str) -> list[tuple[str, str]]:
    """(attribute, escaped value) pairs up to the first thing that is not an AVA, read exactly as
    constraints_regex's lookaheads read them. nginx's DNs are AVAs to the end."""
    out, pos = [], 0
    while pos < len(dn) and (m := _AVA_RE.match(dn, pos)):
        out.append((m[1], m[2]))
        pos = m.end()
    return out


def _by_attribute(constraints) -> dict[str, list[AttrConstraint]]:
    """Constraints grouped by canonical attribute name (aliases are one attribute), in order."""
    canonical = _canonical
    groups: dict[str, list[AttrConstraint]] = {}
    for c in constraints:
        groups.setdefault(canonical(c.attr), []).append(c)
    return groups


def _holds(c: AttrConstraint, printed: str) -> bool:
    if c.op == "eq":
        return printed == escape_value(c.value)  # escaping is one-to-one: compare printed forms
    return _confined(c.value).fullmatch(printed) is not None


def matches_constraints(dn: str, constraints) -> bool:
    """True when each attribute the constraints name occurs exactly once among the AVAs of the
    nginx-form `dn` and that occurrence satisfies every constraint on it."""
    values: dict[str, list[str]] = {}
    for attr, value in _avas(dn):
        values.setdefault(attr, []).append(value)
    for attr, group in _by_attribute(constraints).items():
        found = values.get(attr, ())
        if len(found) != 1 or not all(_holds(c, found[0]) for c in group):
            return False
    return True


@functools.lru_cache(maxsize=512)
def _confined(pattern: str) -> re.Pattern[str]:
    return re.compile(confine(pattern))


def _body(c: AttrConstraint) -> str:
    return pcre_literal(escape_value(c.value)) if c.op == "eq" else confine(c.value)


def _attribute_lookahead(attr: str, group: list[AttrConstraint]) -> str:
    """`(?=` skip the AVAs that are not ATTR `ATTR=` then each constraint on this value, the
    value, and no later ATTR AVA `)`.

    The skip is possessive and stops at the first AVA that starts with `ATTR=` (whole AVAs:
    `\\,CN=` inside a value is part of that value), so nothing backtracks across AVAs and the
    cost is linear in the DN. With no later ATTR, the first one is the only one."""
    name = pcre_literal(attr) + "="
    skip = f"(?:(?!{name}){_AVA}[,+])*+"
    checks = "".join(f"(?=(?:{_body(c)}){_END})" for c in group)
    again = f"(?![,+]{skip}{name}{VALUE_TOKEN}*+{_END})"
    return f"(?={skip}{name}{checks}{VALUE_TOKEN}*+{again})"


def constraints_regex(constraints) -> str:
    """One anchored regex (PCRE2 and Python) over `$ssl_client_s_dn`, true exactly when
    `matches_constraints` is: one lookahead per named attribute (see _attribute_lookahead)."""
    return "^" + "".join(_attribute_lookahead(a, g) for a, g in _by_attribute(constraints).items())


def example_value(pattern: str) -> str:
    """A short raw value whose nginx-printed form fully matches `pattern`."""
    rx = _confined(pattern)
    empty_ok = False
    for cand in candidates(pattern):
        try:
            raw, end = _parse_value(cand, 0)
        except DnError:
            continue  # not something nginx prints (`\q`, a bare leading `#`, ...)
        if end != len(cand) or escape_value(raw) != cand or not rx.fullmatch(cand):
            continue
        if raw:
            return raw
        empty_ok = True
    if empty_ok:
        return ""
    raise DnError("found no value nginx could print that matches this pattern", 0)
