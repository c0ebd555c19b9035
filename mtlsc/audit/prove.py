"""`mtlsc import --prove`: the original configuration and the imported policy, compiled, each run
on the real nginx on loopback with a throwaway PKI, asked the same requests by the same clients;
the rows where they answer differently are the holes the import closes (or, read the other way,
what it changed on purpose, e.g. a probe behind `ssl_verify_client on` now answered).

The original is run as written, but for what must point at the lab: listen addresses (127.0.0.1,
free ports), certificate and CA files (minted per original file), backends (one echo backend that
records what reaches it). Directives that need files or modules the lab does not have are left out.
Every request also carries forged copies of the identity headers: a forged value that reaches the
backend is a spoofed identity.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from mtlsc import dn
from mtlsc.audit import dn_tests
from mtlsc.audit.importer import Imported, render
from mtlsc.audit.model import ARRAY_HEADERS, PASSES, Config, Server
from mtlsc.audit.prove_table import Answer, Ask, Row, Table
from mtlsc.audit.sample import example
from mtlsc.audit.trust import resolve
from mtlsc.audit.unknown import KEYED_BLOCKS, KNOWN
from mtlsc.lab.client import request
from mtlsc.lab.echo import EchoBackend, running_echo_backend
from mtlsc.lab.nginx import NginxStartError, free_port, quote, running_nginx
from mtlsc.lab.pki import Issued, issue_client, issue_server, make_crl, make_root, write_pem
from mtlsc.nginx_conf import Directive

FORGED = "forged-by-client"
_DROP = {"access_log", "error_log", "pid", "include", "load_module", "ssl_dhparam", "ssl_stapling",
         "ssl_stapling_verify", "ssl_stapling_file", "ssl_password_file", "client_body_temp_path",
         "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path", "log_format",
         "default_type", "lua_package_path", "resolver", "ssl_ocsp_responder", "auth_request",
         "ssl_session_ticket_key", "root", "alias"}
_LISTEN_KEEP = {"ssl", "default_server", "default"}
MAX_REQUESTS = 2000  # rows x clients: the fixtures need a few hundred


class ProveError(RuntimeError):
    pass


# ---- the lab's PKI --------------------------------------------------------------------------------

@dataclass
class Cast:
    files: dict[str, str]  # original path (resolved, absolute) -> lab file
    clients: dict[str, tuple[Path, Path] | None]  # client label -> (cert, key)
    server_cert: tuple[Path, Path]


def _name(text: str) -> x509.Name:
    try:
        return dn.x509_name(dn.parse_dn(text))
    except (dn.DnError, ValueError):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mtlsc-prove")])


def _subjects(config: Config) -> list[str]:
    """Subjects worth presenting: what each DN test admits, and what fools the unsafe ones."""
    from mtlsc.audit.dn_tests import _comma_unsafe, _compiled, _unanchored
    out = ["CN=mtlsc-prove,O=Nowhere"]
    for t in dn_tests.collect(config):
        sample = t.pattern if not t.regex else example(t.pattern, t.icase)
        if not sample:
            continue
        out += [sample, sample.swapcase()] if t.icase else [sample]  # `~*`: the other case too (MTLS522)
        rx = _compiled(t) if t.regex else None
        if rx is not None:
            for attack in (_unanchored(t, rx, sample), _comma_unsafe(rx, sample)):
                if attack:
                    out.append(attack)
    seen, good = set(), []
    for s in out:
        try:
            printed = dn.format_dn(dn.parse_dn(s))
        except dn.DnError:  # a DN in a form nginx never prints (MTLS522): the subject it was meant for
            copied = dn.copied_form(s)
            if copied is None:
                continue
            printed = copied[1]
        if printed not in seen:
            seen.add(printed)
            good.append(printed)
    return good


def _cast(config: Config, work: Path, now: datetime) -> Cast:
    files: dict[str, str] = {}
    clients: dict[str, tuple[Path, Path] | None] = {"no certificate": None}
    subjects = _subjects(config)
    srv_ca = make_root("prove server ca", now=now)
    names = sorted({n for s in config.servers for n in s.names if n and n != "_" and "*" not in n} | {"localhost"})
    server = issue_server(srv_ca, names, now=now)
    server_cert = (write_pem(work / "server.crt", server.cert), write_pem(work / "server.key", server.key))

    def clients_of(label: str, ca: Issued) -> list[Issued]:
        issued = []
        for subject in subjects:
            leaf = issue_client(ca, _name(subject), now=now)
            key = f"{label}: {subject}"
            clients[key] = (write_pem(work / "clients" / f"{len(clients)}.crt", leaf.cert),
                            write_pem(work / "clients" / f"{len(clients)}.key", leaf.key))
            issued.append(leaf)
        return issued

    for i, path in enumerate(sorted({resolve_abs(config, d.args[0]) for s in config.servers
                                     for d in [s.setting("ssl_client_certificate"), s.setting("ssl_trusted_certificate")]
                                     if d is not None and d.args})):
        ca = make_root(f"prove ca {i}", now=now)
        label = Path(path).name
        files[path] = str(write_pem(work / "ca" / f"{i}.pem", ca.cert))
        clients_of(label, ca)
        revoked = issue_client(ca, _name(subjects[0]), now=now)
        clients[f"{label}: revoked"] = (write_pem(work / "clients" / f"r{i}.crt", revoked.cert),
                                        write_pem(work / "clients" / f"r{i}.key", revoked.key))
        crl = make_crl(ca, [revoked.cert.serial_number], now=now)
        files[path + "#crl"] = str(write_pem(work / "ca" / f"{i}.crl", crl))
    evil = make_root("evil ca", now=now)
    clients_of("unknown CA", evil)
    return Cast(files, clients, server_cert)


def resolve_abs(config: Config, path: str) -> str:
    return str(Path(resolve(config, path)).absolute())


# ---- the original, pointed at the lab -------------------------------------------------------------

def _raw(d: Directive) -> str:
    return " ".join(w.raw for w in d.words)


class Rewriter:
    """The original's http block, pointed at the lab: `cast.files` maps each trust file it names to
    the file to load, `ports` each listen address (TLS or plain) to a loopback port; others are dropped."""

    def __init__(self, config: Config, cast: Cast, ports: dict[tuple[str, int], int], echo: str):
        self.config, self.cast, self.ports, self.echo = config, cast, ports, echo

    def _crl_for(self, crl_path: str, server_block) -> str:
        # a server's CRL file holds the CRLs of the CAs it trusts
        paths = [resolve_abs(self.config, d.args[0]) for d in server_block
                 if isinstance(d, Directive) and d.name in ("ssl_client_certificate", "ssl_trusted_certificate") and d.args]
        return self.cast.files.get((paths or [""])[0] + "#crl", next(iter(v for k, v in self.cast.files.items()
                                                                          if k.endswith("#crl")), ""))

    def directive(self, d: Directive, depth: int, server_block=None, keyed: bool = False) -> list[str]:
        pad = "    " * depth
        name = d.name
        if keyed:  # an entry of a map, geo, types, upstream...: data, kept as written
            return [f"{pad}{_raw(d)};"] if d.block is None else []
        if name in _DROP or name.endswith("_by_lua_block") or name.startswith(("lua_", "js_", "perl")):
            return []
        if name not in KNOWN and d.block is None:
            return []
        if name == "listen":
            from mtlsc.nginx_conf import listen_text_key
            key = listen_text_key(d.args[0])
            flags = [a for a in d.args[1:] if a in _LISTEN_KEEP]
            if key not in self.ports:
                return []
            return [f"{pad}listen {' '.join([f'127.0.0.1:{self.ports[key]}', *flags])};"]
        if name == "ssl_certificate":
            return [f"{pad}ssl_certificate {quote(self.cast.server_cert[0])};"]
        if name == "ssl_certificate_key":
            return [f"{pad}ssl_certificate_key {quote(self.cast.server_cert[1])};"]
        if name in ("ssl_client_certificate", "ssl_trusted_certificate") and d.args:
            return [f"{pad}{name} {quote(self.cast.files[resolve_abs(self.config, d.args[0])])};"]
        if name == "ssl_crl" and d.args:
            return [f"{pad}ssl_crl {quote(self._crl_for(d.args[0], server_block or ()))};"]
        if name in PASSES and d.args:
            if name != "proxy_pass":
                return [f"{pad}proxy_pass {self.echo};"]
            m = re.fullmatch(r"https?://[^/]+(/.*)?", d.args[0])
            return [f"{pad}proxy_pass {quote(self.echo + (m[1] or '') if m else self.echo)};"]
        if d.block is None:
            return [f"{pad}{_raw(d)};"]
        inner = []
        for x in d.block:
            if isinstance(x, Directive):
                inner += self.directive(x, depth + 1, d.block if name == "server" else server_block,
                                        keyed=name in KEYED_BLOCKS)
        if name == "server" and not any(x.name == "ssl_certificate" for x in d.block if isinstance(x, Directive)):
            inner.insert(0, f"{pad}    ssl_certificate {quote(self.cast.server_cert[0])};")
            inner.insert(1, f"{pad}    ssl_certificate_key {quote(self.cast.server_cert[1])};")
        if name == "server" and not any(line.strip().startswith("listen ") for line in inner):
            return []
        return [f"{pad}{_raw(d)} {{", *inner, f"{pad}}}"]

    def http_conf(self) -> str:
        blocks = self.config.http or []
        items = [x for b in blocks for x in b.block] if blocks else list(self.config.loaded.tree)
        lines = []
        for d in items:
            if isinstance(d, Directive) and d.name != "http":
                lines += self.directive(d, 0)
        return "\n".join(lines) + "\n"


def as_written(config: Config, server_cert: tuple[Path, Path], ports: dict[tuple[str, int], int], backend: str) -> str:
    """The original's http block on the lab's addresses, server certificate and backend, but with its
    own CA and CRL files: for the traps that live in those files (MTLS540-MTLS544), which a minted CA
    per file would not reproduce."""
    files: dict[str, str] = {}
    for srv in config.servers:
        bundles = [resolve_abs(config, d.args[0]) for d in (srv.setting("ssl_client_certificate"),
                                                            srv.setting("ssl_trusted_certificate")) if d is not None and d.args]
        files.update({path: path for path in bundles})
        crl = srv.setting("ssl_crl")
        if crl is not None and crl.args and bundles:
            files[bundles[0] + "#crl"] = resolve_abs(config, crl.args[0])
    return Rewriter(config, Cast(files, {}, server_cert), ports, backend).http_conf()


# ---- asking ---------------------------------------------------------------------------------------

def _asks(config: Config, audit_diags) -> list[Ask]:
    asks: list[Ask] = []
    for srv in config.servers:
        name = next((n for n in srv.names if n and n != "_" and "*" not in n), None)
        if name is None or not srv.ssl:
            continue
        for loc in srv.locations:
            if loc.named or loc.is_regex:
                continue
            path = loc.path if loc.modifier == "=" else loc.path + ("x" if loc.path.endswith("/") else "/x")
            asks.append(Ask(name, True, path, loc.describe()))
        for d in audit_diags:
            if d.code == "MTLS530" and d.span.path == srv.directive.path:
                m = re.search(r"takes `([^`]+)`", d.message)
                if m:
                    asks.append(Ask(name, True, m[1], "regex takeover (MTLS530)"))
            if d.code == "MTLS531":
                m = re.search(r"`GET ([^`]+)`", d.message)
                if m:
                    asks.append(Ask(name, True, m[1], "raw target (MTLS531)"))
    # the default-server hole: the same requests without SNI
    if any(d.code == "MTLS510" for d in audit_diags):
        asks += [Ask(a.server, False, a.path, a.label) for a in list(asks) if a.sni]
    return list(dict.fromkeys(asks))


def _identity_headers(config: Config) -> list[str]:
    """The headers the original fills from certificate fields: the ones its backend reads."""
    names: set[str] = set()
    for srv in config.servers:
        for block in [*srv.chain, *(loc.body for loc in srv.locations)]:
            for kind in ARRAY_HEADERS:
                for d in block or ():
                    if isinstance(d, Directive) and d.name == kind and len(d.args) >= 2 and "$ssl_client_" in d.args[1]:
                        names.add(d.args[0])
    return sorted({n.lower(): n for n in names}.values())


def _ask(port: int, ask: Ask, client, headers, echo: EchoBackend, tls_version: str | None) -> Answer:
    echo.clear()
    cert, key = client if client else (None, None)
    resp = request("127.0.0.1", port, ask.path, server_name=ask.server if ask.sni else None, host_header=ask.server,
                   cert=cert, key=key, headers=[(h, FORGED) for h in headers], timeout=5, tls_version=tls_version)
    got = echo.snapshot()
    if not got:
        return Answer(False, resp.status)
    forged = tuple(sorted({h for h in headers if FORGED in got[-1].header_values(h)}))
    return Answer(True, resp.status, forged)


def _run_side(http_conf: str, prefix: Path, ports: list[int], asks, cast: Cast, nginx_bin, answer) -> dict:
    with running_nginx(http_conf, prefix, ports=ports, nginx_bin=nginx_bin):
        return {(ask, label): answer(ask, client) for ask in asks for label, client in cast.clients.items()}


def compile_lab(imported: Imported, paths: dict[str, str], listen: dict[str, str], backend: str, work: Path,
                now: datetime) -> Path:
    """The imported policy with its files, addresses and backend pointed at the lab, compiled into
    `work/out`; returns the directory of its nginx files. ProveError when it does not compile."""
    from mtlsc import pipeline
    from mtlsc.output import write_atomic
    from mtlsc.render import render as render_diags

    work.mkdir(parents=True, exist_ok=True)
    (work / "policy.mtls").write_text(render(imported, paths=paths, listen=listen, backend=backend,
                                             install=str(work / "out" / "mtls")))
    result = pipeline.compile_policy([str(work / "policy.mtls")], now=now)
    if result.failed:
        raise ProveError("the imported policy does not compile against the lab's files:\n"
                         + render_diags(result.diagnostics, result.sources))
    write_atomic(work / "out", result.outputs)
    return work / "out" / "nginx"


def prove_import(config: Config, imported: Imported, policy_path: Path, *, nginx_bin: str | None = None,
                 workdir: Path | None = None, audit_diags=None, tls_version: str | None = None) -> Table:
    """`tls_version` limits every client to one version (`TLSv1.3`: MTLS547's lockout)."""
    from mtlsc.audit import audit_config

    now = datetime.now(timezone.utc)
    audit_diags = audit_diags if audit_diags is not None else audit_config(config, now)
    work = Path(workdir or tempfile.mkdtemp(prefix="mtlsc-prove-"))
    try:
        cast = _cast(config, work, now)
        keys = sorted({lst.key for s in config.servers for lst in s.listens if lst.ssl})
        ports = {key: free_port() for key in keys}
        asks = _asks(config, audit_diags)
        if len(asks) * len(cast.clients) > MAX_REQUESTS:
            raise ProveError(f"{len(asks) * len(cast.clients)} requests per side is more than --prove makes "
                             f"({MAX_REQUESTS}): prove a smaller configuration")
        # and their `_` twins, which `underscores_in_headers on` lets through beside them (MTLS515)
        headers = [*(h := _identity_headers(config)), *(x.replace("-", "_") for x in h if "-" in x)]

        def port_of_original(ask: Ask) -> int:
            srv = next(s for s in config.servers if ask.server in s.names)
            return ports[next(lst.key for lst in srv.listens if lst.ssl)]

        with running_echo_backend() as echo:
            original_conf = Rewriter(config, cast, ports, echo.url).http_conf()
            (work / "original.conf").write_text(original_conf)
            # the policy with the same lab files, ports and backend
            paths = {**{k: v for k, v in cast.files.items() if not k.endswith("#crl")},
                     **{resolve_abs(config, d.args[0]): _crl_lab(cast, config, s) for s in config.servers
                        for d in [s.setting("ssl_crl")] if d is not None and d.args}}
            for srv in imported.servers:
                paths[srv.certificate], paths[srv.key] = str(cast.server_cert[0]), str(cast.server_cert[1])
            listen = {}
            for srv in imported.servers:
                for lst in srv.listens:
                    key = next((k for k in keys if (str(k[1]) == lst if k[0] == "*" else lst.endswith(f":{k[1]}"))), None)
                    if key is not None:
                        listen[lst] = f"127.0.0.1:{ports[key]}"
            out = compile_lab(imported, paths, listen, echo.url, work, now)

            def answer(ask: Ask, client) -> Answer:
                return _ask(port_of_original(ask), ask, client, headers, echo, tls_version)
            try:
                original = _run_side(original_conf, work / "nginx-original", list(ports.values()), asks, cast,
                                     nginx_bin, answer)
                policy = _run_side(f"include {quote(str(out) + '/*.conf')};", work / "nginx-policy",
                                   list(ports.values()), asks, cast, nginx_bin, answer)
            except NginxStartError as exc:
                raise ProveError(f"nginx did not start: {exc}") from None
        table = Table(asked=len(original))
        for (ask, label), answer in original.items():
            table.rows.append(Row(ask, label, answer, policy[(ask, label)]))
        return table
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _crl_lab(cast: Cast, config: Config, srv: Server) -> str:
    d = srv.setting("ssl_client_certificate")
    return cast.files.get(resolve_abs(config, d.args[0]) + "#crl", "") if d is not None and d.args else ""
