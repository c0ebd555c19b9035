"""Checks that read the CA and CRL files (MTLS102, 110-116, 201, 230-234, 301-315).

Each code has a triggering case (`test_mtlsNNN_triggers...`) and a clean one
(`test_mtlsNNN_clean...`). PKIs are minted at test time into tmp_path, next to a small policy;
`mtlsc.pipeline.check` runs on it with a fixed `now`, and each test asserts the code, the
line:col of the policy string it points at and a fragment of the message.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from mtlsc import pipeline
from mtlsc.checks import trust_files
from mtlsc.diagnostics import Severity
from mtlsc.lab.pki import Issued, issue_client, make_chain, make_crl, make_intermediate, make_root, write_pem

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

SERVER = """
server a.test {
  listen 8443
  certificate "/etc/nginx/a.crt" key "/etc/nginx/a.key"
  backend "http://127.0.0.1:9000"
  route = /healthz { public }
  route /p/ { require c  allow any }
ROUTES}
"""


# ----- helpers ------------------------------------------------------------------------------------

def _run(tmp_path: Path, text: str, now: datetime = NOW):
    (tmp_path / "p.mtls").write_text(text)
    return text, pipeline.check([str(tmp_path / "p.mtls")], now=now).diagnostics


def _policy(ca_body: str, more: str = "", routes: str = "") -> str:
    return f'nginx ">= 1.22"\n\nca c {{\n{ca_body}\n}}\n{more}' + SERVER.replace("ROUTES", routes)


def _pos(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """(line, col) of the nth occurrence of `needle` in the policy text, 1-based."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def _found(diags, code: str) -> list:
    return [d for d in diags if d.code == code]


def _one(diags, code: str):
    found = _found(diags, code)
    assert len(found) == 1, [(d.code, str(d.span), d.message) for d in diags]
    return found[0]


def _where(d) -> tuple[int, int]:
    return d.span.line, d.span.col


def _write(tmp_path: Path, name: str, *objs) -> str:
    write_pem(tmp_path / name, *objs)
    return name


def _chain(tmp_path: Path, intermediates: int = 1, crls: bool = True, **kw):
    """root (+ intermediates) written as r.pem, i1.pem, ...; CRLs r.crl, i1.crl, ... ."""
    chain = make_chain("t", intermediates, now=NOW)
    names = ["r"] + [f"i{n}" for n in range(1, intermediates + 1)]
    for name, member in zip(names, chain.members):
        _write(tmp_path, f"{name}.pem", member.cert)
        if crls:
            _write(tmp_path, f"{name}.crl", make_crl(member, [], now=NOW, **kw))
    return chain


