"""Smoke checks of `mtlsc apply` and `mtlsc rollback`: requests from the client side against the
live nginx, per server, and nginx's own reason for a refusal from its error log.

A server's checks are planned from the policy when it is installed (`smoke_plan`) and kept in its
record in DIR/.mtlsc/installed.json, so a server another policy installed can be checked later
without reading that policy again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mtlsc import ir
from mtlsc.model.evaluate import evaluate, probe_path

PASS, REDIRECT, REFUSE = "pass", "redirect", "refuse"


@dataclass
class Probe:
    """One route's probe path and what it must answer to a client without a certificate."""

    path: str
    expect: str  # pass | redirect | refuse
    status: int = 0  # refuse: the status and body the server answers
    body: str = ""
    require: bool = False  # a `require` route: client certificates are tried here


@dataclass
class SmokePlan:
    """Where a server answers and what its routes must answer."""

    label: str  # NAME:PORT
    slug: str
    address: str  # the first listen's address ("" for all addresses)
    port: int
    sni: str
    refusals: list[list] = field(default_factory=list)  # [status, body] of the server's own refusals
    probes: list[Probe] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict) -> "SmokePlan":
        probes = [Probe(**p) for p in data.get("probes", [])]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "probes"}
        return cls(**known, probes=probes)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClientCert:
    """A certificate the smoke checks must get through a `require` route with. `server` (NAME:PORT
    or NAME) scopes it to that server: checked whenever that server is; unscoped, it must get
    through on at least one server checked."""

    cert: str
    key: str | None = None  # None: the certificate file holds the key too
    server: str | None = None


@dataclass
class SmokeCheck:
    """One request of the smoke checks: what it expected and what came back."""

    server: str
    path: str
    client: str  # "no certificate" or the certificate file
    expect: str
    got: str
    ok: bool
    nginx: str = ""  # for a failed check: what nginx's error log says about the request

    def __str__(self) -> str:
        why = f"; nginx: {self.nginx}" if self.nginx else ""
        return (f"{'ok  ' if self.ok else 'FAIL'} {self.server}{self.path} ({self.client}): expect {self.expect}; "
                f"got {self.got}{why}")


def smoke_plan(server: ir.Server) -> SmokePlan:
    """The checks of one server: each route's probe path (the one tests.sh uses) without a
    certificate, and the `require` routes to try client certificates on."""
    listen = server.listens[0]
    probes = []
    for route in server.routes:
        path = probe_path(server, route)
        if path is None:
            continue
        want = evaluate(server, path, None)
        expect = PASS if want.reason == "ok" else REDIRECT if want.reason == "redirect" else REFUSE
        probes.append(Probe(path, expect, want.status if expect == REFUSE else 0, want.body if expect == REFUSE else "",
                            route.mode is ir.Mode.REQUIRE))
    r = server.rejections
    refusals = sorted({(x.status, x.body) for x in (r.no_cert, r.bad_cert, r.forbidden)})
    return SmokePlan(f"{server.names[0]}:{listen.port}", server.slug, listen.address or "", listen.port,
                     server.names[0].replace("*", "mtlsc-smoke"), [list(x) for x in refusals], probes)


def matches_server(plan: SmokePlan, name: str) -> bool:
    """`name` (NAME:PORT, NAME or the slug) names this server."""
    return name in (plan.label, plan.slug, plan.label.rsplit(":", 1)[0])


