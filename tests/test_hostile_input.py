"""Hostile and broken input: never a traceback, always a located diagnostic or success, in bounded
time and memory.

Profiles (docs/reliability.md). Each hypothesis property below runs its CI count by default
(3,650 cases in all, well under a minute); `MTLSC_FUZZ=1` runs 3,000 per property (21,000 in
all), `MTLSC_FUZZ=N` runs N per property: the same convention as tests/test_fmt.py. The counts
actually run are printed by the last test (`pytest -s`).

- arbitrary text, random bytes / invalid UTF-8, line-break and control characters spliced into
  the example policies, token drops / swaps / duplications / insertions of the example policies;
- the same, through the command line (check in every format, explain, diff, fmt);
- CA bundle and CRL files: byte flips, truncation, DER, swapped labels, junk, duplication, and
  certificates / CRLs built with odd names, dates, serials, keys and extensions;
- huge inputs: 10 MB files (garbage, one line, one string), 100,000 identities, deep nesting,
  deep and huge regexes, a 50 MB bundle, expired everything.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlsc import pipeline
from mtlsc.lab.pki import issue_client, make_chain, make_crl, write_pem
from mtlsc.render import render
from support import REPO, run_cli

_FUZZ = os.environ.get("MTLSC_FUZZ", "")
LONG = 3000 if _FUZZ == "1" else int(_FUZZ) if _FUZZ.isdigit() and int(_FUZZ) > 1 else 0
CI = {"text": 600, "bytes": 400, "splice": 400, "mutate": 1200, "cli": 150, "pki_mutate": 500, "pki_build": 400}


def examples(kind: str) -> int:
    return LONG or CI[kind]


def fuzz(kind: str):
    return settings(max_examples=examples(kind), deadline=None, suppress_health_check=list(HealthCheck))


COUNTS: Counter = Counter()
EXAMPLES = {p.name: p.read_text() for p in sorted((REPO / "policies").glob("*.mtls"))}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of policies/ (policies and their CA files): mutated policies still find real files."""
    d = tmp_path_factory.mktemp("hostile")
    shutil.copytree(REPO / "policies", d / "policies")
    return d / "policies"


def assert_located(result, path: str | None = None) -> None:
    """Every diagnostic is a located MTLS finding that renders in every format."""
    for d in result.diagnostics:
        assert re.fullmatch(r"MTLS\d{3}", d.code) and d.span.line >= 1 and d.span.col >= 1, d
        if path is not None and d.code != "MTLS900":
            assert d.span.path == path or d.related, d
    for fmt in ("text", "json", "sarif"):
        out = render(result.diagnostics, result.sources, fmt)
        if fmt != "text":
            json.loads(out)


def compile_bytes(path: Path, data: bytes):
    path.write_bytes(data)
    result = pipeline.compile_policy([str(path)])
    assert_located(result, str(path))
    if result.io_error:
        assert [d.code for d in result.diagnostics] == ["MTLS900"]
    return result


# ----- policy text -----------------------------------------------------------------------------------

@fuzz("text")
@given(text=st.text(max_size=400))
def test_arbitrary_text(workdir, text):
    COUNTS["arbitrary text"] += 1
    compile_bytes(workdir / "fuzz.mtls", text.encode("utf-8"))


@fuzz("bytes")
@given(data=st.one_of(st.binary(max_size=400),
                      st.sampled_from(list(EXAMPLES.values())).flatmap(
                          lambda t: st.tuples(st.just(t.encode()), st.integers(0, len(t)), st.binary(min_size=1, max_size=4))
                      ).map(lambda x: x[0][:x[1]] + x[2] + x[0][x[1]:])))
