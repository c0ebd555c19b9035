"""OCSP that works in production and in the lab (issue 11 §2), proven on the real nginx.

`mtlsc lab` on an `ocsp` policy runs an OCSP responder and mints the cast with OCSP URLs, so every
case of tests.sh passes, a revoked certificate and one whose responder does not answer included.
Beside the lab: the `$ssl_client_verify` strings variables.md promises; what `ssl_ocsp_cache`
keeps (good and revoked answers, until nextUpdate, across reloads, not failures) and that it
saves the responder from one question per handshake; what a responder outage does with and without
it; host names in OCSP URLs (no `resolver`: every client refused, MTLS119; with one: looked up
through it) and a `responder` by name (resolved when nginx loads, MTLS115); a responder that never
answers.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509

from mtlsc import dn, pipeline
from mtlsc.lab.client import request
from mtlsc.lab.nginx import test_config
from mtlsc.lab.pki import issue_client, make_chain, write_pem
from mtlsc.lab.run import LAB_OCSP_HOST, Lab, running_lab, test_lab

pytestmark = pytest.mark.nginx

# Two servers, two OCSP CAs with different cache sizes: each server gets its own cache zone
# (one zone name with two sizes would stop nginx).
POLICY = """nginx ">= 1.22"
{resolver}
ca devices {{
  bundle "ca/devices-root.pem" "ca/devices-issuing.pem"
  depth 1
  ocsp {mode}{responder}{cache}
}}

ca partners {{
  bundle "ca/partners-root.pem"
  depth 0
  ocsp leaf cache 1m
  waive MTLS113 "the lab mints every client certificate with an OCSP URL"
}}

identity kiosk {{ cn ~ "^kiosk-[0-9]{{3}}$"  o "Example Retail" }}

server telemetry.example.com {{
  certificate "/etc/nginx/tls/t.crt" key "/etc/nginx/tls/t.key"
  backend "http://127.0.0.1:8082"
  route = /healthz {{ public }}
  route /ingest/ {{ require devices  allow kiosk  forward subject verify }}
}}

