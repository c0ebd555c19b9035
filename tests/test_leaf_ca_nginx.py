"""`ca NAME { leaf ... }` end to end on real nginx (docs/language.md "Trusted leaf certificates"):
the user's own self-signed client certificates, made with plain `openssl req -x509` at test time,
are trusted as themselves. Listed leaves reach the echo backend; an unlisted self-signed
certificate, a twin with a listed leaf's subject and serial but another key, and an expired copy
are refused. On a server that also trusts an ordinary CA, each route takes only its own CA's
clients, even when the other CA's client copies a leaf's subject, or its issuer copies the
leaf's name through a sub-CA (then only the fingerprint gate stands between it and the route)."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mtlsc import pipeline
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.pki import issue_server, make_root, write_pem
from mtlsc.output import write_atomic
from support import drop_lines

pytestmark = pytest.mark.nginx
NOW = datetime.now(timezone.utc)
REFUSED = (403, b"client certificate not accepted\n")
FORBIDDEN = (403, b"client certificate not allowed here\n")

POLICY = """nginx ">= 1.22"
ca laptops {{ leaf "{d}/alice.pem" "{d}/bob.pem" }}
ca staff {{ bundle "{d}/staff-root.pem"  depth 1 }}
identity alice {{ subject "CN=alice,O=Laptops" }}
server api.test {{
  listen 127.0.0.1:{port}
  certificate "{d}/srv.crt" key "{d}/srv.key"
  backend "http://127.0.0.1:{echo}"
  install "{d}/out/mtls"
  route = /healthz {{ public }}
  route /leaf/ {{ require laptops  allow any  forward subject fingerprint verify }}
  route /alice/ {{ require laptops  allow alice  forward subject }}
  route /staff/ {{ require staff  allow any  forward subject }}
}}
"""


def _openssl_leaf(d: Path, name: str, subject: str, serial: str | None = None) -> tuple[Path, Path]:
    """A self-signed client certificate the way a user makes one, with the openssl command line."""
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"), "-days", "30", "-subj", subject,
           "-addext", "extendedKeyUsage=clientAuth", "-addext", "basicConstraints=critical,CA:FALSE"]
    subprocess.run(cmd + (["-set_serial", serial] if serial else []), check=True, capture_output=True, timeout=60)
    return d / f"{name}.pem", d / f"{name}.key"


def _key_of(path: Path):
    return serialization.load_pem_private_key(path.read_bytes(), None)


def _cert(subject: x509.Name, issuer, issuer_key, key, *, ca: bool, serial: int | None = None,
          days=(timedelta(hours=-1), timedelta(days=30)), ski: bool = True) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer.subject if issuer else subject)
         .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(NOW + days[0]).not_valid_after(NOW + days[1])
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if issuer is not None:
        # the issuer's key id: without it OpenSSL tries the trusted leaf of the same name and fails
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def _name(text: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(text)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("leafca")
    srv = issue_server(make_root("server ca", now=NOW), ["api.test"], now=NOW)
    write_pem(d / "srv.crt", srv.cert)
    write_pem(d / "srv.key", srv.key)
    clients = {"alice": _openssl_leaf(d, "alice", "/O=Laptops/CN=alice", "0x1234"),
               "bob": _openssl_leaf(d, "bob", "/O=Laptops/CN=bob"),
               "carol (unlisted)": _openssl_leaf(d, "carol", "/O=Laptops/CN=carol"),
               # alice's subject and serial, its own key
               "alice's twin": _openssl_leaf(d, "twin", "/O=Laptops/CN=alice", "0x1234")}
    alice = x509.load_pem_x509_certificate((d / "alice.pem").read_bytes())

    def write(label: str, cert, key, *chain) -> None:
        clients[label] = (write_pem(d / f"{label}.crt", cert, *chain), write_pem(d / f"{label}.key", key))

    key = ec.generate_private_key(ec.SECP256R1())
    write("expired alice", _cert(alice.subject, None, None, key, ca=False, serial=0x1234,
                                 days=(timedelta(days=-60), timedelta(days=-1))), key)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert(_name("CN=staff root,O=Example Corp"), None, None, root_key, ca=True)
    write_pem(d / "staff-root.pem", root)
    key = ec.generate_private_key(ec.SECP256R1())
    write("staff", _cert(_name("CN=dave,O=Example Corp"), root, root_key, key, ca=False), key)
    key = ec.generate_private_key(ec.SECP256R1())
    write("staff client named alice", _cert(alice.subject, root, root_key, key, ca=False), key)
    # a sub-CA of staff that copies alice's name: its client's issuer DN is byte-identical to alice's
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = _cert(alice.subject, root, root_key, sub_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    # (its own subject differs from its issuer's, or OpenSSL takes it for self-signed)
    write("look-alike under a staff sub-CA named alice", _cert(_name("CN=mallory,O=Laptops"), sub, sub_key, key, ca=False),
          key, sub)
    return d, clients


def _serve(d: Path, echo_port: int) -> int:
    port = free_port()
    (d / "p.mtls").write_text(POLICY.format(d=d, port=port, echo=echo_port))
    # now, not NOW: openssl dates its leaves from when the fixture ran, after this module was imported
    result = pipeline.compile_policy([str(d / "p.mtls")], now=datetime.now(timezone.utc))
    assert not result.failed, "\n".join(f"{x.code} {x.severity} {x.message}" for x in result.diagnostics)
    assert not any(p.endswith(".keys.js") for p in result.outputs), "a leaf CA needs no key binding (no njs)"
    write_atomic(d / "out", result.outputs)
    return port


def _get(port: int, path: str, client: tuple[Path, Path] | None):
    cert, key = client if client else (None, None)
    r = request("127.0.0.1", port, path, server_name="api.test", cert=cert, key=key)
    return r.status, r.body


def test_each_route_takes_only_its_own_cas_clients(lab):
    d, clients = lab
    with running_echo_backend() as echo:
        port = _serve(d, echo.port)
        with running_nginx(f"include {d}/out/nginx/*.conf;", d / "nginx", ports=[port]):
            for leaf in ("alice", "bob"):
                assert _get(port, "/leaf/x", clients[leaf])[0] == 200, leaf
                assert _get(port, "/staff/x", clients[leaf]) == REFUSED, leaf
            seen = echo.snapshot()[-2]
            assert seen.header_values("X-Client-Subject") == ["CN=alice,O=Laptops"]
            assert seen.header_values("X-Client-Verify") == ["SUCCESS"]
            alice = x509.load_pem_x509_certificate((d / "alice.pem").read_bytes())
            assert seen.header_values("X-Client-Fingerprint") == [alice.fingerprint(hashes.SHA1()).hex()]
            # identity allow lists keep working on a leaf CA's routes
            assert _get(port, "/alice/x", clients["alice"])[0] == 200
            assert _get(port, "/alice/x", clients["bob"]) == FORBIDDEN
            assert _get(port, "/staff/x", clients["staff"])[0] == 200
            assert _get(port, "/staff/x", clients["staff client named alice"])[0] == 200
            before = len(echo.snapshot())
            refused = ["carol (unlisted)", "alice's twin", "expired alice", "staff", "staff client named alice",
                       "look-alike under a staff sub-CA named alice"]
            for label in refused:
                for path in ("/leaf/x", "/alice/x"):
                    assert _get(port, path, clients[label]) == REFUSED, (label, path)
            for label in refused[:3] + refused[-1:]:
                assert _get(port, "/staff/x", clients[label]) == REFUSED, label
            assert len(echo.snapshot()) == before, "a refused client reached the backend"
            assert _get(port, "/leaf/x", None) == (403, b"client certificate required\n")
            assert _get(port, "/healthz", clients["alice"])[0] == 200


def test_the_fingerprint_gate_is_what_stops_the_lookalike(lab, tmp_path):
    """Without the `not_leaf` gate the sub-CA look-alike passes the issuer binding onto the leaf CA's
    `allow any` route (its issuer DN is alice's own name): the gate is not decoration."""
    d, clients = lab
    with running_echo_backend() as echo:
        port = _serve(d, echo.port)
        conf = next((d / "out" / "nginx").glob("api.test_*.conf"))
        drop_lines(conf, "_not_leaf0) {")
        with running_nginx(f"include {d}/out/nginx/*.conf;", tmp_path / "nginx", ports=[port]) as n:
            assert _get(port, "/leaf/x", clients["look-alike under a staff sub-CA named alice"])[0] == 200
            assert n.wait_for_log('s_dn="CN=mallory,O=Laptops"')


LAB_POLICY = """nginx ">= 1.22"
ca laptops { leaf "leaves/alice.pem" "leaves/bob.pem" }
ca staff { bundle "ca/staff-root.pem" "ca/staff-issuing.pem"  depth 1 }
identity alice { subject "CN=alice,O=Laptops" }
identity ops { o "Example Corp"  ou "ops" }
server api.test {
  listen 8443
  certificate "/etc/nginx/api.crt" key "/etc/nginx/api.key"
  backend "http://127.0.0.1:9000"
  route = /healthz { public }
  route /laptops/ { require laptops  allow any  forward subject fingerprint verify }
  route /alice/ { require laptops  allow alice  forward subject }
  route /staff/ { require staff  allow ops  forward subject }
  route /maybe/ { optional laptops  forward verify fingerprint }
}
server solo.test {
  listen 8443
  certificate "/etc/nginx/api.crt" key "/etc/nginx/api.key"
  backend "http://127.0.0.1:9000"
  route = /healthz { public }
  route / { require laptops  allow any }
}
"""
LOOKALIKE_CASE = ("api.test/laptops/ (require laptops): look-alike: a sub-CA signed by ca staff, named like the "
                  "issuing CA of ca laptops -> 403 bad_cert")


def _drop_leaf_gates(out: Path) -> None:
    conf = next((out / "nginx").glob("api.test_*.conf"))
    text = conf.read_text()
    broken = "".join(line for line in text.splitlines(keepends=True) if "_not_leaf0) {" not in line)
    assert broken != text
    conf.write_text(broken)


def test_lab_mints_the_leaves_and_its_near_misses_and_passes(tmp_path, nginx_bin):
    """`mtlsc lab` lists the cast's self-signed leaves in the policy's leaf files, and tests.sh
    expects the unlisted twin (same subject and serial, other key), the expired copy and the
    look-alike under the other CA's sub-CA to be refused, on real nginx."""
    from mtlsc.lab.run import run_lab

    (tmp_path / "p.mtls").write_text(LAB_POLICY)
    run = run_lab([str(tmp_path / "p.mtls")], tmp_path / "lab", nginx_bin=nginx_bin)
    assert run.ok, run.output
    route = "PASS  api.test/alice/ (require laptops): "
    for needle in (route + "self-signed copy of a leaf of ca laptops (its subject and serial, another key) -> 403 bad_cert",
                   route + "expired certificate of ca laptops -> 403 bad_cert", route + "identity alice -> 200",
                   route + "certificate of the CA on no allow list -> 403 forbidden", "PASS  " + LOOKALIKE_CASE):
        assert needle in run.output, needle


def test_lab_fails_without_the_leaf_gate(tmp_path, nginx_bin):
    from mtlsc.lab.run import run_lab

    (tmp_path / "p.mtls").write_text(LAB_POLICY)
    run = run_lab([str(tmp_path / "p.mtls")], tmp_path / "lab", nginx_bin=nginx_bin, tamper=_drop_leaf_gates)
    assert not run.ok
    assert f"FAIL  {LOOKALIKE_CASE}: got HTTP 200" in run.output, run.output


USER_POLICY = """nginx ">= 1.22"
ca laptops { leaf "alice.pem" "bob.pem" }
identity alice { subject "CN=alice,O=Laptops" }
server api.test {
  listen 8443
  certificate "/etc/nginx/api.crt" key "/etc/nginx/api.key"
  backend "http://127.0.0.1:9000"
  route = /healthz { public }
  route /alice/ { require laptops  allow alice }
  route / { require laptops  allow any }
}
"""
USER_TESTS = """server: api.test
cases:
  - {name: alice, client: {cert: alice.pem, key: alice.key}, request: /alice/x, expect: allow}
  - {name: bob elsewhere, client: {cert: bob.pem, key: bob.key}, request: /x, expect: allow}
  - {name: bob on alice's route, client: {cert: bob.pem, key: bob.key}, request: /alice/x, expect: 403, reason: forbidden}
  - {name: alice's twin, client: {cert: twin.pem, key: twin.key}, request: /x, expect: 403, reason: bad_cert}
"""


def test_lab_runs_policy_tests_with_your_own_openssl_leaves(tmp_path):
    """The user's own leaves (plain openssl) stay as they are in the lab: it mints only the near
    misses nginx must refuse (a twin of the first leaf, an expired copy), skips the cases that need
    a holder's certificate (and says why), and runs the policy tests with the real files."""
    from support import run_cli

    _openssl_leaf(tmp_path, "alice", "/O=Laptops/CN=alice", "0x1234")
    _openssl_leaf(tmp_path, "bob", "/O=Laptops/CN=bob")
    _openssl_leaf(tmp_path, "twin", "/O=Laptops/CN=alice", "0x1234")
    (tmp_path / "p.mtls").write_text(USER_POLICY)
    (tmp_path / "p.mtls-test.yaml").write_text(USER_TESTS)
    code, out, err = run_cli("lab", "--allow-skips", "p.mtls", cwd=tmp_path)
    assert code == 0, out + err
    for name in ("alice", "bob elsewhere", "bob on alice's route", "alice's twin"):
        assert f"ok    {name}  (p.mtls-test.yaml:" in out, out
    assert "a `leaf` CA trusts exactly its holders' own certificates" in out
    route = out[out.index("api.test/ (require laptops)\n"):]
    assert "PASS  self-signed copy of a leaf of ca laptops (its subject and serial, another key) -> 403 bad_cert" in route
    assert "PASS  expired certificate of ca laptops -> 403 bad_cert" in route