def test_random_bytes_and_invalid_utf8(workdir, data):
    COUNTS["random bytes"] += 1
    result = compile_bytes(workdir / "fuzz.mtls", data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        assert result.io_error and result.diagnostics[0].code == "MTLS900"


# Characters other tools treat as line breaks or that terminals act on: diagnostics must still
# quote the line the parser counted (only `\n` ends a line).
WEIRD = ["\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\ufeff", "\x00", "\t",
         "\x1b[2J", "\u202e", "\U0001f600", "é", '"', "\\", "{", "}", "#", "$", "~", "=", "/"]


@fuzz("splice")
@given(data=st.data())
def test_control_and_line_break_characters_spliced_into_examples(workdir, data):
    COUNTS["spliced characters"] += 1
    text = data.draw(st.sampled_from(list(EXAMPLES.values())))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        text = text[:at] + data.draw(st.sampled_from(WEIRD)) + text[at:]
    result = compile_bytes(workdir / "fuzz.mtls", text.encode("utf-8"))
    source = result.sources.get(str(workdir / "fuzz.mtls"))
    for d in result.diagnostics:
        m = re.fullmatch(r"unexpected `(.+)`", d.message, re.S)
        if d.code == "MTLS003" and m and "\n" not in m[1]:
            # the quoted line shows the very token the parser stopped at, at the reported column
            line = source.line_text(d.span.line)
            assert line[d.span.col - 1:].startswith(m[1]), (d.span, m[1], line)


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\S+|\s+')
ATOMS = ['"', "\\", "{", "}", "=", "~", "#", "$", "\x00", "\t", "\n", "é", "\u202e", '"$x"', '"\\"', '""', "0",
         "99999999999999999999", "-1", "any", "/", "//", "/../", "%", '"CN=a,O=b"', '"^x$"', '"^(a|b){99999999999}$"',
         '"^' + "(" * 40 + "a" + ")" * 40 + '$"', "route", "server", "ca", "identity", "require", "allow", "public",
         "optional", "forward", "as", "listen", "[::1]:1", "0.0.0.0:0", "65536", "waive", "MTLS201",
         '"http://127.0.0.1:0"', '"http://[::1]"', "subject", "cn", "serial", "fingerprint", "issuer", "san", "dns",
         "ocsp", "on", "leaf", "responder", "crl", "bundle", "depth", "install", "reject", "no_cert", "handshake",
         "nginx", '">= 1.22"', '"ca/partners-root.pem"', '"ca/partners-root.crl"', "*.x.com", '"\\\\"', '"a\\"b"',
         '"' + "x" * 5000 + '"']


@fuzz("mutate")
@given(data=st.data())
def test_mutated_examples(workdir, data):
    """Token drops, swaps, duplications, insertions and replacements of the example policies."""
    COUNTS["mutated policies"] += 1
    name = data.draw(st.sampled_from(sorted(EXAMPLES)))
    tokens = _TOKEN.findall(EXAMPLES[name])
    for _ in range(data.draw(st.integers(1, 6))):
        if not tokens:
            break
        i = data.draw(st.integers(0, len(tokens) - 1))
        op = data.draw(st.sampled_from(["drop", "dup", "swap", "insert", "replace"]))
        if op == "drop":
            tokens.pop(i)
        elif op == "dup":
            tokens.insert(i, tokens[i])
        elif op == "swap":
            j = data.draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "insert":
            tokens.insert(i, " " + data.draw(st.sampled_from(ATOMS)) + " ")
        else:
            tokens[i] = data.draw(st.sampled_from(ATOMS))
    result = compile_bytes(workdir / name.replace(".mtls", ".fuzz.mtls"), "".join(tokens).encode("utf-8"))
    COUNTS["mutated policies that compiled"] += result.outputs is not None


@fuzz("cli")
@given(data=st.data())
def test_mutated_examples_through_the_cli(workdir, data):
    """check (text, json, sarif), explain (text, md, json), diff and fmt --check on two mutants."""
    COUNTS["CLI runs"] += 1
    texts = []
    for _ in range(2):
        tokens = _TOKEN.findall(data.draw(st.sampled_from(list(EXAMPLES.values()))))
        for _ in range(data.draw(st.integers(0, 4))):
            i = data.draw(st.integers(0, len(tokens) - 1))
            tokens[i] = data.draw(st.sampled_from(ATOMS + ["", " "]))
        texts.append("".join(tokens))
    (workdir / "a.fuzz.mtls").write_text(texts[0], encoding="utf-8")
    (workdir / "b.fuzz.mtls").write_text(texts[1], encoding="utf-8")
    fmt = data.draw(st.sampled_from(["text", "json", "sarif"]))
    for args in (["check", "a.fuzz.mtls", "b.fuzz.mtls", "--format", fmt],
                 ["explain", "a.fuzz.mtls", "--format", data.draw(st.sampled_from(["text", "md", "json"]))],
                 ["diff", "a.fuzz.mtls", "b.fuzz.mtls", "--format", data.draw(st.sampled_from(["text", "md", "json"]))],
                 ["fmt", "--check", "a.fuzz.mtls"]):
        code, out, err = run_cli(*args, cwd=workdir)
        assert code in (0, 1, 2) and "Traceback" not in out + err, (args, err[-2000:])


# ----- CA bundles and CRLs -------------------------------------------------------------------------

PARTNER_FILES = ("partners-root.pem", "partners-issuing.pem", "partners-root.crl", "partners-issuing.crl")


def _der(pem: bytes) -> tuple[bytes, str]:
    import base64

    lines = pem.decode().splitlines()
    return base64.b64decode("".join(x for x in lines if x and not x.startswith("-----"))), lines[0][11:-5]


def _pem(der: bytes, label: str) -> bytes:
    import base64

    b = base64.b64encode(der).decode()
    return (f"-----BEGIN {label}-----\n" + "\n".join(b[i:i + 64] for i in range(0, len(b), 64))
            + f"\n-----END {label}-----\n").encode()


@st.composite
def damaged(draw, original: bytes) -> bytes:
    der, label = _der(original)
    op = draw(st.sampled_from(["flip", "flip", "cut", "truncate", "der", "label", "junk", "dup", "empty", "b64"]))
    if op == "flip":
        b = bytearray(der)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        return _pem(bytes(b), label)
    if op == "cut":
        i = draw(st.integers(0, len(der) - 1))
        return _pem(der[:i] + der[i + draw(st.integers(1, 40)):], label)
    if op == "truncate":
        return original[:draw(st.integers(0, len(original) - 1))]
    if op == "der":
        return der
    if op == "label":
        return original.replace(label.encode(), draw(st.sampled_from([b"X509 CRL", b"CERTIFICATE", b"PRIVATE KEY",
                                                                      b"EC PRIVATE KEY", b"FOO", b""])))
    if op == "junk":
        return original + draw(st.binary(min_size=1, max_size=200))
    if op == "dup":
        return original * draw(st.integers(2, 5))
    if op == "empty":
        return b""
    return original.replace(b"\n", b"\n" + draw(st.sampled_from([b"!!", b"====", b"\x00", b"-----END CERTIFICATE-----\n"])), 1)


@fuzz("pki_mutate")
@given(data=st.data())
def test_damaged_ca_and_crl_files(workdir, data):
    COUNTS["damaged CA/CRL files"] += 1
    ca = workdir / "ca"
    originals = {n: (REPO / "policies" / "ca" / n).read_bytes() for n in PARTNER_FILES}
    try:
        for name, original in originals.items():
            (ca / name).write_bytes(data.draw(damaged(original)) if data.draw(st.booleans()) else original)
        result = pipeline.compile_policy([str(workdir / "partner-api.mtls")])
        assert_located(result, str(workdir / "partner-api.mtls"))
        for d in result.diagnostics:
            if d.code in ("MTLS301", "MTLS302", "MTLS303", "MTLS304", "MTLS305", "MTLS901"):
                assert "ca/partners-" in d.message  # the file is named
    finally:
        for name, original in originals.items():
            (ca / name).write_bytes(original)


KEYS = {"ec": ec.generate_private_key(ec.SECP256R1()), "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "rsa": rsa.generate_private_key(65537, 1024)}
OIDS = [NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COUNTRY_NAME,
        NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT, NameOID.SERIAL_NUMBER, NameOID.USER_ID,
        ObjectIdentifier("1.2.3.4.5")]
IA5 = {NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT}  # ASCII-only string types
dates = st.datetimes(min_value=dt.datetime(1951, 1, 1), max_value=dt.datetime(9998, 1, 1))
periods = st.tuples(dates, dates).map(sorted).map(lambda p: (p[0], max(p[1], p[0] + dt.timedelta(seconds=1))))
values = st.text(min_size=1, max_size=20)
printable = st.text(alphabet="ABCxyz019 '()+,-./:=?", min_size=1, max_size=20)  # PrintableString
ava = st.sampled_from(OIDS).flatmap(lambda oid: st.tuples(st.just(oid), printable if oid == NameOID.SERIAL_NUMBER
                                                          else values.filter(str.isascii) if oid in IA5 else values))
names = st.lists(st.lists(ava, min_size=1, max_size=3, unique_by=lambda a: a[0]), max_size=4)


def _name(rdns) -> x509.Name:
    out = []
    for rdn in rdns:
        attrs = [x509.NameAttribute(oid, ("AB" if oid == NameOID.COUNTRY_NAME else v), _validate=False) for oid, v in rdn]
        out.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(out)


@fuzz("pki_build")
@given(subject=names, issuer=names, key=st.sampled_from(sorted(KEYS)), serial=st.integers(1, 2**159),
       validity=periods, is_ca=st.one_of(st.none(), st.booleans()),
       path_length=st.one_of(st.none(), st.integers(0, 5)), key_usage=st.booleans(), unknown_critical=st.booleans(),
       revoked=st.lists(st.integers(1, 2**159), max_size=5), updates=periods,
       crl_issuer=names, copies=st.integers(1, 3))
def test_odd_certificates_and_crls(tmp_path_factory, subject, issuer, key, serial, validity, is_ca, path_length,
                                   key_usage, unknown_critical, revoked, updates, crl_issuer, copies):
    """Well-formed DER with odd content: any names (control characters, non-ASCII, unknown OIDs),
    dates from 1951 to 9998, huge serials, Ed25519/RSA/EC keys, unknown critical extensions."""
    COUNTS["odd certificates and CRLs"] += 1
    d = _pki_dir(tmp_path_factory)
    k = KEYS[key]
    alg = None if key == "ed25519" else hashes.SHA256()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
                 .public_key(k.public_key()).serial_number(serial).not_valid_before(validity[0])
                 .not_valid_after(validity[1]))
            if is_ca is not None:
                b = b.add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None), True)
            if key_usage:
                b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
            if unknown_critical:
                b = b.add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.2.3.99"), b"\x05\x00"), True)
            (d / "b.pem").write_bytes(b.sign(k, alg).public_bytes(serialization.Encoding.PEM) * copies)
            cb = (x509.CertificateRevocationListBuilder().issuer_name(_name(crl_issuer)).last_update(updates[0])
                  .next_update(updates[1]))
            for s in revoked:
                cb = cb.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(s).revocation_date(updates[0]).build())
            (d / "c.crl").write_bytes(cb.sign(k, alg).public_bytes(serialization.Encoding.PEM))
        except (ValueError, TypeError):  # something cryptography itself will not build
            COUNTS["odd certificates and CRLs not buildable"] += 1
            return
    result = pipeline.compile_policy([str(d / "p.mtls")])
    assert_located(result, str(d / "p.mtls"))


