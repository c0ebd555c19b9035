"""The emitted gates on a real nginx: requests/s and worker CPU per 10,000 requests, next to a
config without client auth and a hand-written minimal `ssl_verify_client on`.

Every config runs in its own nginx (one worker, loopback, access log off) at the same time, and
the measurement rounds go through the configs in turn, so a busy moment of the shared machine
hits them all alike. Every backend is `return 200`: the emitted `proxy_pass` lines are replaced
by it (the gates run in the rewrite phase, before it), and nothing else of the emitted config is
touched but `access_log off` added to its server blocks, as in the other configs. The
"(proxied)" configs instead proxy to a plain-HTTP `return 200` server in the same nginx over
kept-alive upstream connections, as production would: keep-alive only.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import synth
from benchmarks.load import Target, one_request, run_load
from mtlsc import pipeline
from mtlsc.lab import pki as labpki
from mtlsc.lab.nginx import find_nginx, free_port, nginx_command, running_nginx, write_conf
from mtlsc.output import write_atomic
from mtlsc.san import Sans

SERVER = synth.SERVER
PATH = "/partner/x"
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Config:
    name: str
    http_conf: str
    port: int
    identities: int | None = None  # for the emitted configs
    modes: tuple[str, ...] = ("keep-alive", "new connection")
    backend_port: int | None = None  # proxied: the plain-HTTP `return 200` server in the same nginx


@dataclass
class Sample:
    rate: float  # requests per second
    cpu_per_10k: float  # nginx worker CPU seconds (user + system) per 10,000 requests
    errors: int


@dataclass
class RuntimeResult:
    # config name -> mode ("keep-alive" / "new connection") -> samples, one per round
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    nginx_t: dict[str, list[float]] = field(default_factory=dict)  # seconds of `nginx -t`
    reload: dict[str, list[float]] = field(default_factory=dict)  # seconds until new workers serve
    conf_bytes: dict[str, int] = field(default_factory=dict)
    denied_status: dict[str, int] = field(default_factory=dict)  # sanity: a stranger's answer
    # proxy_set_header lines in the measured route's location: what a proxied request costs in headers
    header_lines: dict[str, int] = field(default_factory=dict)


@dataclass
class Pki:
    ca_pem: Path  # root + issuing, what the hand-written config trusts
    server_ca: Path
    server_crt: Path
    server_key: Path
    allowed: tuple[Path, Path]  # identity 0's certificate: on every allow list
    stranger: tuple[Path, Path]  # a certificate of the CA on no allow list


def make_pki(work: Path) -> Pki:
    """The CA `c0` (root + issuing, written where the synthetic policies expect it), a server
    certificate and two client certificates."""
    now = datetime.now(timezone.utc)
    ca_dir = work / "ca"
    chain = synth.ensure_cas(ca_dir, 2, now)["c0"]  # c1: the second CA of the two-CA configs
    labpki.write_pem(work / "trust.pem", chain.root.cert, chain.issuing.cert)
    server_ca = labpki.make_root("bench server CA", now=now)
    labpki.write_pem(work / "server-ca.pem", server_ca.cert)
    server = labpki.issue_server(server_ca, [SERVER, "127.0.0.1"], now=now)
    labpki.write_pem(work / "server.crt", server.cert)
    labpki.write_pem(work / "server.key", server.key)

    def client(name: str, subject: str) -> tuple[Path, Path]:
        # The allowed client also carries a SPIFFE ID: one certificate for the DN and the SAN gate.
        sans = Sans((("uri", BENCH_SPIFFE_ID),)) if name == "allowed" else Sans()
        issued = labpki.issue_client(chain.issuing, labpki._x509_name(subject), now=now, sans=sans)
        labpki.write_pem(work / f"{name}.crt", issued.cert)
        labpki.write_pem(work / f"{name}.key", issued.key)
        return work / f"{name}.crt", work / f"{name}.key"

    return Pki(work / "trust.pem", work / "server-ca.pem", work / "server.crt", work / "server.key",
               client("allowed", synth.subject(0)), client("stranger", "CN=bench-stranger,O=Elsewhere"))


_COMMON = """    listen 127.0.0.1:{port} ssl;
    server_name {name};
    access_log off;
    ssl_certificate {crt};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets on;
