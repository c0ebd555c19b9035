"""Each main trap `mtlsc audit` reports, exploited on real nginx against the original fixture config
and closed by the policy `mtlsc import` writes for it (`mtlsc.audit.prove`: both run on loopback with
the same minted clients, and every request carries forged copies of the config's identity headers).

A row is (request, client) -> what the original answered -> what the compiled policy answered."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlsc.audit import audit
from mtlsc.audit.importer import import_configs
from mtlsc.audit.prove import prove_import
from support import HERE, run_cli

pytestmark = pytest.mark.nginx
FIXTURES = HERE / "fixtures" / "audit"


def _prove(name: str, tmp_path: Path, nginx_bin: str):
    result = audit([str(FIXTURES / name)])
    table = prove_import(result.configs[0], import_configs(result.configs), tmp_path / "p.mtls",
                         nginx_bin=nginx_bin, workdir=tmp_path / "lab")
    codes = {(d.code, d.span.line) for d in result.diagnostics}
    return codes, {(r.ask.server, r.ask.sni, r.ask.path, r.client): r for r in table.rows}


def test_default_server_hole_lets_the_default_servers_ca_in_without_sni_and_the_import_closes_it(tmp_path, nginx_bin):
    codes, rows = _prove("default_server.conf", tmp_path, nginx_bin)
    assert ("MTLS510", 8) in codes
    with_sni = rows[("internal.example.com", True, "/x", "other.pem: CN=mtlsc-prove,O=Nowhere")]
    assert not with_sni.original.allowed and not with_sni.policy.allowed  # the SNI path was always closed
    hole = rows[("internal.example.com", False, "/x", "other.pem: CN=mtlsc-prove,O=Nowhere")]
    assert hole.original.reached  # another CA's certificate reaches the `on` server without SNI
    assert not hole.policy.allowed and hole.policy.status == 0  # mtlsc's default server refuses the handshake
    own = rows[("internal.example.com", True, "/x", "clients.pem: CN=mtlsc-prove,O=Nowhere")]
    assert own.original.reached and own.policy.reached


def test_location_proxy_set_header_drops_identity_headers_and_the_import_sets_them_everywhere(tmp_path, nginx_bin):
    codes, rows = _prove("header_spoof.conf", tmp_path, nginx_bin)
    assert ("MTLS514", 21) in codes
    spoof = rows[("app.example.com", True, "/upload/x", "no certificate")]
    assert spoof.original.reached and spoof.original.forged == ("X-Client-DN", "X-Client-Verify")
    assert spoof.policy.reached and spoof.policy.forged == ()
    inherited = rows[("app.example.com", True, "/x", "no certificate")]
    assert inherited.original.forged == () and inherited.policy.forged == ()


def test_unanchored_dn_regex_admits_a_comma_in_the_cn_and_the_import_does_not(tmp_path, nginx_bin):
    codes, rows = _prove("dn_unanchored.conf", tmp_path, nginx_bin)
    assert ("MTLS520", 5) in codes
    forged = rows[("orders.example.com", True, "/orders/x", "clients.pem: CN=mallory\\,O=Acme")]
    assert forged.original.reached and not forged.policy.allowed and forged.policy.status == 403
    honest = rows[("orders.example.com", True, "/orders/x", "clients.pem: O=Acme")]
    assert honest.original.reached and honest.policy.reached
    other = rows[("orders.example.com", True, "/orders/x", "clients.pem: CN=mtlsc-prove,O=Nowhere")]
    assert not other.original.allowed and not other.policy.allowed


def test_optional_no_ca_hands_any_certificate_to_the_backend_and_the_import_requires_a_verified_one(tmp_path, nginx_bin):
    codes, rows = _prove("optional_no_ca.conf", tmp_path, nginx_bin)
    assert ("MTLS512", 16) in codes
    stranger = rows[("portal.example.com", True, "/app/x", "unknown CA: CN=mtlsc-prove,O=Nowhere")]
    assert stranger.original.reached and not stranger.policy.allowed
    checked = rows[("portal.example.com", True, "/checked/x", "unknown CA: CN=mtlsc-prove,O=Nowhere")]
    assert not checked.original.allowed and not checked.policy.allowed
    member = rows[("portal.example.com", True, "/app/x", "clients.pem: CN=mtlsc-prove,O=Nowhere")]
    assert member.original.reached and member.policy.reached


def test_optional_without_check_lets_anyone_in_and_forged_headers_through(tmp_path, nginx_bin):
    codes, rows = _prove("blog_optional.conf", tmp_path, nginx_bin)
    assert {("MTLS513", 21), ("MTLS514", 21)} <= codes
    reports = rows[("api.example.com", True, "/reports/x", "no certificate")]
    assert reports.original.forged == ("X-SSL-Client-DN",) and reports.policy.forged == ()
    admin = rows[("api.example.com", True, "/admin/x", "no certificate")]
    assert not admin.original.allowed and not admin.policy.allowed


def test_verify_on_locks_out_the_health_check_and_the_import_makes_it_public(tmp_path, nginx_bin):
    codes, rows = _prove("verify_on.conf", tmp_path, nginx_bin)
    assert ("MTLS511", 13) in codes
    probe = rows[("ledger.example.com", True, "/healthz", "no certificate")]
    assert probe.original.status == 400 and not probe.original.allowed
    assert probe.policy.reached
    private = rows[("ledger.example.com", True, "/x", "no certificate")]
    assert not private.original.allowed and not private.policy.allowed


def test_regex_location_and_raw_target_around_a_gated_prefix(tmp_path, nginx_bin):
    codes, rows = _prove("paths.conf", tmp_path, nginx_bin)
    assert {("MTLS530", 19), ("MTLS531", 23)} <= codes
    taken = rows[("shop.example.com", True, "/private/.json", "no certificate")]
    assert taken.original.reached and not taken.policy.allowed
    raw = rows[("shop.example.com", True, "/private/../status", "no certificate")]
    assert raw.original.reached and not raw.policy.allowed and raw.policy.status == 400


def test_cli_import_prove_prints_the_rows_that_differ(tmp_path, nginx_bin):
    code, out, err = run_cli("import", str(FIXTURES / "header_spoof.conf"), "-o", str(tmp_path / "p.mtls"),
                             "--prove", "--nginx", nginx_bin)
    assert code == 0, err
    assert "answer differently" in out
    assert "/upload/x" in out and "forged X-Client-DN, X-Client-Verify" in out
    assert (tmp_path / "p.mtls").read_text().startswith("# Imported by `mtlsc import`")
