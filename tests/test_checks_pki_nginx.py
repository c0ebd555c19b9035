"""The file-based lockout checks, proven necessary on the real nginx.

For each trap: (a) `mtlsc check` reports the code at the policy string that causes it; (b) the same
policy compiled without the checks (`analyse=False`) really refuses a valid client, with the
OpenSSL reason in nginx's error.log; (c) the fixed policy lets that client in. PKIs are minted
at test time with the current time, since nginx checks dates against its clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mtlsc import pipeline
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import NginxProcess, free_port, running_nginx
from mtlsc.lab.pki import CaChain, Issued, issue_client, issue_server, make_chain, make_crl, make_intermediate, make_root, write_pem
from mtlsc.output import write_atomic

pytestmark = pytest.mark.nginx

HOST = "mtls.test"
BAD_CERT = "mtlsc-test: bad certificate"
POLICY = """nginx ">= 1.22"

ca c {{
{ca}
}}

server mtls.test {{
  listen 127.0.0.1:{port}
  certificate "{crt}" key "{key}"
  backend "{backend}"
  install "{install}"
  reject bad_cert 403 "{bad}"
  route = /healthz {{ public }}
  route /p/ {{ require c  allow any  forward verify }}
}}
"""


@dataclass
class Pki:
    dir: Path
    chain: CaChain
    client: tuple[Path, Path]  # (certificate, key) of a valid client of the issuing CA
    now: datetime

    def f(self, name: str) -> str:
        return str(self.dir / name)


def _pki(tmp_path: Path, now: datetime, intermediates: int = 1, chain: CaChain | None = None) -> Pki:
    """A chain written as r.pem, i1.pem, ... with current CRLs r.crl, i1.crl, ..., a client of
    the issuing CA, and the server's own certificate."""
    d = tmp_path / "pki"
    chain = chain or make_chain("lab", intermediates, now=now)
    for n, member in enumerate(chain.members):
        name = "r" if n == 0 else f"i{n}"
        write_pem(d / f"{name}.pem", member.cert)
        write_pem(d / f"{name}.crl", make_crl(member, [], now=now))
    alice = issue_client(chain.issuing, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]), now=now)
    write_pem(d / "alice.crt", alice.cert)
    write_pem(d / "alice.key", alice.key)
    srv = issue_server(make_root("lab server CA", now=now), [HOST, "127.0.0.1"], now=now)
    write_pem(d / "srv.crt", srv.cert)
    write_pem(d / "srv.key", srv.key)
    return Pki(d, chain, (d / "alice.crt", d / "alice.key"), now)


def _policy_file(work: Path, pki: Pki, ca: str, port: int = 1, backend: str = "http://127.0.0.1:9") -> Path:
    work.mkdir(parents=True, exist_ok=True)
    text = POLICY.format(ca=ca, port=port, crt=pki.f("srv.crt"), key=pki.f("srv.key"), backend=backend,
                         install=work / "out" / "mtls", bad=BAD_CERT)
    (work / "p.mtls").write_text(text)
    return work / "p.mtls"


def _pos(path: Path, needle: str) -> tuple[int, int]:
    text = path.read_text()
    at = text.index(needle)
    return text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1


def _assert_reported(work: Path, pki: Pki, ca: str, code: str, needle: str, now: datetime) -> None:
    """(a) `mtlsc check` reports `code` at `needle` (a bundle/crl string, or `ca c {`)."""
    path = _policy_file(work / "check", pki, ca)
    diags = pipeline.check([str(path)], now=now).diagnostics
    found = [(d.span.line, d.span.col) for d in diags if d.code == code]
    assert found == [_pos(path, needle)], [(d.code, str(d.span), d.message) for d in diags]


@contextmanager
def _serving(work: Path, pki: Pki, ca: str, nginx_bin: str, now: datetime, analyse: bool) -> Iterator[tuple[NginxProcess, int]]:
    """Compile the policy (with or without the checks) and serve it on real nginx."""
    port = free_port()
    with running_echo_backend() as echo:
        path = _policy_file(work, pki, ca, port, echo.url)
        result = pipeline.compile_policy([str(path)], now=now, analyse=analyse)
        assert not result.failed, [(d.code, d.message) for d in result.diagnostics]
        write_atomic(work / "out", result.outputs)
        with running_nginx(f"include {work / 'out'}/nginx/*.conf;", work / "nginx", ports=[port],
                           nginx_bin=nginx_bin) as nginx:
            yield nginx, port


def _get(port: int, client: tuple[Path, Path]):
    return request("127.0.0.1", port, "/p/", server_name=HOST, cert=client[0], key=client[1])


