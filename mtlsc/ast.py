"""The AST: one frozen dataclass per grammar rule, in the order the user wrote things.

Every node has a span (ignored by `==`). Strings are already unescaped; identifiers and
numbers stay text so that lowering can report bad values at their exact position.
Import as `from mtlsc import ast` (the stdlib module of the same name is not used here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mtlsc.source import Span, span_field


@dataclass(frozen=True, slots=True)
class Word:
    """An identifier, number, hostname, path or listen address, as written."""

    value: str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Str:
    """A double-quoted string; `value` has `\\"` and `\\\\` unescaped, other backslashes kept."""

    value: str
    span: Span = span_field()


# ---- top level
@dataclass(frozen=True, slots=True)
class NginxTarget:
    version: Str
    span: Span = span_field()
    modules: tuple[Word, ...] = ()  # `with njs`


@dataclass(frozen=True, slots=True)
class ClearHeaders:
    """`clear_headers "Name"...`: more headers every proxied location of every server clears."""

    names: tuple[Str, ...]
    span: Span = span_field()
    keyword: ClassVar[str] = "clear_headers"


@dataclass(frozen=True, slots=True)
class Resolver:
    """`resolver "10.0.0.2" ... [timeout 5s]`: DNS servers for host names in OCSP URLs."""

    addresses: tuple[Str, ...]
    timeout: Word | None = None
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Waive:
    code: Word
    reason: Str
    span: Span = span_field()


# ---- ca
@dataclass(frozen=True, slots=True)
class Bundle:
    files: tuple[Str, ...]
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Leaf:
    """`leaf "alice.pem"...`: self-signed client certificates trusted as themselves, no CA."""

    files: tuple[Str, ...]
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Depth:
    value: Word
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Crl:
    files: tuple[Str, ...]
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Ocsp:
    mode: Word
    responder: Str | None
    cache: Word | None = None  # `cache 10m` / `cache off`
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Ca:
    name: Word
    body: tuple
    span: Span = span_field()


# ---- identity
@dataclass(frozen=True, slots=True)
class Subject:
    dn: Str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class AttrEq:
    attr: Word
    value: Str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class AttrRe:
    attr: Word
    pattern: Str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Fingerprint:
    value: Str
    span: Span = span_field()
    algorithm: Word | None = None  # `fingerprint sha256 "..."`; None: told by the length


@dataclass(frozen=True, slots=True)
class Serial:
    value: Str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Issuer:
    dn: Str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class San:
    kind: Word
    value: Str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Identity:
    name: Word
    body: tuple
    span: Span = span_field()


# ---- server
@dataclass(frozen=True, slots=True)
class Listen:
    address: Word
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Certificate:
    cert: Str
    key: Str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Backend:
    url: Str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class BackendPaths:
    """`backend_paths WORD...`: how the backend reads paths (case, `;`, trailing `/`), so mtlsc need not refuse them."""

    words: tuple[Word, ...]
    span: Span = span_field()
    keyword: ClassVar[str] = "backend_paths"


@dataclass(frozen=True, slots=True)
class BackendTls:
    """`backend_ca "F"`, `backend_name "H"`, `backend_client_certificate "C" key "K"` or
    `backend_verify WORD`: how nginx checks an `https://` backend and what it presents to it."""

    keyword: str
    values: tuple  # Str... or one Word
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Tls:
    """`tls modern|intermediate|old`: the Mozilla profile of the server's own TLS."""

    profile: Word
    span: Span = span_field()
    keyword: ClassVar[str] = "tls"


@dataclass(frozen=True, slots=True)
class Hsts:
    """`hsts 2y [include_subdomains] [preload]` or `hsts off`."""

    max_age: Word
    options: tuple[Word, ...]
    span: Span = span_field()
    keyword: ClassVar[str] = "hsts"


@dataclass(frozen=True, slots=True)
class Stapling:
    """`stapling on|off`: OCSP stapling of the server's own certificate."""

    mode: Word
    span: Span = span_field()
    keyword: ClassVar[str] = "stapling"


@dataclass(frozen=True, slots=True)
class Handshake:
    mode: Word
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Install:
    directory: Str
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Word
    status: Word
    body: Str | None
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class NginxBlock:
    """`nginx { ... }` in a server or route: the user's own nginx directives, as written (`body`
    is the raw text, braces included); lowering reads and checks each directive."""

    body: Word
    span: Span = span_field()
    keyword: ClassVar[str] = "nginx"


# ---- route
@dataclass(frozen=True, slots=True)
class Public:
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Passthrough:
    """`passthrough`: the certificate is asked for and handed to the backend unverified."""

    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Optional:
    ca: Word
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Require:
    ca: Word
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Allow:
    names: tuple[Word, ...]
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Field:
    name: Word
    header: Str | None
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Forward:
    fields: tuple[Field, ...]
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Route:
    exact: bool
    path: Word
    body: tuple
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class Server:
    names: tuple[Word, ...]
    body: tuple
    span: Span = span_field()


@dataclass(frozen=True, slots=True)
class PolicyFile:
    path: str
    items: tuple
    span: Span = span_field()
