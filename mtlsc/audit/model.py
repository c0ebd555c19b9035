"""A hand-written nginx configuration as mtlsc's audit sees it: servers with their listeners and
effective TLS settings (http-level values inherited), locations with the directives that decide who
reaches the backend and with which identity headers.

Inheritance follows nginx's merge rules (docs/nginx-facts.md §6): a plain directive is taken from the
innermost level that sets it; an array directive (`proxy_set_header`, `fastcgi_param`,
`uwsgi_param`) from the innermost level that has *any* of its kind, the outer ones dropped whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mtlsc.nginx_conf import listen_text_key
from mtlsc.nginx_conf import Directive, Loaded
from mtlsc.source import Span

ARRAY_HEADERS = ("proxy_set_header", "fastcgi_param", "uwsgi_param", "scgi_param", "grpc_set_header")
PASSES = ("proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass")
CLIENT_VAR_PREFIX = "$ssl_client_"
NGINX_DEFAULT_PROTOCOLS = ("TLSv1", "TLSv1.1", "TLSv1.2")  # 1.22's default: no TLS 1.3 (docs/nginx-facts.md §1)


def span_of(d: Directive) -> Span:
    """The directive's words on its first line (a block: its head)."""
    last = next((w for w in reversed(d.words) if w.line == d.line), d.words[0])
    return Span(d.path, d.line, d.col, last.end_line, last.end_col)


def span_word(d: Directive, i: int) -> Span:
    w = d.words[min(i, len(d.words) - 1)]
    return Span(d.path, w.line, w.col, w.end_line, w.end_col) if w.end_line == w.line else span_of(d)


def own(block, name: str) -> list[Directive]:
    return [d for d in block or () if isinstance(d, Directive) and d.name == name]


def first(block, name: str) -> Directive | None:
    found = own(block, name)
    return found[0] if found else None


@dataclass(frozen=True)
class Listen:
    directive: Directive
    key: tuple[str, int]
    ssl: bool
    default: bool


@dataclass(frozen=True)
class HeaderSet:
    """One `proxy_set_header NAME VALUE` (or `*_param`) in force in a location."""

    kind: str  # the directive name
    name: str
    value: str
    directive: Directive

    @property
    def client_vars(self) -> tuple[str, ...]:
        return tuple(sorted({w for w in variables(self.value) if w.startswith("ssl_client_")}))


def variables(text: str) -> list[str]:
    """The names of the `$var` / `${var}` references in a value."""
    out, i = [], 0
    while True:
        i = text.find("$", i)
        if i < 0:
            return out
        j = i + 1
        if j < len(text) and text[j] == "{":
            end = text.find("}", j)
            if end < 0:
                return out
            out.append(text[j + 1:end])
            i = end + 1
            continue
        while j < len(text) and (text[j].isalnum() or text[j] == "_"):
            j += 1
        if j > i + 1:
            out.append(text[i + 1:j])
        i = j



@dataclass
class Location:
    directive: Directive
    modifier: str  # "", "=", "^~", "~", "~*", "@"
    path: str
    chain: list  # blocks innermost first: this location's, enclosing locations', the server's, http's
    parents: tuple["Location", ...] = ()

    @property
    def body(self):
        return self.directive.block or ()

    @property
    def is_regex(self) -> bool:
        return self.modifier in ("~", "~*")

    @property
    def named(self) -> bool:
        return self.modifier == "@"

    def setting(self, name: str) -> Directive | None:
        for block in self.chain:
            d = first(block, name)
            if d is not None:
                return d
        return None

    def headers(self, kind: str) -> tuple[list[HeaderSet], int]:
        """The `kind` array in force here and the index in `chain` of the level it comes from
        (-1: none anywhere)."""
        for level, block in enumerate(self.chain):
            found = own(block, kind)
            if found:
                return [HeaderSet(kind, d.args[0], d.args[1] if len(d.args) > 1 else "", d)
                        for d in found if d.args], level
        return [], -1

    def passes(self) -> list[Directive]:
        """proxy_pass & co. of the location itself, or of an `if` inside it."""
        out = [d for d in self.body if isinstance(d, Directive) and d.name in PASSES]
        for cond in own(self.body, "if"):
            out += [d for d in cond.block or () if isinstance(d, Directive) and d.name in PASSES]
        return out

    def describe(self) -> str:
        if self.named:
            return f"location {self.path}"
        return f"location {self.modifier + ' ' if self.modifier else ''}{self.path}"


