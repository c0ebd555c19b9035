"""Attribute identities and repeated attributes (issue #10 part 5), in pure Python.

The rule (mtlsc.dn.match): every attribute an identity names occurs exactly once among the AVAs of
the subject (members of a multi-valued RDN count) and satisfies every constraint on it; other
attributes may repeat. The model (`matches_constraints`) and the gate regex (`constraints_regex`,
run here with Python `re`; test_dn_repeated_nginx.py runs it in nginx) implement it separately and
are held to a third reading computed from the RDNs themselves.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlsc import dn
from mtlsc.dn import AttrConstraint as C
from mtlsc.dn.regex import confine

GLOBEX = [C("CN", "re", "^globex-[a-z0-9-]+$"), C("O", "eq", "Globex Inc")]
TWICE = [C("CN", "eq", "svc"), C("OU", "re", "^eng-[a-z-]+$"), C("organizationalUnitName", "re", "^[a-z-]+-core$")]
ODD = [C("commonName", "eq", 'a,b+c"d\\e'), C("O", "eq", "Acme")]
ODD_CN = r"CN=a\,b\+c\"d\\e"


def gate(constraints) -> re.Pattern[str]:
    return re.compile(dn.constraints_regex(constraints))


def both(subject: str, constraints) -> bool:
    """The model's verdict, after checking that the gate regex agrees with it."""
    model = dn.matches_constraints(subject, constraints)
    assert (gate(constraints).search(subject) is not None) is model, subject
    return model


@pytest.mark.parametrize("subject, constraints, expected", [
    # the reproductions
    ("CN=globex-a,O=Globex Inc", GLOBEX, True),
    ("CN=mallory,CN=globex-a,O=Globex Inc", GLOBEX, False),
    ("CN=globex-a,O=Globex Inc,O=Evil Org", GLOBEX, False),
    # a second occurrence that also satisfies the constraint is still a second occurrence
    ("CN=globex-a,CN=globex-b,O=Globex Inc", GLOBEX, False),
    ("CN=globex-a,O=Globex Inc,O=Globex Inc", GLOBEX, False),
    # multi-valued RDNs: every AVA counts, either order
    ("CN=mallory+CN=globex-a,O=Globex Inc", GLOBEX, False),
    ("CN=globex-a+CN=ZZ,O=Globex Inc", GLOBEX, False),
    ("CN=globex-a,O=Evil Org+O=Globex Inc", GLOBEX, False),
    ("CN=globex-a+OU=ops,O=Globex Inc", GLOBEX, True),
    # attributes the identity does not name may repeat
    ("CN=globex-a,OU=x,OU=y+OU=z,O=Globex Inc,DC=a,DC=b", GLOBEX, True),
    # an escaped `,` is part of a value, never an AVA boundary
    (r"OU=x\,CN=evil,CN=globex-a,O=Globex Inc", GLOBEX, True),
    (r"OU=x\,O=Evil,CN=globex-a,O=Globex Inc", GLOBEX, True),
    (r"CN=mallory\,CN=globex-a,O=Globex Inc", GLOBEX, False),
    (r"CN=globex-a,O=Globex Inc\,O=Evil", GLOBEX, False),
    (r"CN=globex-a,OU=a\\,O=Globex Inc", GLOBEX, True),  # `\\` ends OU's value
    (r"CN=globex-a,OU=a\\\,O=Evil,O=Globex Inc", GLOBEX, True),  # `\\` then `\,`: still OU's value
    (r"CN=globex-a,OU=a\\,O=Evil,O=Globex Inc", GLOBEX, False),  # `\\` then `,`: a real second O
    # a missing attribute
    ("CN=globex-a", GLOBEX, False),
    ("O=Globex Inc", GLOBEX, False),
    # two constraints on one attribute (an alias included): the one OU must satisfy both
    ("CN=svc,OU=eng-core", TWICE, True),
    ("CN=svc,OU=eng-x,OU=ab-core", TWICE, False),
    ("CN=svc,OU=eng-x+OU=ab-core", TWICE, False),
    ("CN=svc,OU=eng-core,OU=eng-core", TWICE, False),
    ("OU=eng-core,CN=svc,L=x,L=x", TWICE, True),
    # `,` `+` `"` `\` inside the one value
    (f"{ODD_CN},O=Acme", ODD, True),
    (f"{ODD_CN},{ODD_CN},O=Acme", ODD, False),
    (f"{ODD_CN}+CN=z,O=Acme", ODD, False),
    (r"CN=a,CN=b+c\"d\\e,O=Acme", ODD, False),
    # no constraints: nothing is named, anything passes
    ("CN=a,CN=b", [], True),
])
def test_rows(subject, constraints, expected):
    assert both(subject, constraints) is expected


def test_aliases_are_one_attribute():
    for spelling in ("CN", "cn", "commonName", "2.5.4.3"):
        constraints = [C(spelling, "eq", "x")]
        assert both("CN=x,O=a", constraints)
        assert not both("CN=x,CN=y,O=a", constraints)
    # two constraints spelled differently constrain the same single CN
    assert not both("CN=x", [C("cn", "eq", "x"), C("commonName", "eq", "y")])
    assert both("CN=x", [C("cn", "eq", "x"), C("commonName", "re", "^x$")])


def test_regex_has_one_lookahead_per_attribute():
    rx = dn.constraints_regex(TWICE)
    assert rx.startswith("^(?=")
    assert rx.count("(?![,+]") == 2  # CN and OU; the two OU constraints share one lookahead
    assert dn.constraints_regex([]) == "^"


