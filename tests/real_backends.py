"""Real backend frameworks (Flask/Werkzeug, Express 4) as subprocesses on loopback.

Each backend is started with the route specs of a policy (`route_specs`) and registers one handler
per route in the framework's own idiomatic way (tests/backends/). Every handler answers 200 JSON:
{"framework", "handler": the route spec it was registered for or "catch-all", "target": the
request target as received, "path": the framework's parsed path, "headers": [[name, value], ...]}.
`seen(body)` reads that back; nginx's own answers are not JSON, so `seen` is None for them.

Used by the trap tests and the differential test: a handler that ran tells which route the
*backend* judged the request to be, which must be the route nginx judged it to be.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mtlsc import ir
from mtlsc.lab.nginx import _port_open, free_port

BACKENDS = Path(__file__).parent / "backends"
EXPRESS_DIR = BACKENDS / "express"
FRAMEWORKS = ("flask", "express")
CATCH_ALL = "catch-all"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
NPM_TIMEOUT = 300.0


class BackendUnavailable(RuntimeError):
    """The framework cannot run on this machine (e.g. no npm); `skippable` unless in CI."""

    def __init__(self, message: str, skippable: bool):
        super().__init__(message)
        self.skippable = skippable


@dataclass
class RunningBackend:
    framework: str
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the backend printed (for failure messages)."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def route_spec(route: ir.Route) -> str:
    """`= /p` for an exact route, the bare path for a prefix: the name the backends report."""
    return f"= {route.path}" if route.match is ir.PathMatch.EXACT else route.path


def route_specs(routes: Iterable[ir.Route]) -> list[str]:
    """Distinct specs of `routes` (one backend often serves several servers)."""
    return list(dict.fromkeys(route_spec(r) for r in routes))


def seen(body: bytes) -> dict | None:
    """The backend's report if a backend handler produced `body`, else None (nginx answered)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("framework") in FRAMEWORKS else None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def ensure_express() -> None:
    """Install Express from the committed lock when node_modules is missing (bounded)."""
    if (EXPRESS_DIR / "node_modules" / "express").is_dir():
        return
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise BackendUnavailable("node/npm not installed: the Express backend cannot run "
                                 "(install node 20 and run `npm ci --prefix tests/backends/express`)",
                                 skippable=not in_ci())
    proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXPRESS_DIR,
                          capture_output=True, text=True, timeout=NPM_TIMEOUT)
    if proc.returncode != 0:
        raise BackendUnavailable(f"npm ci failed in {EXPRESS_DIR}:\n{proc.stdout}\n{proc.stderr}", skippable=False)


def _command(framework: str, port: int, specs: Sequence[str]) -> list[str]:
    routes = json.dumps(list(specs))
    if framework == "flask":
        return [sys.executable, str(BACKENDS / "flask_app.py"), str(port), routes]
    if framework == "express":
        ensure_express()
        return ["node", str(EXPRESS_DIR / "app.js"), str(port), routes]
    raise ValueError(f"unknown framework {framework!r}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


@contextmanager
def running_backend(framework: str, specs: Sequence[str], log_dir: Path, port: int | None = None,
                    timeout: float = START_TIMEOUT) -> Iterator[RunningBackend]:
    """Start `framework` on 127.0.0.1:`port` (default: a free one) with one handler per spec;
    wait (bounded) until it accepts connections; stop it by pid on exit."""
    port = port or free_port()
    command = _command(framework, port, specs)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{framework}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    backend = RunningBackend(framework, port, proc, log)
    try:
        deadline = time.monotonic() + timeout
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{framework} backend did not start on port {port} "
                                   f"(exit {proc.poll()}):\n{backend.output()}")
            time.sleep(0.05)
        yield backend
    finally:
        _stop(proc)


@dataclass
class FrameworkLab:
    """nginx serving a compiled policy whose every backend is one real framework."""

    policy: ir.Policy  # as rewritten for loopback
    pki: object  # mtlsc.lab.pki.LabPki
    out_dir: Path
    ports: list[int]
    nginx: object  # mtlsc.lab.nginx.NginxProcess
    backend: RunningBackend

    def server(self, name: str | None = None) -> ir.Server:
        servers = self.policy.servers
        return servers[0] if name is None else next(s for s in servers if name in s.names)


