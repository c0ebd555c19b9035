"""Coexisting with a hand-written nginx: what the user's own configuration already has, how the
emitted files adapt to it, and what mtlsc refuses (docs/language.md "Coexisting with your nginx.conf").

- Hash sizes (`map_hash_*`, `variables_hash_*`): nginx refuses a second one in the http context
  (`directive is duplicate`). Where the user sets one, mtlsc leaves its own out, and checks that the
  user's value is big enough: a bucket smaller than one of mtlsc's names makes nginx refuse to start
  (MTLS051), a smaller size than mtlsc would set makes `nginx -t` warn (MTLS052).
- Default servers: nginx refuses two `default_server`s on one address (`a duplicate default
  server`). Where the user has one, mtlsc writes none, and checks what the user's does with a client
  that sends no SNI, since it stands in for mtlsc's (docs/nginx-facts.md §5): one that verifies client
  certificates against its own CA lets them into mtlsc's `require` routes (MTLS053); one that reads
  `_` in header names lets such clients send look-alikes of the identity headers (MTLS054); one that
  neither verifies nor refuses serves them without a certificate (MTLS055, a note).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mtlsc import ir
from mtlsc.diagnostics import Diagnostic, Related, Severity
from mtlsc.nginx_conf import (ConfError, Directive, Loaded, NginxFailed, _user_listen, http_blocks, listen_key,
                              load_path, load_running)
from mtlsc.source import Source, Span, point

CACHE_LINE = 64  # ngx_cacheline_size on x86-64 and most arm64: the smallest bucket nginx really uses
HASH_SETTINGS = ("map_hash_bucket_size", "map_hash_max_size", "variables_hash_bucket_size", "variables_hash_max_size")


@dataclass(frozen=True)
class UserDefault:
    """A `listen ... default_server` of the user's on an address mtlsc also listens on."""

    key: tuple[str, int]
    listen: Directive
    verify: tuple[str, Directive | None]  # effective ssl_verify_client, and where it is set
    reject: tuple[bool, Directive | None]  # effective ssl_reject_handshake
    underscores: tuple[bool, Directive | None]
    ignore_invalid: tuple[bool, Directive | None]


@dataclass
class Host:
    loaded: Loaded
    settings: dict[str, Directive] = field(default_factory=dict)  # hash settings the user sets, first one each
    defaults: dict[tuple[str, int], UserDefault] = field(default_factory=dict)

    def to_ir(self) -> ir.HostNginx:
        return ir.HostNginx(self.loaded.origin, frozenset(self.settings), frozenset(self.defaults))


class HostError(Exception):
    """The user's configuration could not be read: one MTLS050 diagnostic."""

    def __init__(self, diagnostic: Diagnostic, sources: dict[str, Source]):
        super().__init__(diagnostic.message)
        self.diagnostic, self.sources = diagnostic, sources


def _find(block, name: str) -> Directive | None:
    return next((d for d in block if isinstance(d, Directive) and d.name == name and d.block is None), None)


def _effective(server: Directive, http: Directive, name: str, default: str) -> tuple[str, Directive | None]:
    """A server's value of an http/server directive: its own, else the http block's, else nginx's default."""
    for block in (server.block, http.block):
        d = _find(block, name)
        if d is not None and d.args:
            return d.args[0].lower(), d
    return default, None


def read_host(loaded: Loaded) -> Host:
    host = Host(loaded)
    for http in http_blocks(loaded):
        for d in http.block:
            if isinstance(d, Directive) and d.name in HASH_SETTINGS and d.name not in host.settings:
                host.settings[d.name] = d
        for server in (d for d in http.block if isinstance(d, Directive) and d.name == "server" and d.block):
            for listen in (d for d in server.block if isinstance(d, Directive) and d.name == "listen" and d.args):
                if not any(a in ("default_server", "default") for a in listen.args[1:]):
                    continue
                key = _user_listen(listen.args[0])
                if key is None or key in host.defaults:
                    continue
                verify = _effective(server, http, "ssl_verify_client", "off")
                reject = _effective(server, http, "ssl_reject_handshake", "off")
                underscores = _effective(server, http, "underscores_in_headers", "off")
                ignore = _effective(server, http, "ignore_invalid_headers", "on")
                host.defaults[key] = UserDefault(key, listen, verify, (reject[0] == "on", reject[1]),
                                                 (underscores[0] == "on", underscores[1]), (ignore[0] == "on", ignore[1]))
    return host