def _prove(tmp_path: Path, pki: Pki, bad: str, fixed: str, code: str, needle: str, reason: str,
           nginx_bin: str, now: datetime, fixed_client: tuple[Path, Path] | None = None) -> None:
    """(a) the code is reported at `needle`; (b) unchecked, nginx refuses the valid client with
    `reason` in error.log; (c) the fixed policy is clean of the code and lets the client in."""
    _assert_reported(tmp_path / "bad", pki, bad, code, needle, now)
    with _serving(tmp_path / "bad", pki, bad, nginx_bin, now, analyse=False) as (nginx, port):
        resp = _get(port, pki.client)
        assert resp.status == 403 and BAD_CERT in resp.text, (resp.status, resp.text, resp.error)
        assert nginx.wait_for_log(f"client SSL certificate verify error: ({reason})", log="error"), nginx.error_log()
    fixed_path = _policy_file(tmp_path / "fixed" / "check", pki, fixed)
    assert not [d for d in pipeline.check([str(fixed_path)], now=now).diagnostics if d.code == code]
    with _serving(tmp_path / "fixed", pki, fixed, nginx_bin, now, analyse=True) as (nginx, port):
        resp = _get(port, fixed_client or pki.client)
        assert resp.status == 200 and "X-Client-Verify: SUCCESS" in resp.text, (resp.status, resp.text, resp.error)


def _client_of(pki: Pki, issuer, name: str) -> tuple[Path, Path]:
    alice = issue_client(issuer, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]), now=pki.now)
    write_pem(pki.dir / f"{name}.crt", alice.cert)
    write_pem(pki.dir / f"{name}.key", alice.key)
    return pki.dir / f"{name}.crt", pki.dir / f"{name}.key"


def _ca(bundle: list[str], depth: int = 1, crls: list[str] = ()) -> str:
    lines = ["  bundle " + " ".join(f'"{b}"' for b in bundle), f"  depth {depth}"]
    if crls:
        lines.append("  crl " + " ".join(f'"{c}"' for c in crls))
    return "\n".join(lines)


# ----- the four traps of the issue ---------------------------------------------------------------------

def test_mtls102_crl_missing_for_the_intermediate_locks_its_clients_out(tmp_path, nginx_bin, now):
    pki = _pki(tmp_path, now)
    bundle = [pki.f("r.pem"), pki.f("i1.pem")]
    _prove(tmp_path, pki, _ca(bundle, crls=[pki.f("r.crl")]), _ca(bundle, crls=[pki.f("r.crl"), pki.f("i1.crl")]),
           "MTLS102", f'"{pki.f("i1.pem")}"', "3:unable to get certificate CRL", nginx_bin, now)


def test_mtls102_only_the_intermediates_crl_locks_everyone_out(tmp_path, nginx_bin, now):
    pki = _pki(tmp_path, now)
    bundle = [pki.f("r.pem"), pki.f("i1.pem")]
    _prove(tmp_path, pki, _ca(bundle, crls=[pki.f("i1.crl")]), _ca(bundle, crls=[pki.f("r.crl"), pki.f("i1.crl")]),
           "MTLS102", f'"{pki.f("r.pem")}"', "3:unable to get certificate CRL", nginx_bin, now)


def test_mtls306_expired_crl_locks_clients_out(tmp_path, nginx_bin, now):
    pki = _pki(tmp_path, now)
    write_pem(pki.dir / "i1-expired.crl", make_crl(pki.chain.intermediates[0], [], now=now, next_update=-timedelta(days=1)))
    bundle = [pki.f("r.pem"), pki.f("i1.pem")]
    _prove(tmp_path, pki, _ca(bundle, crls=[pki.f("r.crl"), pki.f("i1-expired.crl")]),
           _ca(bundle, crls=[pki.f("r.crl"), pki.f("i1.crl")]),
           "MTLS306", f'"{pki.f("i1-expired.crl")}"', "12:CRL has expired", nginx_bin, now)


def test_mtls110_depth_too_small_locks_clients_out(tmp_path, nginx_bin, now):
    pki = _pki(tmp_path, now, intermediates=2)
    bundle = [pki.f("r.pem"), pki.f("i1.pem"), pki.f("i2.pem")]
    _prove(tmp_path, pki, _ca(bundle, depth=1), _ca(bundle, depth=2),
           "MTLS110", "depth 1", "2:unable to get issuer certificate", nginx_bin, now)


