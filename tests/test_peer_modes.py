"""Modes users of other proxies ask for, without nginx: `reject no_cert 302 "URL"` (ingress-nginx's
auth-tls-error-page). On the real nginx: tests/test_redirect_nginx.py."""

from __future__ import annotations

from mtlsc import pipeline

POLICY = """\
ca mesh {{ bundle "{d}/root.pem"  depth 0 }}
identity alice {{ cn "alice"  o "mesh" }}
server api.test {{
  listen 127.0.0.1:{port}
  certificate "{d}/srv.crt" key "{d}/srv.key"
  backend "http://127.0.0.1:9"
  {handshake}
  reject no_cert 302 "{url}"
  route /a/ {{ require mesh  allow alice }}
}}
"""


def test_only_no_cert_redirects_and_only_to_https(tmp_path):
    text = POLICY.format(d=tmp_path, port=8443, handshake="", url="http://help.example.org/")
    text = text.replace('reject no_cert 302 "http://help.example.org/"',
                        'reject no_cert 302 "http://help.example.org/"\n  reject forbidden 302 "https://x.example.org/"')
    (tmp_path / "p.mtls").write_text(text)
    result = pipeline.check([str(tmp_path / "p.mtls")])
    messages = [(d.code, d.message) for d in result.diagnostics]
    assert ("MTLS012", "a redirect needs an absolute `https://` URL") in messages
    assert ("MTLS012", "`reject forbidden` cannot redirect") in messages
