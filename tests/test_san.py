"""SAN identities and SHA-256 pins without nginx: the rules of mtlsc/san.py, the model, MTLS243.
The same rules on the real nginx: tests/test_san_nginx.py."""

from __future__ import annotations

import textwrap

import pytest

from mtlsc import ir, pipeline, san
from mtlsc.model.evaluate import Client, evaluate
from mtlsc.san import Sans, policy_rule
from support import REPO

CA = REPO / "policies" / "ca"


def sans(*names) -> Sans:
    return Sans(tuple((k, san.policy_rule("ip", v).value if k == "ip" else v) for k, v in names))


@pytest.mark.parametrize("kind, value, cert, ok", [
    ("spiffe", "spiffe://prod.example.org/ns/default/sa/web", [("uri", "spiffe://prod.example.org/ns/default/sa/web")], True),
    ("spiffe", "spiffe://prod.example.org/ns/default/sa/web", [("uri", "spiffe://prod.example.org.evil/ns/default/sa/web")], False),
    ("spiffe", "spiffe://prod.example.org/ns/default/sa/web", [("uri", "spiffe://prod.example.org/ns/default/sa/web"),
                                                               ("uri", "spiffe://prod.example.org/other")], False),
    ("spiffe", "spiffe://prod.example.org/ns/default/sa/web", [("uri", "SPIFFE://prod.example.org/ns/default/sa/web")], False),
    ("spiffe", "spiffe://prod.example.org/ns/default/sa/web", [("uri", "spiffe://PROD.example.org/ns/default/sa/web")], False),
    ("spiffe", "spiffe://prod.example.org/ns/default/sa/web", [("uri", "spiffe://prod.example.org/ns/default/sa/Web")], False),
    ("spiffe", "spiffe://prod.example.org/ns/default/sa/web", [("uri", "spiffe://prod.example.org/ns/default/sa/w%65b")], False),
    ("spiffe", "spiffe://prod.example.org/ns/default/sa/web", [("dns", "x.example.org"),
                                                               ("uri", "spiffe://prod.example.org/ns/default/sa/web")], True),
    ("spiffe", "spiffe://prod.example.org/ns/*/sa/web", [("uri", "spiffe://prod.example.org/ns/team-a/sa/web")], True),
    ("spiffe", "spiffe://prod.example.org/ns/*/sa/web", [("uri", "spiffe://prod.example.org/ns/a/b/sa/web")], False),
    ("spiffe", "spiffe://prod.example.org/ns/*/sa/web", [("uri", "spiffe://prod.example.org/ns/../sa/web")], False),
    ("uri", "urn:example:svc:Billing", [("uri", "URN:example:svc:Billing")], True),
    ("uri", "urn:example:svc:Billing", [("uri", "urn:example:svc:billing")], False),
    ("uri", "https://Svc.Example.org/Path", [("uri", "HTTPS://svc.example.ORG/Path")], True),
    ("uri", "https://svc.example.org/a%2Fb", [("uri", "https://svc.example.org/a/b")], False),
    ("dns", "api.example.org", [("dns", "API.Example.org")], True),
    ("dns", "api.example.org", [("dns", "evil-api.example.org")], False),
    ("dns", "*.example.org", [("dns", "a.example.org")], True),
    ("dns", "*.example.org", [("dns", "evil-example.org")], False),
    ("dns", "*.example.org", [("dns", "example.org")], False),
    ("dns", "*.example.org", [("dns", "a.b.example.org")], False),
    ("dns", "*.example.org", [("dns", "*.example.org")], False),
    ("dns", "*.example.org", [("dns", "a.example.org\n")], False),
    ("email", "ops@Example.org", [("email", "ops@example.ORG")], True),
    ("email", "ops@example.org", [("email", "Ops@example.org")], False),
    ("ip", "2001:db8::7", [("ip", "2001:0db8:0:0:0:0:0:7")], True),
    ("ip", "10.0.0.7", [("ip", "10.0.0.8")], False),
])
def test_rules(kind, value, cert, ok):
    assert san.matches(policy_rule(kind, value), sans(*cert)) is ok


def test_forwarded_values_are_encoded_and_comma_separated():
    s = sans(("uri", "urn:a,b"), ("uri", "spiffe://td/x"), ("ip", "2001:db8::1"), ("ip", "10.0.0.1"))
    assert san.forwarded(s, "uri") == "urn:a%2Cb,spiffe://td/x"
    assert san.forwarded(s, "ip") == "2001:db8::1,10.0.0.1"
    assert san.encode_value("a b%\r\n\u00e9") == "a%20b%25%0D%0A%C3%A9"
    assert s.spiffe_id == ""  # two URI SANs: no SPIFFE ID


POLICY = f"""\
nginx ">= 1.22" with njs
ca mesh {{ bundle "{CA / 'internal-root.pem'}"  depth 0 }}
ca legacy {{ bundle "{CA / 'vendors-root.pem'}"  depth 0 }}
identity web {{ san spiffe "spiffe://prod.example.org/ns/default/sa/web" }}
identity web2 {{ san uri "spiffe://prod.example.org/ns/*/sa/worker" }}
identity pin {{ fingerprint sha256 "{'ab' * 32}" }}
server api.example.com {{
  certificate "/x.crt" key "/x.key"  backend "http://127.0.0.1:8080"
  route /a/ {{ require mesh  allow web pin  forward spiffe_id }}
  route /b/ {{ require legacy  allow web2 }}
}}
"""


def _check(tmp_path, text):
    path = tmp_path / "p.mtls"
    path.write_text(textwrap.dedent(text))
    return pipeline.check([str(path)])


def test_mtls243_triggers_when_two_cas_vouch_for_one_trust_domain(tmp_path):
    result = _check(tmp_path, POLICY)
    hits = [d for d in result.diagnostics if d.code == "MTLS243"]
    assert len(hits) == 1 and hits[0].span.line == 10 and "prod.example.org" in hits[0].message


def test_mtls243_clean_with_one_ca_per_trust_domain(tmp_path):
    result = _check(tmp_path, POLICY.replace("spiffe://prod.example.org/ns/*", "spiffe://legacy.example.org/ns/*"))
    assert result.policy is not None
    assert "MTLS243" not in [d.code for d in result.diagnostics]


def test_model_matches_svid_with_empty_subject_and_sha256_pin(tmp_path):
    policy = _check(tmp_path, POLICY).policy
    server = policy.servers[0]
    svid = Client("", "", verified_by="mesh", sans=sans(("uri", "spiffe://prod.example.org/ns/default/sa/web")))
    out = evaluate(server, "/a/x", svid)
    assert out.status == 200 and out.headers == (("X-Client-Spiffe-Id", "spiffe://prod.example.org/ns/default/sa/web"),)
    assert evaluate(server, "/a/x", Client("", "", verified_by="mesh", sha256="ab" * 32)).status == 200
    assert evaluate(server, "/a/x", Client("CN=spiffe://prod.example.org/ns/default/sa/web", "",
                                           verified_by="mesh")).reason == "forbidden"


def test_identities_with_the_same_san_are_one_identity(tmp_path):
    result = _check(tmp_path, POLICY.replace('identity pin', 'identity web3 { san dns "a.example.org" }\nidentity web4 { san dns "A.example.org" }\nidentity pin'))
    assert "MTLS025" in [d.code for d in result.diagnostics]
