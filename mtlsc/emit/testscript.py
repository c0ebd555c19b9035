"""IR -> tests.sh: per route, the clients that must get in and the ones that must not.

Expected answers come from `mtlsc.model.evaluate`, the same model `mtlsc test` and the docs use; the
client certificates are the cast of `mtlsc.model.cast`, so the lab PKI provides exactly these files.
"""

from __future__ import annotations

import io
import itertools
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

from mtlsc import ir
from mtlsc.model.cast import Member, cast, lookalike_verifies, sample_names
from mtlsc.emit import quote
from mtlsc.emit.quote import Safe
from mtlsc.emit.templates import render
from mtlsc.model.evaluate import allow_index, evaluate, identity_headers, probe_path
from mtlsc.model.locations import ascii_lower
from mtlsc.model.uri import normalise_path

# Headers a test sends to try to pass for someone else; the backend must never see them.
SPOOF_MARK = "mtlsc-spoofed"


@dataclass(frozen=True, slots=True)
class Case:
    """One request of tests.sh and the answer nginx must give."""

    where: str  # the route (or server) probed, as titles name it
    host: str
    port: int
    path: str
    label: str  # the client, as titles name it
    cert: str  # file under the clients dir ("" for none)
    spoof: bool  # send every identity header forged; the backend must never see them
    status: int
    reason: str  # why, after the status in the title ("" for none)
    body: str  # a substring the answer must contain ("" for any)
    fields: str  # Header=field pairs the echoing backend must show, comma-separated ("" for none)
    target: str  # the request target the echoing backend must receive ("" for not checked)
    shows_path: bool = False  # the title names the path: a spelling of the route's own

    @property
    def title(self) -> str:
        shown = " " + self.path if self.shows_path else ""
        return f"{self.where}: {self.label}{shown} -> {self.status}{' ' + self.reason if self.reason else ''}"


@dataclass(frozen=True, slots=True)
class TlsCase:
    title: str
    host: str
    port: int
    mode: str  # none | unknown | tls13 | tls12 | tls10 | *-refused (tests.sh check_tls) | hsts
    expect: str = ""  # hsts: the Strict-Transport-Security value every answer carries ("": none)


def _w(s: str) -> Safe:
    return quote.shell_word(s)


def _member_verified_by(m: Member, server: ir.Server) -> str | None:
    if m.kind in ("untrusted", "revoked", "ocsp-down", "expired", "twin"):
        return None
    if m.kind == "lookalike" and not lookalike_verifies(server):
        return None
    return m.ca if m.ca in {c.name for c in server.cas} else None


# Certificates of a trusted CA that nginx refuses in the handshake, and how a case names them.
_REFUSED = {"revoked": "revoked certificate of ca {ca}", "expired": "expired certificate of ca {ca}",
            "ocsp-down": "certificate of ca {ca} whose OCSP responder does not answer",
            "twin": "self-signed copy of a leaf of ca {ca} (its subject and serial, another key)"}


def _fields(route: ir.Route, with_cert: bool) -> str:
    # On a passthrough route nginx's verdict for a certificate is its failure (model.evaluate.PASSTHROUGH_VERIFY).
    unverified = route.mode is ir.Mode.PASSTHROUGH and with_cert
    return ",".join(f"{f.header}={'verify_unverified' if unverified and f.field == 'verify' else f.field}"
                    for f in route.forward if with_cert or f.field == "verify")


@dataclass
class _Cast:
    """A server's part of the cast, grouped so that each route looks only at the members it may
    test: a route costs its own cases, not the whole cast (policies with 10,000 routes or 50,000
    identities, benchmarks/)."""

    order: dict[str, int]  # member file -> position in the cast: cases keep the cast's order
    general: list[Member]  # strangers, revoked, expired and untrusted clients
    identities: dict[str, dict[str, Member]]  # ca -> identity name -> its member
    near: dict[str, dict[str, list[Member]]]  # ca -> identity name -> its near misses (and renewals)
    any_sample: dict[str, list[str]]  # ca -> identities tested on its routes without an allow list


def _group(server: ir.Server, members: list[Member]) -> _Cast:
    names = {c.name for c in server.cas}
    grouped = _Cast({}, [], {}, {}, {})
    for i, m in enumerate(members):
        if not (m.ca is None or m.ca in names) or (m.imitates is not None and m.imitates not in names):
            continue
        grouped.order[m.file] = i
        if m.kind == "identity":
            grouped.identities.setdefault(m.ca, {})[m.identity.name] = m
        elif m.kind in ("near", "renewed"):
            grouped.near.setdefault(m.ca, {}).setdefault(m.identity.name, []).append(m)
        else:
            grouped.general.append(m)
    grouped.any_sample = {ca: sample_names(sorted(ids)) for ca, ids in grouped.identities.items()}
    return grouped


