"""`nginx { }` in servers and routes: what is allowed, what is refused (MTLS037, MTLS038), where the
directives land, and that no text in a block can close it or add a directive the checks did not see
(generated hostile bodies, read back with crossplane)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import crossplane
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlsc import pipeline
from mtlsc.review.fmt import format_text
from mtlsc.lab.pki import issue_server, make_root, write_pem
from mtlsc.lower.nginx_block import ALLOWED
from mtlsc.source import Source
from support import run_cli

NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pki")
    write_pem(tmp / "ca.pem", make_root("block ca", now=NOW).cert)
    srv = issue_server(make_root("block server ca", now=NOW), ["api.example.com"], now=NOW)
    write_pem(tmp / "srv.crt", srv.cert)
    write_pem(tmp / "srv.key", srv.key)
    return tmp


def _policy(pki: Path, server_block: str = "", route_block: str = "") -> str:
    return f"""ca partners {{ bundle "{pki}/ca.pem" }}
server api.example.com {{
  certificate "{pki}/srv.crt" key "{pki}/srv.key"
  backend "http://127.0.0.1:9"
  install "{pki}/mtls"
  {server_block}
  route = /healthz {{ public }}
  route /api {{
    require partners
    allow any
    {route_block}
  }}
}}
"""


def _compile(pki: Path, tmp: Path, text: str):
    path = tmp / "p.mtls"
    path.write_text(text)
    return pipeline.compile_policy([str(path)], now=NOW)


def _server_conf(result) -> str:
    return next(v for k, v in result.outputs.items() if k.startswith("nginx/api"))


def _codes(result) -> list[str]:
    return [d.code for d in result.diagnostics]


def test_server_and_route_directives_land_after_mtlscs_own_lines(pki, tmp_path):
    r = _compile(pki, tmp_path, _policy(
        pki, 'nginx {\n    add_header X-Content-Type-Options nosniff always;\n    access_log off;\n  }',
        "nginx { client_max_body_size 10m; proxy_read_timeout 300s; }"))
    assert not r.failed, [(d.code, d.message) for d in r.diagnostics]
    conf = _server_conf(r)
    server = conf[conf.index("server {"):]
    hsts = server.index('    add_header X-Content-Type-Options nosniff always;\n')
    assert server.index("access_log off;") > hsts > server.index("underscores_in_headers off;")
    assert hsts < server.index("location = /healthz")
    # `route /api` is two locations (`= /api`, `^~ /api/`): the directives go in both, after proxy_pass
    for loc in ("location = /api {", "location ^~ /api/ {"):
        body = server[server.index(loc):]
        body = body[:body.index("\n    }\n")]
        assert body.index("client_max_body_size 10m;") > body.index("proxy_pass ")
        assert "proxy_read_timeout 300s;" in body
    healthz = server[server.index("location = /healthz {"):]
    assert "client_max_body_size" not in healthz[:healthz.index("\n    }\n")]


@pytest.mark.parametrize("directive, fragment", [
    ("ssl_verify_client off;", "client-certificate verification"),
    ("proxy_set_header X-Client-Verify SUCCESS;", "identity header"),
    ("proxy_pass http://evil;", "where requests go"),
    ("return 200;", "rewrite module"),
    ("rewrite ^ /admin;", "rewrite module"),
    ("set $mtls_api_443_unverified 0;", "rewrite module"),
    ("satisfy any;", "`satisfy any`"),
    ("auth_request /ok;", "auth_request"),
    ("error_page 403 =200 /x;", "refusals"),
    ("include /etc/nginx/evil.conf;", "cannot check"),
    ("js_import x.js;", "runs code"),
    ("access_by_lua_block;", "runs code"),
    ("underscores_in_headers on;", "identity header"),
    ("internal;", "what serves a request"),
    ("proxy_cache zone;", "another's response"),
    ("limit_req_zone $binary_remote_addr zone=x:1m rate=1r/s;", "http context"),
    ("frobnicate on;", "does not know it"),
])
def test_mtls037_triggers_for_directives_that_could_undo_a_gate(pki, tmp_path, directive, fragment):
    for server_block, route_block in ((f"nginx {{ {directive} }}", ""), ("", f"nginx {{ {directive} }}")):
        r = _compile(pki, tmp_path, _policy(pki, server_block, route_block))
        found = [d for d in r.diagnostics if d.code == "MTLS037"]
        assert r.failed and len(found) == 1, _codes(r)
        assert fragment in found[0].message and found[0].help
        assert found[0].span.line == (6 if server_block else 11)


@pytest.mark.parametrize("body", ["location /x { return 200; }", "if ($a) { return 200; }"])
def test_mtls037_triggers_for_blocks(pki, tmp_path, body):
    r = _compile(pki, tmp_path, _policy(pki, f"nginx {{ {body} }}"))
    assert "MTLS037" in _codes(r) and r.failed


def test_mtls037_triggers_for_a_server_only_directive_in_a_route(pki, tmp_path):
    r = _compile(pki, tmp_path, _policy(pki, "", "nginx { client_header_timeout 5s; }"))
    assert any(d.code == "MTLS037" and "only in a server" in d.message for d in r.diagnostics)
    assert not _compile(pki, tmp_path, _policy(pki, "nginx { client_header_timeout 5s; }")).failed


def test_mtls037_clean_for_the_documented_everyday_directives(pki, tmp_path):
    r = _compile(pki, tmp_path, _policy(pki, """nginx {
    add_header X-Content-Type-Options nosniff always;
    add_header X-Frame-Options DENY always;
    client_header_timeout 10s;
    keepalive_timeout 30s;
    access_log /var/log/nginx/api.log;
    limit_conn perip 10;
  }""", "nginx { client_max_body_size 50m; proxy_read_timeout 1h; limit_req zone=api burst=20 nodelay; gzip on; }"))
    assert not [c for c in _codes(r) if c.startswith("MTLS03")] and not r.failed


@pytest.mark.parametrize("body, fragment", [
    ("add_header X ${a;b};", "`{` or `}` inside an unquoted word"),
    ("add_header X", "unexpected end of file"),
    ("add_header X \"a\"b;", "after a closing quote"),
    ("; add_header X y;", "unexpected `;`"),
])
def test_mtls038_triggers_for_text_nginx_would_read_otherwise(pki, tmp_path, body, fragment):
    r = _compile(pki, tmp_path, _policy(pki, "nginx { " + body + " }"))
    found = [d for d in r.diagnostics if d.code == "MTLS038"]
    assert found and fragment in found[0].message and r.failed, _codes(r)


def test_mtls038_triggers_for_an_unclosed_quote_as_a_syntax_error(pki, tmp_path):
    r = _compile(pki, tmp_path, _policy(pki, 'nginx { add_header X "open; }'))
    assert _codes(r) == ["MTLS038"] and "does not end" in r.diagnostics[0].message


def test_directives_given_twice_are_reported_also_across_merged_blocks(pki, tmp_path):
    r = _compile(pki, tmp_path, _policy(pki, "nginx { client_max_body_size 1m; client_max_body_size 2m; }"))
    assert "MTLS013" in _codes(r)
    r = _compile(pki, tmp_path, _policy(pki, "nginx { add_header A b; add_header C d; }"))
    assert not r.failed  # add_header may repeat
    twice = _policy(pki, "nginx { keepalive_timeout 5s; }") + _policy(pki, "nginx { keepalive_timeout 9s; }").split("\n", 1)[1]
    r = _compile(pki, tmp_path, twice.replace("route = /healthz { public }", "", 1).replace("route /api {", "route /v2 {", 1))
    assert any(d.code == "MTLS013" and "two blocks" in d.message for d in r.diagnostics), _codes(r)


def test_fmt_lays_out_nginx_blocks_and_keeps_their_comments(pki):
    text = _policy(pki, "nginx {   add_header   A  \"b c\" always;  # why\n   # alone\n gzip on; }",
                   "nginx { limit_rate 10k; }")
    out, diags = format_text(Source("p.mtls", text))
    assert not diags and out is not None
    assert '  nginx {\n    add_header A "b c" always;  # why\n    # alone\n    gzip on;\n  }\n' in out
    assert "    nginx {\n      limit_rate 10k;\n    }\n" in out
    assert format_text(Source("p.mtls", out))[0] == out


def test_mtls037_refused_directive_on_the_command_line(pki, tmp_path):
    policy = tmp_path / "p.mtls"
    policy.write_text(f"""ca partners {{ bundle "{pki}/ca.pem" }}
