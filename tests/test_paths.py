"""The request boundary (docs/language.md "Paths", "Routes"): which raw targets are refused, what the
backend receives, which paths a route covers, and the gate's own limits on real `nginx -t`.

The behaviour on real nginx through real backends is in tests/test_backend_traps_nginx.py and the
differential test; the examples' tests.sh runs the hostile spellings per gated route.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlsc import ir, pipeline
from mtlsc.model.evaluate import evaluate, find_route
from mtlsc.model.locations import covers_text, locations
from mtlsc.model.uri import forwarded_target, normalise_path, target_problem
import oracle
from test_properties import _compile_and_nginx_t

CA = Path(__file__).resolve().parent.parent / "policies" / "ca"


@pytest.mark.parametrize("target, why", [
    ("/partner/x", None), ("/partner//x", None), ("/%70artner/x", None), ("/x%20y", None),
    ("/x?y=/../z;a\\b%2e", None),  # the query is not looked at
    ("/partner/../healthz", "segment"), ("/a/./b", "segment"), ("/a/..", "segment"), ("/a/.", "segment"),
    ("/a/.?x", "segment"), ("/partner/%2e%2e/healthz", "encoded"), ("/partner/..%2fhealthz", "encoded"),
    ("/x%2F..%2F..%2Fhealthz", "encoded"), ("/a%5cb", "encoded"), ("/a%25b", "encoded"), ("/a%3Bb", "encoded"),
    ("/a%c0%afb", "encoded"), ("/a\\b", "backslash"), ("/partner;x/y", "`;`"), ("/.well-known/..;/partner/x", "`;`"),
    ("/...", None), ("/a..b/c", None),
])
def test_noncanonical_targets(target, why):
    problem = target_problem(target)
    assert (problem is None) if why is None else (why in problem), problem


def test_semicolons_pass_when_the_backend_reads_them_literally():
    assert target_problem("/partner;x/y", literal_semicolons=True) is None
    assert target_problem("/partner/..;/y", literal_semicolons=True) is None  # `..;` is a name to both
    assert target_problem("/a%3bb", literal_semicolons=True)  # encoded `;` stays refused


@pytest.mark.parametrize("target, received", [
    ("/partner/x", "/partner/x"), ("/partner//x", "/partner/x"), ("/%70artner/x?q=%2e", "/partner/x?q=%2e"),
    ("/x%20y/%C3%A9", "/x%20y/%C3%A9"), ("/x/%41", "/x/A"), ("/p%23q", "/p%23q"), ("/%7e", "/~"),
    ("/x/ab%3Fc", "/x/ab%3Fc"), ("/x?", "/x"), ("/a//b?c//d", "/a/b?c//d"), ("/?a=1#f", "/?a=1"),
])
def test_forwarded_target_is_what_nginx_sent_to_the_echo_backend(target, received):
    # Each pair was sent through nginx 1.22.1 with `proxy_pass http://b/;` in `location ^~ /`.
    assert forwarded_target(target) == received


@given(st.text(alphabet="/ab.%2eEfF5cC;\\?#", min_size=1, max_size=16).map(lambda s: "/" + s))
@settings(max_examples=300, deadline=None)
def test_an_accepted_target_forwards_a_path_that_normalises_to_itself(target):
    """What the backend receives cannot be read as another path: it is already normal."""
    try:
        received = forwarded_target(target)
    except ValueError:
        return  # nginx answers 400 itself
    if target_problem(target):
        return
    path = received.split("?", 1)[0]
    assert normalise_path(path) == normalise_path(target)
    assert target_problem(received) is None


def _server(*routes: tuple[str, str]) -> ir.Server:
    def route(match, path):
        return ir.Route(ir.PathMatch.EXACT if match == "=" else ir.PathMatch.PREFIX, path, ir.Mode.PUBLIC, None, (),
                        False, (), "http://127.0.0.1:9")
    rej = ir.Response(403, "x")
    return ir.Server(("a.test",), (ir.Listen(None, 443),), "c", "k", "http://127.0.0.1:9", False, "/x",
                     tuple(route(m, p) for m, p in routes), ir.Rejections(rej, rej, rej))


def test_a_route_without_trailing_slash_covers_a_segment():
    server = _server(("", "/static"), ("", "/"))
    static, root = server.routes
    for path, route in [("/static", static), ("/static/x", static), ("/static/", static),
                        ("/staticfoo", root), ("/static-admin/export", root), ("/stati", root)]:
        assert find_route(server, path) is route, path
    assert [loc.text for loc in locations(server)] == ["= /static", "^~ /static/", "^~ /"]
    assert covers_text(static) == "/static and /static/..."
    own = [loc for loc in locations(server) if loc.route is static]
    assert any(loc.covers("/static/a") for loc in own) and not any(loc.covers("/staticfoo") for loc in own)


def test_an_exact_route_takes_the_segment_path_itself():
    server = _server(("", "/a"), ("=", "/a"))
    seg, exact = server.routes
    assert find_route(server, "/a") is exact and find_route(server, "/a/b") is seg
    assert [loc.text for loc in locations(server)] == ["^~ /a/", "= /a"]


def test_case_variants_of_a_route_path_are_refused_unless_the_backend_is_case_sensitive():
    import dataclasses
    server = _server(("", "/partner/"), ("", "/"))
    for path in ("/PARTNER/x", "/Partner/x", "/partner/x".upper()):
        assert evaluate(server, path, None).reason == "bad_target", path
    assert evaluate(server, "/partner/X", None).reason == "ok"  # below the route, case is the backend's
    assert evaluate(server, "/other", None).reason == "ok"
    sensitive = dataclasses.replace(server, backend_case_sensitive=True)
    assert evaluate(sensitive, "/PARTNER/x", None).reason == "ok"


def test_an_exact_path_with_a_trailing_slash_is_refused_unless_a_location_claims_it():
    """Express's non-strict routing serves `/admin/` with the handler of `/admin`."""
    import dataclasses
    server = _server(("=", "/admin"), ("", "/"))
    for path in ("/admin/", "/ADMIN/", "/Admin"):
        assert evaluate(server, path, None).reason == "bad_target", path
    assert evaluate(server, "/admin", None).reason == "ok"
    assert evaluate(server, "/admin/x", None).reason == "ok"  # below it: the catch-all's, for any backend
    sensitive = dataclasses.replace(server, backend_case_sensitive=True)
    assert evaluate(sensitive, "/admin/", None).reason == "bad_target"  # case has nothing to do with it
    assert evaluate(sensitive, "/ADMIN", None).reason == "ok"
    claimed = _server(("=", "/admin"), ("", "/admin/"), ("", "/"))
    assert evaluate(claimed, "/admin/", None).reason == "ok"
    strict = dataclasses.replace(server, backend_strict_slashes=True)
    assert evaluate(strict, "/admin/", None).reason == "ok"