server partners.example.com {{
  certificate "/etc/nginx/tls/p.crt" key "/etc/nginx/tls/p.key"
  backend "http://127.0.0.1:8082"
  route /p/ {{ require partners  allow any }}
}}
"""


def _policy(tmp_path: Path, *, mode: str = "leaf", responder: str = "", cache: str = "", resolver: str = "") -> str:
    path = tmp_path / "ocsp.mtls"
    path.write_text(POLICY.format(mode=mode, responder=f' responder "{responder}"' if responder else "",
                                  cache=f" cache {cache}" if cache else "",
                                  resolver=f'resolver "{resolver}"\n' if resolver else ""))
    return str(path)


def _get(lab: Lab, member: str | None, server: int = 0, path: str = "/ingest/x"):
    s = lab.policy.servers[server]
    crt, key = lab.pki.client(member) if member else (None, None)
    return request("127.0.0.1", s.listens[0].port, path, server_name=s.names[0], cert=crt, key=key)


def _serial(lab: Lab, member: str) -> int:
    return x509.load_pem_x509_certificate(lab.pki.client(member)[0].read_bytes()).serial_number


def _asked(lab: Lab, member: str) -> int:
    serial = _serial(lab, member)
    return sum(1 for q in lab.ocsp.queries() if q.serial == serial)


def _verify_logged(lab: Lab, value: str) -> bool:
    return lab.nginx.wait_for_log(f"verify={value} ")


# ----- the lab ----------------------------------------------------------------------------------


def test_mtlsc_lab_on_an_ocsp_leaf_policy_passes_every_case_revoked_and_responder_down_included(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mtlsc", "lab", _policy(tmp_path)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^\d+ passed, 0 failed  \(", proc.stdout, re.M), proc.stdout
    for ca in ("devices", "partners"):
        assert f"PASS  revoked certificate of ca {ca} -> 403 bad_cert" in proc.stdout
        assert f"PASS  certificate of ca {ca} whose OCSP responder does not answer -> 403 bad_cert" in proc.stdout
    assert "PASS  identity kiosk -> 200" in proc.stdout
    assert "mtlsc lab: ocsp: responder http://127.0.0.1:" in proc.stderr
    assert "2 revoked, 2 with a dead responder" in proc.stderr


def test_lab_answers_are_what_variables_md_says_ssl_client_verify_holds(tmp_path):
    with running_lab([_policy(tmp_path)], tmp_path / "lab") as lab:
        assert _get(lab, "devices/id-kiosk").status == 200
        assert _verify_logged(lab, "SUCCESS")
        assert _get(lab, "devices/revoked").status == 403
        assert _verify_logged(lab, "FAILED:certificate revoked")
        assert _get(lab, "devices/ocsp-down").status == 403
        assert _verify_logged(lab, "FAILED:certificate status request failed")
        # The ocsp-down certificate names a port nothing listens on: no question reached the responder.
        assert _asked(lab, "devices/ocsp-down") == 0
        assert "OCSP responder prematurely closed connection" in lab.nginx.error_log()
        # A status the responder does not know (it did not issue the certificate): refused too.
        lab.ocsp.set_status(lab.pki.chains["devices"].issuing.cert, _serial(lab, "devices/client"), "unknown")
        assert [_get(lab, "devices/client", path="/healthz").status for _ in range(2)] == [403, 403]
        assert _verify_logged(lab, "FAILED:certificate status unknown")
        assert _asked(lab, "devices/client") == 1  # an `unknown` answer is kept too
        variables = (lab.out_dir / "variables.md").read_text()
        for value in ("FAILED:certificate revoked", "FAILED:certificate status request failed",
                      "FAILED:certificate status unknown"):
            assert f"`{value}`" in variables
        assert "OCSP (`ocsp leaf`): the status of the client certificate is asked of the responder each " \
               "certificate names (AIA); answers are kept in a `10m` cache." in variables


def test_lab_ocsp_on_with_resolver_and_crl_asks_about_the_intermediate_through_dns(tmp_path):
    path = _policy(tmp_path, mode="on", resolver="10.0.0.2")
    text = Path(path).read_text().replace('  depth 1\n', '  depth 1\n  crl "ca/devices-root.crl" "ca/devices-issuing.crl"\n', 1)
    Path(path).write_text(text)
    with running_lab([path], tmp_path / "lab") as lab:
        run = test_lab(lab, tmp_path)
        assert run.ok, run.output
        # The certificates name the lab host; nginx looked it up through the (rewritten) resolver.
        assert lab.pki.ocsp_urls["devices"].startswith(f"http://{LAB_OCSP_HOST}:")
        assert any(q.name == LAB_OCSP_HOST for q in lab.dns.queries())
        conf = next((lab.out_dir / "nginx").glob("telemetry*.conf")).read_text()
        assert f"resolver 127.0.0.1:{lab.dns.port};" in conf and "resolver_timeout 5s;" in conf
        # `ocsp on`: the issuing intermediate's own status was asked too (of its issuer, the root).
        inter = lab.pki.chains["devices"].intermediates[0].cert.serial_number
        assert any(q.serial == inter and q.answer == "good" for q in lab.ocsp.queries())


def test_lab_with_a_policy_responder_refuses_revoked_and_unanswered_certificates(tmp_path):
    path = _policy(tmp_path, responder="http://ocsp.example.com/ocsp")
    with running_lab([path], tmp_path / "lab") as lab:
        run = test_lab(lab, tmp_path)
        assert run.ok, run.output
        conf = next((lab.out_dir / "nginx").glob("telemetry*.conf")).read_text()
        assert f'ssl_ocsp_responder "{lab.ocsp.url}";' in conf
        # Behind a `responder` the certificate's dead URL is not used: the responder answered 503.
        answers = {q.answer for q in lab.ocsp.queries() if q.serial == _serial(lab, "devices/ocsp-down")}
        assert answers == {"unavailable"}


# ----- ssl_ocsp_cache ---------------------------------------------------------------------------


def test_cache_five_connections_ask_the_responder_once_good_and_revoked(tmp_path):
    with running_lab([_policy(tmp_path)], tmp_path / "lab") as lab:
        conf = next((lab.out_dir / "nginx").glob("telemetry*.conf")).read_text()
        zones = re.findall(r"ssl_ocsp_cache shared:(\w+):(\w+);", conf + next(
            (lab.out_dir / "nginx").glob("partners*.conf")).read_text())
        ports = [s.listens[0].port for s in lab.policy.servers]
        assert zones == [(f"mtls_telemetry_{ports[0]}_ocsp", "10m"), (f"mtls_partners_{ports[1]}_ocsp", "1m")]
        assert [_get(lab, "devices/id-kiosk").status for _ in range(5)] == [200] * 5
        assert _asked(lab, "devices/id-kiosk") == 1
        assert [_get(lab, "devices/revoked").status for _ in range(5)] == [403] * 5
        assert _asked(lab, "devices/revoked") == 1
        # A failed lookup is not kept: every handshake asks again.
        lab.ocsp.set_status(lab.pki.chains["devices"].issuing.cert, _serial(lab, "devices/client"), "unavailable")
        assert [_get(lab, "devices/client", path="/healthz").status for _ in range(3)] == [403] * 3
        assert _asked(lab, "devices/client") == 3


def test_cache_off_asks_the_responder_on_every_handshake(tmp_path):
    with running_lab([_policy(tmp_path, cache="off")], tmp_path / "lab") as lab:
        assert "ssl_ocsp_cache off;" in next((lab.out_dir / "nginx").glob("telemetry*.conf")).read_text()
        assert [_get(lab, "devices/id-kiosk").status for _ in range(5)] == [200] * 5
        assert _asked(lab, "devices/id-kiosk") == 5


def test_cache_keeps_answers_until_next_update_across_reloads_and_outages(tmp_path):
    with running_lab([_policy(tmp_path)], tmp_path / "lab", ocsp_next_update=timedelta(seconds=3)) as lab:
        issuing = lab.pki.chains["devices"].issuing.cert
        assert _get(lab, "devices/id-kiosk").status == 200
        # Revoked at the responder: nginx keeps its `good` answer until nextUpdate, reload or not.
        lab.ocsp.set_status(issuing, _serial(lab, "devices/id-kiosk"), "revoked")
        lab.nginx.reload()
        assert _get(lab, "devices/id-kiosk").status == 200
        assert _asked(lab, "devices/id-kiosk") == 1
        time.sleep(3.5)
        assert _get(lab, "devices/id-kiosk").status == 403
        assert _verify_logged(lab, "FAILED:certificate revoked")
        assert _asked(lab, "devices/id-kiosk") == 2
        # A responder outage refuses only the clients without a kept answer.
        assert _get(lab, "devices/client", path="/healthz").status == 200
        lab.ocsp.stop()
        assert _get(lab, "devices/client", path="/healthz").status == 200
        assert _get(lab, "partners/client", server=1, path="/p/").status == 403


def test_cache_size_holds_about_4000_answers_per_megabyte_newest_kept(tmp_path):
    with running_lab([_policy(tmp_path, cache="64k")], tmp_path / "lab") as lab:
        clients = [_kiosk(lab, tmp_path, f"kiosk-{i:03}", lab.ocsp.url) for i in range(300)]
        assert all(_get_with(lab, crt, key).status == 200 for crt, key in clients)
        kept = 0
        for crt, key in reversed(clients):  # newest first: answers kept need no question
            before = len(lab.ocsp.queries())
            assert _get_with(lab, crt, key).status == 200
            if len(lab.ocsp.queries()) != before:
                break
            kept += 1
    # 208 measured for 64k (80 for 32k, 464 for 128k, 4,032 for 1m): 4 answers a KiB past the
    # zone's own overhead, so 10m holds about 40,000.
    assert 180 <= kept <= 240, kept


def test_answers_without_next_update_are_kept_an_hour_per_nginx(tmp_path):
    # nginx keeps an answer without nextUpdate for 3600 s (ngx_ssl_ocsp_cache_store); shown here:
    # still kept after the responder changed its mind.
    with running_lab([_policy(tmp_path)], tmp_path / "lab", ocsp_next_update=None) as lab:
        assert _get(lab, "devices/id-kiosk").status == 200
        lab.ocsp.set_status(lab.pki.chains["devices"].issuing.cert, _serial(lab, "devices/id-kiosk"), "revoked")
        time.sleep(1.5)
        assert _get(lab, "devices/id-kiosk").status == 200
        assert _asked(lab, "devices/id-kiosk") == 1


# ----- host names, resolver -------------------------------------------------------------------


def _kiosk(lab: Lab, tmp_path: Path, cn: str, ocsp_url: str) -> tuple[Path, Path]:
    """A kiosk certificate of the lab's devices CA naming `ocsp_url` as its responder."""
    subject = dn.x509_name(dn.parse_dn(f"CN={cn},O=Example Retail"))
    issued = issue_client(lab.pki.chains["devices"].issuing, subject, now=datetime.now(timezone.utc), ocsp_url=ocsp_url)
    crt, key = tmp_path / f"{cn}.crt", tmp_path / f"{cn}.key"
    write_pem(crt, issued.cert)
    write_pem(key, issued.key)
    return crt, key