server api.example.com {{
  certificate "{pki}/srv.crt" key "{pki}/srv.key"
  backend "http://127.0.0.1:9"
  route / {{
    require partners
    nginx {{ proxy_set_header X-Client-Verify SUCCESS; }}
  }}
}}
""")
    code, out, err = run_cli("compile", str(policy), "-o", str(tmp_path / "out"))
    assert code == 1 and "error[MTLS037]" in err and "proxy_set_header" in err
    assert not (tmp_path / "out").exists()


# ---- no text in a block can close it or add a directive ------------------------------------------

_PIECES = st.sampled_from(["a", "b", " ", ";", '"', "'", "#", "\n", "{", "}", "\\", "$", "${x}", "\\\"", "x y"])


def _directives(payload) -> list:
    return [d for d in payload if d["directive"] not in ("#",)]


def _server_directives(conf_path: Path) -> list:
    parsed = crossplane.parse(str(conf_path), single=True, check_ctx=False, check_args=False, comments=False)
    assert parsed["status"] == "ok", parsed["errors"]
    top = parsed["config"][0]["parsed"]
    return next(d for d in top if d["directive"] == "server")["block"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_a_block_can_never_close_the_server_or_add_unchecked_directives(pki, tmp_path, tail):
    """`add_header X` + generated text: refused with a located diagnostic, or emitted so that crossplane
    reads the server block as the same policy without the block plus exactly the accepted directives."""
    text = _policy(pki, "nginx { add_header X " + tail + "; }")
    r = _compile(pki, tmp_path, text)
    if r.failed:
        assert r.diagnostics and all(d.span.line >= 1 for d in r.diagnostics)
        return
    base = _compile(pki, tmp_path, _policy(pki))
    (tmp_path / "with.conf").write_text(_server_conf(r))
    (tmp_path / "without.conf").write_text(_server_conf(base))
    got, want = _server_directives(tmp_path / "with.conf"), _server_directives(tmp_path / "without.conf")
    extra = Counter((d["directive"], len(d["args"])) for d in got) - Counter((d["directive"], len(d["args"])) for d in want)
    accepted = r.policy.servers[0].nginx
    assert extra == Counter((d.name, len(d.words) - 1) for d in accepted)
    assert all(d.name in ALLOWED for d in accepted)
    assert [d["directive"] for d in got if "block" in d] == [d["directive"] for d in want if "block" in d]
