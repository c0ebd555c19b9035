"""The fast path (mtlsc/parse_fast.py) reads exactly what lark reads: the same AST with every span,
or the same syntax error, on generated policies where one-line identity blocks and long allow
lists sit among other statements, comments, odd spacing and look-alikes that must stay lark's."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lark.exceptions import UnexpectedInput

from mtlsc import parse as parse_module
from mtlsc import parse_fast
from mtlsc.parse import parse
from mtlsc.source import Source


def _lark_only(source: Source):
    try:
        tree = parse_module.parser().parse(source.text)
    except UnexpectedInput as exc:
        return None, [parse_module._syntax_error(source, exc)]
    return parse_module._ToAst(source.path).transform(tree), []


def _full(node):
    """A node as plain data, spans included (`==` on the dataclasses ignores them)."""
    if dataclasses.is_dataclass(node):
        return type(node).__name__, tuple((f.name, _full(getattr(node, f.name))) for f in dataclasses.fields(node))
    if isinstance(node, (tuple, list)):
        return tuple(_full(x) for x in node)
    return node


def _same_as_lark(text: str) -> None:
    source = Source("p.mtls", text)
    assert _full(parse(source)) == _full(_lark_only(source))


_blank = st.text(" \t", max_size=2)
_blank1 = st.text(" \t", min_size=1, max_size=2)
_names = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,6}", fullmatch=True),
                   st.sampled_from(["identity", "subject", "any", "server", "waive", "a-b"]))
_dn_chars = st.sampled_from(list("CN=aO,+ ") + ["\\,", '\\"', "\\\\", "\\", "é", "#", "\\x", "\r", "\t"])
_dns = st.lists(_dn_chars, max_size=8).map("".join)


@st.composite
def _one_liner(draw) -> str:
    """`identity NAME { subject "DN" }`, spaced every way lark allows (and some it refuses)."""
    b = [draw(_blank) for _ in range(6)]
    return (f'{b[0]}identity{draw(_blank1)}{draw(_names)}{b[1]}{{{b[2]}subject{b[3]}"{draw(_dns)}"{b[4]}}}{b[5]}'
            + draw(st.sampled_from(["", "\r"])))


@st.composite
def _fingerprint_liner(draw) -> str:
    """`identity NAME { fingerprint [ALGORITHM] "HEX" }`, spaced every way."""
    b = [draw(_blank) for _ in range(5)]
    algorithm = draw(st.sampled_from(["", " sha1", "\tsha256", " md5", "sha1", " subject"]))
    digits = draw(st.sampled_from(["ab", "", "AB:cd", 'a\\"b']))
    return f'{b[0]}identity{draw(_blank1)}{draw(_names)}{b[1]}{{{b[2]}fingerprint{algorithm}{b[3]}"{digits}"{b[4]}}}'


_list_gap = st.sampled_from([" ", "  ", "\n      ", "\t", "\r\n ", " # c\n ", "\n# c\n"])
_list_names = st.one_of(_names, st.sampled_from(["allow", "public", "require", "as", "forward", "x.y", "a{", "b}"]))


@st.composite
def _allow_list(draw) -> str:
    """A route whose allow list is long enough for the fast path, names and gaps of every kind."""
    names = draw(st.lists(_list_names, min_size=1, max_size=9))
    body = draw(_list_gap).join(names)
    where = draw(st.sampled_from(["route", "string", "nginx", "bare"]))
    if where == "route":
        return f"server s {{\n  route /r {{\n    require c0\n    allow {body}\n  }}\n}}"
    if where == "string":
        return f'clear_headers "allow {body}"'
    if where == "nginx":
        return f"server s {{\n  route /n {{\n    nginx {{ allow {body}; }}\n  }}\n}}"
    return f"allow {body}"


_OTHERS = [
    "# a comment",
    '# identity c { subject "CN=c" }',
    "",
    'nginx ">= 1.22"',
    "with njs",
    'identity g { fingerprint sha256 "ab" }',
    'waive MTLS201 "reason"',
    "waive MTLS201",  # incomplete: whatever follows decides
    '"reason"',
    'clear_headers "X-A"',
    'resolver "10.0.0.2" timeout',
    "5s",
    'identity m {\n  subject "CN=m"\n}',
    'identity f { fingerprint "ab" }',
    'identity t { subject "CN=t" } # trailing comment',
    'identity u { subject "CN=u" } identity v { subject "CN=v" }',
    'identity w { cn "w" }',
    "identity x {",
    "}",
    'ca c0 {\n  bundle "ca.pem"\n}',
    "server api.example {\n  listen 443",
    '  route /a { public }\n  nginx {\n    return 200;\n    identity n { subject "CN=n" }\n  }\n}',
    "server b.example {\n  nginx { add_header X '\n",
    "'; }\n}",
    'identity s { subject "CN=s',
    '"',
]


@st.composite
def _policies(draw) -> str:
    parts = draw(st.lists(st.one_of(_one_liner(), _fingerprint_liner(), _allow_list(), st.sampled_from(_OTHERS)),
                          max_size=12))
    return draw(st.sampled_from(["\n", "\r\n"])).join(parts) + draw(st.sampled_from(["", "\n"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_policies())
@example('identity a { subject "CN=a" }')
@example('waive MTLS201\nidentity a { subject "CN=a" }\n"reason"')
@example('clear_headers "X-A"\nidentity a { subject "CN=a" }\n"X-B"')
@example('server s {\nidentity a { subject "CN=a" }\n}')
@example('server s {\n  nginx {\nidentity a { subject "CN=a" }\n  }\n}')
@example("server s {\n  nginx { add_header X '\nidentity a { subject \"CN=a\" }\n'; }\n}")
@example('  identity a{subject"C\\"N\\\\=a\\,b"}  \n# c\nidentity b { subject "" }\n')
@example("server s {\n  route /r {\n    require c0\n    allow a b c d\n  }\n}")
@example("server s {\n  route /r {\n    allow a b c d as e f g h public\n  }\n}")
@example('clear_headers "allow a b c d"')
@example("server s {\n  route /n {\n    nginx { allow a b c d; }\n  }\n}")
@example('identity f { fingerprint sha256 "ab" }\nidentity g {fingerprint"cd"}')
def test_the_fast_path_reads_what_lark_reads(text):
    _same_as_lark(text)


def test_the_fast_path_takes_the_one_liners_and_leaves_the_rest_to_lark():
    text = ('identity a { subject "CN=a" }\n'
            'identity b { subject "CN=b" } # a comment: lark\'s\n'
            '  identity c {subject "CN=c\\,d"}\n')
    found = parse_fast.split("p", text)
    assert [i.name.value for i in found.identities] == ["a", "c"]
    assert found.rest.split("\n")[1] == text.split("\n")[1]
    assert [len(line) for line in found.rest.split("\n")] == [len(line) for line in text.split("\n")]
    assert found.rest.strip().startswith("identity b")
    _same_as_lark(text)


def test_nothing_to_take_leaves_the_text_to_lark():
    assert parse_fast.split("p", 'waive MTLS201 "x"\n') is None
    assert parse_fast.split("p", 'identity a {\n  subject "CN=a"\n}\n') is None


def test_a_long_allow_list_is_taken_and_put_back_with_its_spans():
    text = ("server s {\n  route /r {\n    require c0\n    allow a b\n      c d e # comment\n      f g\n"
            "  }\n}\n")
    found = parse_fast.split("p", text, frozenset({"allow", "require", "route", "server"}))
    assert list(found.allow_tails) == [(4, 11)]  # up to the comment: lark reads `f g` and puts them after
    assert [(w.value, w.span.line, w.span.col) for w in found.allow_tails[(4, 11)]] == [
        ("b", 4, 13), ("c", 5, 7), ("d", 5, 9), ("e", 5, 11)]
    assert [len(line) for line in found.rest.split("\n")] == [len(line) for line in text.split("\n")]
    _same_as_lark(text)
