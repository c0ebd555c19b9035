"""Trust-file traps of `mtlsc audit` (MTLS540-MTLS546) on real nginx: each fixture in
tests/fixtures/audit/trust/ is copied next to the CA and CRL files the test mints for it, the
original runs with those very files (`mtlsc.audit.prove.as_written`: only addresses, the server
certificate and the backend point at the lab), and real TLS clients show the over-trust or lockout.

Then `mtlsc import`: where the imported policy names the same broken files, `mtlsc check` refuses
to compile it with the policy-side code (that is how mtlsc closes the trap); where it compiles, it
runs on nginx with the same clients. MTLS541 runs through `mtlsc.audit.prove` (it needs no file
contents: a minted CA per file reproduces it)."""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mtlsc import pipeline
from mtlsc.audit import audit
from mtlsc.audit.importer import import_configs, render
from mtlsc.audit.prove import as_written, compile_lab, prove_import
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import free_port, quote, running_nginx
from mtlsc.lab.pki import issue_client, issue_server, make_chain, make_crl, make_root, write_pem
from support import HERE

pytestmark = pytest.mark.nginx
FIXTURES = HERE / "fixtures" / "audit"
TRUST = FIXTURES / "trust"
NOW = datetime.now(timezone.utc)
_EXPECT = re.compile(r"# expect: ((?:MTLS\d{3} ?)+)")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")])


def _client(tmp_path: Path, issuer, cn: str) -> tuple[Path, Path]:
    leaf = issue_client(issuer, _name(cn), now=NOW)
    return write_pem(tmp_path / "clients" / f"{cn}.crt", leaf.cert), write_pem(tmp_path / "clients" / f"{cn}.key", leaf.key)


def _audited(name: str, tmp_path: Path):
    """The fixture copied into tmp_path (its trust files are written there by the caller first),
    audited; asserts that exactly its marked findings (warnings and errors) are reported."""
    path = tmp_path / name
    shutil.copy(TRUST / name, path)
    result = audit([str(path)], now=NOW)
    marked = sorted((n, code) for n, line in enumerate(path.read_text().split("\n"), 1)
                    if (m := _EXPECT.search(line)) for code in m[1].split())
    found = sorted((d.span.line, d.code) for d in result.diagnostics if str(d.severity) != "note")
    assert found == marked, result.diagnostics
    return result


def _server_cert(tmp_path: Path, config) -> tuple[Path, Path]:
    names = sorted({n for s in config.servers for n in s.names if n and n != "_"}) or ["localhost"]
    srv = issue_server(make_root("lab server ca", now=NOW), names, now=NOW)
    return write_pem(tmp_path / "lab-server.crt", srv.cert), write_pem(tmp_path / "lab-server.key", srv.key)


@contextmanager
def _original(result, tmp_path: Path, nginx_bin: str, echo_backend):
    """The original config on nginx with its own trust files; yields (its TLS port, the nginx)."""
    config = result.configs[0]
    ports = {lst.key: free_port() for s in config.servers for lst in s.listens}
    conf = as_written(config, _server_cert(tmp_path, config), ports, echo_backend.url)
    with running_nginx(conf, tmp_path / "nginx-original", ports=list(ports.values()), nginx_bin=nginx_bin) as nginx:
        yield next(iter(ports.values())), nginx


def _get(port: int, host: str, client, echo_backend):
    """(status, did the backend get it)"""
    echo_backend.clear()
    cert, key = client or (None, None)
    resp = request("127.0.0.1", port, "/x", server_name=host, cert=cert, key=key)
    return resp.status, bool(echo_backend.snapshot())


def _check_imported(result, tmp_path: Path) -> set[str]:
    """The codes of the errors `mtlsc check` reports on the imported policy, which names the original's
    trust files (the server certificate points at a lab one, so that only trust files are judged)."""
    imported = import_configs(result.configs)
    crt, key = _server_cert(tmp_path, result.configs[0])
    paths = {p: str(f) for srv in imported.servers for p, f in ((srv.certificate, crt), (srv.key, key))}
    policy = tmp_path / "imported.mtls"
    policy.write_text(render(imported, paths=paths))
    checked = pipeline.check([str(policy)], now=NOW)
    return {d.code for d in checked.diagnostics if str(d.severity) == "error"}


