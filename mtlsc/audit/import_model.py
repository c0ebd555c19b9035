"""`mtlsc import`: the policy being built, as plain data (CAs, identities, routes, servers), before
it is written as `.mtls` text."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PCa:
    name: str
    bundle: str
    crl: str | None
    depth: int | None
    comments: list[str] = field(default_factory=list)


@dataclass
class PIdentity:
    name: str
    body: str  # `subject "..."` or `cn "x"  o ~ "^...$"`
    origin: str
    comments: list[str] = field(default_factory=list)


@dataclass
class PRoute:
    exact: bool
    path: str
    mode: str  # "public", "optional", "require"
    ca: str | None
    allow: list[str]
    allow_any: bool
    forward: list[tuple[str, str | None]]  # (field, header or None for the default)
    backend: str | None
    nginx: list[str]
    origin: Location
    comments: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[bool, str]:
        return self.exact, self.path


@dataclass
class PServer:
    names: tuple[str, ...]
    listens: list[str]
    certificate: str
    key: str
    backend: str
    routes: list[PRoute]
    handshake_require: bool
    origin: Server
    comments: list[str] = field(default_factory=list)


@dataclass
class Imported:
    cas: list[PCa]
    identities: list[PIdentity]
    servers: list[PServer]
    comments: list[str]
    origins: list[str]

    def summary(self) -> str:
        routes = sum(len(s.routes) for s in self.servers)
        notes = len(self.comments) + sum(len(s.comments) + sum(len(r.comments) for r in s.routes) for s in self.servers)
        notes += sum(len(c.comments) for c in self.cas) + sum(len(i.comments) for i in self.identities)
        return (f"{len(self.servers)} server(s), {routes} route(s), {len(self.cas)} CA(s), "
                f"{len(self.identities)} identit{'y' if len(self.identities) == 1 else 'ies'}, {notes} comment(s) "
                "on what was not carried over")
