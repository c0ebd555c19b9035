"""Real nginx and openssl print subjects and serials exactly as mtlsc.dn says (nginx-facts.md §7).

One nginx (mtlsc.lab.nginx) trusts a throw-away CA; each client certificate is sent over TLS and
nginx answers with `$ssl_client_s_dn` (/), `$ssl_client_serial` (/serial) and the verdicts of
`map` gates built by `constraints_regex` (/gates). Missing nginx or openssl fails these tests.
"""

from __future__ import annotations

import http.client
import itertools
import random
import shutil
import ssl
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from test_dn import PATTERN_PIECES, confinable, rdn_lists

from mtlsc import dn
from mtlsc.dn import AttrConstraint as C
from mtlsc.lab.nginx import free_port, running_nginx

pytestmark = pytest.mark.nginx

O_OTHER_US = ((("O", "Other"),), (("C", "US"),))
# (name, RDNs most specific first, what nginx prints or None for "see format_dn", serial)
TRICKY = [
    ("alice", ((("CN", "alice"),), (("O", "Acme"),), (("C", "US"),)), "CN=alice,O=Acme,C=US", 0x0A00000001),
    ("mallory-comma", ((("CN", "mallory,O=Acme"),), *O_OTHER_US), r"CN=mallory\,O=Acme,O=Other,C=US", 0x80),
    ("eve-slash", ((("CN", "eve/O=Acme"),), *O_OTHER_US), "CN=eve/O=Acme,O=Other,C=US", 0x7F),
    ("bslash", ((("CN", "trail\\"),), (("O", "Acme"),), (("C", "US"),)), r"CN=trail\\,O=Acme,C=US", 0xFF00),
    ("alice-upper", ((("CN", "ALICE"),), (("O", "ACME"),), (("C", "US"),)), "CN=ALICE,O=ACME,C=US", 1),
    ("plus", ((("CN", "a+b"),), *O_OTHER_US), r"CN=a\+b,O=Other,C=US", 2**159 - 1),
    ("quote", ((("CN", 'say "hi"'),), *O_OTHER_US), r"CN=say \"hi\",O=Other,C=US", 0x100),
    ("hash", ((("CN", "#hash"),), *O_OTHER_US), r"CN=\#hash,O=Other,C=US", 0xFF),
    ("utf8", ((("CN", "Jürgen Ünïcødé"),), *O_OTHER_US),
     r"CN=J\C3\BCrgen \C3\9Cn\C3\AFc\C3\B8d\C3\A9,O=Other,C=US", 0x00FFFFFFFF),
    ("multirdn", ((("OU", "Eng"), ("CN", "multi")), *O_OTHER_US), "CN=multi+OU=Eng,O=Other,C=US", 0x1234),
    ("spaces", ((("CN", " sp  ace "),), *O_OTHER_US), r"CN=\ sp  ace\ ,O=Other,C=US", 0x12345),
    ("angle-semi", ((("CN", "a<b>c;d"),), *O_OTHER_US), r"CN=a\<b\>c\;d,O=Other,C=US", 0x7FFF),
    ("control", ((("CN", "tab\there\x01\x7f"),), *O_OTHER_US), r"CN=tab\09here\01\7F,O=Other,C=US", 0x8000),
    ("lone-hash", ((("CN", "#"),), *O_OTHER_US), "CN=#,O=Other,C=US", 0x800000),
    ("lone-space", ((("CN", " "),), *O_OTHER_US), r"CN=\ ,O=Other,C=US", 0x7FFFFF),
    ("triple-cn", ((("CN", "b"), ("CN", "a"), ("CN", "c")),), "CN=c+CN=b+CN=a", 0x10000),
    ("equals", ((("CN", "a=b"),), *O_OTHER_US), "CN=a=b,O=Other,C=US", 0xABCDEF),
    # every attribute of dn.ATTRIBUTES, each in its own RDN: pins the names nginx prints
    ("all-attributes", tuple(((a, "US" if a.endswith("C") else "v"),) for a in dn.ATTRIBUTES),
     ",".join(f"{a}={'US' if a.endswith('C') else 'v'}" for a in dn.ATTRIBUTES), 0x42),
]
GATES = [
    [C("O", "eq", "Acme")],
    [C("CN", "re", "^mallory.*$")],
    [C("CN", "eq", "mallory,O=Acme")],
    [C("O", "eq", "Acme"), C("C", "eq", "US")],
    [C("CN", "re", "^[a-z]+$")],
    [C("CN", "re", "(?i)^alice$")],
    [C("OU", "eq", "Eng"), C("CN", "eq", "multi")],
    [C("CN", "re", r"^J\\C3\\BC.*$")],
    [C("CN", "re", r"^.*\\,.*$")],
    [C("CN", "eq", "#")],
    [C("CN", "re", r"^\\#.*$")],
    [C("CN", "re", "^[^a]*$")],
    [C("CN", "re", "^(?:say|a)(?>.*)$")],
    [C("CN", "re", r"^trai.{1,2}?\\\\$")],
    [C("CN", "eq", " sp  ace ")],
    [C("CN", "re", r"^\\ .*\\ $")],
    [C("CN", "re", r'^say \\"hi\\"$')],
    [C("O", "re", "^(?i:other)$"), C("CN", "re", r"^[^\\]+$")],
    [C("CN", "re", r"^a\\<b\\>c\\;d$")],
    [C("emailAddress", "eq", "v"), C("street", "re", "^v$"), C("jurisdictionC", "eq", "US")],
    [C("CN", "re", r"^a\\\+b$"), C("O", "re", "^Oth?e*r{1}$")],
    [C("CN", "re", r"^(?:\\.|[a-z])*$")],
    [C("CN", "re", r"^(?:[ -*:-@a-z]|\\[ -/;-?])*$")],  # ranges with punctuation endpoints
]
# Plus random compositions of the pattern pieces of test_dn (fixed seed): PCRE2 must read them as Python does.
_rng = random.Random(2253)
GATES += [[C(_rng.choice(["CN", "O"]), "re", p)] for p in (
    "^" + "".join(_rng.choices(PATTERN_PIECES, k=_rng.randint(1, 4))) + "$" for _ in range(60)
) if confinable(p)][:24]
# Known verdicts of nginx-facts.md §7 (gate 0 is `O = Acme`).
ROW_VERDICTS = {"mallory-comma": "0", "eve-slash": "0", "bslash": "1", "alice": "1", "alice-upper": "0"}