def test_mtls111_bundle_without_root_locks_clients_out(tmp_path, nginx_bin, now):
    pki = _pki(tmp_path, now)
    _prove(tmp_path, pki, _ca([pki.f("i1.pem")]), _ca([pki.f("r.pem"), pki.f("i1.pem")]),
           "MTLS111", f'"{pki.f("i1.pem")}"', "2:unable to get issuer certificate", nginx_bin, now)


# ----- more file traps, same proof ------------------------------------------------------------------------

def test_mtls112_path_length_exceeded_locks_clients_out(tmp_path, nginx_bin, now):
    root = make_root("lab root", now=now, path_length=0)
    pki = _pki(tmp_path, now, chain=CaChain(root, (make_intermediate(root, "lab issuing", now=now),)))
    good_root = make_root("lab root", now=now)  # the fix: the root reissued without pathLen
    good = make_intermediate(good_root, "lab issuing", now=now)
    write_pem(pki.dir / "r2.pem", good_root.cert)
    write_pem(pki.dir / "i2.pem", good.cert)
    _prove(tmp_path, pki, _ca([pki.f("r.pem"), pki.f("i1.pem")]), _ca([pki.f("r2.pem"), pki.f("i2.pem")]),
           "MTLS112", f'"{pki.f("i1.pem")}"', "25:path length constraint exceeded", nginx_bin, now,
           fixed_client=_client_of(pki, good, "alice2"))


def test_mtls307_crl_not_yet_valid_locks_clients_out(tmp_path, nginx_bin, now):
    pki = _pki(tmp_path, now)
    write_pem(pki.dir / "i1-future.crl",
              make_crl(pki.chain.intermediates[0], [], now=now, last_update=now + timedelta(days=1)))
    bundle = [pki.f("r.pem"), pki.f("i1.pem")]
    _prove(tmp_path, pki, _ca(bundle, crls=[pki.f("r.crl"), pki.f("i1-future.crl")]),
           _ca(bundle, crls=[pki.f("r.crl"), pki.f("i1.crl")]),
           "MTLS307", f'"{pki.f("i1-future.crl")}"', "11:CRL is not yet valid", nginx_bin, now)


def test_mtls309_crl_signed_by_another_key_locks_clients_out(tmp_path, nginx_bin, now):
    pki = _pki(tmp_path, now)
    impostor = make_root("lab intermediate 1", now=now)  # the intermediate's DN, another key
    write_pem(pki.dir / "i1-other.crl", make_crl(impostor, [], now=now))
    bundle = [pki.f("r.pem"), pki.f("i1.pem")]
    _prove(tmp_path, pki, _ca(bundle, crls=[pki.f("r.crl"), pki.f("i1-other.crl")]),
           _ca(bundle, crls=[pki.f("r.crl"), pki.f("i1.crl")]),
           "MTLS309", f'"{pki.f("i1-other.crl")}"', "3:unable to get certificate CRL", nginx_bin, now)


def test_mtls310_expired_root_locks_clients_out(tmp_path, nginx_bin, now):
    expired_root = make_root("lab root", now=now - timedelta(days=40), days=30)
    pki = _pki(tmp_path, now, chain=CaChain(expired_root, (make_intermediate(expired_root, "lab issuing", now=now),)))
    renewed = make_chain("lab", 1, now=now)  # the fix: the renewed chain
    write_pem(pki.dir / "r-new.pem", renewed.root.cert)
    write_pem(pki.dir / "i-new.pem", renewed.intermediates[0].cert)
    _prove(tmp_path, pki, _ca([pki.f("r.pem"), pki.f("i1.pem")]), _ca([pki.f("r-new.pem"), pki.f("i-new.pem")]),
           "MTLS310", f'"{pki.f("r.pem")}"', "10:certificate has expired", nginx_bin, now,
           fixed_client=_client_of(pki, renewed.issuing, "alice2"))


def test_mtls313_self_signed_non_ca_locks_clients_out(tmp_path, nginx_bin, now):
    notca = _self_signed_non_ca(now)
    pki = _pki(tmp_path, now, chain=CaChain(notca))
    good = make_root("lab root", now=now)
    write_pem(pki.dir / "r-ca.pem", good.cert)
    _prove(tmp_path, pki, _ca([pki.f("r.pem")], depth=0), _ca([pki.f("r-ca.pem")], depth=0),
           "MTLS313", f'"{pki.f("r.pem")}"', "26:unsuitable certificate purpose", nginx_bin, now,
           fixed_client=_client_of(pki, good, "alice2"))


def _self_signed_non_ca(now: datetime) -> Issued:
    """A self-signed "CA" with basicConstraints CA:FALSE (docs/nginx-facts.md §12)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab root")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)
