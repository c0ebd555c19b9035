"""Coexisting with a hand-written nginx (issue 12 §2), on the real nginx.

- A config with its own `default_server` on mtlsc's address and its own `map_hash_bucket_size`:
  mtlsc's files compiled without looking at it make `nginx -t` fail (`a duplicate default server`,
  `directive is duplicate`); compiled with `--nginx-conf`, and installed by `mtlsc apply` (which reads
  `nginx -T` itself), they pass `nginx -t` with no warning, twelve servers' variables included.
- `nginx { }` directives reach the client: the server's HSTS header (`hsts`) is on every answer, and a route's
  `client_max_body_size` refuses a larger body with 413 where the rest of the server accepts it.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mtlsc import pipeline
from mtlsc.apply import EXIT_OK, apply
from mtlsc.coexist import host_from_path
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import free_port, nginx_command, running_nginx, write_conf
from mtlsc.lab.pki import issue_server, make_root, write_pem
from mtlsc.output import write_atomic

pytestmark = pytest.mark.nginx
NOW = datetime.now(timezone.utc)
HSTS = "max-age=63072000; includeSubDomains"


def _pki(tmp: Path, names: list[str]) -> None:
    ca = make_root("coexist ca", now=NOW)
    write_pem(tmp / "ca.pem", ca.cert)
    srv = issue_server(make_root("coexist server ca", now=NOW), names, now=NOW)
    write_pem(tmp / "srv.crt", srv.cert)
    write_pem(tmp / "srv.key", srv.key)


LONG_DN = "CN=" + "a-rather-long-partner-name-" * 5 + ",O=Acme"


def _policy(tmp: Path, port: int, names: list[str], backend: str = "http://127.0.0.1:9", allow: str = "any") -> Path:
    servers = "".join(f"""
server {name} {{
  listen 127.0.0.1:{port}
  certificate "{tmp}/srv.crt" key "{tmp}/srv.key"
  backend "{backend}"
  install "{tmp}/out/mtls"
  hsts 2y include_subdomains
  nginx {{
    add_header X-Content-Type-Options nosniff always;
    client_max_body_size 1m;
  }}
  route = /healthz {{ public }}
  route /upload/ {{
    public
    nginx {{ client_max_body_size 10; }}
  }}
  route / {{ require partners  allow {allow}  forward subject }}
}}
""" for name in names)
    path = tmp / "p.mtls"
    path.write_text(f'ca partners {{ bundle "{tmp}/ca.pem" }}\nidentity partner {{ subject "{LONG_DN}" }}\n{servers}')
    return path


def _hand_written(tmp: Path, port: int, variables: str = "variables_hash_max_size 8192;") -> str:
    """The user's own http block: a default server on mtlsc's address, and hash settings of their own."""
    return f"""
