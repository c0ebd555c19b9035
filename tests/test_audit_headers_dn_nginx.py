"""Header, DN-test and `if` traps of `mtlsc audit` (MTLS515, MTLS521, MTLS522, MTLS523) and the
lockout side of MTLS510, shown on real nginx against the original fixture config and then on the
policy `mtlsc import` writes for it (`mtlsc.audit.prove`: both sides run on loopback with the same
minted clients, each request carrying forged copies of the identity headers and of their `_` twins).

A row is (server, SNI sent, path, client) -> what the original answered -> what the policy answered.

MTLS523's other form, a directive other than `return` inside an `if` on a certificate field
(`if_misuse.conf`), is only checked statically (tests/test_audit.py): it changes which configuration
serves a matching request, not who gets in, so there is no exploit to show on nginx."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlsc.audit import audit
from mtlsc.audit.importer import import_configs, render
from mtlsc.audit.prove import prove_import
from support import HERE

pytestmark = pytest.mark.nginx
FIXTURES = HERE / "fixtures" / "audit"


def _prove(name: str, tmp_path: Path, nginx_bin: str):
    result = audit([str(FIXTURES / name)])
    imported = import_configs(result.configs)
    table = prove_import(result.configs[0], imported, tmp_path / "p.mtls", nginx_bin=nginx_bin, workdir=tmp_path / "lab")
    codes = {(d.code, d.span.line) for d in result.diagnostics}
    return codes, {(r.ask.server, r.ask.sni, r.ask.path, r.client): r for r in table.rows}, render(imported)


def test_mtls515_underscored_twin_of_an_identity_header_reaches_the_backend_and_the_import_drops_it(tmp_path, nginx_bin):
    codes, rows, _ = _prove("underscores.conf", tmp_path, nginx_bin)
    assert ("MTLS515", 3) in codes
    member = rows[("legacy.example.com", True, "/x", "clients.pem: CN=mtlsc-prove,O=Nowhere")]
    # nginx set the real X-Client-DN, and still passed the client's `X_Client_DN: forged-by-client` beside it:
    # a CGI/WSGI/PHP backend reads both as HTTP_X_CLIENT_DN
    assert member.original.reached and member.original.forged == ("X_Client_DN", "X_Client_Verify")
    assert {h.upper().replace("-", "_") for h in ("X_Client_DN", "X-Client-DN")} == {"X_CLIENT_DN"}
    assert member.policy.reached and member.policy.forged == ()  # mtlsc: `underscores_in_headers off`
    stranger = rows[("legacy.example.com", True, "/x", "unknown CA: CN=mtlsc-prove,O=Nowhere")]
    assert not stranger.original.allowed and not stranger.policy.allowed


def test_mtls521_escaped_comma_in_the_cn_satisfies_the_comma_anchored_regex_and_the_import_does_not(tmp_path, nginx_bin):
    codes, rows, text = _prove("dn_comma.conf", tmp_path, nginx_bin)
    assert ("MTLS521", 5) in codes
    # CN `a,O=Globex`, C=US: nginx prints `CN=a\,O=Globex,C=US`, and `[^,]+` stops at the escaped comma
    forged = rows[("partners.example.com", True, "/partners/x", "clients.pem: CN=a\\,O=Globex,C=US")]
    assert forged.original.reached
    assert not forged.policy.allowed and forged.policy.status == 403
    honest = rows[("partners.example.com", True, "/partners/x", "clients.pem: CN=a,O=Globex,C=US")]
    assert honest.original.reached and honest.policy.reached
    other = rows[("partners.example.com", True, "/partners/x", "clients.pem: CN=mtlsc-prove,O=Nowhere")]
    assert other.original.status == 403 and other.policy.status == 403
    assert 'identity globex_us { o "Globex"  c "US" }' in text


def test_mtls522_dn_tests_in_a_form_or_case_nginx_never_prints_lock_out_and_ignoring_case_over_trusts(
        tmp_path, nginx_bin):
    codes, rows, text = _prove("dn_case.conf", tmp_path, nginx_bin)
    assert {("MTLS522", 6), ("MTLS522", 26)} <= codes
    # the legacy `/C=US/O=Umbrella/CN=ops` map key: nginx prints `CN=ops,O=Umbrella,C=US`, the key never matches
    ops = rows[("ops.example.com", True, "/umbrella/x", "clients.pem: CN=ops,O=Umbrella,C=US")]
    assert ops.original.status == 403 and not ops.original.reached
    assert ops.policy.reached
    # `!~ "^cn=deploy,..."`: nginx prints `CN=`, so the regex never matches and the `if` refuses everyone
    deploy = rows[("ops.example.com", True, "/deploy/x", "clients.pem: CN=deploy,O=Acme,C=US")]
    assert deploy.original.status == 403 and not deploy.original.reached
    assert deploy.policy.reached
    # and the import lets in only whom each test named
    assert not rows[("ops.example.com", True, "/deploy/x", "clients.pem: CN=ops,O=Umbrella,C=US")].policy.allowed
    assert not rows[("ops.example.com", True, "/umbrella/x", "clients.pem: CN=deploy,O=Acme,C=US")].policy.allowed
    assert 'subject "CN=ops,O=Umbrella,C=US"' in text and 'subject "CN=deploy,O=Acme,C=US"' in text
    # `!~* "^CN=billing-[a-z0-9]+,O=Initech$"`: the other way round, letters of any case pass
    assert ("MTLS522", 33) in codes
    shouted = rows[("ops.example.com", True, "/billing/x", "clients.pem: CN=BILLING-A,O=iNITECH")]
    assert shouted.original.reached and not shouted.policy.allowed and shouted.policy.status == 403
    meant = rows[("ops.example.com", True, "/billing/x", "clients.pem: CN=billing-a,O=Initech")]
    assert meant.original.reached and meant.policy.reached
    assert 'cn ~ "^billing-[a-z0-9]+$"  o "Initech"' in text


def test_mtls523_a_gate_on_a_value_nginx_never_sets_is_open_and_the_import_closes_it(tmp_path, nginx_bin):
    """`if ($ssl_client_verify = FAILED)` never fires: under `optional` a client without a certificate
    (`NONE`) walks through, and a failed certificate never reaches the location at all (400).

    The test was meant to refuse, so the import fails closed: `require clients` (the finding's fix,
    `!= SUCCESS`), with a comment saying why and how to keep the old access if it was intended."""
    codes, rows, text = _prove("if_never.conf", tmp_path, nginx_bin)
    assert ("MTLS523", 14) in codes
    anyone = rows[("admin.example.com", True, "/admin/x", "no certificate")]
    assert anyone.original.reached and anyone.original.forged == ()
    assert not anyone.policy.allowed and not anyone.policy.reached
    assert "route /admin/ { require clients  allow any  forward verify" in text
    assert "never fired (nginx never sets that value)" in text
    member = next(r for (server, sni, path, client), r in rows.items()
                  if path == "/admin/x" and sni and client.startswith("clients.pem"))
    assert member.original.reached and member.policy.reached  # a real client keeps its access
    failed = rows[("admin.example.com", True, "/admin/x", "unknown CA: CN=mtlsc-prove,O=Nowhere")]
    assert failed.original.status == 400 and not failed.policy.allowed


def test_mtls510_lockout_a_default_server_that_asks_for_no_certificate_locks_out_clients_without_sni(
        tmp_path, nginx_bin):
    """Without SNI the handshake is the default server's, which asks for no certificate; the request is
    then served by its Host, `internal.example.com` (`on`): 400 `No required SSL certificate was sent`
    to a client that holds a good certificate.

    mtlsc does not make such clients work: its own default server refuses handshakes without SNI
    (clients must send SNI, docs/language.md), so the 400 becomes a refused handshake, and with SNI the
    same client gets in on both sides."""
    codes, rows, _ = _prove("default_server_lockout.conf", tmp_path, nginx_bin)
    assert ("MTLS510", 8) in codes
    member = "clients.pem: CN=mtlsc-prove,O=Nowhere"
    locked = rows[("internal.example.com", False, "/x", member)]
    assert locked.original.status == 400 and not locked.original.reached
    assert locked.policy.status == 0 and not locked.policy.reached
    with_sni = rows[("internal.example.com", True, "/x", member)]
    assert with_sni.original.reached and with_sni.policy.reached
    public = rows[("www.example.com", True, "/x", "no certificate")]
    assert public.original.reached and public.policy.reached