def _greedy_quantifiers(regex: str) -> list[int]:
    """Offsets of `*` and `+` quantifiers in `regex` that are not possessive (`*+`, `++`),
    outside classes, escapes and group prefixes such as `(?:`."""
    out, i, after_quantifier = [], 0, False
    while i < len(regex):
        c, quantifier = regex[i], False
        if c == "\\":
            i += 1
        elif c == "[":
            i += 1 + (regex[i + 1] == "^")
            i += regex[i] == "]"  # a `]` first in a class is a literal
            while regex[i] != "]":
                i += 2 if regex[i] == "\\" else 1
        elif c == "(" and regex[i + 1 : i + 2] == "?":
            i += 1
        elif c in "*+?" and not after_quantifier:  # not the `+`/`?` that makes one possessive/lazy
            quantifier = True
            if c != "?" and regex[i + 1 : i + 2] != "+":
                out.append(i)
        after_quantifier = quantifier
        i += 1
    return out


def test_only_possessive_quantifiers_outside_the_values():
    # Every repetition the rule adds (AVA skips, value runs) is possessive, so a hostile DN with
    # many AVAs cannot make the gate backtrack across AVAs; only a user pattern's own body may.
    rx = dn.constraints_regex([C("CN", "eq", "a"), C("O", "eq", "b"), C("emailAddress", "eq", "c")])
    assert _greedy_quantifiers(rx) == []
    assert _greedy_quantifiers(r"a*b") == [1] and _greedy_quantifiers(r"[*]\+a*+") == []


def test_hostile_dn_is_answered():
    # Many AVAs with the named attribute last, doubled, and escaped look-alikes: the gate reads
    # each AVA a bounded number of times (possessive skips), so these finish like short DNs do.
    noise = ",".join([r"OU=x\,CN=globex-a", "CN2=y", r"L=\\", "O2=Globex Inc"] * 500)
    for tail, expected in ((",CN=globex-a,O=Globex Inc", True), (",CN=globex-a,O=Globex Inc,CN=z", False),
                           (",CN=globex-a,O=Globex Inc\\", False)):
        assert both(noise + tail, GLOBEX) is expected


# ---- properties -----------------------------------------------------------------------------

ATTRS = ["CN", "O", "OU"]
SPELLINGS = {"CN": ["CN", "commonName", "cn"], "O": ["O", "organizationName"], "OU": ["OU", "organizationalUnitName"]}
# Values full of what nginx escapes, and of text that looks like the next AVA.
PIECES = ["a", "b", "x", ",", "+", '"', "\\", "=", " ", "#", "CN=", ",CN=a", "+O=b", "\\,", "é"]
values = st.lists(st.sampled_from(PIECES), max_size=4).map("".join)
simple_values = st.sampled_from(["a", "b", "ab"])
rdns = st.lists(  # few attributes and values, so repeats (also inside one RDN) are common
    st.lists(st.tuples(st.sampled_from(ATTRS), st.one_of(simple_values, values)), min_size=1, max_size=3).map(tuple),
    min_size=1, max_size=5,
).map(tuple)
PATTERNS = ["^a$", "^.*$", "^[ab]+$", "^a.*$", r"^.*\\,.*$", r"^[^a]*$", r"^(?:a|b|\\\+)+$", r"^.*CN=a$"]


@st.composite
def cases(draw):
    subject = draw(rdns)
    own = [av for rdn in subject for av in rdn]
    eq = st.one_of(st.sampled_from(own), st.tuples(st.sampled_from(ATTRS), simple_values))
    rx = st.tuples(st.sampled_from(ATTRS), st.sampled_from(PATTERNS))
    picked = draw(st.lists(st.one_of(eq.map(lambda av: ("eq", *av)), rx.map(lambda ap: ("re", *ap))),
                           max_size=3))
    constraints = [C(draw(st.sampled_from(SPELLINGS[attr])), op, value) for op, attr, value in picked]
    return subject, [(attr, op, value) for op, attr, value in picked], constraints


def reference(subject, picked) -> bool:
    """The rule read off the RDNs (raw values, no DN text): each named attribute exactly once,
    satisfying each of its constraints."""
    for attr in {a for a, _, _ in picked}:
        found = [v for rdn in subject for a, v in rdn if a == attr]
        if len(found) != 1:
            return False
        for a, op, value in picked:
            if a == attr and not (found[0] == value if op == "eq"
                                  else re.fullmatch(confine(value), dn.escape_value(found[0]))):
                return False
    return True


many = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@many
@given(cases())
def test_model_and_gate_follow_the_rule(case):
    subject, picked, constraints = case
    printed = dn.format_dn(subject)
    assert both(printed, constraints) is reference(subject, picked)


@many
@given(st.text(st.sampled_from(list("CNO=,+\\ab")), max_size=24), st.data())
def test_model_and_gate_agree_on_any_text(text, data):
    # Not only what nginx prints: the two read the same AVAs up to the first non-AVA.
    picked = data.draw(st.lists(st.tuples(st.sampled_from(ATTRS), st.sampled_from(["eq", "re"]),
                                          st.sampled_from(["a", "b", ""])), max_size=3))
    constraints = [C(a, op, v if op == "eq" else f"^{v}.*$") for a, op, v in picked]
    both(text, constraints)


def test_subjects_of_the_nginx_test_are_written_as_nginx_prints_them():
    from test_dn_repeated_nginx import SUBJECTS
    for subject, _ in SUBJECTS:
        assert dn.format_dn(dn.parse_dn(subject)) == subject