def _pki_dir(factory) -> Path:
    d = factory.getbasetemp() / "odd-pki"
    if not (d / "p.mtls").exists():
        d.mkdir(exist_ok=True)
        (d / "p.mtls").write_text(textwrap.dedent("""\
            ca c { bundle "b.pem" depth 1 crl "c.crl" }
            identity a { subject "CN=a,O=b" }
            server api.example.com {
              certificate "/tmp/x.crt" key "/tmp/x.key"
              backend "http://127.0.0.1:1"
              route = /healthz { public }
              route /x/ { require c allow a forward subject issuer serial }
            }
            """))
    return d


# ----- malformed PKI files, one by one -------------------------------------------------------------

NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def pki_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    chain = make_chain("hostile", 1, now=NOW)
    old = make_chain("expired", 1, now=NOW - dt.timedelta(days=4000))
    write_pem(d / "root.pem", chain.root.cert)
    write_pem(d / "issuing.pem", chain.issuing.cert)
    write_pem(d / "root.crl", make_crl(chain.root, [], now=NOW))
    write_pem(d / "issuing.crl", make_crl(chain.issuing, [], now=NOW))
    write_pem(d / "old-root.pem", old.root.cert)
    write_pem(d / "old-issuing.pem", old.issuing.cert)
    write_pem(d / "old-root.crl", make_crl(old.root, [], now=NOW - dt.timedelta(days=4000)))
    write_pem(d / "old-issuing.crl", make_crl(old.issuing, [], now=NOW - dt.timedelta(days=4000)))
    leaf = issue_client(chain.issuing, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]), now=NOW)
    write_pem(d / "leaf-and-key.pem", leaf.cert, leaf.key)
    return d


