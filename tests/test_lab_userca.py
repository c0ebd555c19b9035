"""The user's own CAs in the lab and in `mtlsc mint-cast` (mtlsc.lab.userca), on a PKI made with plain
`openssl`: keys attach to their certificates (or name one below the bundle), bad keys are refused with a
reason, the lab's copy of a policy points only into its workdir except at the user's own CA files, and
CAs naming the same files share one chain. No nginx here: tests/test_lab_userpki_nginx.py and
tests/test_mint_cast_nginx.py run these on it."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509

from mtlsc import dn, ir, pipeline
from mtlsc.lab.pki import build_lab_pki, make_crl
from mtlsc.lab.rewrite import CaFiles, rewrite_for_lab
from mtlsc.lab.run import lab_ca_files, user_cas
from mtlsc.lab.userca import CaKey, UserCaError, load_user_ca, parse_ca_key
from mtlsc.parse import parse
from mtlsc.source import Source, read_source
from openssl_pki import OpensslCa, make_user_pki, openssl
from support import run_cli

NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return make_user_pki(tmp_path_factory.mktemp("user"))


@pytest.fixture(scope="module")
def policy(user) -> ir.Policy:
    return pipeline.read_and_lower([str(user.policy)]).policy


def _ca(policy: ir.Policy, name: str) -> ir.Ca:
    return next(c for c in policy.cas if c.name == name)


def test_parse_ca_key():
    assert parse_ca_key("corp=k.pem") == CaKey("corp", Path("k.pem"))
    assert parse_ca_key("corp=k.pem:c.pem") == CaKey("corp", Path("k.pem"), Path("c.pem"))
    for bad in ("corp", "=k.pem", "corp="):
        with pytest.raises(UserCaError):
            parse_ca_key(bad)


def test_a_key_attaches_to_its_certificate_in_the_bundle(user, policy):
    corp = load_user_ca(_ca(policy, "corp"), [CaKey("corp", user.corp_issuing.key)])
    root, issuing = corp.chain.members
    assert dn.nginx_dn_of(root.cert.subject) == "CN=Corp Root,O=Corp" and root.key is None
    assert corp.chain.signer is issuing and corp.chain.user
    # its CRL is the one the lab may sign again, the user's entries kept (the revoked `gone`)
    gone = x509.load_pem_x509_certificate((user.dir / "clients" / "gone.crt").read_bytes()).serial_number
    assert list(corp.resign) == [1] and [r.serial_number for r in corp.resign[1][1]] == [gone]
    bare = load_user_ca(_ca(policy, "corp"), [])
    assert bare.chain.signer is None and bare.resign == {}


def test_a_key_below_the_bundle_names_its_certificate(user, tmp_path):
    sub = user.corp_issuing.sub_ca(tmp_path / "team", "/O=Corp/CN=Team CA")
    policy = pipeline.read_and_lower([str(user.policy)]).policy
    with pytest.raises(UserCaError, match="name its certificate: --ca-key corp="):
        load_user_ca(_ca(policy, "corp"), [CaKey("corp", sub.key)])
    corp = load_user_ca(_ca(policy, "corp"), [CaKey("corp", sub.key, sub.cert)])
    assert corp.chain.signer is corp.chain.below[0]
    assert corp.chain.sent_with_leaves == (corp.chain.below[0].cert,)  # its clients send it along


def test_keys_that_do_not_fit_are_refused_with_a_reason(user, policy, tmp_path):
    with pytest.raises(UserCaError, match="not the key of"):
        load_user_ca(_ca(policy, "corp"), [CaKey("corp", user.partners.key, user.corp_root.cert)])
    locked = tmp_path / "locked.key"
    openssl("pkey", "-in", str(user.partners.key), "-aes256", "-passout", "pass:secret", "-out", str(locked))
    with pytest.raises(UserCaError, match="is encrypted: mtlsc takes an unencrypted key"):
        load_user_ca(_ca(policy, "partners"), [CaKey("partners", locked)])
    with pytest.raises(UserCaError, match="the policy has no ca `corpp`"):
        user_cas(policy, [CaKey("corpp", user.corp_root.key)])
    stranger = OpensslCa.root(tmp_path / "stranger", "/CN=Stranger")
    with pytest.raises(UserCaError, match="neither in ca corp's bundle nor signed by a certificate in it"):
        load_user_ca(_ca(policy, "corp"), [CaKey("corp", stranger.key, stranger.cert)])


def test_the_lab_copy_points_into_the_workdir_except_at_the_users_own_files(user, policy, tmp_path):
    users = user_cas(policy, [CaKey("corp", user.corp_issuing.key)])
    assert set(users) == {"corp"}
    files = lab_ca_files(policy, tmp_path / "ca", users)
    corp, partners = files["corp"], files["partners"]
    assert corp.bundle == (str(user.dir / "corp-root" / "ca.pem"), str(user.dir / "corp-issuing" / "ca.pem"))
    # the issuing CA's CRL is signed again by the lab (its revoked client added); the root's stays the user's
    assert corp.crls == (str(user.dir / "corp-root.crl"), str(tmp_path / "ca" / "00-corp-issuing.crl"))
    assert all(p.startswith(str(tmp_path / "ca")) for p in (*partners.bundle, *partners.crls))
    source = read_source(str(user.policy))
    text = rewrite_for_lab(source, parse(source)[0], port_for=lambda *_: 1, cert_dir="/c", backend="http://b",
                           install_dir="/i", ca_files=files, ocsp_responder="http://127.0.0.1:2/", add_responder=True)
    assert f'bundle "{user.dir}/corp-root/ca.pem" "{user.dir}/corp-issuing/ca.pem"' in text
    assert f'crl "{user.dir}/corp-root.crl" "{tmp_path}/ca/00-corp-issuing.crl"' in text


def test_the_tests_files_keep_their_ca_and_the_same_files_are_one_ca(user, policy):
    assert set(user_cas(policy, named={"partners"})) == {"partners"}
    twice = ir.Ca("again", _ca(policy, "corp").bundle, 1, (), None)
    doubled = dataclasses.replace(policy, cas=(*policy.cas, twice))
    assert set(user_cas(doubled, named={"corp"})) == {"corp", "again"}


def test_add_responder_gives_an_ocsp_line_the_labs_responder():
    source = Source("x.mtls", 'ca a { bundle "r.pem"  ocsp leaf }\n'
                    'ca b { bundle "s.pem"  ocsp leaf responder "http://10.0.0.1/" }\n')
    text = rewrite_for_lab(source, parse(source)[0], port_for=lambda *_: 1, cert_dir="/c", backend="http://b",
                           install_dir="/i", ocsp_responder="http://127.0.0.1:7/", add_responder=True,
                           ca_files={"a": CaFiles(("/w/r.pem",), ())})
    assert 'ca a { bundle "/w/r.pem"  ocsp leaf responder "http://127.0.0.1:7/" }' in text
    assert 'ocsp leaf responder "http://127.0.0.1:7/" }\n' in text.splitlines(keepends=True)[1]


def test_cas_naming_the_same_files_share_one_chain_and_one_crl(tmp_path):
    rej = ir.Rejections(ir.Response(401, "n"), ir.Response(403, "b"), ir.Response(403, "f"))
    files = (str(tmp_path / "r.pem"), str(tmp_path / "i.pem"))
    crls = (str(tmp_path / "r.crl"), str(tmp_path / "i.crl"))
    a, b = ir.Ca("a", files, 1, crls, None), ir.Ca("b", files, 1, crls, None)
    servers = tuple(ir.Server((f"{ca.name}.test",), (ir.Listen("127.0.0.1", 9443 + n),), "/c", "/k",
                              "http://127.0.0.1:9", False, "/m",
                              (ir.Route(ir.PathMatch.PREFIX, "/", ir.Mode.REQUIRE, ca, (), True, (), "http://127.0.0.1:9"),),
                              rej) for n, ca in enumerate((a, b)))
    pki = build_lab_pki(ir.Policy((1, 22, 1), (a, b), (), servers), tmp_path / "out", now=NOW)
    assert pki.chains["a"].members == pki.chains["b"].members
    assert x509.load_pem_x509_certificate((tmp_path / "i.pem").read_bytes()) == pki.chains["a"].issuing.cert
    crl = x509.load_pem_x509_crl((tmp_path / "i.crl").read_bytes())
    revoked = {x509.load_pem_x509_certificate(pki.client(f"{n}/revoked")[0].read_bytes()).serial_number for n in "ab"}
    assert {r.serial_number for r in crl} == revoked and crl.is_signature_valid(pki.chains["a"].issuing.cert.public_key())


def test_mint_cast_says_what_it_cannot_mint_and_why(user, tmp_path):
    code, _, err = run_cli("mint-cast", str(user.policy), "--ca-key", f"corp={user.corp_root.key}",
                           "--out", str(tmp_path / "cast"))
    assert code == 1  # partners' clients are missing: tests.sh would skip them
    assert "partners/id-acme: no key of ca partners was given (it is your own CA): pass --ca-key partners=KEY.pem" in err
    assert "corp/lookalike-by-partners: its sub-CA is signed by ca partners: no key of ca partners" in err
    leaf = x509.load_pem_x509_certificate((tmp_path / "cast" / "corp" / "id-alice.crt").read_bytes())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(user.corp_root.cert.read_bytes()))
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 7
    code, _, err = run_cli("mint-cast", str(user.policy), "--ca-key", f"corp={user.corp_root.key}",
                           "--out", str(tmp_path / "cast"))
    assert code == 2 and "is not empty; pass --force" in err
    code, _, err = run_cli("mint-cast", str(user.policy), "--ca-key", f"nope={user.corp_root.key}",
                           "--out", str(tmp_path / "other"))
    assert code == 2 and "the policy has no ca `nope`" in err


def test_an_ed25519_ca_key_issues_clients_and_crls(tmp_path):
    ca = OpensslCa.root(tmp_path / "ed", "/O=Ed/CN=Ed Root", kind="ed25519")
    policy = tmp_path / "ed.mtls"
    policy.write_text(f'ca ed {{ bundle "{ca.cert}" }}\nserver e.test {{ certificate "/c" key "/k" backend "http://127.0.0.1:9"\n'
                      '  route / { require ed  allow any } }\n')
    code, _, err = run_cli("mint-cast", str(policy), "--ca-key", f"ed={ca.key}", "--out", str(tmp_path / "cast"))
    assert code == 0, err
    root = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    x509.load_pem_x509_certificate((tmp_path / "cast" / "ed" / "client.crt").read_bytes()).verify_directly_issued_by(root)
    signer = load_user_ca(_ca(pipeline.read_and_lower([str(policy)]).policy, "ed"), [CaKey("ed", ca.key)]).chain.signer
    assert make_crl(signer, [7], now=NOW).is_signature_valid(root.public_key())


def test_the_lab_refuses_a_key_of_another_ca_before_anything_starts(user, tmp_path):
    code, _, err = run_cli("lab", str(user.policy), "--ca-key", f"corp={user.partners.key}",
                           "--workdir", str(tmp_path / "lab"))
    assert code == 2 and "is not the key of a certificate in ca corp's bundle" in err, err
    assert not (tmp_path / "lab").exists()