map_hash_bucket_size 128;
{variables}
server {{
    listen 127.0.0.1:{port} ssl default_server;
    ssl_certificate "{tmp}/srv.crt";
    ssl_certificate_key "{tmp}/srv.key";
    ssl_reject_handshake on;
    return 444;
}}
include "{tmp}/out/nginx/*.conf";
"""


def _nginx_t(prefix: Path, nginx_bin: str) -> tuple[int, str]:
    proc = subprocess.run([*nginx_command(nginx_bin, prefix), "-t"], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr


def _compile(tmp: Path, policy: Path, conf: Path | None):
    result = pipeline.compile_policy([str(policy)], now=NOW, host=host_from_path(str(conf)) if conf else None)
    return result


def test_hand_written_default_server_and_map_hash_fail_without_and_pass_with_nginx_conf(tmp_path, nginx_bin):
    names = [f"svc{i}.example.com" for i in range(12)]
    _pki(tmp_path, names)
    port = free_port()
    policy = _policy(tmp_path, port, names)
    prefix = (tmp_path / "nginx").resolve()
    conf = write_conf(prefix, _hand_written(tmp_path, port))

    blind = _compile(tmp_path, policy, None)
    assert not blind.failed
    write_atomic(tmp_path / "out", blind.outputs)
    code, err = _nginx_t(prefix, nginx_bin)
    assert code != 0 and ("duplicate" in err), err  # the issue: nginx refuses mtlsc's files next to the user's

    fitted = _compile(tmp_path, policy, conf)
    assert not fitted.failed, [(d.code, d.message) for d in fitted.diagnostics]
    # the user's default server refuses handshakes: nothing to report; their hash sizes are big enough
    assert not [d for d in fitted.diagnostics if d.code.startswith("MTLS05")]
    write_atomic(tmp_path / "out", fitted.outputs)
    http = (tmp_path / "out" / "nginx" / "00-mtlsc.conf").read_text()
    assert "\nmap_hash_bucket_size" not in http and "\nvariables_hash_max_size" not in http
    assert "\nvariables_hash_bucket_size 128;" in http and "default_server" not in http
    code, err = _nginx_t(prefix, nginx_bin)
    assert code == 0, err
    assert "[warn]" not in err and "[emerg]" not in err, err


def _with_setting(tmp_path, nginx_bin, setting: str, allow: str = "any", servers: int = 12):
    names = [f"svc{i}.example.com" for i in range(servers)]
    _pki(tmp_path, names)
    port = free_port()
    policy = _policy(tmp_path, port, names, allow=allow)
    prefix = (tmp_path / "nginx").resolve()
    conf = write_conf(prefix, _hand_written(tmp_path, port, setting))
    result = _compile(tmp_path, policy, conf)
    # what nginx -t meets if the user goes ahead: the fitted http file (left out when refused) and the servers
    written = result.outputs or {k: v for k, v in _compile(tmp_path, policy, None).outputs.items() if "00-mtlsc" not in k}
    write_atomic(tmp_path / "out", written)
    return result, conf, _nginx_t(prefix, nginx_bin)


def test_mtls052_triggers_when_your_variables_bucket_is_below_mtlscs_and_nginx_t_warns(tmp_path, nginx_bin):
    # nginx's own defaults, written out: what made every `nginx -t` warn
    result, conf, (code, err) = _with_setting(
        tmp_path, nginx_bin, "variables_hash_bucket_size 64;\nvariables_hash_max_size 1024;", servers=40)
    found = sorted((d for d in result.diagnostics if d.code == "MTLS052"), key=lambda d: d.span.line)
    assert len(found) == 2 and "variables_hash_bucket_size 64" in found[0].message and "128" in found[0].help
    assert "variables_hash_max_size 1024" in found[1].message and "8192" in found[1].help  # 40 servers
    assert found[0].span.path == str(conf) and not result.failed
    assert code == 0 and "could not build optimal variables_hash" in err, err  # what MTLS052 said


def test_mtls051_triggers_when_your_map_bucket_cannot_hold_mtlscs_keys(tmp_path, nginx_bin):
    result, conf, (code, err) = _with_setting(tmp_path, nginx_bin, "", allow="partner")
    found = [d for d in result.diagnostics if d.code == "MTLS051"]
    assert found and result.failed and found[0].span.path == str(conf) and "map_hash_bucket_size 128" in found[0].message
    assert code != 0 and "could not build map_hash, you should increase map_hash_bucket_size" in err, err


def test_mtls051_and_mtls052_clean_when_your_sizes_are_big_enough(tmp_path, nginx_bin):
    result, conf, (code, err) = _with_setting(
        tmp_path, nginx_bin, "variables_hash_bucket_size 256;\nvariables_hash_max_size 8192;")
    assert not {"MTLS051", "MTLS052"} & {d.code for d in result.diagnostics} and not result.failed
    assert code == 0 and "[warn]" not in err, err


def test_apply_reads_nginx_T_and_fits_the_hand_written_config(tmp_path, nginx_bin):
    _pki(tmp_path, ["api.example.com"])
    port = free_port()
    conf_dir = tmp_path / "out" / "nginx"
    conf_dir.mkdir(parents=True)
    prefix = (tmp_path / "nginx").resolve()
    with running_echo_backend() as echo, running_nginx(_hand_written(tmp_path, port), prefix, ports=[],
                                                       nginx_bin=nginx_bin):
        policy = _policy(tmp_path, port, ["api.example.com"], backend=echo.url)
        result = apply([str(policy)], conf_dir, nginx_bin=nginx_bin, nginx_conf=prefix / "nginx.conf",
                       nginx_prefix=prefix, nginx_args=("-e", str(prefix / "error.log")), reload_timeout=5,
                       drain_timeout=5)
        assert result.exit_code == EXIT_OK, result.report()
        http = (conf_dir / "00-mtlsc.conf").read_text()
        assert "nginx -T" in http and "default_server" not in http
        ok = request("127.0.0.1", port, "/healthz", server_name="api.example.com")
        assert ok.status == 200 and "GET /healthz" in ok.text
        assert dict((k.lower(), v) for k, v in ok.headers)["strict-transport-security"] == HSTS
        # a route's own client_max_body_size, checked on the Content-Length before any body is read
        big = request("127.0.0.1", port, "/upload/x", server_name="api.example.com", headers=[("Content-Length", "100")])
        assert big.status == 413
        assert dict((k.lower(), v) for k, v in big.headers)["strict-transport-security"] == HSTS  # `always`
        # no SNI: the user's default server refuses the handshake, as mtlsc's own would have
        assert request("127.0.0.1", port, "/healthz", host_header="api.example.com").status == 0
        code, err = _nginx_t(prefix, nginx_bin)
        assert code == 0 and "[warn]" not in err, err


def test_nginx_reads_block_values_exactly_as_written(tmp_path, nginx_bin):
    """Quotes, `;`, `}` and `#` inside values: nginx sends each header exactly as mtlsc read it."""
    _pki(tmp_path, ["api.example.com"])
    port = free_port()
    policy = tmp_path / "p.mtls"
    policy.write_text(f"""server api.example.com {{
  listen 127.0.0.1:{port}
  certificate "{tmp_path}/srv.crt" key "{tmp_path}/srv.key"
  backend "http://127.0.0.1:9"
  nginx {{
    add_header X-A "a;b}} c" always;
    add_header X-B 'say "hi"' always;
    add_header X-C e#f always;  # a comment
    add_header X-D "back\\\\slash \\"q\\"" always;
  }}
  route / {{ public }}
}}
""")
    result = pipeline.compile_policy([str(policy)], now=NOW)
    assert not result.failed, [(d.code, d.message) for d in result.diagnostics]
    write_atomic(tmp_path / "out", result.outputs)
    with running_nginx(f'include "{tmp_path}/out/nginx/*.conf";', tmp_path / "nginx", ports=[port],
                       nginx_bin=nginx_bin):
        resp = request("127.0.0.1", port, "/x", server_name="api.example.com")
    headers = {k.lower(): v for k, v in resp.headers}
    assert resp.status == 502  # the backend is a closed port; `always` headers come with the error too
    assert headers["x-a"] == "a;b} c" and headers["x-b"] == 'say "hi"' and headers["x-c"] == "e#f"
    assert headers["x-d"] == 'back\\slash "q"'
