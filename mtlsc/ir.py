"""The IR: a policy with every name resolved, every default applied and every string validated.

Lowering (`mtlsc.lower`) is the only producer. Checks, the evaluator and the emitters read it.
Spans point back at the policy line that caused each object, and take no part in equality.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mtlsc.san import SanRule
from mtlsc.source import Span, span_field


class Mode(enum.Enum):
    PUBLIC = "public"  # no certificate asked for by the route; identity headers cleared
    OPTIONAL = "optional"  # verified if presented; the backend decides
    REQUIRE = "require"  # a valid certificate from the route's CA, else rejected
    # ingress-nginx's optional_no_ca: a certificate is asked for and handed to the backend with
    # nginx's verdict, never verified against a CA (the server trusts none); the backend decides
    PASSTHROUGH = "passthrough"


class PathMatch(enum.Enum):
    EXACT = "exact"  # `route = /p`  -> location = /p
    PREFIX = "prefix"  # `route /p/`  -> location ^~ /p/


DEFAULT_OCSP_CACHE = "10m"  # about 40,000 answers (docs/language.md "OCSP")
DEFAULT_RESOLVER_TIMEOUT = "5s"  # nginx's own default, 30 s, holds every new handshake that long while DNS is down


@dataclass(frozen=True, slots=True)
class Ocsp:
    mode: str  # "on" (leaf and intermediates) or "leaf"
    responder: str | None  # http://IP[:port]/path, or None: the URL in each certificate
    cache: str = DEFAULT_OCSP_CACHE  # size of the server's shared answer cache (`10m`), or "off"
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Resolver:
    """The DNS servers nginx asks, at handshake time, for host names in OCSP URLs."""

    addresses: tuple[str, ...]  # `IP`, `IP:port`, `[IPv6]:port`, as nginx's `resolver` takes them
    timeout: str = DEFAULT_RESOLVER_TIMEOUT  # nginx time, `5s` / `500ms`
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Ca:
    """A set of trust anchors and intermediates, plus how nginx checks certificates they issue."""

    name: str
    bundle: tuple[str, ...]  # file paths, resolved against the policy's directory
    depth: int  # ssl_verify_depth: intermediates allowed between client certificate and root
    crls: tuple[str, ...]
    ocsp: Ocsp | None
    span: Span = span_field()
    bundle_spans: tuple[Span, ...] = span_field()
    crl_spans: tuple[Span, ...] = span_field()
    depth_span: Span | None = span_field()  # None when the depth is nginx's default
    # `leaf`: `bundle` holds self-signed client certificates, each trusted as itself (depth 0),
    # and every route of the CA admits exactly those certificates, by fingerprint
    leaf: bool = False


@dataclass(frozen=True, slots=True)
class AttrMatch:
    """One constraint on one attribute of the subject DN.

    `op == "eq"`: `value` is the raw attribute value (unescaped). `op == "re"`: `value` is an
    anchored regex over the value as nginx prints it (RFC 2253 escaped).
    """

    attr: str  # canonical short name as nginx prints it: CN, O, OU, C, ...
    op: str
    value: str
    span: Span = span_field()


class IdentityKind(enum.Enum):
    SUBJECT = "subject"  # the whole subject DN, exact (ASCII case-insensitive, like X.509 names)
    ATTRS = "attrs"  # per-attribute exact values or anchored patterns, all must hold
    FINGERPRINT = "fingerprint"  # SHA-1 of the certificate, $ssl_client_fingerprint
    SERIAL = "serial"  # serial number + issuer DN
    SHA256 = "sha256"  # SHA-256 of the certificate's DER, computed in njs (mtlsc/emit/san.js.j2)
    SAN = "san"  # a subjectAltName rule (mtlsc.san), read in njs
    SPKI = "spki"  # SHA-256 of the certificate's DER SubjectPublicKeyInfo (its key), computed in njs


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    kind: IdentityKind
    subject: str | None = None  # canonical RFC 2253 form, as nginx prints $ssl_client_s_dn
    attrs: tuple[AttrMatch, ...] = ()
    fingerprint: str | None = None  # 40 (SHA-1) or, for SHA256 and SPKI, 64 lowercase hex digits
    serial: str | None = None  # uppercase hex, as nginx prints $ssl_client_serial
    issuer: str | None = None  # canonical RFC 2253 form of the issuer DN
    san: SanRule | None = None
    span: Span = span_field()

    @property
    def needs_njs(self) -> bool:
        return self.kind in (IdentityKind.SAN, IdentityKind.SHA256, IdentityKind.SPKI)


@dataclass(frozen=True, slots=True)
class Forward:
    """A certificate field sent to the backend in a request header."""

    field: str  # key of mtlsc.nginx_facts.FORWARD_FIELDS
    header: str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: str  # for a redirect (3xx, `reject no_cert 302 "URL"`): the URL

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400


@dataclass(frozen=True, slots=True)
class Rejections:
    """What a refused client gets back, per reason."""

    no_cert: Response  # a certificate is required and none was sent
    bad_cert: Response  # the certificate failed verification, or comes from another CA of the server
    forbidden: Response  # a valid certificate whose identity is not on the route's allow list


@dataclass(frozen=True, slots=True)
class Listen:
    address: str | None  # None: all addresses
    port: int
    span: Span = span_field()

    def __str__(self) -> str:
        return f"{self.address}:{self.port}" if self.address else str(self.port)


@dataclass(frozen=True, slots=True)
class BackendTls:
    """How nginx checks an `https://` backend (docs/language.md "Backends over TLS")."""

    verify: bool = True  # `backend_verify off`: an explicit, warned choice (MTLS237)
    ca: str | None = None  # nginx path of the CAs trusted for the backend; None: the system store
    name: str | None = None  # name verified and sent as SNI; None: the host of the backend URL
    certificate: str | None = None  # nginx's own client certificate toward the backend
    key: str | None = None
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Hsts:
    """The Strict-Transport-Security header every answer of the server carries."""

    max_age: int  # seconds
    include_subdomains: bool = False
    preload: bool = False

    @property
    def value(self) -> str:
        return f"max-age={self.max_age}" + ("; includeSubDomains" if self.include_subdomains else "") + (
            "; preload" if self.preload else "")


DEFAULT_HSTS = Hsts(63072000)  # two years, Mozilla's `hsts_min_age`; no includeSubDomains unless said


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The server's own TLS (docs/language.md "Server TLS"): `tls`, `hsts`, `stapling`."""

    profile: str = "intermediate"  # a key of mtlsc.tls_profiles.PROFILES
    hsts: Hsts | None = DEFAULT_HSTS  # None: `hsts off`
    stapling: bool = False  # OCSP stapling of the server certificate
    profile_span: Span | None = span_field()  # None where the statement is not written
    hsts_span: Span | None = span_field()
    stapling_span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class NginxDirective:
    """One directive of an `nginx { }` block, checked by lowering (docs/language.md "Your own nginx
    directives"): its words exactly as written, so that nginx reads them as the checks did."""

    words: tuple[str, ...]  # raw source text of each word, quotes and escapes included
    span: Span = span_field()

    @property
    def name(self) -> str:
        return self.words[0]

    @property
    def text(self) -> str:
        return " ".join(self.words) + ";"


