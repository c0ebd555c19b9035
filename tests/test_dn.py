"""mtlsc.dn in pure Python: DN parsing and printing, patterns, matching (nginx-facts.md §7).

What nginx and openssl really print is proven in test_dn_nginx.py; this file pins the logic.
The strategies here are shared with it.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlsc import dn
from mtlsc.dn import AttrConstraint as C
from mtlsc.dn.regex import confine

# ---- strategies -----------------------------------------------------------------------------

TRICKY = list(',+"\\<>;#= =') + list("aZ09") + ["é", "ü", "€", "😀", "\u00a0", "\x01", "\x7f", "\t"]
ATTRS = ["CN", "O", "OU", "L", "ST", "street", "DC", "UID", "emailAddress", "serialNumber", "title", "GN", "SN"]
values = st.text(st.sampled_from(TRICKY), max_size=8)
# C must be exactly two UTF-8 bytes (cryptography); a non-PrintableString one is written as UTF8String.
countries = st.one_of(st.text(st.sampled_from(list("AZ ,+='#")), min_size=2, max_size=2), st.just("é"))
avas = st.one_of(
    st.tuples(st.sampled_from(ATTRS), values).filter(lambda av: av[0] != "CN" or av[1] != ""),
    st.tuples(st.just("C"), countries),
)
rdn_lists = st.lists(
    st.lists(avas, min_size=1, max_size=3, unique=True).map(tuple), min_size=1, max_size=4
).map(tuple)

PATTERN_PIECES = ["a", "Z", "0", ".", ".*", "[a-z]+", "[^a]*", r"\\,", r"\\\\", r"\\ ", r"\\#",
                  r"\\C3\\A9", "(?:a|b)", "[0-9]{1,2}", r"\d?", "=", "#", " ", "a*?", "(?>a+)"]
patterns = st.builds(
    lambda ci, parts: ("(?i)" if ci else "") + "^" + "".join(parts) + "$",
    st.booleans(), st.lists(st.sampled_from(PATTERN_PIECES), max_size=4),
)
fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def by_multiset(rdns):
    return [sorted(rdn) for rdn in rdns]


# ---- parse_dn / format_dn -------------------------------------------------------------------


@pytest.mark.parametrize("text, rdns", [
    ("CN=alice,O=Acme,C=US", ((("CN", "alice"),), (("O", "Acme"),), (("C", "US"),))),
    (r"CN=mallory\,O=Acme,O=Other,C=US", ((("CN", "mallory,O=Acme"),), (("O", "Other"),), (("C", "US"),))),
    (r"CN=trail\\,O=Acme", ((("CN", "trail\\"),), (("O", "Acme"),))),
    (r"CN=J\C3\BCrgen", ((("CN", "Jürgen"),),)),
    ("CN=Jürgen", ((("CN", "Jürgen"),),)),
    (r"cn=a\+b,commonName=x,e=a@b,2.5.4.10=q", ((("CN", "a+b"),), (("CN", "x"),), (("emailAddress", "a@b"),), (("O", "q"),))),
    ("CN=#", ((("CN", "#"),),)),
    (r"CN=\#hash,O=a=b", ((("CN", "#hash"),), (("O", "a=b"),))),
    (r"CN=\ sp  ace\ ", ((("CN", " sp  ace "),),)),
    ("O=,CN=x", ((("O", ""),), (("CN", "x"),))),
    (r"CN=x\=y\#", ((("CN", "x=y#"),),)),
    ("OU=Eng+CN=multi,O=Other", ((("CN", "multi"), ("OU", "Eng")), (("O", "Other"),))),
])
def test_parse_dn(text, rdns):
    assert dn.parse_dn(text) == rdns


@pytest.mark.parametrize("text, offset, fragment", [
    ("", 0, "empty"),
    ("/C=US/O=Acme/CN=x", 0, "legacy `/`-separated format; nginx's $ssl_client_s_dn is RFC 2253: `CN=x,O=Acme,C=US` (most specific first)"),
    ("CN=a,Acme", 5, "`Acme` is not `attribute=value`"),
    ("Acme", 0, "`Acme` is not `attribute=value`"),
    ("CN=a,,O=b", 5, "empty component"),
    ("CN=a,", 5, "empty component"),
    ("=x", 0, "missing attribute name"),
    ("comonName=a", 0, "unknown attribute `comonName`; did you mean `CN`?"),
    ("1.2.3.4=a", 0, "unknown attribute"),
    ('CN=a"b', 4, 'unescaped `"`'),
    ("CN=a<b", 4, "unescaped `<`"),
    ("CN=a;O=b", 4, "unescaped `;`"),
    ("CN=ab\\", 5, "dangling `\\`"),
    ("CN=a\\qb", 4, "invalid escape `\\q`"),
    ("CN=a\\4", 4, "invalid escape `\\4`"),
    ("CN=a\\4g", 4, "invalid escape"),
    ("CN=alice, O=Acme", 9, "nginx never prints spaces after separators"),
    ("CN=a+ OU=b", 5, "nginx never prints spaces after separators"),
    ("CN=J\\C3rgen", 4, "not valid UTF-8"),
    ("CN=ok\\FF", 5, "not valid UTF-8"),
    ("CN=#ab", 3, "bare `#`"),
    ("CN= a", 3, "unescaped space"),
    ("CN=a ,O=b", 4, "unescaped space"),
    ("CN = a", 0, "spaces around an attribute name"),
])
def test_parse_dn_errors(text, offset, fragment):
    with pytest.raises(dn.DnError) as info:
        dn.parse_dn(text)
    assert fragment in info.value.message
    assert info.value.offset == offset


@pytest.mark.parametrize("raw, printed", [
    # rows of nginx-facts.md §7 (observed on nginx), plus the one-character quirk
    ("mallory,O=Acme", r"mallory\,O=Acme"), ("trail\\", r"trail\\"), ("a+b", r"a\+b"),
    ('say "hi"', r"say \"hi\""), ("#hash", r"\#hash"), (" sp  ace ", r"\ sp  ace\ "),
    ("Jürgen Ünïcødé", r"J\C3\BCrgen \C3\9Cn\C3\AFc\C3\B8d\C3\A9"), ("eve/O=Acme", "eve/O=Acme"),
    ("a<b>c;d", r"a\<b\>c\;d"), ("tab\there\x7f", r"tab\09here\7F"), ("a=b", "a=b"),
    ("#", "#"), (" ", r"\ "), ("  ", r"\ \ "), ("x#", "x#"), ("# ", r"\#\ "), ("", ""),
])
def test_escape_value(raw, printed):
    assert dn.escape_value(raw) == printed


def test_attributes():
    assert dn.canonical_attribute("cn") == dn.canonical_attribute("commonName") == "CN"
    assert dn.canonical_attribute("STREET") == "street"
    assert dn.canonical_attribute("emailaddress") == dn.canonical_attribute("E") == "emailAddress"
    assert dn.canonical_attribute("2.5.4.11") == "OU"
    assert dn.canonical_attribute("nope") is None
    assert all(dn.canonical_attribute(name) == name for name in dn.ATTRIBUTES)


@pytest.mark.parametrize("n, printed", [
    (1, "01"), (0x7F, "7F"), (0x80, "80"), (0x100, "0100"), (0x0A00000001, "0A00000001"),
    (0, "00"), (-5, "-05"), (int("AB" * 36, 16), "AB" * 35 + "\\\n" + "AB"),
])
def test_nginx_serial(n, printed):
    assert dn.nginx_serial(n) == printed


@fast
@given(rdn_lists)
def test_parse_inverts_format(rdns):
    printed = dn.format_dn(rdns)
    assert printed.isascii() and printed.isprintable()
    back = dn.parse_dn(printed)
    assert by_multiset(back) == by_multiset(rdns)
    assert dn.format_dn(back) == printed
    if all(len(rdn) == 1 for rdn in rdns):
        assert back == rdns


@fast
@given(rdn_lists)
def test_x509_name_prints_as_format_dn(rdns):
    assert dn.nginx_dn_of(dn.x509_name(rdns)) == dn.format_dn(rdns)


def test_nginx_dn_of_string_types():
    from cryptography import x509
    from cryptography.x509.name import _ASN1Type
    from cryptography.x509.oid import NameOID

    def one(oid, value, kind=None):
        attr = x509.NameAttribute(oid, value, kind) if kind else x509.NameAttribute(oid, value)
        return dn.nginx_dn_of(x509.Name([x509.RelativeDistinguishedName([attr])]))

    # OpenSSL reads one-byte string types as Latin-1 (double-encoding UTF-8), unknown OIDs as hex DER
    assert one(NameOID.COMMON_NAME, "é", _ASN1Type.IA5String) == r"CN=\C3\83\C2\A9"
    assert one(NameOID.COMMON_NAME, "é", _ASN1Type.BMPString) == r"CN=\C3\A9"
    assert one(x509.ObjectIdentifier("1.2.3.4"), "a,b é") == "1.2.3.4=#0C06612C6220C3A9"


# ---- patterns -------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern, offset, fragment", [
    ("abc$", 0, "start it with `^`"), ("^abc", 4, "end it with `$`"), ("(?i)abc$", 4, "start it with `^`"),
    ("^a(b$", 2, "invalid regex"), ("^a,b$", 2, "`,` occurs in a value only escaped"),
    ("^a\\+$", 2, "`+` occurs in a value only escaped"), ("^a\\\\$", 2, "must be directly followed"),
    ("^a\\\\+$", 2, "repeats the backslash"), ("^[a,]$", 1, "class may not contain"),
    ("^[\\\\a]$", 1, "class may not contain"), ("^x\\W$", 2, "`\\W` can match"),
    ("^\\S+$", 1, "`\\S` can match"), ("^\\D$", 1, "`\\D` can match"), ("^(a)\\1$", 4, "backreferences"),
    ("^(?P<x>a)(?P=x)$", 9, "backreferences"), ("^(?=a)a$", 1, "lookaheads"), ("^a(?<!b)$", 2, "lookbehinds"),
    ("^a$|^b$", 2, "may only start and end"), ("^a\\b$", 2, "anchor `\\b`"), ("^\\Aa$", 1, "anchor"),
    ("(?s)^a$", 2, "only the `(?i)` flag"), ("^(?x:a)$", 1, "only the `i` flag"), ("^é$", 1, "`\\\\C3\\\\A9`"),
    ("^\\n$", 1, "matches no character nginx prints"), ('^"$', 1, "always prints `\"` escaped"),
    ("^a{x}$", 2, "literal `{`"), ("^a{2000}$", 2, "repetition bounds"), ("^(a)?(?(1)b)$", 5, "conditionals"),
])
def test_check_value_pattern_errors(pattern, offset, fragment):
    with pytest.raises(dn.DnError) as info:
        dn.check_value_pattern(pattern)
    assert fragment in info.value.message
    assert info.value.offset == offset


@pytest.mark.parametrize("pattern, body", [
    ("^mallory.*$", r"mallory(?:[^,+\\]|\\.)*"),
    ("^[^x]+$", r"[^\+\,\\x]+"),
    ("(?i)^ab$", "[Aa][Bb]"),
    (r"^a\\,b$", r"a\\\,b"),
    (r"^(?:\\.){2}$", r"(?:\\.){2}"),
    ("^(a|bc)+$", "(?:a|bc)+"),
])
def test_confine(pattern, body):
    assert confine(pattern) == body


@pytest.mark.parametrize("pattern", ["^alice$", "^[a-z]+-[0-9]{2}$", r"^\\#.*$", r"^a\\,b$", "^.*$", "(?i)^Bob$",
                                     r"^J\\C3\\BC.*$", "^(?:x|y)z?$", r"^\\ a$", "^[^a]{3}$"])
def test_example_value(pattern):
    value = dn.example_value(pattern)
    assert re.fullmatch(confine(pattern), dn.escape_value(value))
    assert value != "" and all(c.isalnum() or c in ",# ü-" for c in value)


def test_example_value_unsatisfiable():
    with pytest.raises(dn.DnError, match="no value nginx could print"):
        dn.example_value(r"^a\\ b$")  # nginx escapes a space only at the edges


@fast
@given(patterns)
def test_example_value_satisfies_pattern(pattern):
    try:
        value = dn.example_value(pattern)
    except dn.DnError:
        # only escapes nginx never prints there (or an atomic group starving the rest) may fail
        assert any(piece in pattern for piece in (r"\\ ", r"\\#", r"\\C3", "#", " ", "(?>"))
        return
    assert re.fullmatch(confine(pattern), dn.escape_value(value))
    assert dn.matches_constraints(dn.format_dn(((("O", value),),)), [C("O", "re", pattern)])


# ---- matching -------------------------------------------------------------------------------

MALLORY, TRAIL, EVE = r"CN=mallory\,O=Acme,O=Other,C=US", r"CN=trail\\,O=Acme,C=US", "CN=eve/O=Acme,O=Other,C=US"


@pytest.mark.parametrize("subject, constraints, expected", [
    (MALLORY, [C("O", "eq", "Acme")], False),
    (TRAIL, [C("O", "eq", "Acme")], True),
    (EVE, [C("O", "eq", "Acme")], False),
    (MALLORY, [C("CN", "eq", "mallory,O=Acme")], True),
    (MALLORY, [C("CN", "re", "^mallory.*$"), C("O", "eq", "Other")], True),
    (MALLORY, [C("CN", "re", "^mallory$")], False),
    (MALLORY, [C("O", "re", "^Acme$")], False),
    (MALLORY, [C("O", "re", "^.*Acme.*$")], False),
    (TRAIL, [C("CN", "re", r"^trail\\\\$")], True),
    ("CN=multi+OU=Eng,O=Other,C=US", [C("OU", "eq", "Eng"), C("CN", "eq", "multi")], True),
    ("CN=ALICE,O=ACME,C=US", [C("O", "eq", "Acme")], False),
    ("CN=ALICE,O=ACME,C=US", [C("O", "re", "(?i)^acme$")], True),
    ("CN=a,O=x", [], True),
])
def test_matching_rows(subject, constraints, expected):
    assert dn.matches_constraints(subject, constraints) is expected
    assert (re.search(dn.constraints_regex(constraints), subject) is not None) is expected


def test_matches_subject_is_ascii_case_insensitive():
    assert dn.matches_subject("CN=ALICE,O=ACME,C=US", "CN=alice,O=Acme,C=US")
    assert not dn.matches_subject(r"CN=\C3\A9", r"CN=\c3\a9x")
    assert not dn.matches_subject(MALLORY, "CN=mallory,O=Acme,O=Other,C=US")


@st.composite
def dn_and_constraints(draw):
    rdns = draw(rdn_lists)
    printed = dn.format_dn(rdns)
    own = [av for rdn in rdns for av in rdn]
    eq = st.one_of(st.sampled_from(own), st.tuples(st.sampled_from(ATTRS + ["C"]), values))
    own_re = st.sampled_from(own).map(lambda av: (av[0], "^" + dn.pcre_literal(dn.escape_value(av[1])) + "$"))
    rx = st.one_of(own_re, st.tuples(st.sampled_from(ATTRS + ["C"]), patterns)).filter(lambda ap: confinable(ap[1]))
    cons = draw(st.lists(st.one_of(eq.map(lambda av: C(av[0], "eq", av[1])), rx.map(lambda ap: C(ap[0], "re", ap[1]))), max_size=3))
    text = draw(st.one_of(st.just(printed), st.text(st.sampled_from(list("CNO=,+\\ax#")), max_size=20)))
    return text, cons


def confinable(pattern: str) -> bool:
    try:
        dn.check_value_pattern(pattern)
        return True
    except dn.DnError:
        return False


@fast
@given(rdn_lists, st.data())
def test_eq_means_the_one_ava_of_that_attribute_has_that_raw_value(rdns, data):
    # a named attribute must occur exactly once (issue #10 part 5): `CN=mallory,CN=globex-a` fails
    own = [av for rdn in rdns for av in rdn]
    attr, value = data.draw(st.one_of(st.sampled_from(sorted(set(own))), st.tuples(st.sampled_from(ATTRS), values)))
    printed = dn.format_dn(rdns)
    expected = [v for a, v in own if a == attr] == [value]
    assert dn.matches_constraints(printed, [C(attr, "eq", value)]) is expected
    literal = "^" + dn.pcre_literal(dn.escape_value(value)) + "$"
    assert dn.matches_constraints(printed, [C(attr, "re", literal)]) is expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(dn_and_constraints())
def test_regex_agrees_with_evaluator(case):
    text, constraints = case
    expected = dn.matches_constraints(text, constraints)
    assert (re.search(dn.constraints_regex(constraints), text) is not None) is expected


@fast
@given(st.text())
def test_pcre_literal(s):
    assert re.fullmatch(dn.pcre_literal(s), s)


_DN_PIECES = st.sampled_from(["CN", "cn", "O", "OU", "C", "serialNumber", "emailAddress", "mail", "E", "x", "=", ",",
                              "+", " ", "\\,", "\\", "#", '"', ";", "a", "Acme Inc", "é", "\t", "\\2C", "=b"])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_DN_PIECES, max_size=10).map("".join))
def test_nginx_form_is_parse_then_format(text):
    """The shortcut for DNs already in nginx's form gives what parsing and printing give, errors included."""
    try:
        expected = dn.format_dn(dn.parse_dn(text))
    except dn.DnError as exc:
        with pytest.raises(dn.DnError) as caught:
            dn.nginx_form(text)
        assert (caught.value.message, caught.value.offset) == (exc.message, exc.offset)
        return
    assert dn.nginx_form(text) == expected


def test_nginx_form_takes_the_plain_dns_as_they_are():
    assert dn.nginx_form("CN=client-00001,OU=unit-1,O=Bench Partner 1,C=US") == "CN=client-00001,OU=unit-1,O=Bench Partner 1,C=US"
    assert dn.nginx_form("cn=a,o=b") == "CN=a,O=b"  # not nginx's spelling: parsed and printed
