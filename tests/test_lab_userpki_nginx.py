"""`mtlsc lab` with the user's own PKI, made with plain `openssl` (tests/openssl_pki.py): two CAs, clients
issued by a root and by an intermediate. Policy test cases naming the user's certificate files get on the
lab's nginx the answer `mtlsc test` gives (the lab trusts the user's CA files as they are, and never writes
to them); with the CA keys (`--ca-key`) the lab mints its cast from them and nothing is skipped; without,
what it cannot mint is skipped and fails the lab unless --allow-skips. Also: two `ca` blocks naming the same
files, `forward cert` and the other certificate fields in tests.sh, and a relative --workdir."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from mtlsc.lab.run import run_lab
from openssl_pki import make_user_pki
from support import REPO, run_cli

pytestmark = pytest.mark.nginx


def _digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return make_user_pki(tmp_path_factory.mktemp("user"))


def test_the_users_own_certificates_and_ca_keys_pass_with_nothing_skipped(user, tmp_path):
    before = _digests(user.dir)
    code, out, err = run_cli("lab", str(user.policy), "--ca-key", f"corp={user.corp_issuing.key}",
                             "--ca-key", f"partners={user.partners.key}", "--workdir", str(tmp_path / "lab"))
    assert code == 0, out + err
    assert re.search(r"^\d+ passed, 0 failed  \(", out, re.M), out  # nothing skipped
    for name in ("alice, issued by the corp issuing CA", "bob, issued by the corp root itself",
                 "acme, issued by the partners root", "carol is corp's but on no allow list",
                 "a certificate revoked on the issuing CA's CRL", "an identity mtlsc mints"):
        assert re.search(rf"^    ok    {re.escape(name)}", out, re.M), out
    # the cast came from the user's keys: its revoked client is on a CRL the lab signed with the issuing key
    assert "PASS  revoked certificate of ca corp -> 403 bad_cert" in out
    assert "PASS  look-alike: a sub-CA signed by ca partners, named like the issuing CA of ca corp" in out
    assert "test clients issued by CN=Corp Issuing CA,O=Corp" in err
    assert _digests(user.dir) == before, "the lab wrote to the user's files"
    # `mtlsc test` gives every case the same answer
    code, model, _ = run_cli("test", str(user.policy))
    assert code == 0 and model.rstrip().endswith("9 passed, 0 failed"), model


def test_without_keys_the_lab_trusts_the_users_files_and_fails_on_what_it_cannot_mint(user, tmp_path):
    code, out, err = run_cli("lab", str(user.policy), "--workdir", str(tmp_path / "lab"))
    assert code == 1, out + err
    assert "the policy tests name certificates it signed" in err
    # the user's own certificates get the answer their nginx gives...
    for name in ("alice, issued by the corp issuing CA", "bob, issued by the corp root itself",
                 "acme, issued by the partners root", "alice's subject from a CA nobody trusts"):
        assert re.search(rf"^    ok    {re.escape(name)}", out, re.M), out
    # ...and what needs a key is skipped, saying which, and fails the lab
    assert re.search(r"^    skip  an identity mtlsc mints.*\n.*pass --ca-key corp=KEY\.pem", out, re.M), out
    assert re.search(r"corp/client, .*: no key of ca corp was given \(it is your own CA\): pass --ca-key corp=KEY.pem",
                     out), out
    assert "skipped cases fail the lab" in out
    assert re.search(r"^\d+ passed, 0 failed, \d+ skipped", out, re.M), out
    code, out, err = run_cli("lab", str(user.policy), "--allow-skips", "--workdir", str(tmp_path / "lab2"))
    assert code == 0, out + err
    assert "skipped cases fail the lab" not in out


def test_a_root_key_mints_the_cast_below_the_root(user, tmp_path):
    code, out, err = run_cli("lab", str(user.policy), "--ca-key", f"corp={user.corp_root.key}",
                             "--ca-key", f"partners={user.partners.key}", "--workdir", str(tmp_path / "lab"))
    assert code == 0, out + err
    assert "test clients issued by CN=Corp Root,O=Corp" in err
    assert re.search(r"^\d+ passed, 0 failed  \(", out, re.M), out


SAME_FILES = """\
ca web {{ bundle "{d}/root.pem" "{d}/issuing.pem"  crl "{d}/root.crl" "{d}/issuing.crl" }}
ca api {{ bundle "{d}/root.pem" "{d}/issuing.pem"  crl "{d}/root.crl" "{d}/issuing.crl" }}
identity alice {{ subject "CN=alice,O=Corp" }}
server web.example.com {{
  certificate "/etc/nginx/tls/web.crt" key "/etc/nginx/tls/web.key"
  backend "http://127.0.0.1:9"
  route = /health {{ public }}
  route /app/ {{ require web allow alice forward subject cert not_before not_after days_remaining }}
}}
server api.example.com {{
  certificate "/etc/nginx/tls/api.crt" key "/etc/nginx/tls/api.key"
  backend "http://127.0.0.1:9"
  route = /health {{ public }}
  route /v1/ {{ require api allow alice forward fingerprint serial issuer }}
}}
"""


def _same_files_policy(tmp_path: Path) -> Path:
    """Two `ca` blocks naming the same files (absolute paths), on two servers: `mtlsc check` is clean."""
    d = tmp_path / "pki"
    d.mkdir()
    policy = tmp_path / "same.mtls"
    policy.write_text(SAME_FILES.format(d=d))
    code, _, err = run_cli("demo-pki", str(policy))
    assert code == 0, err
    code, _, err = run_cli("check", str(policy))
    assert code == 0 and "0 errors, 0 warnings" in err, err
    return policy


def test_two_ca_blocks_naming_the_same_files(tmp_path, nginx_bin):
    policy = _same_files_policy(tmp_path)
    before = _digests(tmp_path / "pki")
    run = run_lab([str(policy)], tmp_path / "lab", nginx_bin=nginx_bin)
    assert run.ok and run.failed == 0 and run.skipped == 0, run.output
    assert _digests(tmp_path / "pki") == before, "the lab wrote to the policy's files"
    # one chain for both blocks, as in production
    assert run.pki.chains["web"].members == run.pki.chains["api"].members
    # `forward cert not_before not_after days_remaining`: tests.sh compares each with the certificate file
    assert "PASS  web.example.com/app/ (require web): identity alice -> 200" in run.output


def _forward_dn_as_cert(out: Path) -> None:
    conf = next((out / "nginx").glob("web.example.com_*.conf"))
    text = conf.read_text()
    assert "$ssl_client_escaped_cert" in text
    conf.write_text(text.replace("$ssl_client_escaped_cert", "$ssl_client_s_dn"))


def test_tests_sh_checks_the_forwarded_certificate_itself(tmp_path, nginx_bin):
    run = run_lab([str(_same_files_policy(tmp_path))], tmp_path / "lab", nginx_bin=nginx_bin, tamper=_forward_dn_as_cert)
    assert not run.ok
    assert re.search(r"^FAIL  web.example.com/app/ \(require web\): identity alice -> 200: backend got "
                     r"\"X-Client-Cert: CN=alice,O=Corp\", want its cert$", run.output, re.M), run.output


def test_a_relative_workdir(tmp_path):
    code, out, err = run_cli("lab", "--workdir", "rel", str(REPO / "policies" / "service-mesh.mtls"), cwd=tmp_path)
    assert code == 0, out + err
    assert (tmp_path / "rel" / "out" / "tests.sh").exists()