"""


RETURN = 'return 200 "ok\\n";'


def _answer(backend: int | None) -> str:
    """The location body that answers: `return 200`, or a proxy to the backend server (kept-alive
    upstream connections, as a production proxy would use)."""
    if backend is None:
        return RETURN
    return (f'proxy_pass http://bench_backend_{backend}; proxy_http_version 1.1; '
            'proxy_set_header Connection "";')


def backend_conf(backend: int) -> str:
    """A plain-HTTP `return 200` server and the upstream that reaches it, for the proxied configs."""
    return (f"upstream bench_backend_{backend} {{\n    server 127.0.0.1:{backend};\n    keepalive 16;\n}}\n"
            f"server {{\n    listen 127.0.0.1:{backend};\n    access_log off;\n    location / {{ {RETURN} }}\n}}\n")


def plain_conf(pki: Pki, port: int, backend: int | None = None) -> str:
    """No client authentication at all."""
    common = _COMMON.format(port=port, name=SERVER, crt=pki.server_crt, key=pki.server_key)
    return f"server {{\n{common}    location / {{ {_answer(backend)} }}\n}}\n"


def handwritten_conf(pki: Pki, port: int, backend: int | None = None) -> str:
    """What a person writes: verify on the listener, one trust file, nothing per route."""
    common = _COMMON.format(port=port, name=SERVER, crt=pki.server_crt, key=pki.server_key)
    return (f"server {{\n{common}    ssl_verify_client on;\n    ssl_client_certificate {pki.ca_pem};\n"
            f"    ssl_verify_depth 1;\n    location / {{ {_answer(backend)} }}\n}}\n")


_PROXY = re.compile(r"^(\s*)proxy_pass [^;]+;$", re.M)


PROXIED = " (proxied)"
_IDENTITY_GATE = re.compile(r"\n[^\n]*if \(\$mtls_\w+_deny\d+\)[^\n]*")
NO_GATE = "diagnostic: mtlsc, 10 identities, identity gates removed"


def emitted_conf(work: Path, pki: Pki, port: int, identities: int, identity_gate: bool = True,
                 backend: int | None = None) -> str:
    """mtlsc's config for a policy with `identities` identities all allowed on /partner/
    (`synth.policy_text`: exact subjects, every tenth a fingerprint pin), and 8 more routes.
    `identity_gate=False` drops the `if ($..._denyN)` lines: a diagnostic that prices the gate.
    With `backend`, the emitted `proxy_pass` goes to the backend server's upstream instead."""
    shape = synth.Shape(routes=10, identities=identities, cas=1)
    out = work / f"emitted-{identities}-{port}"
    policy = work / f"{shape.name}-{port}.mtls"
    policy.write_text(synth.policy_text(shape, crl=False, listen=f"127.0.0.1:{port}", cert=str(pki.server_crt),
                                        key=str(pki.server_key), install=str(out / "mtls")))
    result = pipeline.compile_policy([str(policy)])
    if result.failed:
        raise RuntimeError(f"the runtime policy does not compile: {[d.message for d in result.diagnostics][:3]}")
    write_atomic(out, result.outputs)
    parts = []
    for name in sorted(result.outputs):
        if name.startswith("nginx/"):
            text = _PROXY.sub(lambda m: m[1] + _answer(backend), result.outputs[name])
            parts.append(text.replace("\nserver {\n", "\nserver {\n    access_log off;\n"))
    text = "\n".join(parts)
    return text if identity_gate else _IDENTITY_GATE.sub("", text)


KEY_BOUND = "two CAs: key binding (njs)"
NAME_BOUND = "two CAs: name binding only"
_KEY_CHECK = re.compile(r"\n[^\n]*(?:auth_request |error_page 403 = @mtlsc_bad_cert)[^\n]*")


def _proxied_conf(policy: Path, out: Path, backend: int, expected, problem: str) -> str:
    """Compile `policy` into `out` and return its nginx files as one http conf: access log off, every
    `proxy_pass` sent to the backend server's upstream. `expected(outputs)` says the compile produced
    what the measurement is about (else `problem` is raised with the first diagnostics)."""
    result = pipeline.compile_policy([str(policy)])
    if result.failed or not expected(result.outputs):
        raise RuntimeError(f"{problem}: {[d.message for d in result.diagnostics][:3]}")
    write_atomic(out, result.outputs)
    return "\n".join(_PROXY.sub(lambda m: m[1] + _answer(backend), result.outputs[n])
                     .replace("\nserver {\n", "\nserver {\n    access_log off;\n")
                     for n in sorted(result.outputs) if n.startswith("nginx/"))