def test_an_exact_path_ending_in_a_slash_refuses_the_path_without_it():
    """And the other way round: Express's handler of `/A/` serves `/A` (and `/a`) too, while nginx
    hands `/a` to `route /` (found by the differential test)."""
    import dataclasses
    server = _server(("=", "/A/"), ("", "/"))
    for path in ("/A", "/a", "/a/"):
        assert evaluate(server, path, None).reason == "bad_target", path
    assert evaluate(server, "/A/", None).reason == "ok" and evaluate(server, "/Ab", None).reason == "ok"
    for claimed in (_server(("=", "/A/"), ("=", "/A"), ("", "/")), _server(("=", "/A/"), ("", "/A"), ("", "/"))):
        assert evaluate(claimed, "/A", None).reason == "ok"
    strict = dataclasses.replace(server, backend_strict_slashes=True)
    assert evaluate(strict, "/A", None).reason == "redirect"  # nginx's auto_redirect to `/A/`
    assert evaluate(strict, "/a", None).reason == "ok" and evaluate(strict, "/a/", None).reason == "bad_target"


def test_a_route_path_over_the_limit_is_refused(tmp_path):
    policy = tmp_path / "p.mtls"
    policy.write_text(f"""server a.example.com {{
  certificate "/tmp/x.crt" key "/tmp/x.key"  backend "http://127.0.0.1:9"
  route /{"a" * 600} {{ public }}
}}
""")
    result = pipeline.check([str(policy)])
    assert [(d.code, d.span.line) for d in result.diagnostics if d.code == "MTLS020"] == [("MTLS020", 3)]


@pytest.mark.nginx
def test_the_longest_route_path_with_every_character_escaped_passes_nginx_t(nginx_bin, tmp_path):
    """The case-variant gate holds the path twice, escaped: the worst case stays one valid argument."""
    path = "/A" + "-" * 598
    text = f"""server api.example.com {{
  certificate "/tmp/x.crt" key "/tmp/x.key"  backend "http://127.0.0.1:9"
  route {path} {{ public }}
  route = /{"B" * 599} {{ public }}
}}
"""
    _compile_and_nginx_t(tmp_path, nginx_bin, text)


# The oracle of tests/test_differential_nginx.py and mtlsc agree on nginx's own normalisation examples
# (sent to nginx there).
@pytest.mark.parametrize("target, path", [
    ("/p/x", "/p/x"), ("//p//x", "/p/x"), ("/./p/x", "/p/x"), ("/q/../p/x", "/p/x"), ("/q/%2e%2E/p/x", "/p/x"),
    ("/%70%2fx", "/p/x"), ("/p/x?a=/../b", "/p/x"), ("/p/x#frag", "/p/x"), ("/p%3Fx", "/p?x"), ("/e%23", "/e#"),
    ("/%25", "/%"), ("/p/.", "/p/"), ("/p/..", "/"), ("/p/x/..", "/p/"), ("/.", "/"), ("/P/x", "/P/x"),
    ("/..", None), ("/p/../..", None), ("/%2e%2e/p", None), ("/a%2", None), ("/a%zz", None), ("/p%00", None),
    ("%2Fp", None),
])
def test_nginx_path(target, path):
    """The oracle's normaliser and mtlsc's agree on nginx's examples."""
    try:
        product = normalise_path(target)
    except ValueError:
        product = None
    assert oracle.normalise(target) == path == product


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "="]), st.sampled_from(["/a", "/A/", "/a/b", "/B", "/a-b/", "/", "/x/Y"])),
                min_size=1, max_size=6, unique_by=lambda r: r),
       st.sampled_from(["/a", "/A", "/a/", "/A/B", "/a/b/", "/b", "/B/", "/a-B/c", "/X/y", "/", "/aa"]),
       st.booleans(), st.booleans())
def test_alias_lookup_by_index_equals_the_scan_of_every_location(routes, path, case_sensitive, strict):
    """`is_path_alias` looks only at the locations the path could be an alias of; the answer is the
    one a scan of every gated location gives."""
    import dataclasses

    from mtlsc.model.evaluate import is_path_alias
    from mtlsc.model.locations import alias_gated, is_alias

    seen = {(m, p) for m, p in routes}
    try:
        server = _server(*sorted(seen))
    except Exception:
        return  # a route set the policy language refuses
    server = dataclasses.replace(server, backend_case_sensitive=case_sensitive, backend_strict_slashes=strict)
    gated, names = alias_gated(server)
    scan = any(is_alias(loc, path, names, case_sensitive, strict) for loc in gated)
    assert is_path_alias(server, path) == scan