@dataclass(frozen=True, slots=True)
class Route:
    match: PathMatch
    path: str
    mode: Mode
    ca: Ca | None  # None only for public routes
    allow: tuple[Identity, ...]  # empty: no identity list
    allow_any: bool  # `allow any`: every certificate of the CA, said on purpose
    forward: tuple[Forward, ...]
    backend: str
    span: Span = span_field()
    nginx: tuple[NginxDirective, ...] = ()  # the route's `nginx { }`: in each of its locations

    @property
    def location(self) -> str:
        return f"= {self.path}" if self.match is PathMatch.EXACT else f"^~ {self.path}"


@dataclass(frozen=True, slots=True)
class Server:
    names: tuple[str, ...]
    listens: tuple[Listen, ...]
    certificate: str
    key: str
    backend: str
    handshake_require: bool  # `handshake require`: ssl_verify_client on for the whole listener
    install_dir: str  # where nginx reads the CA and CRL files compiled for this server
    routes: tuple[Route, ...]
    rejections: Rejections
    span: Span = span_field()
    handshake_span: Span | None = span_field()
    certificate_span: Span | None = span_field()  # the `certificate` statement
    # `backend_paths case_sensitive` / `literal_semicolons`: the backend tells `/A` from `/a`, and
    # reads `;` as an ordinary character, so mtlsc need not refuse paths that differ only so.
    backend_case_sensitive: bool = False
    backend_literal_semicolons: bool = False
    backend_strict_slashes: bool = False  # the backend tells `/p` from `/p/` (no Express-style non-strict routing)
    backend_paths_span: Span | None = span_field()
    backend_tls: BackendTls | None = None  # None: no `backend_*` TLS statement (verification still on)  # None when the server has no `backend_paths`
    # Every header name any server compiled together forwards, the well-known client-certificate
    # headers and `clear_headers`, sorted case-insensitively: each proxied location sets or clears
    # all of them, so no server lets a client's own value through (lower/headers.py).
    identity_headers: tuple[str, ...] = ()
    nginx: tuple[NginxDirective, ...] = ()  # the server's `nginx { }` blocks, in order
    tls: ServerTls = ServerTls()
    # `cas` and `passthrough`, computed once: they are asked for per route and per test case (benchmarks/).
    _cas: tuple[Ca, ...] | None = field(default=None, init=False, compare=False, hash=False, repr=False)
    _passthrough: bool | None = field(default=None, init=False, compare=False, hash=False, repr=False)

    @property
    def slug(self) -> str:
        """A file- and variable-safe name, unique per (first name, first port)."""
        name = self.names[0].replace("*", "wildcard")
        return f"{name}_{self.listens[0].port}"

    @property
    def passthrough(self) -> bool:
        """A `passthrough` route makes the listener `optional_no_ca`: no certificate is verified."""
        if self._passthrough is None:
            object.__setattr__(self, "_passthrough", any(r.mode is Mode.PASSTHROUGH for r in self.routes))
        return self._passthrough

    @property
    def cas(self) -> tuple[Ca, ...]:
        """The CAs this server's routes name, sorted by name: together they are its trust file."""
        if self._cas is None:
            seen = {r.ca.name: r.ca for r in self.routes if r.ca is not None}
            object.__setattr__(self, "_cas", tuple(seen[n] for n in sorted(seen)))
        return self._cas