def two_ca_conf(work: Path, pki: Pki, port: int, backend: int, key_check: bool = True) -> str:
    """mtlsc's config for a server whose routes name two CAs (root + issuing each, depth 1): each
    root could sign a look-alike of the other's names, so both CAs' routes are bound by key (njs
    signature check per request, docs/language.md "Several CAs on one server"). `key_check=False`
    drops the `auth_request` lines: the same config bound by name only, the baseline. Both proxy to
    the backend server: a `return` would answer in the rewrite phase, before auth_request runs."""
    out = work / f"two-cas-{port}"
    policy = work / f"two-cas-{port}.mtls"
    policy.write_text(f"""nginx ">= 1.22"
ca c0 {{ bundle "ca/c0-root.pem" "ca/c0-issuing.pem"  depth 1 }}
ca c1 {{ bundle "ca/c1-root.pem" "ca/c1-issuing.pem"  depth 1 }}
identity i0 {{ subject "{synth.subject(0)}" }}
server {SERVER} {{
  listen 127.0.0.1:{port}
  certificate "{pki.server_crt}" key "{pki.server_key}"
  backend "http://127.0.0.1:8080"
  install "{out / 'mtls'}"
  route = /healthz {{ public }}
  route /partner/ {{ require c0  allow i0  forward subject verify }}
  route /other/ {{ require c1  allow any }}
}}
""")
    text = _proxied_conf(policy, out, backend, lambda outputs: any(n.endswith(".keys.js") for n in outputs),
                         "the two-CA policy does not compile to a key check")
    return text if key_check else _KEY_CHECK.sub("", text)


SAN_GATE = "SAN gate (njs)"
DN_GATE = "DN map gate"
BENCH_SPIFFE_ID = "spiffe://bench.example.org/ns/bench/sa/client"


def gate_conf(work: Path, pki: Pki, port: int, backend: int, san: bool) -> str:
    """The same one-CA server allowing identity 0 on /partner/, by its subject DN (a hashed map) or
    by its SPIFFE ID (a js_set variable that parses $ssl_client_raw_cert: docs/language.md "SAN
    identities"): what a SAN identity costs over a DN one. Both proxy to the backend server."""
    kind = "san" if san else "dn"
    out = work / f"gate-{kind}-{port}"
    policy = work / f"gate-{kind}-{port}.mtls"
    ident = f'san spiffe "{BENCH_SPIFFE_ID}"' if san else f'subject "{synth.subject(0)}"'
    policy.write_text(f"""nginx ">= 1.22" with njs
ca c0 {{ bundle "ca/c0-root.pem" "ca/c0-issuing.pem"  depth 1 }}
identity i0 {{ {ident} }}
server {SERVER} {{
  listen 127.0.0.1:{port}
  certificate "{pki.server_crt}" key "{pki.server_key}"
  backend "http://127.0.0.1:8080"
  install "{out / 'mtls'}"
  route = /healthz {{ public }}
  route /partner/ {{ require c0  allow i0  forward subject verify }}
}}
""")
    return _proxied_conf(policy, out, backend, lambda outputs: san == any(n.endswith(".san.js") for n in outputs),
                         f"the {kind} gate policy does not compile as expected")


def _location_header_lines(conf: str, path: str) -> int:
    """proxy_set_header lines of the location that serves `path` (`^~ /partner/`), 0 without one."""
    m = re.search(r"location \^~ " + re.escape(path.rsplit("/", 1)[0] + "/") + r" \{(.*?)\n    \}", conf, re.S)
    return m[1].count("proxy_set_header ") if m else 0