def test_mtls540_every_ca_of_a_public_store_copy_lets_its_clients_in_and_the_import_is_refused(
        tmp_path, nginx_bin, echo_backend):
    """The lab cannot obtain a certificate from a real public CA, so the copied store holds, beside a
    real public root (which is what the audit recognises), a minted CA standing in for any other CA
    of the store: its clients are as welcome as the company's own."""
    own, stranger = make_root("acme clients", now=NOW), make_root("some store ca", now=NOW)
    public = Path("/etc/ssl/certs/ca-certificates.crt").read_text().split("-----END CERTIFICATE-----")[0]
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "bundle.pem").write_text(public + "-----END CERTIFICATE-----\n" + own.cert_pem() + stranger.cert_pem())
    result = _audited("public_ca.conf", tmp_path)
    member, outsider = _client(tmp_path, own, "alice"), _client(tmp_path, stranger, "anyone")
    nobody = _client(tmp_path, make_root("not in the store", now=NOW), "nobody")
    with _original(result, tmp_path, nginx_bin, echo_backend) as (port, nginx):
        assert _get(port, "intranet.example.com", member, echo_backend) == (200, True)
        assert _get(port, "intranet.example.com", outsider, echo_backend) == (200, True)  # the hole
        assert _get(port, "intranet.example.com", nobody, echo_backend) == (400, False)
    # the imported `ca` names the same file: mtlsc refuses public CAs in a bundle
    assert "MTLS230" in _check_imported(result, tmp_path)


def test_mtls541_ssl_trusted_certificate_lets_its_cas_clients_in_and_the_import_leaves_it_out(tmp_path, nginx_bin):
    result = audit([str(FIXTURES / "trusted_widens.conf")], now=NOW)
    assert ("MTLS541", 10) in {(d.code, d.span.line) for d in result.diagnostics}
    table = prove_import(result.configs[0], import_configs(result.configs), tmp_path / "p.mtls",
                         nginx_bin=nginx_bin, workdir=tmp_path / "lab")
    rows = {(r.ask.path, r.client): r for r in table.rows}
    widened = rows[("/x", "stapling.pem: CN=mtlsc-prove,O=Nowhere")]
    assert widened.original.reached  # a client of the stapling file's CA gets `SUCCESS`
    assert not widened.policy.allowed and widened.policy.status == 403
    member = rows[("/x", "clients.pem: CN=mtlsc-prove,O=Nowhere")]
    assert member.original.reached and member.policy.reached


def test_mtls542_only_the_issuing_cas_crl_locks_everyone_out_and_the_import_is_refused(
        tmp_path, nginx_bin, echo_backend):
    chain = make_chain("hr", 1, now=NOW)
    write_pem(tmp_path / "ca" / "chain.pem", *(m.cert for m in chain.members))
    write_pem(tmp_path / "ca" / "issuing.crl", make_crl(chain.issuing, [], now=NOW))
    result = _audited("crl_missing.conf", tmp_path)
    below_issuing, below_root = _client(tmp_path, chain.issuing, "alice"), _client(tmp_path, chain.root, "bob")
    with _original(result, tmp_path, nginx_bin, echo_backend) as (port, nginx):
        # checking the issuing CA itself needs the root's CRL: `unable to get certificate CRL` for all
        assert _get(port, "hr.example.com", below_issuing, echo_backend) == (400, False)
        assert _get(port, "hr.example.com", below_root, echo_backend) == (400, False)
        assert nginx.error_log().count("unable to get certificate CRL") == 2
    assert "MTLS102" in _check_imported(result, tmp_path)


def test_mtls543_an_expired_crl_locks_every_client_out_and_the_import_is_refused(tmp_path, nginx_bin, echo_backend):
    root = make_root("crm clients", now=NOW)
    write_pem(tmp_path / "ca" / "clients.pem", root.cert)
    write_pem(tmp_path / "ca" / "clients.crl", make_crl(root, [], now=NOW, next_update=-timedelta(days=2)))
    result = _audited("crl_expired.conf", tmp_path)
    with _original(result, tmp_path, nginx_bin, echo_backend) as (port, nginx):
        assert _get(port, "crm.example.com", _client(tmp_path, root, "alice"), echo_backend) == (400, False)
        assert _get(port, "crm.example.com", None, echo_backend) == (400, False)
        assert "CRL has expired" in nginx.error_log()
    assert "MTLS306" in _check_imported(result, tmp_path)