@dataclass(frozen=True, slots=True)
class Waiver:
    """`waive CODE "reason"`: findings of CODE inside `scope` are reported as waived, not counted."""

    code: str
    reason: str
    scope: Span = span_field()
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Policy:
    nginx_version: tuple[int, int, int]
    cas: tuple[Ca, ...]
    identities: tuple[Identity, ...]
    servers: tuple[Server, ...]
    waivers: tuple[Waiver, ...] = ()
    cleared_headers: tuple[str, ...] = ()  # `clear_headers` names, as first written, in order
    resolver: Resolver | None = None  # `resolver`: None, nginx cannot look up host names in OCSP URLs
    host: "HostNginx | None" = None  # the nginx config mtlsc's files join, when it was read (mtlsc.coexist)
    njs: bool = False  # `nginx "..." with njs`: the target loads ngx_http_js_module (SAN identities, SHA-256 pins)


@dataclass(frozen=True, slots=True)
class HostNginx:
    """What the user's own nginx configuration already has, so the emitted files do not clash with it
    (`compile --nginx-conf`, `apply`; docs/language.md "Coexisting with your nginx.conf")."""

    origin: str  # the main config file, or `nginx -T`
    http_settings: frozenset[str] = frozenset()  # http-level directive names the user sets (the hash sizes)
    default_servers: frozenset[tuple[str, int]] = frozenset()  # (address, port) where the user has a default server
