"""IR -> tests.sh: per route, the clients that must get in and the ones that must not.

Expected answers come from `mtlsc.model.evaluate`, the same model `mtlsc test` and the docs use; the
client certificates are the cast of `mtlsc.model.cast`, so the lab PKI provides exactly these files.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class Case:
    title: Safe
    host: Safe
    port: int
    path: Safe
    cert: Safe  # file under the clients dir, or "-" for none
    status: int
    body: Safe  # a substring the answer must contain ("" for any)
    fields: Safe  # Header=field pairs the echoing backend must show, comma-separated ("-" for none)
    spoof: Safe  # `all`: send every identity header forged; the backend must never see them ("-": none)
    target: Safe = Safe("-")  # the request target the echoing backend must receive ("-": not checked)


@dataclass
class TlsCase:
    title: Safe
    host: Safe
    port: int
    mode: Safe  # none | unknown | tls13 | tls12 | tls10 | *-refused (tests.sh check_tls) | hsts
    expect: Safe = Safe("-")  # hsts: the Strict-Transport-Security value every answer carries ("-": none)


def _w(s: str) -> Safe:
    return quote.shell_word(s)


def _member_verified_by(m: Member, server: ir.Server) -> str | None:
    if m.kind in ("untrusted", "revoked", "ocsp-down", "expired"):
        return None
    if m.kind == "lookalike" and not lookalike_verifies(server):
        return None
    return m.ca if m.ca in {c.name for c in server.cas} else None


# Certificates of a trusted CA that nginx refuses in the handshake, and how a case names them.
_REFUSED = {"revoked": "revoked certificate of ca {ca}", "expired": "expired certificate of ca {ca}",
            "ocsp-down": "certificate of ca {ca} whose OCSP responder does not answer"}


def _fields(route: ir.Route, with_cert: bool) -> str:
    # On a passthrough route nginx's verdict for a certificate is its failure (model.evaluate.PASSTHROUGH_VERIFY).
    unverified = route.mode is ir.Mode.PASSTHROUGH and with_cert
    pairs = [f"{f.header}={'verify_unverified' if unverified and f.field == 'verify' else f.field}"
             for f in route.forward if with_cert or f.field == "verify"]
    return ",".join(pairs) or "-"


@dataclass
class _Cast:
    """A server's part of the cast, grouped so that each route looks only at the members it may
    test: a route costs its own cases, not the whole cast (policies with 10,000 routes or 50,000
    identities, benchmarks/)."""

    order: dict[str, int]  # member file -> position in the cast: cases keep the cast's order
    general: list[Member]  # strangers, revoked, expired and untrusted clients
    identities: dict[str, dict[str, Member]]  # ca -> identity name -> its member
    near: dict[str, dict[str, list[Member]]]  # ca -> identity name -> its near misses
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
        elif m.kind == "near":
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


def _cases_for_route(server: ir.Server, route: ir.Route, grouped: _Cast) -> list[Case]:
    path = probe_path(server, route)
    if path is None:
        return []  # shadowed by other routes everywhere: a check reports it
    host, port = server.names[0].replace("*", "mtlsc-wildcard"), server.listens[0].port
    where = f"{server.names[0]}{route.path} ({route.mode.value}{' ' + route.ca.name if route.ca else ''})"
    cases = []
    index = allow_index(route.allow)
    allowed = set(sample_names(sorted(i.name for i in route.allow)))

    def add(label: str, member: Member | None, spoof: bool = False):
        client = member.client(_member_verified_by(member, server)) if member else None
        out = evaluate(server, path, client, index, target=path)
        ok = out.status == 200
        cases.append(Case(
            title=_w(f"{where}: {label} -> {out.status}{'' if ok else ' ' + out.reason}"),
            host=_w(host), port=port, path=_w(path), cert=_w(member.file if member else "-"),
            status=out.status, body=_w("" if ok else out.body),
            fields=_w(_fields(route, member is not None) if ok and route.forward else "-"),
            spoof=Safe("all" if spoof else "-"), target=_w(out.target if ok else "-"),
        ))

    add("no certificate", None, spoof=True)
    for m in _route_members(route, grouped):
        if m.kind == "identity" and m.ca == (route.ca.name if route.ca else None):
            if route.allow and m.identity.name not in allowed:
                continue
            add(f"identity {m.identity.name}", m, spoof=True)
        elif m.kind == "near" and route.allow and m.ca == route.ca.name and m.identity.name in allowed:
            add(f"near miss of identity {m.identity.name} ({m.shown})", m, spoof=True)
        elif m.kind == "stranger":
            same_ca = route.ca is not None and m.ca == route.ca.name
            if route.mode is ir.Mode.PUBLIC or not same_ca:
                add(f"certificate of ca {m.ca}", m)
            else:
                add("certificate of the CA on no allow list" if route.allow else "certificate of the CA", m, spoof=True)
        elif m.kind in _REFUSED and (route.ca is None or m.ca == route.ca.name):
            add(_REFUSED[m.kind].format(ca=m.ca), m)
        elif m.kind == "untrusted":
            add("certificate from a CA no server trusts", m)
        elif m.kind == "lookalike" and route.ca is not None and route.ca.name in (m.ca, m.imitates):
            # only CA-bound routes: a look-alike nginx cannot verify is refused on public ones too
            add(f"look-alike: a sub-CA signed by ca {m.ca}, named like the issuing CA of ca {m.imitates}", m, spoof=True)
    return cases


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


def _target_cases(server: ir.Server) -> list[Case]:
    """Per gated route: its probe path spelt in non-canonical ways, without a certificate. The
    model decides each answer (400, or the route's own when the server allows the form)."""
    host, port = server.names[0].replace("*", "mtlsc-wildcard"), server.listens[0].port
    cases = []
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
            cases.append(Case(
                title=_w(f"{server.names[0]}{route.path}: {label} {target} -> {out.status}"
                         f"{'' if ok else ' ' + out.reason}"),
                host=_w(host), port=port, path=_w(target), cert=_w("-"), status=out.status,
                body=_w("" if ok else out.body), fields=_w("-"), spoof=Safe("all"),
                target=_w(out.target if ok else "-"),
            ))
    return cases


def _server_cases(server: ir.Server, members: list[Member]) -> tuple[list[Case], list[TlsCase]]:
    grouped = _group(server, members)
    cases = [c for r in server.routes for c in _cases_for_route(server, r, grouped)] + _target_cases(server)
    host, port = server.names[0].replace("*", "mtlsc-wildcard"), server.listens[0].port
    probe = "/mtlsc-no-route-probe"
    out = evaluate(server, probe, None)
    if out.reason == "no_route":
        cases.append(Case(_w(f"{server.names[0]}: path with no route -> 404"), _w(host), port, _w(probe),
                          _w("-"), 404, _w(out.body), _w("-"), Safe("-")))
    tls = [
        TlsCase(_w(f"{server.names[0]}: handshake without SNI is refused"), _w(host), port, Safe("none")),
        TlsCase(_w(f"{server.names[0]}: handshake with an unknown SNI name is refused"), _w(host), port, Safe("unknown")),
    ]
    return cases, tls + _profile_cases(server, host, port)


# What each profile must accept and refuse (mtlsc.tls_profiles), as tests.sh's check_tls modes.
_PROFILE_MODES = {
    "modern": (("tls13", "TLS 1.3 is accepted"), ("tls12-refused", "TLS 1.2 is refused (tls modern)")),
    "intermediate": (("tls13", "TLS 1.3 is accepted"), ("tls12", "TLS 1.2 is accepted"),
                     ("tls11-refused", "TLS 1.1 is refused"), ("cbc-refused", "a TLS 1.2 CBC suite is refused")),
    "old": (("tls13", "TLS 1.3 is accepted"), ("tls12", "TLS 1.2 is accepted"), ("tls10", "TLS 1.0 is accepted (tls old)")),
}


def _profile_cases(server: ir.Server, host: str, port: int) -> list[TlsCase]:
    name = server.names[0]
    out = [TlsCase(_w(f"{name}: {text}"), _w(host), port, Safe(mode)) for mode, text in _PROFILE_MODES[server.tls.profile]]
    out.append(TlsCase(_w(f"{name}: TLS 1.3 key exchange on X448 is refused"), _w(host), port, Safe("x448-refused")))
    hsts = server.tls.hsts
    out.append(TlsCase(_w(f"{name}: every answer carries HSTS {hsts.value}" if hsts else f"{name}: no HSTS (hsts off)"),
                       _w(host), port, Safe("hsts"), _w(hsts.value) if hsts else Safe("-")))
    return out


def emit(policy: ir.Policy, pki) -> dict[str, str]:
    members = cast(policy)
    cases, tls = [], []
    for server in policy.servers:
        c, t = _server_cases(server, members)
        cases += c
        tls += t
    needed = sorted({m.file for m in members})
    unmintable = sorted(m.file for m in members if not m.mintable)
    return {"tests.sh": render(
        "tests.sh.j2", cases=cases, tls=tls, spoof_mark=Safe(SPOOF_MARK),
        spoof_headers=_w(",".join(_spoof_headers(policy)) or "-"),
        files=[_w(f) for f in needed], unmintable=[_w(f) for f in unmintable],
    )}