def _worker_cpu(pids: set[int]) -> float:
    """CPU seconds the processes ran: /proc/PID/schedstat (nanoseconds) where the kernel keeps
    it, else utime + stime of /proc/PID/stat (clock ticks, 10 ms)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            try:
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
            except OSError:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14, 15
    return total


def _time_nginx_t(nginx_bin: str, prefix: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run([*nginx_command(nginx_bin, prefix), "-t"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{proc.stderr}")
    return time.perf_counter() - started


def measure(work: Path, *, identity_counts: list[int], rounds: int, keepalive_requests: int,
            new_conn_requests: int, processes: int = 2, max_seconds: float = 60, reloads: int = 3,
            diagnostic: bool = True, proxy: bool = True, two_cas: bool = True, san_gate: bool = True,
            progress=print) -> RuntimeResult:
    """Build every config, start them all, then `rounds` rounds over configs x modes."""
    nginx_bin = find_nginx()
    work.mkdir(parents=True, exist_ok=True)
    pki = make_pki(work)
    configs = []

    def add(name, build, identities=None, proxied=False, modes=None):
        port = free_port()
        backend = free_port() if proxied else None
        text = build(port, backend) + (backend_conf(backend) if backend else "")
        modes = modes or (("keep-alive",) if proxied else ("keep-alive", "new connection"))
        configs.append(Config(name + (PROXIED if proxied else ""), text, port, identities, modes, backend))

    for proxied in (False, True) if proxy else (False,):
        add("no client auth", lambda p, b: plain_conf(pki, p, b), proxied=proxied)
        add("hand-written verify on", lambda p, b: handwritten_conf(pki, p, b), proxied=proxied)
        for n in identity_counts[:1] if proxied else identity_counts:
            add(f"mtlsc, {n:,} identities", lambda p, b, n=n: emitted_conf(work, pki, p, n, backend=b), n, proxied)
        if diagnostic and identity_counts and not proxied:
            add(NO_GATE, lambda p, b: emitted_conf(work, pki, p, identity_counts[0], identity_gate=False))
    if two_cas:
        both = ("keep-alive", "new connection")
        add(NAME_BOUND, lambda p, b: two_ca_conf(work, pki, p, b, key_check=False), proxied=True, modes=both)
        add(KEY_BOUND, lambda p, b: two_ca_conf(work, pki, p, b), proxied=True, modes=both)
    if san_gate:
        both = ("keep-alive", "new connection")
        add(DN_GATE, lambda p, b: gate_conf(work, pki, p, b, san=False), proxied=True, modes=both)
        add(SAN_GATE, lambda p, b: gate_conf(work, pki, p, b, san=True), proxied=True, modes=both)
    result = RuntimeResult()
    with contextlib.ExitStack() as stack:
        running = {}
        for c in configs:
            prefix = work / "nginx" / re.sub(r"[^a-z0-9]+", "-", c.name.lower())
            result.conf_bytes[c.name] = len(c.http_conf)
            result.header_lines[c.name] = _location_header_lines(c.http_conf, PATH)
            write_conf(prefix, c.http_conf)
            result.nginx_t[c.name] = [_time_nginx_t(nginx_bin, prefix) for _ in range(reloads)]
            ports = [c.port] + ([c.backend_port] if c.backend_port else [])
            running[c.name] = stack.enter_context(running_nginx(c.http_conf, prefix, ports=ports, nginx_bin=nginx_bin))
        targets = {}
        for c in configs:
            cert, key = pki.allowed if c.name != "no client auth" else (None, None)
            targets[c.name] = Target(c.port, SERVER, PATH, str(pki.server_ca), str(cert) if cert else None,
                                     str(key) if key else None)
            status = one_request(targets[c.name])
            if status != 200:
                raise RuntimeError(f"{c.name}: the allowed client got {status}, not 200")
            if c.identities is not None:
                stranger = Target(c.port, SERVER, PATH, str(pki.server_ca), str(pki.stranger[0]), str(pki.stranger[1]))
                result.denied_status[c.name] = one_request(stranger)
            run_load(targets[c.name], requests=max(keepalive_requests // 10, 50), processes=processes,
                     max_seconds=max_seconds)  # warm-up
        modes = (("keep-alive", True, keepalive_requests), ("new connection", False, new_conn_requests))
        for r in range(rounds):
            for mode, keepalive, count in modes:
                turn = [c for c in configs if mode in c.modes]
                turn = turn[r % len(turn):] + turn[:r % len(turn)]  # each round starts elsewhere
                for c in turn:
                    workers = running[c.name].workers()
                    before = _worker_cpu(workers)
                    load = run_load(targets[c.name], requests=count, processes=processes, keepalive=keepalive,
                                    max_seconds=max_seconds)
                    cpu = _worker_cpu(workers) - before
                    per = cpu / load.requests * 10_000 if load.requests else float("nan")
                    result.samples.setdefault(c.name, {}).setdefault(mode, []).append(Sample(load.rate, per, load.errors))
            progress(f"runtime: round {r + 1}/{rounds} done")
        for c in configs:
            times = []
            for _ in range(reloads):
                started = time.perf_counter()
                running[c.name].reload()
                times.append(time.perf_counter() - started)
            result.reload[c.name] = times
    return result