def _route_members(route: ir.Route, grouped: _Cast) -> list[Member]:
    """The members worth a case on `route`, in cast order. An allow list longer than
    `cast.IDENTITY_SAMPLE` is sampled (the cast holds exactly that sample), and so are the
    identities shown to pass a route without one: each passes for the same reason."""
    picked: list[Member] = []
    if route.ca is not None:
        ids = grouped.identities.get(route.ca.name, {})
        if route.allow:
            sample = sample_names(sorted(i.name for i in route.allow))
            near = grouped.near.get(route.ca.name, {})
            picked = [ids[n] for n in sample if n in ids] + [m for n in sample for m in near.get(n, ())]
        else:
            picked = [ids[n] for n in grouped.any_sample.get(route.ca.name, ())]
    return sorted(grouped.general + picked, key=lambda m: grouped.order[m.file])


def _cases_for_route(server: ir.Server, route: ir.Route, grouped: _Cast) -> Iterator[Case]:
    path = probe_path(server, route)
    if path is None:
        return  # shadowed by other routes everywhere: a check reports it
    host, port = server.names[0].replace("*", "mtlsc-wildcard"), server.listens[0].port
    where = f"{server.names[0]}{route.path} ({route.mode.value}{' ' + route.ca.name if route.ca else ''})"
    index = allow_index(route.allow)
    allowed = set(sample_names(sorted(i.name for i in route.allow)))

    def case(label: str, member: Member | None, spoof: bool = False) -> Case:
        client = member.client(_member_verified_by(member, server)) if member else None
        out = evaluate(server, path, client, index, target=path)
        ok = out.status == 200
        return Case(where, host, port, path, label, member.file if member else "", spoof, out.status,
                    "" if ok else out.reason, "" if ok else out.body,
                    _fields(route, member is not None) if ok and route.forward else "", out.target if ok else "")

    yield case("no certificate", None, spoof=True)
    for m in _route_members(route, grouped):
        if m.kind == "identity" and m.ca == (route.ca.name if route.ca else None):
            if route.allow and m.identity.name not in allowed:
                continue
            yield case(f"identity {m.identity.name}", m, spoof=True)
        elif m.kind == "near" and route.allow and m.ca == route.ca.name and m.identity.name in allowed:
            yield case(f"near miss of identity {m.identity.name} ({m.shown})", m, spoof=True)
        elif m.kind == "renewed" and route.allow and m.ca == route.ca.name and m.identity.name in allowed:
            yield case(f"identity {m.identity.name} renewed with the same key", m, spoof=True)
        elif m.kind == "stranger":
            same_ca = route.ca is not None and m.ca == route.ca.name
            if route.mode is ir.Mode.PUBLIC or not same_ca:
                yield case(f"certificate of ca {m.ca}", m)
            else:
                yield case("certificate of the CA on no allow list" if route.allow else "certificate of the CA", m,
                           spoof=True)
        elif m.kind in _REFUSED and (route.ca is None or m.ca == route.ca.name):
            yield case(_REFUSED[m.kind].format(ca=m.ca), m)
        elif m.kind == "untrusted":
            yield case("certificate from a CA no server trusts", m)
        elif m.kind == "lookalike" and route.ca is not None and route.ca.name in (m.ca, m.imitates):
            # only CA-bound routes: a look-alike nginx cannot verify is refused on public ones too
            yield case(f"look-alike: a sub-CA signed by ca {m.ca}, named like the issuing CA of ca {m.imitates}", m,
                       spoof=True)


def _spoof_headers(policy: ir.Policy) -> list[str]:
    """Every identity header of the servers compiled together (one union: docs/language.md
    "Identity headers"), plus an `_` variant nginx must drop (docs/nginx-facts.md §6)."""
    names = identity_headers(policy.servers[0]) if policy.servers else []
    return names + [names[0].replace("-", "_")] if names else []


def _confusions(path: str) -> list[tuple[str, str]]:
    """Hostile spellings of a gated probe path that a backend may read as that path while nginx,
    unguarded, would route them elsewhere (docs/language.md "Paths")."""
    head, _, tail = path.rpartition("/")
    out = [
        ("dot segment", f"{head}/./{tail}"),
        ("climb out and back", f"{head}/../{head.rsplit('/', 1)[-1] or '.'}/{tail}" if head else f"/./{tail}"),
        ("encoded dot segment", f"{head}/%2e/{tail}"),
        ("encoded slash", f"{head}%2F{tail}"),
        ("`;` path parameter", f"{head};x/{tail}"),
    ]
    swapped = path.swapcase()
    if ascii_lower(swapped) == ascii_lower(path) and swapped != path:
        out.append(("letter case changed", swapped))
    return out


