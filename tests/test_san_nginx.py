"""SAN identities, SHA-256 pins and SAN headers on the real nginx with njs (docs/language.md "SAN
identities"): every certificate below gets the answer mtlsc's model gives, the backend receives the
SANs exactly as the model encodes them, and hostile SAN values (`,`, `%`, spaces, CR LF) arrive
percent-encoded, never as extra values or headers. The lab's near misses for each kind run in
tests/test_examples_nginx.py (policies/spiffe-mesh.mtls) and below."""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from mtlsc import pipeline
from mtlsc.model.evaluate import Client, evaluate
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.pki import issue_client, issue_server, make_root, write_pem
from mtlsc.lab.run import run_lab
from mtlsc.output import write_atomic
from mtlsc.san import Sans

pytestmark = pytest.mark.nginx
NOW = datetime.now(timezone.utc)
GENERIC = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mesh"),
                     x509.NameAttribute(NameOID.COMMON_NAME, "workload")])
EMPTY = x509.Name([])

POLICY = """\
nginx ">= 1.22" with njs
ca mesh {{ bundle "{d}/root.pem"  depth 0 }}
identity web {{ san spiffe "spiffe://prod.example.org/ns/default/sa/web" }}
identity jobs {{ san spiffe "spiffe://prod.example.org/ns/*/sa/worker" }}
identity api {{ san dns "*.api.example.org" }}
identity node {{ san ip "2001:db8::7" }}
identity pinned {{ fingerprint sha256 "{pin}" }}
server api.test {{
  listen 127.0.0.1:{port}
  certificate "{d}/srv.crt" key "{d}/srv.key"
  install "{d}/out/mtls"
  backend "http://127.0.0.1:{echo}"
  route /mesh/ {{ require mesh  allow web jobs pinned  forward verify spiffe_id san_uri fingerprint_sha256 }}
  route /infra/ {{ require mesh  allow api node  forward verify san_dns san_ip san_email }}
  route /any/ {{ require mesh  allow any  forward san_uri san_dns san_email san_ip spiffe_id }}
}}
"""

# label -> (subject, SANs as (kind, value) with IPs as text)
CLIENTS = {
    "svid": (EMPTY, [("uri", "spiffe://prod.example.org/ns/default/sa/web")]),
    "worker": (EMPTY, [("uri", "spiffe://prod.example.org/ns/team-a/sa/worker")]),
    "two-uris": (EMPTY, [("uri", "spiffe://prod.example.org/ns/default/sa/web"), ("uri", "https://example.org/x")]),
    "lookalike-td": (EMPTY, [("uri", "spiffe://prod.example.org.evil/ns/default/sa/web")]),
    "upper-td": (EMPTY, [("uri", "spiffe://PROD.example.org/ns/default/sa/web")]),
    "escaped": (EMPTY, [("uri", "spiffe://prod.example.org/ns/default/sa/w%65b")]),
    "cn-only": (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "spiffe://prod.example.org/ns/default/sa/web")]), []),
    "dns": (GENERIC, [("dns", "Node1.API.example.org")]),
    "dns-suffix": (GENERIC, [("dns", "evil-api.example.org")]),
    "dns-two-labels": (GENERIC, [("dns", "a.b.api.example.org")]),
    "ipv6": (GENERIC, [("ip", "2001:0db8:0000:0000:0000:0000:0000:0007")]),
    "ipv6-next": (GENERIC, [("ip", "2001:db8::8")]),
    "pinned": (GENERIC, []),
    "hostile": (GENERIC, [("uri", "urn:a,b%20c d"), ("email", "x,y@example.org"), ("dns", "ok.example.org"),
                          ("uri", "urn:x\r\nX-Client-Verify: SUCCESS"), ("ip", "10.0.0.1"), ("ip", "::ffff:10.0.0.2")]),
    # OpenSSL's text listing separates names by ", ": this one URI reads there as a URI and a DNS name
    "listing-lookalike": (GENERIC, [("uri", "urn:a, DNS:evil.example.org"), ("dns", "ok.example.org")]),
}