@contextmanager
def running_framework_lab(policy_paths: list[str], workdir: Path, framework: str, *, nginx_bin: str,
                          now) -> Iterator[FrameworkLab]:
    """mtlsc.lab.run's lab, with `framework` as the backend of every route instead of the echo
    backend: one handler per route spec of every server compiled together."""
    from mtlsc.lab.nginx import running_nginx
    from mtlsc.lab.run import prepare

    port = free_port()
    result, pki, ports = prepare(policy_paths, workdir, f"http://127.0.0.1:{port}", now)
    specs = route_specs(r for s in result.policy.servers for r in s.routes)
    out = workdir / "out"
    with running_backend(framework, specs, workdir / "backend", port=port) as backend:
        with running_nginx(f"include {out}/nginx/*.conf;", workdir / "nginx", ports=ports,
                           nginx_bin=nginx_bin) as nginx:
            yield FrameworkLab(result.policy, pki, out, ports, nginx, backend)


@dataclass(frozen=True)
class RawResponse:
    status: int
    body: bytes = b""
    error: str = ""

    @property
    def backend(self) -> dict | None:
        """The backend handler's report, None when nginx answered itself."""
        return seen(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def raw_request(port: int, server_name: str | None, raw: bytes, *, cert=None, timeout: float = 5) -> RawResponse:
    """Send `raw` bytes (a whole request, exactly as given) over one TLS connection to
    127.0.0.1:`port` with SNI `server_name`; never raises on TLS or network errors."""
    import http.client

    from mtlsc.lab.client import tls_context

    ctx = tls_context(os.fspath(cert[0]) if cert else None, os.fspath(cert[1]) if cert else None)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain:
            with ctx.wrap_socket(plain, server_hostname=server_name) as tls:
                tls.sendall(raw)
                resp = http.client.HTTPResponse(tls)
                resp.begin()
                return RawResponse(resp.status, resp.read())
    except (OSError, http.client.HTTPException) as exc:
        return RawResponse(0, error=f"{type(exc).__name__}: {exc}")


def get_request(target: str, host: str | None, headers: Sequence[tuple[str, str]] = (),
                version: str = "HTTP/1.1") -> bytes:
    """`GET target version`, Host (unless None), the headers verbatim, Connection: close."""
    lines = [f"GET {target} {version}"] + ([f"Host: {host}"] if host is not None else [])
    lines += [f"{name}: {value}" for name, value in headers] + ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


# --- judging what came back, shared by the trap tests ---------------------------------------

def send(lab: FrameworkLab, target: str, *, server: ir.Server | None = None, cert=None,
         headers: Sequence[tuple[str, str]] = (), host: str | None = "", version: str = "HTTP/1.1") -> RawResponse:
    """`GET target` to `server` (default: the first) with its first name as SNI; Host is that
    name when `host` is "", absent when None, else `host`."""
    server = server or lab.server()
    name = server.names[0]
    raw = get_request(target, name if host == "" else host, headers, version)
    return raw_request(server.listens[0].port, name, raw, cert=cert)


def gated_specs(server: ir.Server) -> set[str]:
    """The specs of the routes that require a certificate: their handlers never run without one."""
    return {route_spec(r) for r in server.routes if r.mode is ir.Mode.REQUIRE}


def judge(resp: RawResponse, *, status: int, handler: str | None, received: str | None, gated: set[str], cert: bool) -> list[str]:
    """Problems with one response; empty when it is what the semantics say."""
    got = resp.backend
    ran = got and got["handler"]
    problems = []
    if not cert and ran in gated:
        problems.append(f"BYPASS: gated handler {ran!r} ran without a certificate (target {got['target']!r})")
    if resp.status != status:
        problems.append(f"status {resp.status} (expected {status}): {resp.text[:200]!r} {resp.error}")
    if status == 200 and got is not None:
        if ran != handler:
            problems.append(f"handler {ran!r} ran, nginx judged {handler!r} (target {got['target']!r})")
        if got["target"] != received:
            problems.append(f"backend received {got['target']!r}, nginx routed on {received!r}")
    elif status == 200:
        problems.append(f"no backend handler answered: {resp.text[:200]!r}")
    elif got is not None:
        problems.append(f"handler {ran!r} ran although nginx answered {status}")
    return problems


def without_and_with_cert(lab: FrameworkLab, target: str, cert, *, statuses: tuple[int, int], handler: str | None,
                          received: str | None, server: ir.Server | None = None, **options) -> list[str]:
    """Send `target` without a certificate, then with `cert` (`options`: see `send`); the problems
    of both answers, each prefixed with which of the two it was."""
    server = server or lab.server()
    gated = gated_specs(server)
    problems = []
    for label, use, status in (("no cert", None, statuses[0]), ("cert", cert, statuses[1])):
        resp = send(lab, target, server=server, cert=use, **options)
        problems += [f"{label}: {p}" for p in judge(resp, status=status, handler=handler, received=received,
                                                    gated=gated, cert=use is not None)]
    return problems