def _policy(d: Path, bundle: tuple[str, ...], crls: tuple[str, ...]) -> Path:
    files = " ".join(f'"{f}"' for f in bundle)
    crl = (" crl " + " ".join(f'"{f}"' for f in crls)) if crls else ""
    path = d / "p.mtls"
    path.write_text(textwrap.dedent(f"""\
        ca hostile {{ bundle {files}  depth 1{crl} }}
        server api.example.com {{
          certificate "/tmp/x.crt" key "/tmp/x.key"
          backend "http://127.0.0.1:1"
          route = /healthz {{ public }}
          route /x/ {{ require hostile allow any }}
        }}
        """))
    return path


def _write(d: Path, name: str, data: bytes) -> str:
    (d / name).write_bytes(data)
    return name


def _case(d: Path, kind: str) -> tuple[tuple[str, ...], tuple[str, ...], str, str]:
    """(bundle files, CRL files, the damaged file, the code expected for it)."""
    root, crl = (d / "root.pem").read_bytes(), (d / "root.crl").read_bytes()
    if kind == "truncated PEM":
        return (_write(d, "bad.pem", root[:len(root) // 2]), "issuing.pem"), ("root.crl", "issuing.crl"), "bad.pem", "MTLS304"
    if kind == "DER instead of PEM":
        der = x509.load_pem_x509_certificate(root).public_bytes(serialization.Encoding.DER)
        return (_write(d, "bad.der", der), "issuing.pem"), ("root.crl", "issuing.crl"), "bad.der", "MTLS301"
    if kind == "DER CRL":
        der = x509.load_pem_x509_crl(crl).public_bytes(serialization.Encoding.DER)
        return ("root.pem", "issuing.pem"), (_write(d, "bad.crl", der), "issuing.crl"), "bad.crl", "MTLS302"
    if kind == "CRL in place of a certificate":
        return ("root.crl", "issuing.pem"), ("root.crl", "issuing.crl"), "root.crl", "MTLS301"
    if kind == "certificate in place of a CRL":
        return ("root.pem", "issuing.pem"), ("root.pem", "issuing.crl"), "root.pem", "MTLS302"
    if kind == "private key in the bundle":
        return ("root.pem", "leaf-and-key.pem"), ("root.crl", "issuing.crl"), "leaf-and-key.pem", "MTLS303"
    if kind == "empty file":
        return (_write(d, "empty.pem", b""), "issuing.pem"), ("root.crl", "issuing.crl"), "empty.pem", "MTLS301"
    if kind == "binary garbage":
        junk = random.Random(3).randbytes(100_000)
        return (_write(d, "junk.pem", junk), "issuing.pem"), ("root.crl", "issuing.crl"), "junk.pem", "MTLS301"
    if kind == "a directory":
        (d / "dir.pem").mkdir(exist_ok=True)
        return ("dir.pem", "issuing.pem"), ("root.crl", "issuing.crl"), "dir.pem", "MTLS901"
    if kind == "missing":
        return ("root.pem", "gone.pem"), ("root.crl", "issuing.crl"), "gone.pem", "MTLS901"
    if kind == "unknown public key type":
        der = bytearray(x509.load_pem_x509_certificate(root).public_bytes(serialization.Encoding.DER))
        oid = bytes.fromhex("2a8648ce3d0201")  # id-ecPublicKey
        at = der.index(oid)
        der[at + 6] = 0x09  # 1.2.840.10045.2.9: no such key type
        return (_write(d, "oddkey.pem", _pem(bytes(der), "CERTIFICATE")), "issuing.pem"), ("root.crl", "issuing.crl"), \
            "oddkey.pem", "MTLS304"
    if kind == "expired everything":
        return ("old-root.pem", "old-issuing.pem"), ("old-root.crl", "old-issuing.crl"), "old-root.pem", "MTLS310"
    raise AssertionError(kind)


PKI_CASES = ["truncated PEM", "DER instead of PEM", "DER CRL", "CRL in place of a certificate",
             "certificate in place of a CRL", "private key in the bundle", "empty file", "binary garbage",
             "a directory", "missing", "unknown public key type", "expired everything"]


@pytest.mark.parametrize("kind", PKI_CASES)
def test_malformed_pki_file_is_named_in_a_diagnostic(pki_files, kind):
    bundle, crls, bad, code = _case(pki_files, kind)
    policy = _policy(pki_files, bundle, crls)
    result = pipeline.compile_policy([str(policy)])
    assert_located(result, str(policy))
    lines = policy.read_text().splitlines()
    found = [d for d in result.diagnostics if d.code == code]
    assert found, [(d.code, d.message) for d in result.diagnostics]
    pointed = []
    for d in found:
        # the span is the policy string that names the file; the message names it too, except the
        # MTLS31x checks, which name the certificate by subject and serial
        named = lines[d.span.line - 1][d.span.col - 1:d.span.end_col - 1].strip('"')
        assert named in bundle + crls, (d.span, lines[d.span.line - 1])
        assert named in d.message or code.startswith("MTLS31"), d.message
        pointed.append(named)
    assert bad in pointed
    if kind == "expired everything":
        assert {"MTLS306", "MTLS310"} <= {d.code for d in result.diagnostics} and result.failed


@pytest.mark.parametrize("kind", PKI_CASES)
def test_diff_refuses_to_compare_a_side_whose_ca_files_fail(pki_files, kind, tmp_path):
    """The same damaged files on the new side of `mtlsc diff`: when they give an error, nothing is
    compared (exit 2, even with `--fail-on widening`), since compared as empty they read as trust
    removed (`no longer trusts root`) and hide what changed; warnings alone do not stop the diff."""
    good = _policy(pki_files, ("root.pem", "issuing.pem"), ("root.crl", "issuing.crl")).read_text()
    (tmp_path / "old.mtls").write_text(good.replace('"root', f'"{pki_files}/root').replace('"issuing', f'"{pki_files}/issuing'))
    bundle, crls, _, found = _case(pki_files, kind)
    new = _policy(pki_files, bundle, crls)
    code, out, err = run_cli("diff", str(tmp_path / "old.mtls"), str(new), "--fail-on", "widening")
    # unreadable or no usable block; a private key (MTLS303) only warns, and expiry (MTLS310) is a
    # finding of `check` about certificates the diff can still compare
    if found in ("MTLS301", "MTLS302", "MTLS304", "MTLS901"):
        assert (code, out) == (2, ""), (code, out, err)
        assert "cannot compare: a CA or CRL file of" in err and "no longer trusts" not in out + err
    else:
        assert code in (0, 1) and "cannot compare" not in err, (code, err)


@pytest.mark.parametrize("text", ["", "\n", "  \n\t\n", "# only a comment\n", "\n\n# moved to api.mtls\n\n"])
def test_empty_policy_is_an_error_not_a_clean_check(tmp_path, text):
    """Nothing to compile: a located MTLS011, exit 1, and `compile` writes nothing."""
    path = tmp_path / "empty.mtls"
    result = compile_bytes(path, text.encode())
    assert [(d.code, d.span.line, d.span.col) for d in result.diagnostics] == [("MTLS011", 1, 1)]
    assert result.failed and result.outputs is None
    code, _, err = run_cli("check", str(path))
    assert code == 1 and "error[MTLS011]: the policy file holds no statement" in err
    assert run_cli("compile", str(path), "-o", str(tmp_path / "out"))[0] == 1 and not (tmp_path / "out").exists()


# ----- huge inputs ---------------------------------------------------------------------------------

MB = 1024 * 1024


def _run_big(tmp_path: Path, script: str, limit: float) -> dict:
    """Run `script` in a fresh interpreter (so its peak memory is its own); it prints one JSON line."""
    code = f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]\n" + script + textwrap.dedent("""
        import json, resource, time
        json.dump({"seconds": round(SECONDS, 2), "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                   **OUT}, sys.stdout)
        """)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit * 3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\n{out}")
    assert time.monotonic() - started < limit * 2 and out["seconds"] < limit, out
    assert out["rss_mb"] < 3000, out
    return out


CHECK = textwrap.dedent("""
    import time
    from mtlsc import pipeline
    from mtlsc.render import render
    t = time.monotonic()
    r = pipeline.compile_policy([PATH])
    text = render(r.diagnostics, r.sources, "text")
    SECONDS = time.monotonic() - t
    assert all(d.span.line >= 1 for d in r.diagnostics)
    OUT = {"codes": sorted({d.code for d in r.diagnostics}), "n": len(r.diagnostics), "failed": r.failed,
           "outputs": len(r.outputs or {}), "report_bytes": len(text)}
""")


def _big(tmp_path: Path, name: str, data: bytes | str, limit: float = 60) -> dict:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return _run_big(tmp_path, f"PATH = {str(path)!r}\n" + CHECK, limit)


def test_10mb_random_bytes(tmp_path):
    out = _big(tmp_path, "garbage.mtls", random.Random(1).randbytes(10 * MB))
    assert out["codes"] == ["MTLS900"]


def test_10mb_policy_shaped_garbage(tmp_path):
    rng = random.Random(2)
    out = _big(tmp_path, "garbage.mtls", "".join(rng.choice('abc {}"#/\n=~') for _ in range(10 * MB)))
    assert out["failed"] and out["n"] == 1


@pytest.mark.parametrize("shape", ["comment", "string", "name", "path"])
def test_10mb_single_line(tmp_path, shape):
    body = "x" * (10 * MB)
    text = {"comment": f"# {body}\n", "string": f'nginx "{body}"\n', "name": f'identity {body} {{ subject "CN=a" }}\n',
            "path": f'server a.example.com {{ route /{body} {{ public }} }}\n'}[shape]
    out = _big(tmp_path, "long.mtls", text)
    assert out["n"] <= 5


def test_100000_identities_in_one_allow_list(tmp_path):
    n = 100_000
    idents = "\n".join(f'identity i{i} {{ subject "CN=client-{i},O=Acme" }}' for i in range(n))
    text = (f'ca internal {{ bundle "{REPO}/policies/ca/internal-root.pem" depth 0 }}\n{idents}\n'
            'server api.example.com {\n  certificate "/tmp/x.crt" key "/tmp/x.key"\n'
            '  backend "http://127.0.0.1:8080"\n  route = /healthz { public }\n'
            f'  route /api/ {{ require internal allow {" ".join(f"i{i}" for i in range(n))} }}\n}}\n')
    out = _big(tmp_path, "many.mtls", text, limit=120)
    assert not out["failed"] and out["outputs"] >= 4


def test_100000_broken_identities_render_fast(tmp_path):
    """One error per line of a 4 MB file: rendering quotes each line without re-splitting the file."""
    text = "\n".join(f'identity i{i} {{ subject "/CN=client-{i}" }}' for i in range(100_000)) + "\n"
    out = _big(tmp_path, "broken.mtls", text)
    assert out["n"] == 100_000 and out["codes"] == ["MTLS014"]


@pytest.mark.parametrize("shape", ["braces", "servers", "regex-groups", "regex-groups-huge", "regex-repeat",
                                   "regex-alternation"])
def test_deep_nesting(tmp_path, shape):
    text = {
        "braces": "{" * 1_000_000,
        "servers": "server a {" * 100_000,
        "regex-groups": 'identity a { cn ~ "^' + "(" * 1_000 + "a" + ")" * 1_000 + '$" }\n',  # was a RecursionError
        "regex-groups-huge": 'identity a { cn ~ "^' + "(" * 50_000 + "a" + ")" * 50_000 + '$" }\n',
        "regex-repeat": 'identity a { cn ~ "^a{99999999999999999999}$" }\n',  # was an OverflowError
        "regex-alternation": 'identity a { cn ~ "^(' + "|".join(f"v{i}" for i in range(50_000)) + ')$" }\n',
    }[shape]
    out = _big(tmp_path, "deep.mtls", text)
    assert out["n"] >= 1 or shape == "regex-alternation"
    if shape in ("regex-groups", "regex-repeat"):
        assert out["codes"] == ["MTLS014"]


@pytest.mark.parametrize("shape", ["repeated certificates", "damaged blocks", "junk then a certificate"])
def test_50mb_bundle(tmp_path, shape):
    shutil.copytree(REPO / "policies", tmp_path / "p")
    issuing = (tmp_path / "p" / "ca" / "partners-issuing.pem").read_bytes()
    data = {"repeated certificates": issuing * (50 * MB // len(issuing)),
            "damaged blocks": b"-----BEGIN CERTIFICATE-----\n" * (50 * MB // 28),
            "junk then a certificate": b"x" * (50 * MB) + issuing}[shape]
    (tmp_path / "p" / "ca" / "partners-issuing.pem").write_bytes(data)
    out = _run_big(tmp_path, f"PATH = {str(tmp_path / 'p' / 'partner-api.mtls')!r}\n" + CHECK, 60)
    if shape == "damaged blocks":
        assert out["codes"] == ["MTLS304"] and out["n"] == 11  # ten listed, one counting the rest
    else:
        assert not out["failed"]


def test_zz_fuzz_counts():
    """Runs last in this file: every property above ran cases (a strategy that filters everything
    out would pass vacuously), and mutated policies sometimes still compile (else the mutations
    only test the parser's first error). The counts are printed for the report."""
    total = sum(v for k, v in COUNTS.items() if "compiled" not in k and "not buildable" not in k)
    print("\nfuzz cases: " + ", ".join(f"{k}: {v}" for k, v in sorted(COUNTS.items())) + f"; total {total}")
    ran = {k for k, v in COUNTS.items() if v and "compiled" not in k and "not buildable" not in k}
    expected = {"arbitrary text", "random bytes", "spliced characters", "mutated policies", "CLI runs",
                "damaged CA/CRL files", "odd certificates and CRLs"}
    if len(ran) > 1:  # the whole file ran, not one test picked with -k
        assert ran == expected, expected - ran
        assert COUNTS["mutated policies that compiled"] > 0