def _connect_host(address: str, override: str | None) -> str:
    if override:
        return override
    address = address.strip("[]")
    if address in ("", "*", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "::1"
    return address


def _answer(resp) -> str:
    if resp.status == 0:
        return f"no HTTP answer ({resp.error})"
    return f"{resp.status} {resp.text.strip()[:60]!r}"


def _passed_gates(plan: SmokePlan, resp) -> bool:
    """The request got past mtlsc's gates: an HTTP answer that is no refusal of the server, no 421
    from the default server, no 495/496 and not the catch-all 404 (the backend's status is its own)."""
    if resp.status in (0, 421, 495, 496):
        return False
    refusals = {(s, b) for s, b in plan.refusals} | {(404, "no route")}
    return (resp.status, resp.text.strip()) not in refusals


def run_smoke(plans: Sequence[SmokePlan], *, host: str | None = None, certs: Sequence[ClientCert] = (),
              timeout: float = 5.0, logs: "ErrorLogs | None" = None) -> list[SmokeCheck]:
    """Every probe of every plan without a certificate, then the client certificates on `require`
    routes; failed checks carry nginx's reason when its error log has one."""
    from mtlsc.lab.client import request

    checks: list[SmokeCheck] = []

    def send(plan: SmokePlan, path: str, cert: ClientCert | None = None):
        target = _connect_host(plan.address, host)
        kw = dict(server_name=plan.sni, cert=cert.cert if cert else None,
                  key=(cert.key or cert.cert) if cert else None, timeout=timeout)
        resp = request(target, plan.port, path, **kw)
        if resp.status == 0:  # one retry for a connection-level hiccup
            time.sleep(0.2)
            resp = request(target, plan.port, path, **kw)
        return resp

    unscoped = [c for c in certs if c.server is None]
    passed: set[ClientCert] = set()
    tried: dict[ClientCert, list[str]] = {c: [] for c in certs}
    for plan in plans:
        for probe in plan.probes:
            resp = send(plan, probe.path)
            if probe.expect == PASS:
                expect, ok = "an answer past the gates (no certificate needed)", _passed_gates(plan, resp)
            elif probe.expect == REDIRECT:
                expect, ok = "301", resp.status == 301
            else:
                expect = f"{probe.status} {probe.body!r}"
                ok = resp.status == probe.status and probe.body in resp.text
            checks.append(SmokeCheck(plan.label, probe.path, "no certificate", expect, _answer(resp), ok))
        scoped = [c for c in certs if c.server is not None and matches_server(plan, c.server)]
        for cert in scoped + [c for c in unscoped if c not in passed]:
            through = None
            for probe in (p for p in plan.probes if p.require):
                resp = send(plan, probe.path, cert)
                tried[cert].append(f"{plan.label}{probe.path}: {_answer(resp)}")
                if _passed_gates(plan, resp):
                    through = (probe.path, _answer(resp))
                    break
            if through:
                passed.add(cert)
                checks.append(SmokeCheck(plan.label, through[0], Path(cert.cert).name, "an answer past the gates",
                                         through[1], True))
            elif cert.server is not None:
                checks.append(SmokeCheck(plan.label, "", Path(cert.cert).name,
                                         "the certificate to pass the gates of a `require` route",
                                         "; ".join(tried[cert][-3:]) or "the server has no `require` route", False))
    for cert in unscoped:
        if cert not in passed:
            checks.append(SmokeCheck("every `require` route", "", Path(cert.cert).name,
                                     "the certificate to pass the gates of at least one",
                                     "; ".join(tried[cert][-3:]) or "no server checked has a `require` route", False))
    if logs is not None and any(not c.ok for c in checks):
        logs.explain(checks, plans)
    return checks


# ----- nginx's error log ------------------------------------------------------------------------------

_LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: (?:\*\d+ )?")
_UNREADABLE = ("stderr", "syslog:", "memory:", "/dev/")


class ErrorLogs:
    """nginx's error log files, read from where they stood when the smoke checks began: nginx says
    why it refused a certificate (`certificate revoked`) only there, and only at level `info`."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = [p for p in dict.fromkeys(paths) if p.is_file()]
        self.offsets = {p: p.stat().st_size for p in self.paths}

    def new_lines(self) -> list[str]:
        lines: list[str] = []
        for path in self.paths:
            try:
                with path.open("rb") as f:
                    f.seek(self.offsets[path])
                    lines += f.read(4 << 20).decode(errors="replace").splitlines()
            except OSError:
                continue
        return lines

    def explain(self, checks: list[SmokeCheck], plans: Sequence[SmokePlan]) -> None:
        """Give each failed check the lines nginx logged for its request (or, for a refusal before
        any request was read, the TLS errors on its port)."""
        lines = self.new_lines()
        ports = {p.label: p.port for p in plans}
        for check in checks:
            if check.ok:
                continue
            mine = [line for line in lines if check.path and f'request: "GET {check.path} ' in line
                    and (f"server: {check.server.rsplit(':', 1)[0]}," in line or "server: " not in line)]
            if not mine and check.server in ports:
                mine = [line for line in lines if "SSL" in line and "request:" not in line
                        and f":{ports[check.server]}" in line]
            if not mine and check.client != "no certificate" and not check.path:
                mine = [line for line in lines if "certificate" in line]
            if mine:
                check.nginx = " | ".join(dict.fromkeys(_short(line) for line in mine[-3:]))
            elif self.paths:
                check.nginx = (f"no line about this request in {', '.join(map(str, self.paths))} (nginx logs "
                               "client certificate errors at level info: `error_log FILE info;`)")


def _short(line: str) -> str:
    """The message of an error log line: no timestamp, pid or the request details nginx appends."""
    text = _LOG_PREFIX.sub("", line)
    m = _LOG_PREFIX.match(line)
    text = text.split(", client: ")[0]
    return f"[{m[1]}] {text}" if m else text


def error_log_paths(main_conf_text: str, prefix: Path, args: Sequence[str], built_in: str | None) -> list[Path]:
    """The files nginx logs errors to: `-e FILE`, the main config's `error_log` directives (relative
    to the prefix, as nginx reads them), else nginx's built-in path. stderr, syslog and memory
    logs cannot be read back."""
    found: list[str] = []
    for i, arg in enumerate(args):
        if arg == "-e" and i + 1 < len(args):
            found.append(args[i + 1])
    text = re.sub(r"#[^\n]*", "", main_conf_text)
    found += [m[1] or m[2] or m[3] for m in
              re.finditer(r"(?:^|[;}{\s])error_log\s+(?:\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|([^\s;]+))", text)]
    if not found and built_in:
        found.append(built_in)
    paths = []
    for item in found:
        if item.startswith(_UNREADABLE):
            continue
        path = Path(item)
        paths.append(path if path.is_absolute() else prefix / path)
    return paths