def _custom(subject_cn: str, *, issuer: Issued | None = None, ca: bool | None = True, key_cert_sign: bool = True,
            path_length: int | None = None, permitted: list[x509.Name] | None = None,
            ocsp_url: str | None = None) -> Issued:
    """A certificate with hand-picked extensions (basicConstraints None: leave it out)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.cert.subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=365))
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    b = b.add_extension(x509.KeyUsage(True, False, False, False, False, key_cert_sign, True, False, False), critical=True)
    if permitted:
        b = b.add_extension(x509.NameConstraints([x509.DirectoryName(n) for n in permitted], None), critical=True)
    if ocsp_url:
        aia = x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))
        b = b.add_extension(x509.AuthorityInformationAccess([aia]), critical=False)
    return Issued(b.sign(issuer.key if issuer else key, hashes.SHA256()), key)


GOOD_CA = '  bundle "r.pem" "i1.pem"\n  depth 1\n  crl "r.crl" "i1.crl"'
MINE = {"MTLS102", "MTLS110", "MTLS111", "MTLS112", "MTLS113", "MTLS114", "MTLS115", "MTLS116", "MTLS201",
        "MTLS230", "MTLS231", "MTLS232", "MTLS233", "MTLS234", *(f"MTLS{n}" for n in range(301, 316))}


def test_a_sound_pki_gives_no_file_finding_and_no_error(tmp_path):
    _chain(tmp_path)
    _, diags = _run(tmp_path, _policy(GOOD_CA))
    assert not [d for d in diags if d.code in MINE or d.severity is Severity.ERROR], diags


# ----- MTLS102: CRL coverage by CA certificate ---------------------------------------------------

def test_mtls102_triggers_with_only_the_intermediates_crl(tmp_path):
    _chain(tmp_path)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  crl "i1.crl"'))
    d = _one(diags, "MTLS102")
    assert _where(d) == _pos(text, '"r.pem"') and d.severity is Severity.ERROR
    assert "none for the root" in d.message and "every client is rejected" in d.message
    assert "`CN=t root,O=mtlsc lab`" in d.message and "unable to get certificate CRL" in d.message
    assert d.related[0].span.line == _pos(text, '"i1.crl"')[0]


def test_mtls102_triggers_with_only_the_roots_crl(tmp_path):
    _chain(tmp_path)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  crl "r.crl"'))
    d = _one(diags, "MTLS102")
    assert _where(d) == _pos(text, '"i1.pem"')
    assert "has none for `CN=t intermediate 1,O=mtlsc lab`" in d.message and "below it" in d.message


def test_mtls102_triggers_for_a_second_ca_without_crl(tmp_path):
    _chain(tmp_path)
    other = make_root("other", now=NOW)
    _write(tmp_path, "o.pem", other.cert)
    routes = "  route /q/ { require d  allow any }\n"
    text, diags = _run(tmp_path, _policy(GOOD_CA, 'ca d {\n  bundle "o.pem"\n  depth 0\n}\n', routes))
    d = _one(diags, "MTLS102")
    assert _where(d) == _pos(text, '"o.pem"') and "CN=other,O=mtlsc lab" in d.message


def test_mtls102_triggers_for_a_crl_of_the_same_name_but_another_key(tmp_path):
    _chain(tmp_path)
    impostor = make_root("t intermediate 1", now=NOW)  # same DN as i1, other key
    _write(tmp_path, "i1.crl", make_crl(impostor, [], now=NOW))
    text, diags = _run(tmp_path, _policy(GOOD_CA))
    assert _where(_one(diags, "MTLS102")) == _pos(text, '"i1.pem"')


def test_mtls102_clean_with_one_crl_per_ca_certificate(tmp_path):
    _chain(tmp_path)
    _, diags = _run(tmp_path, _policy(GOOD_CA))
    assert not _found(diags, "MTLS102")


def test_mtls102_clean_without_any_crl(tmp_path):
    _chain(tmp_path, crls=False)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"'))
    assert not _found(diags, "MTLS102")


# ----- MTLS110 / MTLS233: verify depth -------------------------------------------------------------

def test_mtls110_triggers_when_depth_is_below_the_chain(tmp_path):
    _chain(tmp_path, 2, crls=False)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem" "i2.pem"\n  depth 1'))
    d = _one(diags, "MTLS110")
    assert _where(d) == _pos(text, "depth 1") and d.severity is Severity.ERROR
    assert "sit 2 intermediate(s) below the root" in d.message and "CN=t intermediate 2" in d.message
    assert "`depth 2`" in d.help and "unable to get issuer certificate" in d.message


def test_mtls110_triggers_with_depth_0_and_an_intermediate(tmp_path):
    _chain(tmp_path, crls=False)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  depth 0'))
    assert "`depth 1`" in _one(diags, "MTLS110").help


def test_mtls110_clean_when_depth_matches(tmp_path):
    _chain(tmp_path, 2, crls=False)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem" "i2.pem"\n  depth 2'))
    assert not _found(diags, "MTLS110") and not _found(diags, "MTLS233")


def test_mtls233_triggers_when_depth_exceeds_the_chain(tmp_path):
    _chain(tmp_path, crls=False)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  depth 3'))
    d = _one(diags, "MTLS233")
    assert _where(d) == _pos(text, "depth 3") and d.severity is Severity.WARNING
    assert "needs only 1" in d.message and "`depth 1`" in d.help


def test_mtls233_clean_with_default_depth_and_one_intermediate(tmp_path):
    _chain(tmp_path, crls=False)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"'))
    assert not _found(diags, "MTLS233")


# ----- MTLS111: no root ------------------------------------------------------------------------------

def test_mtls111_triggers_for_an_intermediate_without_its_root(tmp_path):
    _chain(tmp_path, crls=False)
    text, diags = _run(tmp_path, _policy('  bundle "i1.pem"\n  depth 1'))
    d = _one(diags, "MTLS111")
    assert _where(d) == _pos(text, '"i1.pem"') and "issuer `CN=t root,O=mtlsc lab` is not in ca `c`" in d.message
    assert "partial chains" in d.message and not _found(diags, "MTLS110")


def test_mtls111_clean_with_the_root(tmp_path):
    _chain(tmp_path, crls=False)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"'))
    assert not _found(diags, "MTLS111")


# ----- MTLS112: pathLen --------------------------------------------------------------------------------

def test_mtls112_triggers_below_a_pathlen_0_root(tmp_path):
    root = make_root("t root", now=NOW, path_length=0)
    _write(tmp_path, "r.pem", root.cert)
    _write(tmp_path, "i1.pem", make_intermediate(root, "t issuing", now=NOW).cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"'))
    d = _one(diags, "MTLS112")
    assert _where(d) == _pos(text, '"i1.pem"') and "whose pathLen is 0" in d.message
    assert "path length constraint exceeded" in d.message


def test_mtls112_clean_below_a_pathlen_1_root(tmp_path):
    root = make_root("t root", now=NOW, path_length=1)
    _write(tmp_path, "r.pem", root.cert)
    _write(tmp_path, "i1.pem", make_intermediate(root, "t issuing", now=NOW, path_length=0).cert)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"'))
    assert not _found(diags, "MTLS112")


# ----- MTLS113-116: OCSP ----------------------------------------------------------------------------

def test_mtls113_triggers_without_responder_or_any_ocsp_url(tmp_path):
    _chain(tmp_path, crls=False)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf'))
    d = _one(diags, "MTLS113")
    assert _where(d) == _pos(text, "ocsp leaf") and d.severity is Severity.WARNING
    assert "must carry an OCSP URL" in d.message


def test_mtls113_triggers_for_another_ca_of_the_server(tmp_path):
    root = make_root("t root", now=NOW)
    _write(tmp_path, "r.pem", root.cert)
    _write(tmp_path, "i1.pem", _custom("t issuing", issuer=root, ocsp_url="http://10.0.0.1/").cert)
    _write(tmp_path, "o.pem", make_root("other", now=NOW).cert)
    routes = "  route /q/ { require d  allow any }\n"
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf',
                                         'ca d {\n  bundle "o.pem"\n  depth 0\n}\n', routes))
    d = _one(diags, "MTLS113")
    assert _where(d) == _pos(text, "ca d {") and "ca `d`" in d.message and "every CA it trusts" in d.message


def test_mtls113_clean_with_a_responder(tmp_path):
    _chain(tmp_path, crls=False)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf responder "http://127.0.0.1:8888/"'))
    assert not _found(diags, "MTLS113")


def test_mtls113_clean_when_the_ca_writes_ocsp_urls(tmp_path):
    root = make_root("t root", now=NOW)
    _write(tmp_path, "r.pem", root.cert)
    _write(tmp_path, "i1.pem", _custom("t issuing", issuer=root, ocsp_url="http://10.0.0.1/").cert)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf'))
    assert not _found(diags, "MTLS113")


def test_mtls114_triggers_for_an_intermediate_without_ocsp_url(tmp_path):
    _chain(tmp_path, crls=False)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp on'))
    d = _one(diags, "MTLS114")
    assert _where(d) == _pos(text, '"i1.pem"') and d.severity is Severity.ERROR
    assert "certificate status request failed" in d.message and "`ocsp leaf`" in d.help


def test_mtls114_clean_with_ocsp_leaf(tmp_path):
    _chain(tmp_path, crls=False)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf'))
    assert not _found(diags, "MTLS114")


def test_mtls115_triggers_for_a_responder_host_name(tmp_path):
    _chain(tmp_path, crls=False)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf responder "http://ocsp.example.test/"'))
    d = _one(diags, "MTLS115")
    assert _where(d) == _pos(text, "ocsp leaf") and "`ocsp.example.test` is a name" in d.message


def test_mtls115_clean_for_an_ip_responder(tmp_path):
    _chain(tmp_path, crls=False)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf responder "http://[::1]:8080/ocsp"'))
    assert not _found(diags, "MTLS115")


def test_mtls115_says_a_resolver_looks_the_name_up_again(tmp_path):
    _chain(tmp_path, crls=False)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf responder "http://ocsp.example.test/"',
                                      'resolver "127.0.0.1"\n'))
    d = _one(diags, "MTLS115")
    assert "again through `resolver` for every lookup" in d.message
    assert not _found(diags, "MTLS119")  # a responder by name is resolved at load time: no resolver needed


def _named_aia_chain(tmp_path, url: str = "http://ocsp.example.test/"):
    root = make_root("t root", now=NOW)
    _write(tmp_path, "r.pem", root.cert)
    _write(tmp_path, "i1.pem", _custom("t issuing", issuer=root, ocsp_url=url).cert)


def test_mtls119_triggers_for_ocsp_leaf_with_host_name_urls_and_no_resolver(tmp_path):
    _named_aia_chain(tmp_path)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf'))
    d = _one(diags, "MTLS119")
    assert _where(d) == _pos(text, '"i1.pem"') and d.severity is Severity.ERROR
    assert "`ocsp.example.test`" in d.message and "client certificates of ca `c` most likely name" in d.message
    assert "no resolver defined to resolve ocsp.example.test" in d.message and "`resolver" in d.help
    assert d.related[0].span.line == _pos(text, "ocsp leaf")[0]
    assert not _found(diags, "MTLS113")  # the CA does write OCSP URLs


def test_mtls119_triggers_for_ocsp_on_asking_about_the_intermediate(tmp_path):
    _named_aia_chain(tmp_path)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp on'))
    assert "nginx asks about it at a host too" in _one(diags, "MTLS119").message


def test_mtls119_clean_with_a_resolver(tmp_path):
    _named_aia_chain(tmp_path)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf', 'resolver "10.0.0.2" timeout 2s\n'))
    assert not _found(diags, "MTLS119")


def test_mtls119_clean_with_a_responder_or_ip_urls(tmp_path):
    _named_aia_chain(tmp_path)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf responder "http://10.0.0.5/"'))
    assert not _found(diags, "MTLS119")
    _named_aia_chain(tmp_path, "http://10.0.0.1:8080/")
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf'))
    assert not _found(diags, "MTLS119") and not _found(diags, "MTLS113")


def test_mtls113_says_host_names_need_a_resolver(tmp_path):
    _chain(tmp_path, crls=False)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf'))
    assert "with no `resolver`, a URL that names a host fails too" in _one(diags, "MTLS113").message
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp leaf', 'resolver "10.0.0.2"\n'))
    assert "resolver" not in _one(diags, "MTLS113").message


def test_mtls116_triggers_for_ocsp_on_with_intermediates(tmp_path):
    _chain(tmp_path, crls=False)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"\n  ocsp on responder "http://127.0.0.1:8888/"'))
    d = _one(diags, "MTLS116")
    assert _where(d) == _pos(text, "ocsp on") and d.severity is Severity.NOTE
    assert "`CN=t intermediate 1,O=mtlsc lab`" in d.message and not _found(diags, "MTLS114")


def test_mtls116_clean_for_a_root_only_bundle(tmp_path):
    _chain(tmp_path, 0, crls=False)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 0\n  ocsp on responder "http://127.0.0.1:8888/"'))
    assert not _found(diags, "MTLS116")


# ----- MTLS201 / MTLS232: several CAs on one server ---------------------------------------------------

TWO_CAS = 'ca d {\n  bundle "o.pem"\n  depth 0\n}\n'
Q_ROUTE = "  route /q/ { require d  allow any }\n"


def test_mtls201_triggers_for_two_cas_with_a_shared_name(tmp_path):
    _chain(tmp_path, crls=False)
    _write(tmp_path, "o.pem", make_root("t root", now=NOW).cert)  # another key, same DN as c's root
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"', TWO_CAS, Q_ROUTE))
    d = _one(diags, "MTLS201")
    assert _where(d) == _pos(text, '"o.pem"') and "both hold a certificate named `CN=t root,O=mtlsc lab`" in d.message
    assert d.related[0].span.line == _pos(text, '"r.pem"')[0]


def test_mtls201_triggers_for_names_openssl_takes_as_one(tmp_path):
    """`T  ROOT` (case, two spaces) is another name to nginx's map but the same to OpenSSL's
    X509_NAME_cmp, which then may pick the wrong issuer (tests/test_leaf_attack_nginx.py)."""
    _chain(tmp_path, crls=False)
    _write(tmp_path, "o.pem", make_root("T  ROOT ", now=NOW).cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"', TWO_CAS, Q_ROUTE))
    assert _where(_one(diags, "MTLS201")) == _pos(text, '"o.pem"')


def test_mtls201_clean_for_distinct_names(tmp_path):
    _chain(tmp_path, crls=False)
    _write(tmp_path, "o.pem", make_root("other", now=NOW).cert)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"', TWO_CAS, Q_ROUTE))
    assert not _found(diags, "MTLS201")


def test_mtls232_triggers_for_a_root_that_can_mint_a_lookalike(tmp_path):
    _chain(tmp_path, crls=False)  # c: root without pathLen, depth 1: its root can add a level
    _write(tmp_path, "o.pem", make_root("other", now=NOW).cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"', TWO_CAS, Q_ROUTE))
    found = _found(diags, "MTLS232")
    mine = [d for d in found if "of ca `c` can sign" in d.message]
    assert len(mine) == 1 and _where(mine[0]) == _pos(text, '"r.pem"')
    assert "can sign a sub-CA named `CN=other,O=mtlsc lab`" in mine[0].message and mine[0].severity is Severity.NOTE
    assert "routes of ca `d` on server `a.test` are bound by key" in mine[0].message
    # ca d's root can also add a level within the server's depth (1, the largest of its CAs).
    assert [_where(d) for d in found if "of ca `d` can sign" in d.message] == [_pos(text, '"o.pem"')]


def test_mtls232_clean_when_depth_leaves_no_room(tmp_path):
    _write(tmp_path, "r.pem", make_root("t root", now=NOW).cert)
    _write(tmp_path, "o.pem", make_root("other", now=NOW).cert)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 0', TWO_CAS, Q_ROUTE))
    assert not _found(diags, "MTLS232")


def test_mtls232_clean_when_pathlen_and_name_constraints_rule_it_out(tmp_path):
    # c: root pathLen 1 and issuing CA pathLen 0: the root could add a sibling of the issuing CA,
    # but its name constraints only permit names under O=c.
    o_c = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "c")])
    root = _custom("c root", path_length=1, permitted=[o_c])
    issuing = make_intermediate(root, "c issuing", now=NOW, org="c", path_length=0)
    _write(tmp_path, "r.pem", root.cert)
    _write(tmp_path, "i1.pem", issuing.cert)
    # d: a root that issues clients itself, pathLen 0.
    _write(tmp_path, "o.pem", make_root("other", now=NOW, path_length=0).cert)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"', TWO_CAS, Q_ROUTE))
    assert not _found(diags, "MTLS232"), [d.message for d in diags]


def _ed25519_root(cn: str) -> x509.Certificate:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, None))


def test_mtls239_triggers_for_an_ed25519_ca_another_ca_could_copy(tmp_path):
    _write(tmp_path, "r.pem", _ed25519_root("ed root"))
    _write(tmp_path, "o.pem", make_root("other", now=NOW).cert)
    # d's root can sign a sub-CA named like c's root within depth 1: c's routes need the key check
    text, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 1', TWO_CAS, Q_ROUTE))
    d = _one(diags, "MTLS239")
    assert _where(d) == _pos(text, '"r.pem"') and d.severity is Severity.ERROR
    assert "of ca `c` has a key the njs check cannot verify with" in d.message and "own server name" in d.help


def test_mtls239_clean_when_no_other_ca_could_copy_the_name(tmp_path):
    _write(tmp_path, "r.pem", _ed25519_root("ed root"))
    _write(tmp_path, "o.pem", make_root("other", now=NOW, path_length=0).cert)  # d cannot sign a sub-CA
    _, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 0', TWO_CAS, Q_ROUTE))
    assert not _found(diags, "MTLS239") and not _found(diags, "MTLS232"), [d.message for d in diags]


# ----- MTLS230 / MTLS231: the public web PKI ---------------------------------------------------------

def _first_public_cert() -> x509.Certificate:
    return next(c for c in x509.load_pem_x509_certificates(Path(certifi.where()).read_bytes()) if c.serial_number > 0)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")  # a public root's serial
def test_mtls230_triggers_for_a_public_root(tmp_path):
    _write(tmp_path, "pub.pem", _first_public_cert())
    text, diags = _run(tmp_path, _policy('  bundle "pub.pem"\n  depth 0'))
    d = _one(diags, "MTLS230")
    assert _where(d) == _pos(text, '"pub.pem"') and "is the public CA" in d.message and d.severity is Severity.ERROR


def test_mtls230_triggers_for_a_certificate_issued_by_a_public_ca(tmp_path, monkeypatch):
    public = make_root("pretend public", now=NOW)
    _write(tmp_path, "store.pem", public.cert)
    monkeypatch.setattr(trust_files, "public_store", lambda: trust_files.load_public_store([tmp_path / "store.pem"]))
    _write(tmp_path, "i1.pem", make_intermediate(public, "t issuing", now=NOW).cert)
    text, diags = _run(tmp_path, _policy('  bundle "i1.pem"'))
    d = _one(diags, "MTLS230")
    assert _where(d) == _pos(text, '"i1.pem"') and "is issued by the public CA `CN=pretend public" in d.message


def test_mtls230_triggers_for_a_reissued_public_root_with_the_same_key(tmp_path, monkeypatch):
    public = make_root("pretend public", now=NOW)
    _write(tmp_path, "store.pem", public.cert)
    monkeypatch.setattr(trust_files, "public_store", lambda: trust_files.load_public_store([tmp_path / "store.pem"]))
    cert = (x509.CertificateBuilder().subject_name(public.cert.subject).issuer_name(public.cert.subject)
            .public_key(public.key.public_key()).serial_number(7).not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=9)).add_extension(x509.BasicConstraints(True, None), critical=True)
            .sign(public.key, hashes.SHA256()))
    assert cert.fingerprint(hashes.SHA1()) != public.cert.fingerprint(hashes.SHA1())
    _write(tmp_path, "r.pem", cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 0'))
    assert _where(_one(diags, "MTLS230")) == _pos(text, '"r.pem"')


def test_mtls230_clean_for_a_private_ca(tmp_path):
    _chain(tmp_path)
    _, diags = _run(tmp_path, _policy(GOOD_CA))
    assert not _found(diags, "MTLS230")


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")  # a public root's serial
def test_mtls231_triggers_for_a_bundle_in_certifi(tmp_path):
    where = certifi.where()
    text, diags = _run(tmp_path, _policy(f'  bundle "{where}"\n  depth 0'))
    found = _found(diags, "MTLS231")
    assert [_where(d) for d in found] == [_pos(text, f'"{where}"')]
    assert "system trust store" in found[0].message and _found(diags, "MTLS230")


def test_mtls231_clean_for_a_bundle_next_to_the_policy(tmp_path):
    _chain(tmp_path)
    _, diags = _run(tmp_path, _policy(GOOD_CA))
    assert not _found(diags, "MTLS231")


# ----- MTLS234: several roots ------------------------------------------------------------------------

def test_mtls234_triggers_for_two_roots_in_one_ca(tmp_path):
    _chain(tmp_path, 0, crls=False)
    _write(tmp_path, "o.pem", make_root("other", now=NOW).cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "o.pem"\n  depth 0'))
    d = _one(diags, "MTLS234")
    assert _where(d) == _pos(text, '"o.pem"') and "second root" in d.message


def test_mtls234_clean_for_a_renewed_root_of_the_same_name(tmp_path):
    _chain(tmp_path, 0, crls=False)
    _write(tmp_path, "o.pem", make_root("t root", now=NOW).cert)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem" "o.pem"\n  depth 0'))
    assert not _found(diags, "MTLS234")


# ----- MTLS301-305: reported by mtlsc.pki while loading ------------------------------------------------

def test_mtls301_triggers_for_a_bundle_without_certificate(tmp_path):
    (tmp_path / "r.pem").write_text("")
    text, diags = _run(tmp_path, _policy('  bundle "r.pem"'))
    assert _where(_one(diags, "MTLS301")) == _pos(text, '"r.pem"')


def test_mtls301_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS301")


def test_mtls302_triggers_for_a_crl_file_holding_a_certificate(tmp_path):
    chain = _chain(tmp_path)
    _write(tmp_path, "i1.crl", chain.intermediates[0].cert)
    text, diags = _run(tmp_path, _policy(GOOD_CA))
    d = _one(diags, "MTLS302")
    assert _where(d) == _pos(text, '"i1.crl"') and "not a CRL" in d.message


def test_mtls302_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS302")


def test_mtls303_triggers_for_a_private_key_in_a_bundle(tmp_path):
    chain = _chain(tmp_path)
    _write(tmp_path, "r.pem", chain.root.cert, chain.root.key)
    text, diags = _run(tmp_path, _policy(GOOD_CA))
    assert _where(_one(diags, "MTLS303")) == _pos(text, '"r.pem"')


def test_mtls303_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS303")


def test_mtls304_triggers_for_a_truncated_pem_block(tmp_path):
    _chain(tmp_path)
    pem = (tmp_path / "i1.pem").read_text()
    (tmp_path / "i1.pem").write_text(pem[: len(pem) // 2])
    text, diags = _run(tmp_path, _policy(GOOD_CA))
    d = _one(diags, "MTLS304")
    assert _where(d) == _pos(text, '"i1.pem"') and "damaged" in d.message


def test_mtls304_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS304")


def test_mtls305_triggers_for_a_crl_inside_a_bundle(tmp_path):
    chain = _chain(tmp_path)
    _write(tmp_path, "r.pem", chain.root.cert, make_crl(chain.root, [], now=NOW))
    text, diags = _run(tmp_path, _policy(GOOD_CA))
    assert _where(_one(diags, "MTLS305")) == _pos(text, '"r.pem"')


def test_mtls305_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS305")


# ----- MTLS306-309: CRLs ------------------------------------------------------------------------------

def test_mtls306_triggers_for_an_expired_crl(tmp_path):
    chain = _chain(tmp_path)
    _write(tmp_path, "i1.crl", make_crl(chain.intermediates[0], [], now=NOW, next_update=-timedelta(days=1)))
    text, diags = _run(tmp_path, _policy(GOOD_CA))
    d = _one(diags, "MTLS306")
    assert _where(d) == _pos(text, '"i1.crl"') and "CN=t intermediate 1" in d.message
    assert "`CRL has expired`" in d.message and "2026-02-28" in d.message


def test_mtls306_clean_for_a_current_crl(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS306")


def test_mtls307_triggers_for_a_crl_from_the_future(tmp_path):
    chain = _chain(tmp_path)
    _write(tmp_path, "r.crl", make_crl(chain.root, [], now=NOW, last_update=NOW + timedelta(days=2)))
    text, diags = _run(tmp_path, _policy(GOOD_CA))
    d = _one(diags, "MTLS307")
    assert _where(d) == _pos(text, '"r.crl"') and "not valid before 2026-03-03" in d.message


def test_mtls307_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS307")


def test_mtls308_triggers_for_a_crl_expiring_soon(tmp_path):
    chain = _chain(tmp_path)
    _write(tmp_path, "i1.crl", make_crl(chain.intermediates[0], [], now=NOW, next_update=timedelta(days=3)))
    text, diags = _run(tmp_path, _policy(GOOD_CA))
    d = _one(diags, "MTLS308")
    assert _where(d) == _pos(text, '"i1.crl"') and d.severity is Severity.WARNING and "within 14 days" in d.message


def test_mtls308_clean_outside_the_window(tmp_path):
    _chain(tmp_path, next_update=timedelta(days=15))
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS308")


def test_mtls309_triggers_for_a_crl_of_another_ca(tmp_path):
    _chain(tmp_path)
    _write(tmp_path, "r.crl", make_crl(make_root("stranger", now=NOW), [], now=NOW))
    text, diags = _run(tmp_path, _policy(GOOD_CA))
    d = _one(diags, "MTLS309")
    assert _where(d) == _pos(text, '"r.crl"') and "no certificate of the bundle has that name" in d.message
    assert _where(_one(diags, "MTLS102")) == _pos(text, '"r.pem"')  # and the root is left without a CRL


def test_mtls309_triggers_for_a_crl_signed_by_another_key(tmp_path):
    _chain(tmp_path)
    _write(tmp_path, "i1.crl", make_crl(make_root("t intermediate 1", now=NOW), [], now=NOW))
    text, diags = _run(tmp_path, _policy(GOOD_CA))
    assert "has that name but a different key" in _one(diags, "MTLS309").message


def test_mtls309_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS309")


# ----- MTLS310-315: CA certificates --------------------------------------------------------------------

def test_mtls310_triggers_for_an_expired_root(tmp_path):
    _write(tmp_path, "r.pem", make_root("old", now=NOW - timedelta(days=400), days=30).cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 0'))
    d = _one(diags, "MTLS310")
    assert _where(d) == _pos(text, '"r.pem"') and "`CN=old,O=mtlsc lab`" in d.message and "has expired" in d.message


def test_mtls310_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS310")


def test_mtls311_triggers_for_a_root_not_yet_valid(tmp_path):
    _write(tmp_path, "r.pem", make_root("new", now=NOW + timedelta(days=10)).cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 0'))
    d = _one(diags, "MTLS311")
    assert _where(d) == _pos(text, '"r.pem"') and "not valid before 2026-03-11" in d.message


def test_mtls311_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS311")


def test_mtls312_triggers_for_a_ca_expiring_soon(tmp_path):
    chain = make_chain("t", 0, now=NOW)
    _write(tmp_path, "r.pem", chain.root.cert)
    _write(tmp_path, "i1.pem", make_intermediate(chain.root, "short", now=NOW - timedelta(days=360), days=365).cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "i1.pem"'))
    d = _one(diags, "MTLS312")
    assert _where(d) == _pos(text, '"i1.pem"') and d.severity is Severity.WARNING and "every client below it" in d.message


def test_mtls312_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS312")


def test_mtls313_triggers_for_a_self_signed_non_ca(tmp_path):
    _write(tmp_path, "r.pem", _custom("notca", ca=False).cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 0'))
    d = _one(diags, "MTLS313")
    assert _where(d) == _pos(text, '"r.pem"') and "unsuitable certificate purpose" in d.message


def test_mtls313_triggers_without_basic_constraints_or_key_cert_sign(tmp_path):
    _write(tmp_path, "r.pem", _custom("bare", ca=None, key_cert_sign=False).cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 0'))
    assert _where(_one(diags, "MTLS313")) == _pos(text, '"r.pem"')


def test_mtls313_clean_without_basic_constraints_but_with_key_cert_sign(tmp_path):
    # OpenSSL (non-strict) accepts such a certificate as a CA.
    _write(tmp_path, "r.pem", _custom("legacy", ca=None, key_cert_sign=True).cert)
    _, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 0'))
    assert not _found(diags, "MTLS313")


def test_mtls314_triggers_without_key_cert_sign(tmp_path):
    _write(tmp_path, "r.pem", _custom("nosign", ca=True, key_cert_sign=False).cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem"\n  depth 0'))
    d = _one(diags, "MTLS314")
    assert _where(d) == _pos(text, '"r.pem"') and "without keyCertSign" in d.message


def test_mtls314_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS314")


def test_mtls315_triggers_for_a_client_certificate_in_a_bundle(tmp_path):
    chain = _chain(tmp_path, 0, crls=False)
    alice = issue_client(chain.root, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]), now=NOW)
    _write(tmp_path, "alice.pem", alice.cert)
    text, diags = _run(tmp_path, _policy('  bundle "r.pem" "alice.pem"\n  depth 0'))
    d = _one(diags, "MTLS315")
    assert _where(d) == _pos(text, '"alice.pem"') and "`CN=alice`" in d.message and "end-entity" in d.message


def test_mtls315_clean(tmp_path):
    _chain(tmp_path)
    assert not _found(_run(tmp_path, _policy(GOOD_CA))[1], "MTLS315")


@pytest.mark.parametrize("code", sorted(MINE))
def test_every_code_is_registered_and_documented(code):
    from mtlsc.checks import CHECKS
    from support import REPO
    docs = (REPO / "docs" / "checks.md").read_text()
    assert f"## {code} " in docs
    assert int(code[4:]) in range(301, 306) or any(c.code == code for c in CHECKS)


# ----- MTLS117: one OCSP setting per server ------------------------------------------------------------

TWO_CA_SERVER = """
ca d {{
  bundle "r.pem" "i1.pem"
{d_ocsp}
}}
server a.test {{
  certificate "/etc/nginx/a.crt" key "/etc/nginx/a.key"
  backend "http://127.0.0.1:9000"
  route /p/ {{ require c  allow any }}
  route /q/ {{ require d  allow any }}
}}
"""


def test_mtls117_triggers_when_cas_of_one_server_differ_in_ocsp(tmp_path):
    _chain(tmp_path, crls=False)
    text, diags = _run(tmp_path, f'nginx ">= 1.22"\n\nca c {{\n  bundle "r.pem" "i1.pem"\n  ocsp leaf responder "http://127.0.0.1:8888/"\n}}\n'
                       + TWO_CA_SERVER.format(d_ocsp=""))
    d = _one(diags, "MTLS117")
    assert _where(d) == _pos(text, "ca d {") and d.severity is Severity.ERROR
    assert "ca `d` has no `ocsp`" in d.message and "taken from ca `c`" in d.message


def test_mtls117_clean_when_every_ca_says_the_same(tmp_path):
    _chain(tmp_path, crls=False)
    line = '  ocsp leaf responder "http://127.0.0.1:8888/"'
    _, diags = _run(tmp_path, f'nginx ">= 1.22"\n\nca c {{\n  bundle "r.pem" "i1.pem"\n{line}\n}}\n'
                    + TWO_CA_SERVER.format(d_ocsp=line))
    assert not _found(diags, "MTLS117")


def test_mtls117_triggers_when_cas_of_one_server_differ_in_cache(tmp_path):
    _chain(tmp_path, crls=False)
    line = '  ocsp leaf responder "http://127.0.0.1:8888/"'
    text, diags = _run(tmp_path, f'nginx ">= 1.22"\n\nca c {{\n  bundle "r.pem" "i1.pem"\n{line}\n}}\n'
                       + TWO_CA_SERVER.format(d_ocsp=line + " cache 1m"))
    d = _one(diags, "MTLS117")
    assert "cache `1m`" in d.message and "taken from ca `c`" in d.message
