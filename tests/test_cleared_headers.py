"""`clear_headers` (top level), `backend_paths` (server) and the identity-header union the IR
gives every server compiled together: parse, lower, errors, fmt, determinism."""

from __future__ import annotations

import random

from mtlsc import ast, ir
from mtlsc.review.fmt import format_text
from mtlsc.lower import lower
from mtlsc.lower.headers import union
from mtlsc.nginx_facts import FORWARD_FIELDS, WELL_KNOWN_IDENTITY_HEADERS
from mtlsc.parse import parse
from mtlsc.source import Source
from support import REPO

CA = str(REPO / "policies" / "ca" / "partners-root.pem")


def server(name: str, body: str = "", route: str = "route / { public }") -> str:
    return (f'server {name} {{\n  certificate "/x.crt" key "/x.key"\n  backend "http://127.0.0.1:8080"\n'
            f"{body}  {route}\n}}\n")


def tree(text: str, path: str = "p.mtls") -> ast.PolicyFile:
    parsed, diags = parse(Source(path, text))
    assert parsed is not None, diags
    return parsed


def lowered(*texts: str):
    return lower([tree(t, f"f{i}.mtls") for i, t in enumerate(texts)])


def ok(*texts: str) -> ir.Policy:
    policy, diags = lowered(*texts)
    assert policy is not None, [(d.code, d.message) for d in diags]
    return policy


def errors(*texts: str) -> list[tuple[str, str]]:
    policy, diags = lowered(*texts)
    assert policy is None
    return [(d.code, d.message) for d in diags]


# ---- parse ---------------------------------------------------------------------------------------
def test_parse_both_statements():
    t = tree('clear_headers "X-A" "x-b"\n' + server("a", "  backend_paths case_sensitive literal_semicolons\n"))
    assert t.items[0] == ast.ClearHeaders((ast.Str("X-A"), ast.Str("x-b")))
    assert ast.BackendPaths((ast.Word("case_sensitive"), ast.Word("literal_semicolons"))) in t.items[1].body


def test_the_keywords_stay_names_elsewhere():
    t = tree('identity clear_headers { clear_headers "x" }\n' + server("a", "  backend_paths case_sensitive\n"))
    assert t.items[0].body == (ast.AttrEq(ast.Word("clear_headers"), ast.Str("x")),)


def test_syntax_errors():
    for text in ["clear_headers\n", "clear_headers X-A\n", server("a", "  backend_paths\n"),
                 server("a", '  backend_paths "case_sensitive"\n'), 'ca c { clear_headers "x" }\n',
                 server("a", route='route / { public  backend_paths case_sensitive }')]:
        assert parse(Source("p.mtls", text))[0] is None, text


# ---- backend_paths -------------------------------------------------------------------------------
def test_backend_paths_default_is_refuse_both():
    s = ok(server("a")).servers[0]
    assert (s.backend_case_sensitive, s.backend_literal_semicolons) == (False, False)


def test_backend_paths_words():
    s = ok(server("a", "  backend_paths literal_semicolons\n")).servers[0]
    assert (s.backend_case_sensitive, s.backend_literal_semicolons) == (False, True)
    s = ok(server("a", "  backend_paths literal_semicolons case_sensitive\n")).servers[0]
    assert (s.backend_case_sensitive, s.backend_literal_semicolons) == (True, True)


def test_backend_paths_unknown_word_suggests():
    policy, diags = lowered(server("a", "  backend_paths case_insensitive\n"))
    assert [(d.code, d.help) for d in diags] == [("MTLS012", "did you mean `case_sensitive`?")]
    assert errors(server("a", "  backend_paths literal\n")) == [("MTLS012", "`literal` is not a `backend_paths` word")]


def test_backend_paths_twice_and_a_word_twice():
    assert errors(server("a", "  backend_paths case_sensitive\n  backend_paths literal_semicolons\n")) == [
        ("MTLS013", "`backend_paths` is given twice in server `a`")]
    assert errors(server("a", "  backend_paths case_sensitive case_sensitive\n")) == [
        ("MTLS013", "`backend_paths` word `case_sensitive` is listed twice")]


def test_merged_blocks_must_agree_on_backend_paths():
    a = server("a", "  backend_paths case_sensitive\n")
    b = server("a", "  backend_paths case_sensitive literal_semicolons\n", route="route /x/ { public }")
    assert errors(a, b) == [("MTLS023", "server `a` is declared twice with different `backend_paths`")]
    same = ok(a, server("a", "  backend_paths case_sensitive\n", route="route /x/ { public }")).servers
    assert len(same) == 1 and same[0].backend_case_sensitive and not same[0].backend_literal_semicolons
    unstated = ok(a, server("a", route="route /x/ { public }")).servers  # a block without it does not conflict
    assert len(unstated) == 1 and unstated[0].backend_case_sensitive


# ---- clear_headers -------------------------------------------------------------------------------
def test_clear_headers_across_statements_and_files():
    policy = ok('clear_headers "X-Legacy-User"\n' + server("a") + 'clear_headers "X-Old" "X-Older"\n',
                'clear_headers "X-Other-File"\n')
    assert policy.cleared_headers == ("X-Legacy-User", "X-Old", "X-Older", "X-Other-File")
    assert {"X-Legacy-User", "X-Old", "X-Older", "X-Other-File"} <= set(policy.servers[0].identity_headers)


