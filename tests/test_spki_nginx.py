"""SPKI pins on the real nginx with njs (docs/language.md "Certificate and key pins"): the
certificate's public key, hashed as `openssl pkey -pubin -outform DER | openssl dgst -sha256`
prints it, is what the gate compares and what `forward spki_sha256` sends. A client renewed with
the same key keeps access; one with the same subject and another key is refused. The PKI is the
user's kind: plain `openssl` commands (tests/openssl_pki.py), RSA and EC client keys."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from mtlsc import pipeline
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.run import run_lab
from mtlsc.model.evaluate import Client, evaluate
from mtlsc.output import write_atomic
from openssl_pki import OpensslCa, openssl

pytestmark = pytest.mark.nginx

POLICY = """\
nginx ">= 1.22" with njs
ca corp {{ bundle "{d}/ca/ca.pem"  depth 0 }}
identity alice {{ fingerprint spki "{alice}" }}
identity bob {{ fingerprint spki "sha256//{bob_b64}" }}
identity carol {{ fingerprint sha256 "{carol}" }}
server api.example.com {{
  listen 127.0.0.1:{port}
  certificate "{d}/srv.crt" key "{d}/srv.key"
  install "{d}/out/mtls"
  backend "http://127.0.0.1:{echo}"
  route /keys/ {{ require corp  allow alice bob carol  forward verify spki_sha256 fingerprint_sha256 }}
  route /any/ {{ require corp  allow any  forward spki_sha256 }}
}}
"""

# label -> (subject, key type, the label whose key it reuses or None)
CLIENTS = {
    "alice": ("/O=Corp/CN=alice", "rsa", None),
    "alice-renewed": ("/O=Corp/CN=alice", "rsa", "alice"),
    "alice-other-key": ("/O=Corp/CN=alice", "rsa", None),
    "bob": ("/O=Corp/CN=bob", "ec", None),
    "bob-renewed": ("/O=Corp/CN=bob", "ec", "bob"),
    "bob-other-key": ("/O=Corp/CN=bob", "ec", None),
    "carol": ("/O=Corp/CN=carol", "ec", None),
    "carol-renewed": ("/O=Corp/CN=carol", "ec", "carol"),
}
ALLOWED = {"alice", "alice-renewed", "bob", "bob-renewed", "carol"}


def spki_of(crt: Path) -> str:
    """The HPKP value, computed the way a user would: openssl's own commands."""
    pub = openssl("x509", "-in", str(crt), "-noout", "-pubkey")
    der = crt.with_suffix(".spki.der")
    pub_file = crt.with_suffix(".pub.pem")
    pub_file.write_text(pub)
    openssl("pkey", "-pubin", "-in", str(pub_file), "-outform", "DER", "-out", str(der))
    return openssl("dgst", "-sha256", "-r", str(der)).split()[0]


def sha256_of(crt: Path) -> str:
    out = openssl("x509", "-in", str(crt), "-noout", "-fingerprint", "-sha256")
    return out.strip().split("=", 1)[1].replace(":", "").lower()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("spki")
    ca = OpensslCa.root(d / "ca", "/O=Corp/CN=Corp Root", kind="rsa")
    ca.issue(d / "srv", "/CN=api.example.com", extensions="server")
    clients = {}
    for label, (subject, kind, reuse) in CLIENTS.items():
        crt = ca.issue(d / label, subject, key_kind=kind, reuse_key=d / f"{reuse}.key" if reuse else None)
        clients[label] = (crt, d / f"{label}.key", spki_of(crt), sha256_of(crt))
    bob_b64 = base64.b64encode(bytes.fromhex(clients["bob"][2])).decode()
    port = free_port()
    with running_echo_backend() as echo:
        (d / "p.mtls").write_text(POLICY.format(d=d, port=port, echo=echo.port, alice=clients["alice"][2],
                                                bob_b64=bob_b64, carol=clients["carol"][3]))
        result = pipeline.compile_policy([str(d / "p.mtls")])  # now: openssl dates its CA to the second
        assert not result.failed, [(x.code, x.severity, x.message) for x in result.diagnostics if x.code != "MTLS104"]
        write_atomic(d / "out", result.outputs)
        with running_nginx(f"include {d}/out/nginx/*.conf;", d / "nginx", ports=[port]):
            yield result.policy.servers[0], port, clients, echo


