"""The `backend_ca` / `backend_name` / `backend_client_certificate` / `backend_verify` statements:
parsed, laid out by fmt, lowered with located errors, merged across blocks (docs/language.md
"Backends over TLS"). Their effect on real nginx: tests/test_backend_tls_nginx.py."""

from __future__ import annotations

from mtlsc import ir, pipeline
from mtlsc.review.diff import run_diff
from mtlsc.review.fmt import format_paths

HEAD = """server a.example.com {
  certificate "/tmp/x.crt" key "/tmp/x.key"
  backend "https://10.0.0.1:8443"
"""


def _check(tmp_path, body: str, name: str = "p.mtls"):
    path = tmp_path / name
    path.write_text(HEAD + body + "  route / { public }\n}\n")
    return pipeline.check([str(path)])


def test_settings_reach_the_ir(tmp_path):
    r = _check(tmp_path, '  backend_ca "/etc/nginx/backend-ca.pem"\n  backend_name "ledger.internal"\n'
                         '  backend_client_certificate "/etc/nginx/me.crt" key "/etc/nginx/me.key"\n')
    assert r.policy.servers[0].backend_tls == ir.BackendTls(True, "/etc/nginx/backend-ca.pem", "ledger.internal",
                                                            "/etc/nginx/me.crt", "/etc/nginx/me.key")
    assert not [d for d in r.diagnostics if d.severity.name == "ERROR"]


def test_errors_are_located(tmp_path):
    r = _check(tmp_path, '  backend_verify maybe\n  backend_name "bad name!"\n  backend_ca "/a"\n  backend_ca "/b"\n')
    got = sorted((d.code, d.span.line) for d in r.diagnostics if d.severity.name == "ERROR")
    assert got == [("MTLS012", 4), ("MTLS013", 7), ("MTLS024", 5)]


def test_blocks_of_one_server_must_agree(tmp_path):
    (tmp_path / "a.mtls").write_text(HEAD + '  backend_name "one.internal"\n  route /a/ { public }\n}\n')
    (tmp_path / "b.mtls").write_text(HEAD + '  backend_name "two.internal"\n  route /b/ { public }\n}\n')
    r = pipeline.check([str(tmp_path / "a.mtls"), str(tmp_path / "b.mtls")])
    assert "MTLS023" in {d.code for d in r.diagnostics}


def test_fmt_lays_them_out_and_keeps_them(tmp_path):
    path = tmp_path / "p.mtls"
    path.write_text(HEAD + '  backend_ca   "/c.pem"\n  backend_client_certificate  "/m.crt"   key "/m.key"\n'
                           '  backend_verify   off\n  route / { public }\n}\n')
    format_paths([str(path)])
    assert path.read_text() == (HEAD + '  backend_ca "/c.pem"\n  backend_client_certificate "/m.crt" key "/m.key"\n'
                                       '  backend_verify off\n  route / { public }\n}\n')


def test_diff_says_turning_verification_off_widens(tmp_path):
    old, new = tmp_path / "old.mtls", tmp_path / "new.mtls"
    old.write_text(HEAD + '  backend_ca "/c.pem"\n  route / { public }\n}\n')
    new.write_text(HEAD + '  backend_ca "/c.pem"\n  backend_verify off\n  route / { public }\n}\n')
    code, out, _ = run_diff(str(old), str(new), fail_on="widening")
    assert code == 1 and "widening   a.example.com: the `https://` backend is no longer verified" in out


def test_mtls237_clean_when_the_https_backend_is_verified(tmp_path):
    r = _check(tmp_path, '  backend_ca "/c.pem"\n')
    assert "MTLS237" not in {d.code for d in r.diagnostics}
    off_but_plain = tmp_path / "plain.mtls"
    off_but_plain.write_text(HEAD.replace("https://", "http://") + "  backend_verify off\n  route / { public }\n}\n")
    assert "MTLS237" not in {d.code for d in pipeline.check([str(off_but_plain)]).diagnostics}