def _general(kind: str, value: str) -> x509.GeneralName:
    return {"uri": x509.UniformResourceIdentifier, "dns": x509.DNSName, "email": x509.RFC822Name}[kind](value) \
        if kind != "ip" else x509.IPAddress(ipaddress.ip_address(value))


def _sans(names) -> Sans:
    return Sans(tuple((k, ipaddress.ip_address(v).packed.hex() if k == "ip" else v) for k, v in names))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("san")
    root = make_root("mesh root", now=NOW)
    write_pem(d / "root.pem", root.cert)
    srv = issue_server(make_root("server ca", now=NOW), ["api.test"], now=NOW)
    write_pem(d / "srv.crt", srv.cert)
    write_pem(d / "srv.key", srv.key)
    clients = {}
    for label, (subject, names) in CLIENTS.items():
        issued = issue_client(root, subject, now=NOW, sans=_sans(names))
        write_pem(d / f"{label}.crt", issued.cert)
        write_pem(d / f"{label}.key", issued.key)
        der = issued.cert.public_bytes(serialization.Encoding.DER)
        clients[label] = (d / f"{label}.crt", d / f"{label}.key", hashlib.sha256(der).hexdigest(), names)
    port = free_port()
    with running_echo_backend() as echo:
        (d / "p.mtls").write_text(POLICY.format(d=d, port=port, echo=echo.port, pin=clients["pinned"][2]))
        result = pipeline.compile_policy([str(d / "p.mtls")], now=NOW)
        assert not result.failed, [(x.code, x.message) for x in result.diagnostics]
        write_atomic(d / "out", result.outputs)
        with running_nginx(f"include {d}/out/nginx/*.conf;", d / "nginx", ports=[port]):
            yield result.policy.servers[0], port, clients, echo


def _client(entry, subject_name: str) -> Client:
    _, _, sha, names = entry
    return Client(subject_name, "", verified_by="mesh", sans=_sans(names), sha256=sha)


def _subject(label: str) -> str:
    return {"cn-only": "CN=spiffe://prod.example.org/ns/default/sa/web", "dns": "CN=workload,O=mesh",
            "ipv6": "CN=workload,O=mesh", "ipv6-next": "CN=workload,O=mesh", "pinned": "CN=workload,O=mesh",
            "dns-suffix": "CN=workload,O=mesh", "dns-two-labels": "CN=workload,O=mesh",
            "hostile": "CN=workload,O=mesh", "listing-lookalike": "CN=workload,O=mesh"}.get(label, "")


@pytest.mark.parametrize("path", ["/mesh/x", "/infra/x", "/any/x"])
@pytest.mark.parametrize("label", list(CLIENTS))
def test_nginx_answers_as_the_model_and_forwards_what_it_says(lab, label, path):
    server, port, clients, echo = lab
    crt, key, _, _ = clients[label]
    echo.clear()
    got = request("127.0.0.1", port, path, server_name="api.test", cert=crt, key=key)
    want = evaluate(server, path, _client(clients[label], _subject(label)))
    assert got.status == want.status, (label, path, got.status, got.body)
    if want.status != 200:
        assert echo.snapshot() == []
        return
    [seen] = echo.snapshot()
    for header, value in want.headers:
        assert seen.header_values(header) == [value], (label, header)
    forwarded = {h.lower() for h, _ in want.headers}
    for header in ("X-Client-San-Uri", "X-Client-San-Dns", "X-Client-San-Email", "X-Client-San-Ip",
                   "X-Client-Spiffe-Id", "X-Client-Fingerprint-Sha256", "X-Client-Verify"):
        if header.lower() not in forwarded and not (header == "X-Client-Verify" and path != "/any/x"):
            assert seen.header_values(header) == [], (label, header)


def test_the_svid_with_an_empty_subject_passes_and_near_misses_do_not(lab):
    server, port, clients, _ = lab
    answers = {label: request("127.0.0.1", port, "/mesh/x", server_name="api.test", cert=c[0], key=c[1]).status
               for label, c in clients.items()}
    assert {l for l, s in answers.items() if s == 200} == {"svid", "worker", "pinned"}