def test_mtls544_default_verify_depth_locks_out_clients_two_intermediates_down_and_the_import_is_refused(
        tmp_path, nginx_bin, echo_backend):
    """The original sets no depth, so the imported `ca` has none either, and mtlsc's default is nginx's
    (1): `mtlsc check` refuses the policy with MTLS110 until it says `depth 2`; then the client gets in."""
    chain = make_chain("erp", 2, now=NOW)
    write_pem(tmp_path / "ca" / "chain.pem", *(m.cert for m in chain.members))
    result = _audited("verify_depth.conf", tmp_path)
    deep, shallow = _client(tmp_path, chain.issuing, "alice"), _client(tmp_path, chain.intermediates[0], "bob")
    with _original(result, tmp_path, nginx_bin, echo_backend) as (port, nginx):
        assert _get(port, "erp.example.com", deep, echo_backend) == (400, False)  # `unable to get issuer certificate`
        assert _get(port, "erp.example.com", shallow, echo_backend) == (200, True)
        assert "unable to get issuer certificate" in nginx.error_log()
    assert "MTLS110" in _check_imported(result, tmp_path)
    imported = import_configs(result.configs)
    assert [c.depth for c in imported.cas] == [None]
    imported.cas[0].depth = 2  # what MTLS110's fix says
    port = free_port()
    out = compile_lab(imported, {p: str(f) for srv in imported.servers
                                 for p, f in zip((srv.certificate, srv.key), _server_cert(tmp_path, result.configs[0]))},
                      {"443": f"127.0.0.1:{port}"}, echo_backend.url, tmp_path, NOW)
    with running_nginx(f"include {quote(str(out) + '/*.conf')};", tmp_path / "nginx-policy", ports=[port],
                       nginx_bin=nginx_bin):
        assert _get(port, "erp.example.com", deep, echo_backend) == (200, True)


def test_mtls546_without_revocation_a_revoked_client_gets_in_and_the_import_keeps_that_until_a_crl_is_given(
        tmp_path, nginx_bin):
    """The import cannot invent a CRL: the policy it writes lets the revoked client in too (and
    `mtlsc check` does not flag a `ca` without `crl`), with a comment in the `ca` asking for one. Closing it takes the fix the finding names:
    a `crl` for the CA, after which mtlsc's compiled server refuses the revoked client."""
    result = audit([str(FIXTURES / "no_revocation.conf")], now=NOW)
    assert ("MTLS546", 10) in {(d.code, d.span.line) for d in result.diagnostics}
    imported = import_configs(result.configs)
    table = prove_import(result.configs[0], imported, tmp_path / "p.mtls", nginx_bin=nginx_bin, workdir=tmp_path / "lab")
    revoked = next(r for r in table.rows if r.client == "clients.pem: revoked")
    assert revoked.original.reached and revoked.policy.reached
    member = next(r for r in table.rows if r.client == "clients.pem: CN=mtlsc-prove,O=Nowhere")
    assert member.original.reached and member.policy.reached
    assert [c.crl for c in imported.cas] == [None]
    assert "# no revocation: the original names no `ssl_crl`" in render(imported)
    # the fix: the CA's CRL (the lab's, which revokes that client) named in the policy
    imported.cas[0].crl = "clients.crl"
    lab = tmp_path / "lab"
    port = free_port()
    paths = {imported.cas[0].bundle: str(lab / "ca" / "0.pem"), "clients.crl": str(lab / "ca" / "0.crl"),
             imported.servers[0].certificate: str(lab / "server.crt"), imported.servers[0].key: str(lab / "server.key")}
    with running_echo_backend() as echo:
        out = compile_lab(imported, paths, {"443": f"127.0.0.1:{port}"}, echo.url, tmp_path / "fixed",
                          datetime.now(timezone.utc))
        with running_nginx(f"include {quote(str(out) + '/*.conf')};", tmp_path / "nginx-fixed", ports=[port],
                           nginx_bin=nginx_bin):
            assert _get(port, "vault.example.com", (lab / "clients" / "r0.crt", lab / "clients" / "r0.key"), echo) == (403, False)
