"""A user's own PKI, made the way users make theirs: with plain `openssl` commands (`openssl req`,
`openssl ca`, its index.txt database, `-revoke` and `-gencrl`), never with mtlsc's minting code.

`make_user_pki(DIR)` writes two CAs: `corp` (an RSA root and an issuing CA below it, each with a
CRL) and `partners` (one EC root with a CRL), client certificates issued by the corp issuing CA,
by the corp root and by the partners root, an expired one, one revoked on the issuing CA's CRL,
one from a CA no policy trusts, and a server certificate; plus a policy naming them and a
`*.mtls-test.yaml` whose cases name the real client files.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_CONFIG = """\
[ ca ]
default_ca = ca_default
[ ca_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
default_days = 365
default_crl_days = 30
[ policy_any ]
commonName = supplied
organizationName = optional
organizationalUnitName = optional
countryName = optional
[ client ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ server ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:api.example.com,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ sub_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def openssl(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args)}\n{proc.stderr}"
    return proc.stdout


def _new_key(path: Path, kind: str) -> None:
    if kind == "rsa":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path))
    elif kind == "ed25519":
        openssl("genpkey", "-algorithm", "ED25519", "-out", str(path))
    else:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))


@dataclass
class OpensslCa:
    """One CA certificate, its key and its `openssl ca` database under `dir`."""

    dir: Path
    kind: str = "ec"

    @property
    def cert(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def config(self) -> Path:
        return self.dir / "openssl.cnf"

    def _setup(self) -> None:
        (self.dir / "newcerts").mkdir(parents=True, exist_ok=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "crlnumber").write_text("01\n")
        self.config.write_text(_CONFIG.format(dir=self.dir))
        _new_key(self.key, self.kind)

    @classmethod
    def root(cls, directory: Path, subject: str, kind: str = "ec") -> "OpensslCa":
        ca = cls(directory, kind)
        ca._setup()
        digest = [] if kind == "ed25519" else ["-sha256"]
        openssl("req", "-x509", "-new", "-key", str(ca.key), "-subj", subject, "-days", "3650", *digest,
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-addext", "subjectKeyIdentifier=hash", "-out", str(ca.cert))
        return ca

    def sub_ca(self, directory: Path, subject: str, kind: str = "ec") -> "OpensslCa":
        ca = OpensslCa(directory, kind)
        ca._setup()
        csr = directory / "ca.csr"
        openssl("req", "-new", "-key", str(ca.key), "-subj", subject, "-out", str(csr))
        self._sign(csr, ca.cert, "sub_ca", days="3650")
        return ca

    def _sign(self, csr: Path, out: Path, extensions: str, days: str = "365",
              dates: tuple[str, str] | None = None) -> None:
        period = ["-startdate", dates[0], "-enddate", dates[1]] if dates else ["-days", days]
        openssl("ca", "-batch", "-config", str(self.config), "-preserveDN", "-notext", "-extensions", extensions,
                *period, "-in", str(csr), "-out", str(out))

    def issue(self, base: Path, subject: str, *, expired: bool = False, extensions: str = "client",
              key_kind: str = "ec", reuse_key: Path | None = None) -> Path:
        """`base.crt` + `base.key` for `subject` (`/O=Corp/CN=alice`); with `reuse_key`, a renewal:
        `base.key` is a copy of that key."""
        base.parent.mkdir(parents=True, exist_ok=True)
        key, csr, crt = (base.with_name(base.name + s) for s in (".key", ".csr", ".crt"))
        if reuse_key is not None:
            key.write_bytes(reuse_key.read_bytes())
        else:
            _new_key(key, key_kind)
        openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
        self._sign(csr, crt, extensions, dates=("20200101000000Z", "20200102000000Z") if expired else None)
        return crt

    def revoke(self, cert: Path) -> None:
        openssl("ca", "-config", str(self.config), "-revoke", str(cert))

    def crl(self, out: Path) -> Path:
        openssl("ca", "-config", str(self.config), "-gencrl", "-out", str(out))
        return out


@dataclass
class UserPki:
    dir: Path
    corp_root: OpensslCa
    corp_issuing: OpensslCa
    partners: OpensslCa
    policy: Path
    tests: Path

    def write_crls(self) -> None:
        """The CRL files the policy names, from each CA's database as it is now."""
        self.corp_root.crl(self.dir / "corp-root.crl")
        self.corp_issuing.crl(self.dir / "corp-issuing.crl")
        self.partners.crl(self.dir / "partners.crl")


POLICY = """\
ca corp {{
  bundle "{corp_root}" "{corp_issuing}"
  crl "corp-root.crl" "corp-issuing.crl"
}}
ca partners {{
  bundle "{partners}"
  depth 0
  crl "partners.crl"
}}
identity alice {{ subject "CN=alice,O=Corp" }}
identity bob {{ subject "CN=bob,O=Corp" }}
identity acme {{ subject "CN=acme,O=Partners" }}
server api.example.com {{
  listen {listen}
  certificate "{server}.crt" key "{server}.key"
  backend "{backend}"
  install "{install}"
  route /corp/ {{ require corp allow alice bob forward subject issuer serial fingerprint cert not_before not_after days_remaining }}
  route /partners/ {{ require partners allow acme forward subject issuer }}
  route /health {{ public }}
}}
"""

TESTS = """\
cases:
  - name: alice, issued by the corp issuing CA
    client: {cert: clients/alice.crt, key: clients/alice.key}
    request: /corp/orders
    expect: allow
    headers:
      X-Client-Subject: "CN=alice,O=Corp"
      X-Client-Issuer: "CN=Corp Issuing CA,O=Corp"
      X-Client-Serial: "%(alice_serial)s"
      X-Client-Fingerprint: "%(alice_fingerprint)s"
      X-Client-Cert: true
  - name: bob, issued by the corp root itself
    client: {cert: clients/bob.crt, key: clients/bob.key}
    request: /corp/orders
    expect: allow
    headers: {X-Client-Issuer: "CN=Corp Root,O=Corp"}
  - name: acme, issued by the partners root
    client: {cert: clients/acme.crt, key: clients/acme.key}
    request: /partners/x
    expect: allow
    headers: {X-Client-Subject: "CN=acme,O=Partners"}
  - name: acme on the corp route
    client: {cert: clients/acme.crt, key: clients/acme.key}
    request: /corp/orders
    expect: 403
    reason: bad_cert
  - name: carol is corp's but on no allow list
    client: {cert: clients/carol.crt, key: clients/carol.key}
    request: /corp/orders
    expect: 403
    reason: forbidden
  - name: alice's expired certificate
    client: {cert: clients/old.crt, key: clients/old.key}
    request: /health
    expect: 403
    reason: bad_cert
  - name: a certificate revoked on the issuing CA's CRL
    client: {cert: clients/gone.crt, key: clients/gone.key}
    request: /corp/orders
    expect: 403
    reason: bad_cert
  - name: alice's subject from a CA nobody trusts
    client: {cert: clients/evil.crt, key: clients/evil.key}
    request: /corp/orders
    expect: 403
    reason: bad_cert
  - name: an identity mtlsc mints (needs the CA's key in the lab)
    client: bob
    request: /corp/x
    expect: allow
"""


def make_user_pki(directory: Path, *, listen: str = "443", backend: str = "http://127.0.0.1:9",
                  install: str = "/etc/nginx/mtls") -> UserPki:
    """The user's PKI, policy and tests under `directory` (see the module docstring). The bundle
    paths are relative to the policy, as users write them."""
    directory.mkdir(parents=True, exist_ok=True)
    corp_root = OpensslCa.root(directory / "corp-root", "/O=Corp/CN=Corp Root", kind="rsa")
    corp_issuing = corp_root.sub_ca(directory / "corp-issuing", "/O=Corp/CN=Corp Issuing CA", kind="rsa")
    partners = OpensslCa.root(directory / "partners", "/O=Partners/CN=Partners Root")
    stranger = OpensslCa.root(directory / "stranger", "/O=Corp/CN=Corp Root")  # the same name, another key
    clients = directory / "clients"
    corp_issuing.issue(clients / "alice", "/O=Corp/CN=alice")
    corp_root.issue(clients / "bob", "/O=Corp/CN=bob")
    corp_issuing.issue(clients / "carol", "/O=Corp/CN=carol")
    partners.issue(clients / "acme", "/O=Partners/CN=acme")
    corp_issuing.issue(clients / "old", "/O=Corp/CN=alice", expired=True)
    corp_issuing.issue(clients / "gone", "/O=Corp/CN=alice")
    corp_issuing.revoke(clients / "gone.crt")
    stranger.issue(clients / "evil", "/O=Corp/CN=alice")
    server_ca = OpensslCa.root(directory / "server-ca", "/O=Corp/CN=Corp Server CA")
    server_ca.issue(directory / "server", "/O=Corp/CN=api.example.com", extensions="server")
    policy = directory / "user.mtls"
    policy.write_text(POLICY.format(corp_root="corp-root/ca.pem", corp_issuing="corp-issuing/ca.pem",
                                    partners="partners/ca.pem", listen=listen, backend=backend, install=install,
                                    server=directory.absolute() / "server"))
    alice = clients / "alice.crt"
    serial = openssl("x509", "-in", str(alice), "-noout", "-serial").strip().split("=")[1]
    fingerprint = openssl("x509", "-in", str(alice), "-noout", "-fingerprint", "-sha1").strip().split("=")[1]
    tests = directory / "user.mtls-test.yaml"
    tests.write_text(TESTS % {"alice_serial": serial, "alice_fingerprint": fingerprint.replace(":", "").lower()})
    pki = UserPki(directory, corp_root, corp_issuing, partners, policy, tests)
    pki.write_crls()
    return pki