def _conf_error(exc: ConfError, origin: str, texts: dict[str, str]) -> HostError:
    path = exc.path or origin
    span = Span(path, exc.line, exc.col, exc.line, exc.col + 1)
    diag = Diagnostic("MTLS050", Severity.ERROR, span, f"cannot read the nginx configuration: {exc.message}",
                      "mtlsc reads your nginx config to fit its files to it; fix the file, or check the path "
                      "given to --nginx-conf", label="here")
    return HostError(diag, {p: Source(p, t) for p, t in texts.items()})


def host_from_path(path: str) -> Host:
    """`--nginx-conf FILE`; HostError (MTLS050) when it cannot be read."""
    try:
        return read_host(load_path(path))
    except ConfError as exc:
        texts = {}
        if exc.path:
            try:
                with open(exc.path, encoding="utf-8", errors="replace") as f:
                    texts[exc.path] = f.read()
            except OSError:
                pass
        raise _conf_error(exc, path, texts) from None
    except OSError as exc:
        diag = Diagnostic("MTLS050", Severity.ERROR, point(exc.filename or path),
                          f"cannot read the nginx configuration: {exc.strerror or exc}",
                          "give --nginx-conf the main config file (e.g. /etc/nginx/nginx.conf); every file it "
                          "includes must be readable too")
        raise HostError(diag, {}) from None


def running_host(command: list[str]) -> "Host | HostError | None":
    """For `mtlsc apply`: the configuration `nginx -T` shows for this command line (`nginx -p P -c C`);
    a HostError (MTLS050) when mtlsc cannot read what nginx accepted; None when nginx -T itself
    fails, which apply's preflight `nginx -t` then reports."""
    try:
        return read_host(load_running(command))
    except NginxFailed:
        return None
    except ConfError as exc:
        return _conf_error(exc, "nginx -T", {})


# ---- checks: the user's config against what mtlsc needs -------------------------------------------

def _span(d: Directive) -> Span:
    return Span(d.path, d.line, d.col, d.end_line, d.end_col)