def test_hostile_san_values_arrive_encoded(lab):
    _, port, clients, echo = lab
    crt, key, _, _ = clients["hostile"]
    echo.clear()
    assert request("127.0.0.1", port, "/any/x", server_name="api.test", cert=crt, key=key).status == 200
    [seen] = echo.snapshot()
    assert seen.header_values("X-Client-San-Uri") == ["urn:a%2Cb%2520c%20d,urn:x%0D%0AX-Client-Verify:%20SUCCESS"]
    assert seen.header_values("X-Client-San-Email") == ["x%2Cy@example.org"]
    assert seen.header_values("X-Client-San-Ip") == ["10.0.0.1,::ffff:a00:2"]
    assert seen.header_values("X-Client-Spiffe-Id") == []
    assert seen.header_values("X-Client-Verify") == []


def test_tests_sh_expects_the_sans_nginx_forwards(lab):
    """tests.sh computes from each certificate file (openssl + awk over the extension's bytes) the SAN
    values the backend must receive: the same as njs forwarded through nginx, for every client."""
    _, port, clients, echo = lab
    script = (clients["svid"][0].parent / "out" / "tests.sh").read_text()
    start = script.index("sans_of() {")
    sans_of = script[start:script.index("\n}\n", start) + 3]
    kinds = {"X-Client-San-Uri": "URI", "X-Client-San-Dns": "DNS", "X-Client-San-Email": "email",
             "X-Client-San-Ip": "IP Address"}
    for label, (crt, key, _, names) in clients.items():
        echo.clear()
        assert request("127.0.0.1", port, "/any/x", server_name="api.test", cert=crt, key=key).status == 200, label
        [seen] = echo.snapshot()
        lines = "".join(f'printf "%s\\n" "$(sans_of "$1" "{kind}")"\n' for kind in kinds.values())
        out = subprocess.run(["bash", "-c", sans_of + lines, "sans", str(crt)], capture_output=True, text=True,
                             timeout=60, check=True).stdout.split("\n")
        for (header, _), expected in zip(kinds.items(), out):
            assert seen.header_values(header) == ([expected] if expected else []), (label, header)


def test_lab_proves_a_policy_of_every_san_kind(tmp_path, nginx_bin):
    policy = tmp_path / "kinds.mtls"
    policy.write_text(
        'nginx ">= 1.22" with njs\n'
        'ca mesh { bundle "ca/mesh.pem"  depth 0 }\n'
        'identity web { san spiffe "spiffe://prod.example.org/ns/default/sa/web" }\n'
        'identity legacy { san uri "urn:example:svc:Legacy" }\n'
        'identity ops { san email "ops@Example.org" }\n'
        'identity node { san ip "10.0.0.7" }\n'
        'identity api { san dns "*.api.example.org" }\n'
        'identity alice { cn "alice"  o "mesh" }\n'
        'server api.test {\n  listen 8443\n  certificate "/x.crt" key "/x.key"\n  backend "http://127.0.0.1:9"\n'
        '  route = /healthz { public }\n'
        '  route /a/ { require mesh  allow web alice  forward verify spiffe_id san_uri }\n'
        '  route /b/ { require mesh  allow legacy ops node api  forward verify san_dns san_email san_ip }\n}\n')
    run = run_lab([str(policy)], tmp_path / "lab", nginx_bin=nginx_bin)
    assert run.returncode == 0 and run.failed == 0 and run.skipped == 0, run.output
    assert run.output.count("near miss of identity") >= 20, run.output


def test_lab_names_the_package_when_njs_is_missing(tmp_path, nginx_bin, monkeypatch):
    from mtlsc.lab.nginx import NginxStartError
    from mtlsc.lab.run import running_lab as lab_context

    monkeypatch.setenv("MTLSC_NJS_MODULE", "none")
    policy = Path(__file__).parent.parent / "policies" / "spiffe-mesh.mtls"
    with pytest.raises(NginxStartError, match="libnginx-mod-http-js"):
        with lab_context([str(policy)], tmp_path / "lab", nginx_bin=nginx_bin):
            pass
