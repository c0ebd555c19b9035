"""`mtlsc import`: what a hand-written config becomes in a policy, the comment at every construct
left out, and that the policy it writes compiles (no nginx here: tests/test_audit_nginx.py runs both)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mtlsc import pipeline
from mtlsc.audit import audit
from mtlsc.audit.dn_tests import DnTest
from mtlsc.audit.importer import identity_body, import_configs, render
from mtlsc.lab.pki import make_crl, make_root, write_pem
from support import HERE, run_cli

FIXTURES = HERE / "fixtures" / "audit"
NOW = datetime.now(timezone.utc)
IMPORTABLE = ["blog_optional.conf", "default_server.conf", "dn_unanchored.conf", "header_spoof.conf",
              "ingress_nginx.conf", "optional_no_ca.conf", "paths.conf", "verify_on.conf", "with_includes.conf",
              "clean.conf", "tls.conf", "if_misuse.conf", "dn_regex.conf"]


def _imported(name: str):
    return import_configs(audit([str(FIXTURES / name)], now=NOW).configs)


@pytest.mark.parametrize(("pattern", "regex", "icase", "body"), [
    ("O=Acme", True, False, 'o "Acme"'),
    ("^CN=[^,]+,O=Globex,C=US$", True, False, 'o "Globex"  c "US"'),
    ("^CN=alice,O=Acme Corp,C=US$", True, False, 'subject "CN=alice,O=Acme Corp,C=US"'),
    ("^CN=billing-[a-z0-9]+,OU=Services", True, False, 'cn ~ "^billing-[a-z0-9]+$"  ou "Services"'),
    ("CN=alice,O=Acme", False, False, 'subject "CN=alice,O=Acme"'),
    ("/C=US/O=Umbrella/CN=ops", False, False, 'subject "CN=ops,O=Umbrella,C=US"'),
    ("^CN=(alice|bob),O=Acme", True, False, 'cn ~ "^(alice|bob)$"  o "Acme"'),
    ("^CN=(?!admin)[a-z]+,O=Acme", True, False, None),  # a look-ahead cannot be confined to the value
    ("^(CN=a|CN=b),O=Acme", True, False, None),
])
def test_dn_tests_become_identities_when_they_are_exact_or_safe(pattern, regex, icase, body):
    got, _ = identity_body(DnTest(None, 0, "ssl_client_s_dn", pattern, regex, icase))
    assert got == body


def test_routes_modes_identities_and_forwarded_headers():
    text = render(_imported("dn_unanchored.conf"))
    assert "identity acme { o \"Acme\" }" in text
    assert 'route /orders/ { require clients  allow acme  forward verify subject as "X-Client-DN" }' in text
    assert "handshake require" in text
    text = render(_imported("blog_optional.conf"))
    assert 'route /admin/ { require clients  allow any  forward subject as "X-SSL-Client-DN" }' in text
    assert "route /reports/ { optional clients  forward verify }" in text


def test_every_construct_left_out_gets_a_comment_saying_why():
    text = render(_imported("paths.conf"))
    assert "# not carried over: regex `location ~ \\.(json|csv)$` (paths.conf:19)" in text
    text = render(_imported("ingress_nginx.conf"))
    assert "no exact name (it was a catch-all)" in text
    assert "not carried over: `listen 80` (ingress_nginx.conf:33) has no TLS" in text
    assert "was a string prefix (it also matched `/invoices-x`)" in text
    text = render(_imported("verify_on.conf"))
    assert "imported as `public`" in text and "`return 200 ok\\n`" in text
    text = render(_imported("optional_no_ca.conf"))
    assert "`ssl_verify_client optional_no_ca` is not carried over" in text
    text = render(_imported("if_misuse.conf"))
    assert "no location could be carried over" not in text  # the server stays, its static files noted
    assert "the original answered with files or nginx itself" in text


@pytest.mark.parametrize("name", IMPORTABLE)
def test_the_imported_policy_compiles(name, tmp_path):
    imported = _imported(name)
    root = make_root("import test", now=NOW)
    ca = write_pem(tmp_path / "ca.pem", root.cert)
    crl = write_pem(tmp_path / "ca.crl", make_crl(root, [], now=NOW))
    paths = {c.bundle: str(ca) for c in imported.cas} | {c.crl: str(crl) for c in imported.cas if c.crl}
    policy = tmp_path / "p.mtls"
    policy.write_text(render(imported, paths=paths))
    result = pipeline.check([str(policy)], now=NOW)
    errors = [(d.code, d.message) for d in result.diagnostics if str(d.severity) == "error"]
    assert not errors, policy.read_text()


def test_cli_import_writes_the_policy_and_says_what_it_did(tmp_path):
    out = tmp_path / "p.mtls"
    code, _, err = run_cli("import", str(FIXTURES / "paths.conf"), "-o", str(out))
    assert code == 0 and "wrote" in err and "1 server(s), 2 route(s)" in err
    assert out.read_text().count("\n  route ") == 2
    assert run_cli("import", str(tmp_path / "nope.conf"), "-o", str(out))[0] == 2