def _named_url_client(lab: Lab, tmp_path: Path) -> tuple[Path, Path]:
    return _kiosk(lab, tmp_path, "kiosk-123", f"http://{LAB_OCSP_HOST}:{lab.ocsp.port}/")


def _get_with(lab: Lab, crt: Path, key: Path):
    s = lab.policy.servers[0]
    return request("127.0.0.1", s.listens[0].port, "/ingest/x", server_name=s.names[0], cert=crt, key=key)


def test_host_name_ocsp_url_without_resolver_is_mtls119_and_refuses_every_client(tmp_path):
    with running_lab([_policy(tmp_path)], tmp_path / "lab") as lab:
        crt, key = _named_url_client(lab, tmp_path)
        assert _get_with(lab, crt, key).status == 403
        assert _verify_logged(lab, "FAILED:certificate status request failed")
        assert f"no resolver defined to resolve {LAB_OCSP_HOST}" in lab.nginx.error_log()
    # What mtlsc says beforehand: a CA whose certificates name their responder by host name.
    chain = make_chain("named", 1, now=datetime.now(timezone.utc), ocsp_url=f"http://{LAB_OCSP_HOST}/")
    write_pem(tmp_path / "named-root.pem", chain.root.cert)
    write_pem(tmp_path / "named-issuing.pem", chain.issuing.cert)
    write_pem(tmp_path / "named-partners.pem", make_chain("partners", 0, now=datetime.now(timezone.utc)).root.cert)
    policy = Path(_policy(tmp_path)).read_text().replace("ca/devices-", "named-").replace("ca/partners-root", "named-partners")
    (tmp_path / "named.mtls").write_text(policy)
    diags = pipeline.check([str(tmp_path / "named.mtls")]).diagnostics
    found = [d for d in diags if d.code == "MTLS119"]
    assert len(found) == 1 and f"no resolver defined to resolve {LAB_OCSP_HOST}" in found[0].message
    (tmp_path / "named.mtls").write_text('resolver "10.0.0.2"\n' + policy)
    assert not [d for d in pipeline.check([str(tmp_path / "named.mtls")]).diagnostics if d.code == "MTLS119"]


