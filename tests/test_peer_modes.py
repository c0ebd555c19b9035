"""Modes users of other proxies ask for, without nginx: `reject no_cert 302 "URL"` (ingress-nginx's
auth-tls-error-page) and `passthrough` (ingress-nginx's optional_no_ca, MTLS244). On the real nginx:
tests/test_peer_modes_nginx.py."""

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


PASSTHROUGH = """\
ca mesh {{ bundle "{ca}"  depth 0 }}
server legacy.test {{
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route / {{ passthrough  {forward} }}
{more}}}
"""


def _check(tmp_path, **kw):
    from support import REPO

    args = {"ca": REPO / "policies" / "ca" / "internal-root.pem", "forward": "forward cert verify", "more": ""}
    args.update(kw)
    (tmp_path / "p.mtls").write_text(PASSTHROUGH.format(**args))
    return pipeline.check([str(tmp_path / "p.mtls")])


def test_mtls244_triggers_on_a_passthrough_route(tmp_path):
    hits = [d for d in _check(tmp_path, forward="forward subject").diagnostics if d.code == "MTLS244"]
    assert len(hits) == 1 and "does not forward `cert` or `verify`" in hits[0].message


def test_mtls244_clean_without_passthrough(tmp_path):
    text = _check(tmp_path, forward="").policy
    assert text is not None
    (tmp_path / "p.mtls").write_text((tmp_path / "p.mtls").read_text().replace("passthrough", "require mesh"))
    assert "MTLS244" not in {d.code for d in pipeline.check([str(tmp_path / "p.mtls")]).diagnostics}


def test_passthrough_does_not_share_a_server_with_ca_routes(tmp_path):
    result = _check(tmp_path, more="  route /a/ { require mesh  allow any }\n")
    assert any(d.code == "MTLS016" and "shares server" in d.message for d in result.diagnostics)