def test_clear_headers_name_twice_is_mtls013_case_insensitively():
    assert errors('clear_headers "X-A" "x-a"\n' + server("a")) == [
        ("MTLS013", "header `x-a` is listed twice in `clear_headers`")]
    assert errors('clear_headers "X-A"\n' + server("a"), 'clear_headers "X-A"\n')[0][0] == "MTLS013"


def test_clear_headers_unsafe_and_reserved_names():
    assert [c for c, _ in errors('clear_headers "X_A" "Host" "a:b"\n' + server("a"))] == ["MTLS020", "MTLS032", "MTLS020"]


# ---- the union -----------------------------------------------------------------------------------
def _gated(name: str, forward: str) -> str:
    return server(name, route=f"route /p/ {{ require partners  allow any  forward {forward} }}")


def test_union_is_the_same_for_every_server_and_holds_every_source():
    policy = ok(f'ca partners {{ bundle "{CA}" }}\nclear_headers "X-Legacy-User"\n'
                + _gated("a.example.com", 'subject as "X-Remote-User" serial as "X-Partner-Serial"')
                + server("b.example.com")                          # public only: forwards nothing
                + _gated("c.example.com", 'verify as "ssl-client-verify"'))
    a, b, c = policy.servers
    assert a.identity_headers == b.identity_headers == c.identity_headers
    got = {h.lower() for h in b.identity_headers}
    assert {f.default_header.lower() for f in FORWARD_FIELDS.values()} <= got
    assert {h.lower() for h in WELL_KNOWN_IDENTITY_HEADERS} <= got
    assert {"x-remote-user", "x-partner-serial", "ssl-client-verify", "x-legacy-user"} <= got
    assert len(got) == len(b.identity_headers), "deduplicated case-insensitively"
    assert list(b.identity_headers) == sorted(b.identity_headers, key=str.lower)


def test_union_keeps_the_first_spelling_forwards_before_well_known_before_clear_headers():
    policy = ok(f'ca partners {{ bundle "{CA}" }}\nclear_headers "X-PARTNER-SERIAL" "x-legacy"\n'
                + _gated("a.example.com", 'subject as "x-remote-user"')
                + _gated("b.example.com", 'serial as "X-Partner-Serial" subject as "X-REMOTE-USER"'))
    headers = policy.servers[0].identity_headers
    assert "x-remote-user" in headers and "X-Remote-User" not in headers and "X-REMOTE-USER" not in headers
    assert "X-Partner-Serial" in headers and "x-legacy" in headers
    assert "X-Client-Subject" in headers  # a FORWARD_FIELDS default beats any other spelling


def test_union_is_deterministic_whatever_the_order_of_servers():
    blocks = [_gated(f"s{i}.example.com", f'subject as "X-Id-{i}"') for i in range(6)]
    first = ok(f'ca partners {{ bundle "{CA}" }}\n' + "".join(blocks)).servers[0].identity_headers
    for seed in range(5):
        random.Random(seed).shuffle(blocks)
        again = ok(f'ca partners {{ bundle "{CA}" }}\n' + "".join(blocks))
        assert all(s.identity_headers == first for s in again.servers)


def test_union_helper_without_servers_is_defaults_and_well_known():
    names = {h.lower() for h in union([], ())}
    assert names == {f.default_header.lower() for f in FORWARD_FIELDS.values()} | {
        h.lower() for h in WELL_KNOWN_IDENTITY_HEADERS}


# ---- fmt -----------------------------------------------------------------------------------------
def test_fmt_lays_both_statements_out_canonically():
    text = ('clear_headers   "X-A"\t"X-B"\n' + 'server a {  backend_paths   case_sensitive\n literal_semicolons\n'
            '  route / { public } }\n')
    out, diags = format_text(Source("p.mtls", text))
    assert out == ('clear_headers "X-A" "X-B"\n\nserver a {\n  backend_paths\n    case_sensitive\n'
                   '    literal_semicolons\n  route / { public }\n}\n'), diags
    assert format_text(Source("p.mtls", out))[0] == out


# ---- diff ----------------------------------------------------------------------------------------
def _changes(old: str, new: str):
    from mtlsc.review.diff import diff_policies

    return [(c.kind, c.subject, c.message) for c in diff_policies((ok(old), None), (ok(new), None))]


def test_diff_classifies_backend_paths_words():
    plain, case = server("a"), server("a", "  backend_paths case_sensitive\n")
    assert _changes(plain, case) == [("widening", "backend_paths case_sensitive", "`backend_paths case_sensitive` added: "
                                      "paths that differ from a route only in letter case are no longer refused and "
                                      "reach the backend")]
    assert [k for k, _, _ in _changes(case, plain)] == ["narrowing"]
    both = server("a", "  backend_paths literal_semicolons case_sensitive\n")
    assert [(k, s) for k, s, _ in _changes(case, both)] == [("widening", "backend_paths literal_semicolons")]


def test_diff_classifies_clear_headers():
    plain, cleared = server("a"), 'clear_headers "X-Legacy-User"\n' + server("a")
    assert _changes(plain, cleared) == [("neutral", "header X-Legacy-User", "header `X-Legacy-User` is now set or "
                                         "cleared on every route: a client's own value no longer reaches the backend")]
    assert [(k, s) for k, s, _ in _changes(cleared, plain)] == [("widening", "header X-Legacy-User")]
    assert _changes(cleared, cleared) == []