def test_host_name_ocsp_url_with_resolver_is_looked_up_through_it(tmp_path):
    with running_lab([_policy(tmp_path, resolver="10.0.0.2")], tmp_path / "lab") as lab:
        crt, key = _named_url_client(lab, tmp_path)
        before = len(lab.dns.queries())
        assert _get_with(lab, crt, key).status == 200
        assert len(lab.dns.queries()) > before


def _responder_by_name(out: Path) -> None:
    for conf in (out / "nginx").glob("*.conf"):
        conf.write_text(re.sub(r'ssl_ocsp_responder "http://127\.0\.0\.1:', 'ssl_ocsp_responder "http://localhost:',
                               conf.read_text()))


def test_responder_by_host_name_is_resolved_at_load_without_resolver(tmp_path):
    path = _policy(tmp_path, responder="http://ocsp.example.com/")
    with running_lab([path], tmp_path / "lab", tamper=_responder_by_name) as lab:
        assert "http://localhost:" in next((lab.out_dir / "nginx").glob("telemetry*.conf")).read_text()
        assert _get(lab, "devices/id-kiosk").status == 200
        assert "no resolver defined to resolve localhost" in lab.nginx.error_log()  # a warning, not a failure


def test_responder_by_host_name_with_resolver_must_resolve_there_too(tmp_path):
    path = _policy(tmp_path, responder="http://ocsp.example.com/", resolver="10.0.0.2")
    with running_lab([path], tmp_path / "lab", tamper=_responder_by_name) as lab:
        # The lab's DNS server knows only the lab host: `localhost` is looked up there and fails.
        assert _get(lab, "devices/id-kiosk").status == 403
        assert any(q.name == "localhost" for q in lab.dns.queries())
        assert "localhost could not be resolved" in lab.nginx.error_log()


def test_responder_name_that_does_not_resolve_fails_nginx_t(tmp_path, nginx_bin):
    with running_lab([_policy(tmp_path, responder="http://ocsp.example.com/")], tmp_path / "lab") as lab:
        conf = next((lab.out_dir / "nginx").glob("telemetry*.conf"))
        conf.write_text(conf.read_text().replace(lab.ocsp.url, "http://mtlsc-no-such-host.invalid/"))
        ok, err = test_config(tmp_path / "t", f"include {lab.out_dir}/nginx/*.conf;", nginx_bin)
    assert not ok and 'host not found in OCSP responder "mtlsc-no-such-host.invalid/"' in err


# ----- a responder that accepts and never answers ----------------------------------------------


def test_silent_responder_holds_the_handshake_until_client_header_timeout(tmp_path):
    """nginx sets no timeout on a client OCSP request: the handshake timer ends it, which is the
    `client_header_timeout` of the address's default server (mtlsc's, 60 s by default), and the
    client gets no HTTP answer at all."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]

    def short_timeout(out: Path) -> None:
        # The handshake timer is the address's default server's: mtlsc's, in 00-mtlsc.conf.
        conf = out / "nginx" / "00-mtlsc.conf"
        conf.write_text(conf.read_text().replace("    return 421;", "    client_header_timeout 2s;\n    return 421;"))

    try:
        with running_lab([_policy(tmp_path)], tmp_path / "lab", tamper=short_timeout) as lab:
            crt, key = _kiosk(lab, tmp_path, "kiosk-124", f"http://127.0.0.1:{port}/")
            started = time.monotonic()
            resp = _get_with(lab, crt, key)
            waited = time.monotonic() - started
    finally:
        silent.close()
    assert resp.status == 0 and 1.8 < waited < 4.5, (resp, waited)
