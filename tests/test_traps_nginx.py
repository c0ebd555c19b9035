"""The traps of docs/nginx-facts.md that the emitted config closes by construction, each shown on the
real nginx with a compiled policy: revocation vs session resumption, exact-DN case semantics, a
second trusted CA minting an allowed subject, large allow lists, the plain-HTTP side door."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlsc import dn
from mtlsc.model.evaluate import Client, evaluate
from mtlsc.lab.client import plain_request, request
from mtlsc.lab.pki import issue_client, make_crl, write_pem
from mtlsc.lab.run import running_lab

pytestmark = pytest.mark.nginx
LOCAL = "127.0.0.1"


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy" / "p.mtls"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _get(lab, path, cert=None, **kw):
    server = lab.policy.servers[0]
    return request(LOCAL, server.listens[0].port, path, server_name=server.names[0],
                   cert=cert[0] if cert else None, key=cert[1] if cert else None, **kw)


REVOCATION = """
ca corp { bundle "ca/root.pem" "ca/issuing.pem"  crl "ca/root.crl" "ca/issuing.crl" }
server api.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route /p/ { require corp  allow any  forward verify }
}
"""


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_revoked_client_cannot_resume_a_session_after_crl_update_and_reload(tmp_path, nginx_bin, now, version):
    with running_lab([_write(tmp_path, REVOCATION)], tmp_path / "lab", nginx_bin=nginx_bin, now=now) as lab:
        cert = lab.pki.client("corp/client")
        first = _get(lab, "/p/x", cert, tls_version=version)
        assert first.status == 200, first
        again = _get(lab, "/p/x", cert, tls_version=version, session=first.session)
        assert again.status == 200 and again.session_reused, "resumption works before the reload"
        # Revoke the client in the installed CRL file, as an operator would, and reload nginx.
        chain = lab.pki.chains["corp"]
        serial = __import__("cryptography.x509", fromlist=["x"]).load_pem_x509_certificate(Path(cert[0]).read_bytes()).serial_number
        server = lab.policy.servers[0]
        write_pem(lab.out_dir / "mtls" / f"{server.slug}.crl.pem",
                  make_crl(chain.root, [], now=now), make_crl(chain.issuing, [serial], now=now))
        lab.nginx.reload()
        resumed = _get(lab, "/p/x", cert, tls_version=version, session=again.session)
        assert not (resumed.status == 200 and resumed.session_reused), resumed
        assert resumed.status == 403 and "not accepted" in resumed.text, resumed


CASE = """
ca corp { bundle "ca/root.pem" }
identity alice { subject "CN=alice,O=Acme,C=US" }
server api.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route /p/ { require corp  allow alice }
}
"""


def test_exact_subjects_match_ascii_case_insensitively_in_nginx_and_in_the_evaluator(tmp_path, nginx_bin, now):
    with running_lab([_write(tmp_path, CASE)], tmp_path / "lab", nginx_bin=nginx_bin, now=now) as lab:
        root = lab.pki.chains["corp"].root
        results = {}
        for subject in ("CN=alice,O=Acme,C=US", "CN=ALICE,O=ACME,C=US", "CN=alice,O=Acme Corp,C=US"):
            issued = issue_client(root, dn.x509_name(dn.parse_dn(subject)), now=now)
            base = tmp_path / subject.replace(",", "_").replace("=", "-").replace(" ", "")
            write_pem(f"{base}.crt", issued.cert)
            write_pem(f"{base}.key", issued.key)
            got = _get(lab, "/p/x", (f"{base}.crt", f"{base}.key")).status
            model = evaluate(lab.policy.servers[0], "/p/x", Client(subject, "", verified_by="corp")).status
            results[subject] = (got, model)
    assert results == {"CN=alice,O=Acme,C=US": (200, 200), "CN=ALICE,O=ACME,C=US": (200, 200),
                       "CN=alice,O=Acme Corp,C=US": (403, 403)}


TWO_CAS = """
ca corp    { bundle "ca/corp.pem" }
ca vendors { bundle "ca/vendors.pem" }
identity alice { subject "CN=alice,O=Acme,C=US" }
server api.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route /corp/    { require corp     allow alice }
  route /vendors/ { require vendors  allow any }
}
"""


def test_a_second_trusted_ca_cannot_mint_an_allowed_identity(tmp_path, nginx_bin, now):
    with running_lab([_write(tmp_path, TWO_CAS)], tmp_path / "lab", nginx_bin=nginx_bin, now=now) as lab:
        vendors = lab.pki.chains["vendors"].issuing
        impostor = issue_client(vendors, dn.x509_name(dn.parse_dn("CN=alice,O=Acme,C=US")), now=now)
        write_pem(tmp_path / "impostor.crt", impostor.cert)
        write_pem(tmp_path / "impostor.key", impostor.key)
        cert = (tmp_path / "impostor.crt", tmp_path / "impostor.key")
        corp = _get(lab, "/corp/x", cert)
        assert corp.status == 403 and "not accepted" in corp.text, corp  # bad_cert: wrong CA for this route
        assert _get(lab, "/vendors/x", cert).status == 200  # the CA it really comes from
        assert _get(lab, "/corp/x", lab.pki.client("corp/id-alice")).status == 200


def test_large_allow_lists_load_and_match(tmp_path, nginx_bin, now):
    """5,000 exact subjects and 300 fingerprints: hashed maps sized by the compiler (map_hash_*)."""
    idents = "\n".join(f'identity u{i} {{ subject "CN=user-{i:05d}-with-a-fairly-long-common-name,OU=Partners,O=Example Org,C=US" }}'
                       for i in range(5000))
    pins = "\n".join(f'identity f{i} {{ fingerprint "{i:040x}" }}' for i in range(300))
    names = " ".join([f"u{i}" for i in range(5000)] + [f"f{i}" for i in range(300)])
    text = f"""
ca corp {{ bundle "ca/root.pem" }}
{idents}
{pins}
server api.example.com {{
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route /p/ {{ require corp  allow {names} }}
}}
"""
    with running_lab([_write(tmp_path, text)], tmp_path / "lab", nginx_bin=nginx_bin, now=now) as lab:
        # The lab PKI mints a sample of a long allow list (cast.IDENTITY_SAMPLE), its first and
        # last names included: u999 sorts last, so it is the map's last key.
        assert _get(lab, "/p/x", lab.pki.client("corp/id-u999")).status == 200
        assert _get(lab, "/p/x", lab.pki.client("corp/client")).status == 403


def test_no_plain_http_side_door(tmp_path, nginx_bin, now):
    with running_lab([_write(tmp_path, CASE)], tmp_path / "lab", nginx_bin=nginx_bin, now=now) as lab:
        resp = plain_request(LOCAL, lab.policy.servers[0].listens[0].port, "/p/x")
        assert resp.status == 400 and "plain HTTP request was sent to HTTPS port" in resp.text