@dataclass
class Server:
    directive: Directive
    http: Directive | None
    names: tuple[str, ...]
    listens: list[Listen]
    locations: list[Location] = field(default_factory=list)

    @property
    def chain(self) -> list:
        return [self.directive.block, self.http.block if self.http is not None else ()]

    def setting(self, name: str) -> Directive | None:
        for block in self.chain:
            d = first(block, name)
            if d is not None:
                return d
        return None

    def value(self, name: str, default: str = "") -> str:
        d = self.setting(name)
        return d.args[0] if d is not None and d.args else default

    @property
    def ssl(self) -> bool:
        return any(listen.ssl for listen in self.listens) or self.value("ssl", "off").lower() == "on"

    @property
    def verify(self) -> str:
        return self.value("ssl_verify_client", "off").lower()

    @property
    def verifies(self) -> bool:
        return self.verify in ("on", "optional", "optional_no_ca")

    @property
    def label(self) -> str:
        name = next((n for n in self.names if n and n != "_"), "")
        return f"server `{name}`" if name else f"the server at {self.directive.path}:{self.directive.line}"


@dataclass
class Config:
    loaded: Loaded
    servers: list[Server]
    maps: dict[str, Directive]  # `$var` -> its map block
    http: list[Directive]


def _listens(server: Directive) -> list[Listen]:
    out = []
    for d in own(server.block, "listen"):
        if not d.args or d.args[0].startswith("unix:"):
            continue
        key = listen_text_key(d.args[0])
        flags = {a.lower() for a in d.args[1:]}
        out.append(Listen(d, key, "ssl" in flags or "quic" in flags, bool(flags & {"default_server", "default"})))
    return out


def _locations(block, chain_tail: list, parents: tuple = ()) -> list[Location]:
    out = []
    for d in own(block, "location"):
        if d.block is None or not d.args:
            continue
        if len(d.args) >= 2 and d.args[0] in ("=", "^~", "~", "~*"):
            modifier, path = d.args[0], d.args[1]
        elif d.args[0].startswith("@"):
            modifier, path = "@", d.args[0]
        elif d.args[0][:2] in ("~*", "^~") and len(d.args[0]) > 2:
            modifier, path = d.args[0][:2], d.args[0][2:]
        elif d.args[0][:1] in ("=", "~") and len(d.args[0]) > 1:
            modifier, path = d.args[0][:1], d.args[0][1:]
        else:
            modifier, path = "", d.args[0]
        loc = Location(d, modifier, path, [d.block, *chain_tail], parents)
        out.append(loc)
        out += _locations(d.block, [d.block, *chain_tail], parents + (loc,))
    return out


def _server(d: Directive, http: Directive | None) -> Server:
    names = tuple(a for n in own(d.block, "server_name") for a in n.args)
    srv = Server(d, http, names, _listens(d))
    srv.locations = _locations(d.block, srv.chain)
    return srv


def build(loaded: Loaded) -> Config:
    """Servers and maps of every http block; a file holding bare `server` blocks (a sites-enabled
    fragment) counts as the inside of an http block."""
    servers: list[Server] = []
    maps: dict[str, Directive] = {}
    https = [d for d in loaded.tree if d.name == "http" and d.block is not None]
    bare = Directive(loaded.tree[0].words, loaded.tree[0].path, 0, 0, tuple(loaded.tree)) if loaded.tree else None
    contexts: list[Directive | None] = list(https)
    if bare is not None and any(d.name in ("server", "map") for d in loaded.tree):
        contexts.append(bare)
    for http in contexts:
        for d in http.block:
            if d.name == "map" and d.block is not None and len(d.args) >= 2:
                maps.setdefault(d.args[1].lstrip("$"), d)
            if d.name == "server" and d.block is not None:
                servers.append(_server(d, http if http is not bare else None))
    return Config(loaded, servers, maps, https)


def address_groups(config: Config) -> dict[tuple[str, int], list[tuple[Server, Listen]]]:
    """TLS listeners by address, servers in file order (nginx's default is the first one, unless
    a listen says `default_server`)."""
    groups: dict[tuple[str, int], list[tuple[Server, Listen]]] = {}
    for srv in config.servers:
        for listen in srv.listens:
            if listen.ssl:
                groups.setdefault(listen.key, []).append((srv, listen))
    return groups


def default_of(group: list[tuple[Server, Listen]]) -> tuple[Server, Listen]:
    return next((pair for pair in group if pair[1].default), group[0])
