"""Reading CA bundles and CRLs: every file problem is a located diagnostic; facts are exact."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from mtlsc import dn, files, ir
from mtlsc.diagnostics import Severity
from mtlsc.lab.pki import issue_client, make_chain, make_crl, make_root, write_pem
from mtlsc.pki import crl_file_pem, load_pki, trust_file_pem
from mtlsc.source import Span

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
DER = serialization.Encoding.DER


@pytest.fixture(scope="module")
def chain():
    return make_chain("acme", 1, now=NOW)


def _ca(name: str, bundle, crls=(), line: int = 1) -> ir.Ca:
    """A CA whose bundle file i is quoted on line `line`+i of p.mtls, CRL file j on line `line`+10+j."""
    bundle, crls = tuple(str(p) for p in bundle), tuple(str(p) for p in crls)
    return ir.Ca(name, bundle, 1, crls, None, Span("p.mtls", line, 1, line + 20, 2),
                 tuple(Span("p.mtls", line + i, 10, line + i, 20) for i in range(len(bundle))),
                 tuple(Span("p.mtls", line + 10 + j, 7, line + 10 + j, 20) for j in range(len(crls))))


def _load(*cas: ir.Ca):
    return load_pki(ir.Policy((1, 22, 1), tuple(cas), (), ()))


def _one(diags, code: str):
    found = [d for d in diags if d.code == code]
    assert len(found) == 1, [(d.code, d.message) for d in diags]
    return found[0]


def _pem(*objs) -> bytes:
    return b"".join(o.public_bytes(serialization.Encoding.PEM) for o in objs)


# ----- MTLS901: unreadable ------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.pem"
    facts, diags = _load(_ca("a", [path]))
    d = _one(diags, "MTLS901")
    assert d.severity is Severity.ERROR and str(path) in d.message and "No such file" in d.message
    assert (d.span.line, d.span.col) == (1, 10)
    assert facts.ca("a").certs == ()


def test_directory_and_missing_crl(tmp_path, chain):
    bundle = write_pem(tmp_path / "ca.pem", chain.root.cert)
    _, diags = _load(_ca("a", [bundle, tmp_path], [tmp_path / "gone.crl"]))
    assert sorted((d.code, d.span.line) for d in diags) == [("MTLS901", 2), ("MTLS901", 11)]
    assert "it is a directory, not a regular file" in diags[0].message


def test_permission_denied(tmp_path, monkeypatch):
    # Simulated: the suite may run as root, which reads any file whatever its mode.
    def deny(path, limit=files.MAX_BYTES):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(files, "read_bytes", deny)
    d = _one(_load(_ca("a", [tmp_path / "ca.pem"]))[1], "MTLS901")
    assert "Permission denied" in d.message and "permissions" in d.help


# ----- MTLS301: bundle without a certificate ------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b"", "is empty"),
    (b"   \n", "is empty"),
    (b"hello, I am not a certificate\n", "no PEM certificate"),
    (os.urandom(300), "no PEM certificate"),
])
def test_bundle_without_certificate(tmp_path, content, words):
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    d = _one(_load(_ca("a", [path]))[1], "MTLS301")
    assert d.severity is Severity.ERROR and words in d.message and str(path) in d.message


def test_der_bundle(tmp_path, chain):
    path = tmp_path / "ca.der"
    path.write_bytes(chain.root.cert.public_bytes(DER))
    d = _one(_load(_ca("a", [path]))[1], "MTLS301")
    assert "DER" in d.message and "CN=acme root,O=mtlsc lab" in d.message and "serial" in d.message
    assert "not after 2036-02-27" in d.message
    assert f"openssl x509 -inform der -in {path}" in d.help


def test_crl_where_a_certificate_is_expected(tmp_path, chain):
    path = write_pem(tmp_path / "ca.pem", make_crl(chain.root, [], now=NOW))
    d = _one(_load(_ca("a", [path]))[1], "MTLS301")
    assert "holds a CRL" in d.message and "`crl`" in d.help


def test_only_a_key(tmp_path, chain):
    path = write_pem(tmp_path / "ca.pem", chain.root.key)
    _, diags = _load(_ca("a", [path]))
    assert sorted(d.code for d in diags) == ["MTLS301", "MTLS303"]


# ----- MTLS302: CRL file without a CRL ------------------------------------------------------

def test_certificate_as_crl(tmp_path, chain):
    bundle = write_pem(tmp_path / "ca.pem", chain.root.cert)
    crl = write_pem(tmp_path / "notacrl.crl", chain.root.cert)
    d = _one(_load(_ca("a", [bundle], [crl]))[1], "MTLS302")
    assert "nginx -t accepts this file, and then every client is rejected with `unable to get certificate CRL`" in d.message
    assert "CN=acme root,O=mtlsc lab" in d.message and dn.nginx_serial(chain.root.cert.serial_number) in d.message
    assert d.span.line == 11


def test_der_crl(tmp_path, chain):
    bundle = write_pem(tmp_path / "ca.pem", chain.root.cert)
    crl = tmp_path / "root.crl"
    crl.write_bytes(make_crl(chain.root, [], now=NOW).public_bytes(DER))
    d = _one(_load(_ca("a", [bundle], [crl]))[1], "MTLS302")
    assert "DER" in d.message and f"openssl crl -inform der -in {crl}" in d.help


@pytest.mark.parametrize("content, words", [(b"", "is empty"), (b"junk\n", "no PEM CRL")])
def test_crl_file_without_crl(tmp_path, chain, content, words):
    bundle = write_pem(tmp_path / "ca.pem", chain.root.cert)
    crl = tmp_path / "x.crl"
    crl.write_bytes(content)
    assert words in _one(_load(_ca("a", [bundle], [crl]))[1], "MTLS302").message


# ----- MTLS303 / 304 / 305 and the compiled files -------------------------------------------

def test_key_in_bundle_is_left_out(tmp_path, chain):
    path = write_pem(tmp_path / "ca.pem", chain.root.key, chain.root.cert)
    facts, diags = _load(_ca("a", [path]))
    d = _one(diags, "MTLS303")
    assert d.severity is Severity.WARNING and "rotate it" in d.help and "line 1" in d.message
    trust = trust_file_pem(facts, ["a"])
    assert "PRIVATE KEY" not in trust and trust == chain.root.cert_pem()


def test_junk_around_pem_is_stripped(tmp_path, chain):
    path = tmp_path / "ca.pem"
    path.write_bytes(b"Bag Attributes: junk\n" + _pem(chain.root.cert).replace(b"\n", b"\r\n") + b"junk line\n")
    facts, diags = _load(_ca("a", [path]))
    assert diags == []
    assert trust_file_pem(facts, ["a"]) == chain.root.cert_pem()


def test_truncated_pem(tmp_path, chain):
    good, cut = _pem(chain.root.cert), _pem(chain.intermediates[0].cert)
    path = tmp_path / "ca.pem"
    path.write_bytes(good + cut[: len(cut) // 2])
    facts, diags = _load(_ca("a", [path]))
    d = _one(diags, "MTLS304")
    line = good.count(b"\n") + 1
    assert d.severity is Severity.ERROR and f"line {line}:" in d.message and "truncated" in d.message
    assert [c.subject for c in facts.ca("a").certs] == ["CN=acme root,O=mtlsc lab"]


@pytest.mark.parametrize("body", [b"not base64 at all!\n", b"AAAA\n", b""])
def test_corrupt_block(tmp_path, body):
    path = tmp_path / "ca.pem"
    path.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n")
    assert "damaged" in _one(_load(_ca("a", [path]))[1], "MTLS304").message


def test_mismatched_end_line(tmp_path, chain):
    path = tmp_path / "ca.pem"
    path.write_bytes(_pem(chain.root.cert).replace(b"END CERTIFICATE", b"END X509 CRL"))
    _one(_load(_ca("a", [path]))[1], "MTLS304")


def test_stray_blocks_are_left_out(tmp_path, chain):
    crl = make_crl(chain.root, [], now=NOW)
    bundle = write_pem(tmp_path / "ca.pem", chain.root.cert, crl)
    crls = write_pem(tmp_path / "root.crl", crl, chain.intermediates[0].cert)
    facts, diags = _load(_ca("a", [bundle], [crls]))
    assert sorted((d.code, d.severity) for d in diags) == [("MTLS305", Severity.WARNING)] * 2
    assert "CN=acme intermediate 1,O=mtlsc lab" in next(d.message for d in diags if d.span.line == 11)
    assert "X509 CRL" not in trust_file_pem(facts, ["a"])
    assert crl_file_pem(facts, ["a"]) == crl.public_bytes(serialization.Encoding.PEM).decode()


def test_file_read_once(tmp_path, chain, monkeypatch):
    path = write_pem(tmp_path / "ca.pem", chain.root.cert)
    reads = []
    original = files.read_bytes
    monkeypatch.setattr(files, "read_bytes", lambda path, limit=files.MAX_BYTES: reads.append(path) or original(path, limit))
    facts, diags = _load(_ca("a", [path]), _ca("b", [path]))
    assert len(reads) == 1 and diags == [] and len(facts.cas) == 2


# ----- facts ----------------------------------------------------------------------------------

def test_certificate_facts(tmp_path, chain):
    root, inter = chain.root, chain.intermediates[0]
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    leaf = issue_client(inter, name, now=NOW, serial=0x0A00000001, ocsp_url="http://127.0.0.1:8/ocsp")
    path = write_pem(tmp_path / "ca.pem", root.cert, inter.cert, leaf.cert)
    facts, diags = _load(_ca("a", [path]))
    assert diags == []
    r, i, l = facts.ca("a").certs
    assert (r.subject, r.issuer, i.subject, i.issuer) == (
        "CN=acme root,O=mtlsc lab", "CN=acme root,O=mtlsc lab", "CN=acme intermediate 1,O=mtlsc lab", "CN=acme root,O=mtlsc lab")
    assert l.subject == "CN=alice,C=US" and l.serial == "0A00000001" == dn.nginx_serial(0x0A00000001)
    assert r.serial == dn.nginx_serial(root.cert.serial_number)
    assert l.fingerprint == hashlib.sha1(leaf.cert.public_bytes(DER)).hexdigest()
    assert [c.index for c in (r, i, l)] == [0, 1, 2] and r.path == str(path)
    assert (r.is_ca, r.self_signed, r.key_cert_sign) == (True, True, True)
    assert (i.is_ca, i.self_signed, l.is_ca, l.key_cert_sign) == (True, False, False, False)
    assert i.aki == r.ski and l.aki == i.ski and r.aki is None
    assert l.ocsp_urls == ("http://127.0.0.1:8/ocsp",) and r.ocsp_urls == ()
    assert r.not_before.tzinfo is not None and r.not_after == NOW + timedelta(days=3650)
    assert l.not_after == NOW - timedelta(hours=1) + timedelta(days=365)
    assert make_root("p", now=NOW, path_length=0) and facts.ca("missing") is None


def test_crl_facts_and_signer(tmp_path, chain):
    root, inter = chain.root, chain.intermediates[0]
    stranger = make_root("stranger", now=NOW)
    bundle = [write_pem(tmp_path / "root.pem", root.cert), write_pem(tmp_path / "int.pem", inter.cert)]
    crls = [
        write_pem(tmp_path / "both.crl", make_crl(root, [], now=NOW), make_crl(inter, [3, 0x0A00000001], now=NOW)),
        write_pem(tmp_path / "old.crl", make_crl(inter, [], now=NOW, next_update=-timedelta(days=1))),
        write_pem(tmp_path / "foreign.crl", make_crl(stranger, [], now=NOW)),
    ]
    facts, diags = _load(_ca("a", bundle, crls))
    assert diags == []
    rc, ic, old, foreign = facts.ca("a").crls
    assert (rc.signed_by, ic.signed_by, foreign.signed_by) == (
        "CN=acme root,O=mtlsc lab", "CN=acme intermediate 1,O=mtlsc lab", None)
    assert ic.issuer == "CN=acme intermediate 1,O=mtlsc lab" and (rc.index, ic.index) == (0, 1)
    assert ic.revoked_serials == frozenset({3, 0x0A00000001}) and rc.revoked_serials == frozenset()
    assert ic.aki == facts.ca("a").certs[1].ski
    assert rc.last_update == NOW and rc.next_update == NOW + timedelta(days=30)
    assert old.next_update == NOW - timedelta(days=1) < NOW and old.next_update.tzinfo is not None
    assert crl_file_pem(facts, ["a"]).count("BEGIN X509 CRL") == 4


def test_compiled_files_order_and_dedupe(tmp_path, chain):
    other = make_chain("other", 0, now=NOW)
    a = write_pem(tmp_path / "a.pem", chain.root.cert, chain.intermediates[0].cert)
    b = write_pem(tmp_path / "b.pem", other.root.cert)
    crl_a = write_pem(tmp_path / "a.crl", make_crl(chain.root, [], now=NOW))
    facts, _ = _load(_ca("a", [a], [crl_a]), _ca("b", [b, a]))
    assert trust_file_pem(facts, ["b", "a"]) == other.root.cert_pem() + chain.root.cert_pem() + chain.intermediates[0].cert_pem()
    assert trust_file_pem(facts, ["a", "b"]).startswith(chain.root.cert_pem())
    assert trust_file_pem(facts, []) == "" and crl_file_pem(facts, ["b"]) == ""
    assert trust_file_pem(facts, [facts.ca("b")]) == trust_file_pem(facts, ["b"])


def test_policy_without_spans_still_gets_located(tmp_path):
    ca = ir.Ca("a", (str(tmp_path / "missing.pem"),), 1, (), None)
    d = _one(_load(ca)[1], "MTLS901")
    assert d.span.path == str(tmp_path / "missing.pem")