def _map_key(regex: str) -> str:
    # nginx unescapes `\\` and `\"` inside a quoted string, so every backslash is doubled (§7, §13).
    return '"~' + regex.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _http_conf(port: int, d: Path) -> str:
    maps = "".join(
        f"map $ssl_client_s_dn $gate{i} {{ default 0; {_map_key(dn.constraints_regex(g))} 1; }}\n"
        for i, g in enumerate(GATES)
    )
    gates = "".join(f"$gate{i}" for i in range(len(GATES)))
    return maps + f"""map $ssl_client_s_dn $exact {{ default 0; "cn=alice,o=acme,c=us" 1; }}
server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {d / 'server.pem'};
    ssl_certificate_key {d / 'server.key'};
    ssl_client_certificate {d / 'ca.pem'};
    ssl_verify_client optional;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /serial {{ return 200 "$ssl_client_serial"; }}
    location = /gates {{ return 200 "{gates}|$exact"; }}
    location / {{ return 200 "$ssl_client_s_dn"; }}
}}
"""


class Lab:
    """The CA, a shared client key, and the running nginx's port."""

    def __init__(self, d: Path) -> None:
        self.dir, self.now = d, datetime.now(timezone.utc)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "mtlsc dn test CA")])
        self.ca = self._cert(ca_name, ca_name, self.ca_key.public_key(), 1, ca=True)
        server = self._cert(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")]),
                            ca_name, self.key.public_key(), 2, ca=False)
        self._write("ca.pem", self.ca)
        self._write("server.pem", server)
        self._write("server.key", self.key)
        self.port, self.count = 0, itertools.count()

    def _cert(self, subject, issuer, public_key, serial: int, *, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(serial).not_valid_before(self.now - timedelta(hours=1))
                   .not_valid_after(self.now + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ), critical=True)
        return builder.sign(self.ca_key, hashes.SHA256())

    def _write(self, name: str, obj) -> Path:
        path = self.dir / name
        if isinstance(obj, x509.Certificate):
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return path

    def client(self, subject: x509.Name, serial: int) -> Path:
        """Issue a client certificate; return its PEM path (the key is `client.key`)."""
        cert = self._cert(subject, self.ca.subject, self.key.public_key(), serial, ca=False)
        if not (self.dir / "client.key").exists():
            self._write("client.key", self.key)
        return self._write(f"client-{next(self.count)}.pem", cert)

    def ask(self, cert: Path) -> dict[str, str]:
        """GET /, /serial and /gates over one TLS connection presenting `cert`."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(cert, self.dir / "client.key")
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=5)
        try:
            out = {}
            for path in ("/", "/serial", "/gates"):
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read().decode("ascii")
                assert resp.status == 200, (path, resp.status, body)
                out[path] = body
            return out
        finally:
            conn.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, nginx_bin):
    d = tmp_path_factory.mktemp("dn-nginx")
    lab = Lab(d)
    lab.port = free_port()
    with running_nginx(_http_conf(lab.port, d), d / "nginx", ports=[lab.port], nginx_bin=nginx_bin):
        yield lab


def _expected_gates(s_dn: str) -> str:
    return "".join("1" if dn.matches_constraints(s_dn, g) else "0" for g in GATES)


@pytest.mark.parametrize("name, rdns, printed, serial", TRICKY, ids=[t[0] for t in TRICKY])
def test_tricky_subjects(lab, name, rdns, printed, serial):
    got = lab.ask(lab.client(dn.x509_name(rdns), serial))
    assert got["/"] == printed == dn.format_dn(rdns) == dn.nginx_dn_of(dn.x509_name(rdns))
    assert dn.parse_dn(got["/"]) == dn.parse_dn(dn.format_dn(rdns))
    assert got["/serial"] == dn.nginx_serial(serial)
    gates, exact = got["/gates"].split("|")
    assert gates == _expected_gates(got["/"])
    assert exact == ("1" if dn.matches_subject(got["/"], "CN=alice,O=Acme,C=US") else "0")
    if name in ROW_VERDICTS:
        assert gates[0] == ROW_VERDICTS[name]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rdns=rdn_lists)
def test_generated_subjects(lab, rdns):
    serial = 0x1000 + next(lab.count)
    got = lab.ask(lab.client(dn.x509_name(rdns), serial))
    assert got["/"] == dn.format_dn(rdns)
    assert got["/serial"] == dn.nginx_serial(serial)
    assert got["/gates"].split("|")[0] == _expected_gates(got["/"])


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("the openssl CLI is required", pytrace=False)
    return path


def test_openssl_rfc2253_agrees(lab):
    # `openssl x509 -nameopt RFC2253` calls the same printer as nginx (X509_NAME_print_ex).
    for _, rdns, printed, serial in TRICKY:
        pem = lab.client(dn.x509_name(rdns), serial)
        out = subprocess.run([_openssl(), "x509", "-in", str(pem), "-noout", "-subject", "-serial",
                              "-nameopt", "RFC2253"], capture_output=True, text=True, timeout=10, check=True)
        assert out.stdout == f"subject={printed}\nserial={dn.nginx_serial(serial)}\n"


@pytest.mark.parametrize("serial", [0, -5, int("AB" * 40, 16)])
def test_openssl_serials_cryptography_cannot_mint(tmp_path, serial):
    # cryptography refuses serials <= 0 and > 20 bytes; nginx prints with i2a_ASN1_INTEGER, which
    # openssl -serial shares: `00`, `-05`, and a `\` + newline every 35 bytes.
    key = tmp_path / "k.pem"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert = tmp_path / "c.pem"
    subprocess.run([_openssl(), "req", "-new", "-x509", "-key", str(key), "-subj", "/CN=x", "-days", "1",
                    "-set_serial", str(serial), "-out", str(cert)], capture_output=True, timeout=10, check=True)
    out = subprocess.run([_openssl(), "x509", "-in", str(cert), "-noout", "-serial"],
                         capture_output=True, text=True, timeout=10, check=True)
    assert out.stdout == f"serial={dn.nginx_serial(serial)}\n"