def check_host(policy: ir.Policy, views, host: Host) -> list[Diagnostic]:
    from mtlsc.emit.http import _hash_sizes, hash_element, http_settings

    out: list[Diagnostic] = []
    longest = {
        "map_hash_bucket_size": max((len(e.key) for v in views for m in v.maps for e in m.entries
                                     if not e.key.startswith('"~')), default=0),
        "variables_hash_bucket_size": max((len(m.var) - 1 for v in views for m in v.maps), default=0),
    }
    servers = sum(len(s.listens) for s in policy.servers)
    for setting in http_settings(_hash_sizes(views), servers, host.to_ir()):
        d = host.settings.get(setting.name)
        if d is None:
            continue
        value = _size(d)
        if value is not None and setting.name.endswith("bucket_size"):
            value = -(-value // CACHE_LINE) * CACHE_LINE  # nginx rounds bucket sizes up to a cache line
        if value is None or value >= setting.value:
            continue
        hard = setting.name in longest and value < hash_element(longest[setting.name]) + 8
        what = "a map key" if setting.name.startswith("map") else "a variable name"
        if hard:
            out.append(Diagnostic(
                "MTLS051", Severity.ERROR, _span(d),
                f"`{setting.name} {d.args[0]}` is too small for {what} mtlsc writes: nginx would refuse to start "
                f"(\"could not build {setting.name.rsplit('_', 2)[0]}\")",
                f"raise it to {setting.value} here, or remove it and let mtlsc's 00-mtlsc.conf set it",
                label=f"mtlsc needs at least {hash_element(longest[setting.name]) + 8}"))
        else:
            out.append(Diagnostic(
                "MTLS052", Severity.WARNING, _span(d),
                f"`{setting.name} {d.args[0]}` is smaller than the {setting.value} mtlsc sizes for its variables and "
                f"maps: `nginx -t` may warn \"could not build optimal {setting.name.rsplit('_', 2)[0]}\"",
                f"raise it to {setting.value} here, or remove it and let mtlsc's 00-mtlsc.conf set it",
                label=f"mtlsc would set {setting.value}"))
    listens = {}
    for server in policy.servers:
        for l in server.listens:
            listens.setdefault(listen_key(l.address, l.port), (server, l))
    for key, (server, l) in sorted(listens.items()):
        theirs = host.defaults.get(key)
        if theirs is None:
            continue
        out += _default_server(theirs, server, l)
    return out


def _size(d: Directive) -> int | None:
    if len(d.args) != 1:
        return None
    text = d.args[0].lower()
    mult = {"k": 1024, "m": 1024 * 1024}.get(text[-1:], 1)
    digits = text[:-1] if mult > 1 else text
    return int(digits) * mult if digits.isdigit() else None


def _default_server(theirs: UserDefault, server: ir.Server, listen: ir.Listen) -> list[Diagnostic]:
    where = f"{listen}" if listen.address else f"*:{listen.port}"
    related = [Related(listen.span or server.span, f"mtlsc's server `{server.names[0]}` listens here")]
    fix_reject = (f"add `ssl_reject_handshake on;` to that server (or remove its `default_server`, and mtlsc writes "
                  f"its own default server, which refuses them)")
    if theirs.reject[0]:
        return []
    out = []
    verify, at = theirs.verify
    if verify != "off":
        out.append(Diagnostic(
            "MTLS053", Severity.ERROR, _span(theirs.listen),
            f"your default server for {where} verifies client certificates (`ssl_verify_client {verify}`) and does "
            "not refuse handshakes: a client that sends no SNI, or a name no server has, is verified against its "
            f"CA and CRL and then served by the mtlsc server its Host header names, so a certificate that CA "
            f"issued passes `{server.names[0]}`'s `require` (docs/nginx-facts.md §5)",
            fix_reject, label="default server",
            related=related + ([Related(_span(at), "verification set here")] if at else [])))
    underscores, u_at = theirs.underscores
    ignore, i_at = theirs.ignore_invalid
    if underscores or not ignore:
        setting = "underscores_in_headers on" if underscores else "ignore_invalid_headers off"
        at = u_at if underscores else i_at
        out.append(Diagnostic(
            "MTLS054", Severity.ERROR, _span(theirs.listen),
            f"your default server for {where} has `{setting}`: nginx reads the request headers of a client that "
            "sends no SNI with the default server's settings, so such a client's `X-Client_Verify` reaches "
            f"`{server.names[0]}`'s backend beside mtlsc's `X-Client-Verify` (docs/nginx-facts.md §6)",
            fix_reject + f"; or remove `{setting}` from it", label="default server",
            related=related + ([Related(_span(at), "set here")] if at else [])))
    if not out:
        out.append(Diagnostic(
            "MTLS055", Severity.NOTE, _span(theirs.listen),
            f"your default server for {where} is used instead of mtlsc's: it asks no client certificate, so a client "
            f"that sends no SNI reaches `{server.names[0]}` by its Host header without one (its `require` routes "
            "refuse it); mtlsc's own default server would refuse the handshake (docs/nginx-facts.md §5)",
            fix_reject + ", if clients without SNI should be refused", label="default server", related=related))
    return out