def test_the_pki_is_what_the_cases_say(lab):
    _, _, clients, _ = lab
    assert clients["alice"][2] == clients["alice-renewed"][2] != clients["alice-other-key"][2]
    assert clients["bob"][2] == clients["bob-renewed"][2] != clients["bob-other-key"][2]
    assert clients["alice"][3] != clients["alice-renewed"][3]  # a renewal is another certificate
    assert clients["carol"][3] != clients["carol-renewed"][3]


@pytest.mark.parametrize("label", list(CLIENTS))
def test_a_key_pin_admits_its_key_in_any_certificate_and_nothing_else(lab, label):
    server, port, clients, echo = lab
    crt, key, spki, sha = clients[label]
    echo.clear()
    got = request("127.0.0.1", port, "/keys/x", server_name="api.example.com", cert=crt, key=key)
    want = evaluate(server, "/keys/x", Client("", "", verified_by="corp", sha256=sha, spki=spki))
    assert got.status == want.status == (200 if label in ALLOWED else 403), (label, got.status, got.body)
    if want.status != 200:
        assert echo.snapshot() == []
        return
    [seen] = echo.snapshot()
    assert seen.header_values("X-Client-Spki-Sha256") == [spki]  # openssl's value, from njs
    assert seen.header_values("X-Client-Fingerprint-Sha256") == [sha]
    assert dict(want.headers)["X-Client-Spki-Sha256"] == spki


@pytest.mark.parametrize("label", ["alice", "bob-other-key"])
def test_spki_forwarded_for_any_client_and_never_spoofed(lab, label):
    _, port, clients, echo = lab
    crt, key, spki, _ = clients[label]
    echo.clear()
    got = request("127.0.0.1", port, "/any/x", server_name="api.example.com", cert=crt, key=key,
                  headers=[("X-Client-Spki-Sha256", "0" * 64)])
    assert got.status == 200, got.body
    [seen] = echo.snapshot()
    assert seen.header_values("X-Client-Spki-Sha256") == [spki]


LAB_POLICY = """\
nginx ">= 1.22" with njs
ca corp { bundle "ca/root.pem"  depth 0 }
identity deploy { fingerprint spki "sha256//n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=" }
identity ops { subject "CN=ops,O=Corp" }
server api.example.com {
  listen 8443
  certificate "/etc/nginx/tls/api.crt" key "/etc/nginx/tls/api.key"
  backend "http://127.0.0.1:9000"
  route /deploy/ { require corp  allow deploy ops  forward verify spki_sha256 }
  route /any/ { require corp  forward spki_sha256 fingerprint_sha256 }
}
"""


def test_the_lab_proves_a_key_pin_its_renewal_and_its_near_miss(tmp_path, nginx_bin):
    policy = tmp_path / "p.mtls"
    policy.write_text(LAB_POLICY)
    run = run_lab([str(policy)], tmp_path / "lab", nginx_bin=nginx_bin)
    assert run.returncode == 0 and run.failed == 0 and run.skipped == 0, run.output
    deploy = "PASS  api.example.com/deploy/ (require corp): "
    for case in ("identity deploy -> 200", "identity deploy renewed with the same key -> 200",
                 "near miss of identity deploy (CN=mtlsc-spki-deploy,O=mtlsc lab, another key) -> 403 forbidden"):
        assert run.output.count(deploy + case) == 1, run.output
    assert "PASS  api.example.com/any/ (require corp): identity deploy -> 200" in run.output
    assert run.requests and any(r.header_values("X-Client-Spki-Sha256") for r in run.requests)


def test_the_lab_with_your_own_openssl_ca_key(tmp_path, nginx_bin):
    from mtlsc.lab.userca import CaKey

    ca = OpensslCa.root(tmp_path / "ca", "/O=Corp/CN=Corp Root", kind="rsa")
    policy = tmp_path / "p.mtls"
    policy.write_text(LAB_POLICY.replace('"ca/root.pem"', f'"{ca.cert}"'))
    run = run_lab([str(policy)], tmp_path / "lab", nginx_bin=nginx_bin, ca_keys=[CaKey("corp", ca.key)])
    assert run.returncode == 0 and run.failed == 0 and run.skipped == 0, run.output
    assert "PASS  api.example.com/deploy/ (require corp): identity deploy renewed with the same key -> 200" in run.output