def _target_cases(server: ir.Server) -> Iterator[Case]:
    """Per gated route: its probe path spelt in non-canonical ways, without a certificate. The
    model decides each answer (400, or the route's own when the server allows the form)."""
    host, port = server.names[0].replace("*", "mtlsc-wildcard"), server.listens[0].port
    for route in (r for r in server.routes if r.mode is ir.Mode.REQUIRE):
        path = probe_path(server, route)
        if path is None:
            continue
        for label, target in _confusions(path):
            try:
                normalised = normalise_path(target)
            except ValueError:
                continue  # nginx answers 400 itself
            out = evaluate(server, normalised, None, target=target)
            ok = out.status == 200
            yield Case(f"{server.names[0]}{route.path}", host, port, target, label, "", True, out.status,
                       "" if ok else out.reason, "" if ok else out.body, "", out.target if ok else "",
                       shows_path=True)


def _server_cases(server: ir.Server, members: list[Member]) -> Iterator[Case]:
    grouped = _group(server, members)
    for route in server.routes:
        yield from _cases_for_route(server, route, grouped)
    yield from _target_cases(server)
    host, port = server.names[0].replace("*", "mtlsc-wildcard"), server.listens[0].port
    probe = "/mtlsc-no-route-probe"
    out = evaluate(server, probe, None)
    if out.reason == "no_route":
        yield Case(server.names[0], host, port, probe, "path with no route", "", False, 404, "", out.body, "", "")


def _tls_cases(server: ir.Server) -> list[TlsCase]:
    host, port, name = server.names[0].replace("*", "mtlsc-wildcard"), server.listens[0].port, server.names[0]
    return [
        TlsCase(f"{name}: handshake without SNI is refused", host, port, "none"),
        TlsCase(f"{name}: handshake with an unknown SNI name is refused", host, port, "unknown"),
    ] + _profile_cases(server, host, port)


# What each profile must accept and refuse (mtlsc.tls_profiles), as tests.sh's check_tls modes.
_PROFILE_MODES = {
    "modern": (("tls13", "TLS 1.3 is accepted"), ("tls12-refused", "TLS 1.2 is refused (tls modern)")),
    "intermediate": (("tls13", "TLS 1.3 is accepted"), ("tls12", "TLS 1.2 is accepted"),
                     ("tls11-refused", "TLS 1.1 is refused"), ("cbc-refused", "a TLS 1.2 CBC suite is refused")),
    "old": (("tls13", "TLS 1.3 is accepted"), ("tls12", "TLS 1.2 is accepted"), ("tls10", "TLS 1.0 is accepted (tls old)")),
}


def _profile_cases(server: ir.Server, host: str, port: int) -> list[TlsCase]:
    name = server.names[0]
    out = [TlsCase(f"{name}: {text}", host, port, mode) for mode, text in _PROFILE_MODES[server.tls.profile]]
    out.append(TlsCase(f"{name}: TLS 1.3 key exchange on X448 is refused", host, port, "x448-refused"))
    hsts = server.tls.hsts
    out.append(TlsCase(f"{name}: every answer carries HSTS {hsts.value}" if hsts else f"{name}: no HSTS (hsts off)",
                       host, port, "hsts", hsts.value if hsts else ""))
    return out


# ----- the case table ---------------------------------------------------------------------------
#
# tests.sh is a fixed body and this table: one record per line, tab-separated fields, read with
# `read -r` and decoded by printf %b, never evaluated. A field is a value with `%`, `\`, control
# and non-ASCII bytes written %XX; a field `-` is the empty value (a value `-` is written %2D).
# Records (tests.sh.j2 reads them; `read_table` below does the same in Python):
#   t  TITLE HOST PORT MODE EXPECT           a TLS handshake (EXPECT: the HSTS value of mode hsts)
#   k  ID LABEL CERT SPOOF                   a client: its name in titles, its certificate file,
#                                            `all` when it sends every identity header forged
#   a  ID STATUS REASON BODY FIELDS TARGET   an answer; TARGET `=`: the path the case requests
#   r  WHERE HOST PORT PATH                  the route the next cases request
#   c  CLIENT ANSWER [PATH]                  a case; one with its own PATH names it in its title
# Clients and answers are written once and shared by number: a case costs a short line, whatever
# its title, and tests.sh grows with the cases, not with the bash per case.

TABLE_END = "MTLSC_CASES"  # the heredoc's delimiter: every record starts `<kind>\t`, so none is it
_PLAIN = re.compile(r"[^\x20-\x24\x26-\x5b\x5d-\x7e]")  # what a field must encode: %, \, controls, non-ASCII
_SAME_PATH = "="


