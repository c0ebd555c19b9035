"""The nginx behaviour behind the IR checks, proven on the real nginx with mtlsc's emitted config.

Each test compiles a policy (a lab PKI minted for it with `mtlsc.lab.pki`), starts nginx on
loopback with the output and talks to it with `mtlsc.lab.client`:
- two servers on one address (MTLS109): SNI `a` + Host `b` gets 421; no SNI or an unknown SNI is
  refused at the handshake by mtlsc's default server (nginx-facts §5);
- MTLS105: a client presenting an untrusted or expired certificate is refused on a public route;
- MTLS101 / MTLS103: `handshake require` locks a probe out (MTLS101's config compiled with the
  checks switched off, to show the error is necessary), and the fixed policy lets it in;
- MTLS206: on a server with two CAs, each CA's clients are refused on the other CA's route.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mtlsc import pipeline
from mtlsc.lab.client import Response, request
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.pki import LabPki, build_lab_pki
from mtlsc.lab.run import running_lab
from mtlsc.output import write_atomic
from support import REPO

pytestmark = pytest.mark.nginx

LOCAL = "127.0.0.1"
CA_AND_SERVER = """\
ca internal { bundle "ca/internal-root.pem"  depth 0 }
server ${name} {
  listen 127.0.0.1:${port}
  certificate "${lab}/server/${name}_${port}.crt" key "${lab}/server/${name}_${port}.key"
  backend "${backend}"  install "${out}/mtls"
"""


@dataclass
class Served:
    result: pipeline.Result  # what `mtlsc check` said (checks on, whatever was compiled)
    pki: LabPki
    port: int

    def codes(self) -> list[str]:
        return [d.code for d in self.result.diagnostics]

    def get(self, path: str, client: str | None = None, *, sni: str | None = "api.test",
            host: str | None = None) -> Response:
        cert, key = self.pki.client(client) if client else (None, None)
        return request(LOCAL, self.port, path, server_name=sni, host_header=host or sni or "api.test",
                       cert=cert, key=key)


@contextmanager
def served(tmp_path: Path, template: str, nginx_bin: str, now, backend: str, *, analyse: bool = True) -> Iterator[Served]:
    """Write the policy (`${port}` `${lab}` `${out}` `${backend}` `${name}` filled in), mint its PKI,
    compile it (`analyse=False`: even what the checks refuse) and serve it with nginx."""
    port = free_port()
    text = string.Template(template).substitute(port=port, lab=tmp_path / "lab", out=tmp_path / "out",
                                                backend=backend, name="api.test")
    policy = tmp_path / "policy.mtls"
    policy.write_text(text)
    front = pipeline.read_and_lower([str(policy)])
    assert front.policy is not None, front.diagnostics
    pki = build_lab_pki(front.policy, tmp_path / "lab", now=now, base_dir=tmp_path)
    checked = pipeline.check([str(policy)], now=now)
    compiled = pipeline.compile_policy([str(policy)], now=now, analyse=analyse)
    assert not compiled.failed, [(d.code, d.message) for d in compiled.diagnostics]
    write_atomic(tmp_path / "out", compiled.outputs)
    with running_nginx(f"include {tmp_path / 'out'}/nginx/*.conf;", tmp_path / "nginx", ports=[port], nginx_bin=nginx_bin):
        yield Served(checked, pki, port)


# ---- MTLS109: two servers on one address; 421 and the default server ----------------------------

TWO_SERVERS = """\
ca internal { bundle "ca/internal-root.pem"  depth 0 }
server a.test {
  listen 127.0.0.1:${port}
  certificate "${lab}/server/a.test_${port}.crt" key "${lab}/server/a.test_${port}.key"
  backend "${backend}"  install "${out}/mtls"
  route / { public }
}
server b.test {
  listen 127.0.0.1:${port}
  certificate "${lab}/server/b.test_${port}.crt" key "${lab}/server/b.test_${port}.key"
  backend "${backend}"  install "${out}/mtls"
  route = /healthz { public }
  route / { require internal  allow any }
}
"""


def test_shared_address_sni_host_mismatch_is_421_and_no_sni_is_refused(tmp_path, nginx_bin, now, echo_backend):
    with served(tmp_path, TWO_SERVERS, nginx_bin, now, echo_backend.url) as s:
        assert "MTLS109" not in s.codes()  # nginx 1.22 target: 421 is there
        good = "internal/client"
        assert s.get("/x", good, sni="b.test").status == 200
        assert s.get("/x", sni="a.test").status == 200
        # SNI names the public server, Host the verifying one: 421, with or without a certificate.
        assert s.get("/x", good, sni="a.test", host="b.test").status == 421
        assert s.get("/healthz", sni="a.test", host="b.test").status == 421
        # No SNI, or one no server has: mtlsc's default server refuses the handshake itself, so
        # no other server's trust applies to the client (nginx-facts §5, over-trust trap 3).
        for sni in (None, "unknown.test"):
            refused = s.get("/x", good, sni=sni, host="b.test")
            assert refused.status == 0 and "SSL" in refused.error, refused


# ---- MTLS105: a bad certificate is refused on a public route --------------------------------

PUBLIC_AND_GATED = CA_AND_SERVER + """\
  reject bad_cert 403 "bad client certificate"
  route = /healthz { public }
  route /api/ { require internal  allow any }
}
"""


def test_mtls105_untrusted_or_expired_certificate_is_refused_on_a_public_route(tmp_path, nginx_bin, now, echo_backend):
    with served(tmp_path, PUBLIC_AND_GATED, nginx_bin, now, echo_backend.url) as s:
        assert "MTLS105" in s.codes()
        assert s.get("/healthz").status == 200
        assert s.get("/healthz", "internal/client").status == 200
        for bad in ("untrusted/client", "internal/expired"):
            answer = s.get("/healthz", bad)
            assert (answer.status, answer.text) == (403, "bad client certificate\n"), (bad, answer)
        assert not any(r.path == "/healthz" and r.header_values("X-Client-Verify") for r in echo_backend.snapshot())


# ---- MTLS101 / MTLS103: `handshake require` locks the probe out ----------------------------------

REQUIRED_PROBE = CA_AND_SERVER + """\
  handshake require
  route = /healthz { require internal  allow any }
  route /api/ { require internal  allow any }
}
"""
PUBLIC_PROBE_REQUIRED_LISTENER = CA_AND_SERVER + """\
  handshake require
  route = /healthz { public }
  route /api/ { require internal  allow any }
}
"""
FIXED = CA_AND_SERVER + """\
  route = /healthz { public }
  route /api/ { require internal  allow any }
}
"""


def test_mtls103_required_probe_route_locks_out_a_probe_without_certificate(tmp_path, nginx_bin, now, echo_backend):
    with served(tmp_path, REQUIRED_PROBE, nginx_bin, now, echo_backend.url) as s:
        assert "MTLS103" in s.codes() and not s.result.failed
        answer = s.get("/healthz")
        assert (answer.status, answer.text) == (403, "client certificate required\n")
        assert s.get("/healthz", "internal/client").status == 200


def test_mtls101_public_probe_behind_handshake_require_is_locked_out(tmp_path, nginx_bin, now, echo_backend):
    with served(tmp_path, PUBLIC_PROBE_REQUIRED_LISTENER, nginx_bin, now, echo_backend.url, analyse=False) as s:
        assert "MTLS101" in s.codes() and s.result.failed  # `mtlsc compile` would write nothing
        answer = s.get("/healthz")  # declared public, refused: nginx answers before any location
        assert (answer.status, answer.text) == (403, "client certificate required\n")


def test_fixed_policy_lets_the_probe_in(tmp_path, nginx_bin, now, echo_backend):
    with served(tmp_path, FIXED, nginx_bin, now, echo_backend.url) as s:
        assert not {"MTLS101", "MTLS103", "MTLS104"} & set(s.codes())
        assert s.get("/healthz").status == 200
        assert s.get("/api/x").status == 403
        assert s.get("/api/x", "internal/client").status == 200


# ---- MTLS206: several CAs on one server, each route bound to its own CA --------------------------

def test_mtls206_multi_ca_example_refuses_the_other_cas_clients(tmp_path, nginx_bin, now):
    with running_lab([str(REPO / "policies" / "multi-ca.mtls")], tmp_path, nginx_bin=nginx_bin, now=now) as lab:
        port, = lab.ports

        def get(path: str, client: str) -> Response:
            cert, key = lab.pki.client(client)
            return request(LOCAL, port, path, server_name="portal.example.com", cert=cert, key=key)

        staff, supplier = "internal/id-staff", "vendors/id-supplier"
        assert get("/internal/x", staff).status == 200
        assert get("/partner/x", supplier).status == 200
        for path, other in (("/internal/x", supplier), ("/partner/x", staff), ("/x", supplier)):
            answer = get(path, other)
            assert (answer.status, answer.text) == (403, "client certificate not accepted\n"), (path, other, answer)
        # The untrusted client carries the supplier's exact subject, from a CA the server does not trust.
        assert get("/partner/x", "untrusted/client").status == 403