def table_field(value: str) -> str:
    """`value` as one field of the case table (see above)."""
    if value == "":
        return "-"
    if value in ("-", _SAME_PATH):
        return f"%{ord(value):02X}"
    if "\x00" in value:
        raise quote.UnsafeString(f"{value!r} contains a NUL byte")
    if not _PLAIN.search(value):
        return value
    return _PLAIN.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogateescape")), value)


def _unfield(text: str) -> str:
    if text == "-":
        return ""
    return urllib.parse.unquote(text, encoding="utf-8", errors="surrogateescape") if "%" in text else text


@dataclass
class _Table:
    """Writes the records of one table; clients and answers numbered in order of first use."""

    out: io.StringIO = field(default_factory=io.StringIO)
    clients: dict[tuple[str, ...], int] = field(default_factory=dict)
    answers: dict[tuple[str, ...], int] = field(default_factory=dict)
    route: tuple[str, ...] | None = None

    def _record(self, kind: str, *fields: str) -> None:
        self.out.write(kind + "\t" + "\t".join(fields) + "\n")

    def _number(self, kind: str, seen: dict[tuple[str, ...], int], fields: tuple[str, ...]) -> str:
        number = seen.get(fields)
        if number is None:
            number = seen[fields] = len(seen)
            self._record(kind, str(number), *fields)
        return str(number)

    def tls(self, t: TlsCase) -> None:
        self._record("t", table_field(t.title), table_field(t.host), str(t.port), table_field(t.mode),
                     table_field(t.expect))

    def case(self, c: Case) -> None:
        route = (table_field(c.where), table_field(c.host), str(c.port), "-" if c.shows_path else table_field(c.path))
        if route != self.route:
            self.route = route
            self._record("r", *route)
        client = self._number("k", self.clients, (table_field(c.label), table_field(c.cert), "all" if c.spoof else "-"))
        target = _SAME_PATH if c.target and c.target == c.path else table_field(c.target)
        answer = self._number("a", self.answers, (str(c.status), table_field(c.reason), table_field(c.body),
                                                  table_field(c.fields), target))
        if c.shows_path:
            self._record("c", client, answer, table_field(c.path))
        else:
            self._record("c", client, answer)


def read_table(script: str) -> Iterator[Case | TlsCase]:
    """The cases of an emitted tests.sh, decoded as tests.sh decodes them."""
    lines = script.split("\n")
    start = lines.index(f"done 3<<'{TABLE_END}'") + 1
    clients: dict[str, tuple[str, str, bool]] = {}
    answers: dict[str, tuple] = {}
    route = ("", "", 0, "")
    for line in itertools.takewhile(lambda l: l != TABLE_END, lines[start:]):
        kind, *f = line.split("\t")
        if kind == "t":
            yield TlsCase(_unfield(f[0]), _unfield(f[1]), int(f[2]), _unfield(f[3]), _unfield(f[4]))
        elif kind == "k":
            clients[f[0]] = (_unfield(f[1]), _unfield(f[2]), f[3] == "all")
        elif kind == "a":
            answers[f[0]] = (int(f[1]), _unfield(f[2]), _unfield(f[3]), _unfield(f[4]), f[5])
        elif kind == "r":
            route = (_unfield(f[0]), _unfield(f[1]), int(f[2]), _unfield(f[3]))
        elif kind == "c":
            label, cert, spoof = clients[f[0]]
            status, reason, body, fields, target = answers[f[1]]
            path = _unfield(f[2]) if len(f) > 2 else route[3]
            target = path if target == _SAME_PATH else _unfield(target)
            yield Case(route[0], route[1], route[2], path, label, cert, spoof, status, reason, body, fields, target,
                       shows_path=len(f) > 2)
        else:
            raise ValueError(f"not a case table record: {line!r}")


def emit(policy: ir.Policy, pki) -> dict[str, str]:
    members = cast(policy)
    table = _Table()
    for server in policy.servers:
        for t in _tls_cases(server):
            table.tls(t)
    for server in policy.servers:
        for c in _server_cases(server, members):
            table.case(c)
    needed = sorted({m.file for m in members})
    unmintable = sorted(m.file for m in members if not m.mintable)
    return {"tests.sh": render(
        "tests.sh.j2", table=Safe(table.out.getvalue()), table_end=Safe(TABLE_END), spoof_mark=Safe(SPOOF_MARK),
        spoof_headers=_w(",".join(_spoof_headers(policy)) or "-"),
        files=[_w(f) for f in needed], unmintable=[_w(f) for f in unmintable],
        spki=any(f.field == "spki_sha256" for s in policy.servers for r in s.routes for f in r.forward),
    )}
