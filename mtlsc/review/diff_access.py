"""The request-space half of `mtlsc diff`: who gets through where, before and after.

Both versions of each server answer the same requests through `mtlsc.model.evaluate`: every route path
of either version and a path under it, times the same client certificates (no certificate, one
from a CA no server trusts, any certificate of each CA, each identity as defined before and now,
and the sample certificates that tell a changed identity apart). Each (path, client) whose answer
changed is grouped by the routes that answered it (route added, removed, became public, ...) so a
reviewer reads one line per client and route, not one per probe.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from mtlsc import ir
from mtlsc.model.cast import stranger_subject
from mtlsc.review.change import NARROWING, NEUTRAL, WIDENING, Change
from mtlsc.review.diff_tls import tls_change
from mtlsc.review.diff_trust import IdentityChange, backend_paths_change, backend_tls_change, cert_word, depth_change
from mtlsc.model.evaluate import Client, Outcome, evaluate, find_route, identity_headers
from mtlsc.review.explain import UNTRUSTED_SUBJECT, full_certificate, identity_client, route_label

PROBE_SUFFIX = "mtlsc-probe"


@dataclass(frozen=True, slots=True)
class Probe:
    """A client certificate of the request space; `ca` is the issuing CA's name in the old
    version (renamed CAs are mapped), None for no certificate or an untrusted one."""

    label: str
    ca: str | None
    client: Client | None


@dataclass(frozen=True, slots=True)
class Delta:
    path: str
    probe: Probe
    old: Outcome
    new: Outcome
    kind: str


# ----- the clients ----------------------------------------------------------------------------

def _allowed(policy: ir.Policy, ca_key) -> dict[str, dict[str, ir.Identity]]:
    """CA key -> identity name -> definition, for every identity some route of `policy` allows."""
    out: dict[str, dict[str, ir.Identity]] = defaultdict(dict)
    for s in policy.servers:
        for r in s.routes:
            if r.ca is not None:
                out[ca_key(r.ca.name)].update({i.name: i for i in r.allow})
    return out


def probes(old: ir.Policy, new: ir.Policy, renames: dict[str, str], changed: list[IdentityChange]) -> list[Probe]:
    """The clients both versions are asked about, in a stable order."""
    back = {n: o for o, n in renames.items()}
    before, after = _allowed(old, lambda n: n), _allowed(new, lambda n: back.get(n, n))
    keys = sorted(before.keys() | after.keys())
    everyone = ir.Policy(new.nginx_version, (), old.identities + new.identities, ())
    first = next((i.subject for i in everyone.identities if i.kind is ir.IdentityKind.SUBJECT), None)
    out = [Probe("no certificate", None, None),
           Probe("a certificate from another CA", None, Client(first or UNTRUSTED_SUBJECT, ""))]
    stranger = Client(stranger_subject(everyone), "")
    samples = {c.name: c.gained + c.lost for c in changed}
    for key in keys:
        ca = f" (CA {renames.get(key, key)})" if len(keys) > 1 else ""
        out.append(Probe(f"any certificate of CA {renames.get(key, key)}", key, stranger))
        for name in sorted(before[key].keys() | after[key].keys()):
            o, n = before[key].get(name), after[key].get(name)
            if o is not None and n is not None and o != n:
                out.append(Probe(f"identity {name} as defined before{ca}", key, identity_client(o, None)))
                out.append(Probe(f"identity {name} as now defined{ca}", key, identity_client(n, None)))
            else:
                out.append(Probe(f"identity {name}{ca}", key, identity_client(o or n, None)))
            out += [Probe(f"certificate {cert_word(s)}{ca}", key, s) for s in samples.get(name, ())]
    seen, unique = set(), []
    for p in out:
        key = (p.ca, p.client and full_certificate(p.client))  # one certificate, one probe: the first label
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _as_seen_by(probe: Probe, server: ir.Server, ca_name: str | None) -> Client | None:
    """The probe's certificate on `server`: verified when the server trusts its CA (docs/nginx-facts.md §1)."""
    if probe.client is None:
        return None
    trusted = ca_name is not None and ca_name in {c.name for c in server.cas}
    return replace(full_certificate(probe.client), verified_by=ca_name if trusted else None)


# ----- the requests ---------------------------------------------------------------------------

def probe_paths(*servers: ir.Server) -> list[str]:
    """Every route path of the servers, and one under it (prefix routes, and exact routes that a
    prefix might now catch), plus the root: where two versions can answer differently."""
    paths = {"/", "/" + PROBE_SUFFIX}
    for s in servers:
        for r in s.routes:
            paths.add(r.path)
            if r.path.endswith("/"):
                paths.add(r.path + PROBE_SUFFIX)
            else:
                paths |= {r.path + "/" + PROBE_SUFFIX, r.path + "-" + PROBE_SUFFIX}
    return sorted(paths)


def show_path(path: str) -> str:
    return path[: -len(PROBE_SUFFIX)] + "*" if path.endswith(PROBE_SUFFIX) else path


def sig(out: Outcome) -> str:
    return f"{out.status} {out.reason}"


def _names(out: Outcome) -> set[str]:
    return {h.lower() for h, _ in out.headers}


def _kind(o: Outcome, n: Outcome) -> str | None:
    """How a client's answer changed on one path; None: not at all (or only as the route says,
    which the route comparison reports)."""
    o_ok, n_ok = o.status == 200, n.status == 200
    if o_ok != n_ok:
        return WIDENING if n_ok else NARROWING
    if not o_ok:
        # Same reason, other status: the server's `reject` changed, and server_facts says so once.
        return NEUTRAL if o.reason != n.reason else None
    same_route = (o.route and route_label(o.route)) == (n.route and route_label(n.route))
    if same_route or _names(o) == _names(n):
        return None
    return NARROWING if _names(o) - _names(n) else NEUTRAL


def deltas(old_srv: ir.Server, new_srv: ir.Server, clients: list[Probe], renames: dict[str, str]) -> list[Delta]:
    out = []
    for path in probe_paths(old_srv, new_srv):
        for p in clients:
            o = evaluate(old_srv, path, _as_seen_by(p, old_srv, p.ca))
            n = evaluate(new_srv, path, _as_seen_by(p, new_srv, renames.get(p.ca, p.ca)))
            kind = _kind(o, n)
            if kind is not None:
                out.append(Delta(path, p, o, n, kind))
    return out


# ----- grouping -------------------------------------------------------------------------------

def _label(route: ir.Route | None) -> str | None:
    return route_label(route) if route is not None else None


def _phrase(d: Delta, where: str) -> str:
    """One client's change as a sentence: `identity globex gains access to `/partner/` (was ...)`."""
    if d.kind == WIDENING:
        return f"{d.probe.label} gains access to {where} (was {sig(d.old)})"
    if d.kind == NARROWING and d.new.status != 200:
        return f"{d.probe.label} loses access to {where} (now {sig(d.new)})"
    return f"{d.probe.label} on {where}: {_tail(d)}"


def _tail(d: Delta) -> str:
    """How a client's answer changed, without naming the client (route events list several)."""
    if d.kind == WIDENING:
        return f"now get through (was {sig(d.old)})"
    if d.new.status != 200:
        return f"now refused with {sig(d.new)}" if d.old.status == 200 else f"{sig(d.old)} -> {sig(d.new)}"
    lost = sorted(h for h, _ in d.old.headers if h.lower() not in _names(d.new))
    gained = sorted(h for h, _ in d.new.headers if h.lower() not in _names(d.old))
    parts = ([f"the backend no longer gets {', '.join(lost)}"] if lost else []) + (
        [f"the backend now gets {', '.join(gained)}"] if gained else [])
    return " and ".join(parts)


def _unique(ds: list[Delta]) -> list[Delta]:
    seen, out = set(), []
    for d in ds:
        key = (d.probe.label, _tail(d), d.kind)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _event(server: str, route: str, head: str, ds: list[Delta], quiet: str = "") -> list[Change]:
    """One change per class for a route-level event; clients with the same change share a clause."""
    ds = _unique(ds)
    if not ds:
        return [Change(NEUTRAL, server, route, "route", f"{head}: {quiet}" if quiet else head)]
    out = []
    for kind in (WIDENING, NARROWING, NEUTRAL):
        group = [d for d in ds if d.kind == kind]
        if not group:
            continue
        by_tail: dict[str, list[str]] = defaultdict(list)
        for d in group:
            by_tail[_tail(d)].append(d.probe.label)
        clauses = "; ".join(f"{', '.join(dict.fromkeys(labels))}: {tail}" for tail, labels in by_tail.items())
        who = ", ".join(dict.fromkeys(d.probe.label for d in group))
        out.append(Change(kind, server, route, who, f"{head}: {clauses}", sig(group[0].old), sig(group[0].new)))
    return out


def route_moves(old_srv: ir.Server, new_srv: ir.Server) -> dict[tuple, list[str]]:
    """(old route, new route) -> the probe paths they answer, whoever asks: where requests went."""
    out: dict[tuple, list[str]] = defaultdict(list)
    for path in probe_paths(old_srv, new_srv):
        out[(_label(find_route(old_srv, path)), _label(find_route(new_srv, path)))].append(path)
    return out


def _routes(words) -> str:
    return ", ".join(f"`{w}`" if w else "no route (404)" for w in sorted(words, key=lambda w: w or ""))


def access_changes(server: str, old_srv: ir.Server, new_srv: ir.Server, ds: list[Delta]) -> list[Change]:
    """Who gets through where, grouped: routes added, removed, made public or not, then per client."""
    old_routes = {route_label(r): r for r in old_srv.routes}
    new_routes = {route_label(r): r for r in new_srv.routes}
    added = [k for k in new_routes if k not in old_routes]
    removed = [k for k in old_routes if k not in new_routes]
    moves = route_moves(old_srv, new_srv)
    by_move: dict[tuple, list[Delta]] = defaultdict(list)
    for d in ds:
        by_move[(_label(d.old.route), _label(d.new.route))].append(d)
    out = []
    for b in added:
        came = {a for a, nb in moves if nb == b and a != b}
        froms = f", taking requests from {_routes(came)}" if came else ""
        out += _event(server, b, f"route `{b}` added ({mode_text_of(new_routes[b])}){froms}",
                      [d for (a, nb), g in by_move.items() if nb == b for d in g], "no change in who gets through")
    for a in removed:
        went = {b for oa, b in moves if oa == a}
        to = f", its requests now go to {_routes(went)}" if went else ""
        out += _event(server, a, f"route `{a}` removed{to}",
                      [d for (oa, b), g in by_move.items() if oa == a and b not in added for d in g],
                      "no change in who gets through")
    for (a, b), group in by_move.items():
        if b not in added and a not in removed:
            out += _moved(server, a, b, group, old_routes, new_routes)
    return out


def mode_text_of(route: ir.Route) -> str:
    if route.mode is ir.Mode.PUBLIC:
        return "public"
    allow = " any" if route.allow_any else "".join(f" {i.name}" for i in route.allow)
    return f"{route.mode.value} {route.ca.name}" + (f", allow{allow}" if allow else "")


def _moved(server: str, a, b, group: list[Delta], old_routes: dict, new_routes: dict) -> list[Change]:
    if a == b and a is not None:
        o, n = old_routes[a], new_routes[b]
        if n.mode is ir.Mode.PUBLIC and o.mode is not ir.Mode.PUBLIC:
            return _event(server, b, f"`{b}` became public (was {mode_text_of(o)})", group)
        if o.mode is ir.Mode.PUBLIC and n.mode is not ir.Mode.PUBLIC:
            return _event(server, b, f"`{b}` is no longer public (now {mode_text_of(n)})", group)
        where = f"`{b}`"
    else:
        paths = ", ".join(dict.fromkeys(f"`{show_path(d.path)}`" for d in group))
        now, was = (f"route `{x}`" if x else "no route" for x in (b, a))
        where = f"{paths} (now {now}, was {was})"
    return [Change(d.kind, server, b or a, d.probe.label, _phrase(d, where), sig(d.old), sig(d.new))
            for d in _unique(group)]


# ----- servers --------------------------------------------------------------------------------

def _set_change(server: str, what: str, old: set, new: set) -> list[Change]:
    out = [Change(WIDENING, server, None, what, f"{what} `{x}` added: the server's routes answer there too", None, x)
           for x in sorted(new - old)]
    return out + [Change(NARROWING, server, None, what, f"{what} `{x}` removed: clients using it get no answer",
                         x, None) for x in sorted(old - new)]


def server_facts(server: str, old_srv: ir.Server, new_srv: ir.Server) -> list[Change]:
    """What differs about a server besides who gets through: names, listeners, handshake, headers."""
    out = _set_change(server, "name", set(old_srv.names), set(new_srv.names))
    out += _set_change(server, "listen", {str(li) for li in old_srv.listens}, {str(li) for li in new_srv.listens})
    if old_srv.handshake_require != new_srv.handshake_require:
        out.append(Change(NARROWING, server, None, "handshake", "`handshake require` added: every request now needs "
                          "a valid certificate at the TLS handshake", "optional", "require") if new_srv.handshake_require
                   else Change(WIDENING, server, None, "handshake", "`handshake require` removed: the certificate is "
                               "only checked by the routes that ask for one", "require", "optional"))
    out += depth_change(server, old_srv, new_srv)
    for reason in ("no_cert", "bad_cert", "forbidden"):
        o, n = getattr(old_srv.rejections, reason), getattr(new_srv.rejections, reason)
        if o != n:
            out.append(Change(NEUTRAL, server, None, f"reject {reason}", f"rejection `{reason}` changed: "
                              f"{o.status} \"{o.body}\" -> {n.status} \"{n.body}\"", str(o.status), str(n.status)))
    for what in ("backend", "certificate", "key", "install_dir"):
        o, n = getattr(old_srv, what), getattr(new_srv, what)
        if o != n:
            out.append(Change(NEUTRAL, server, None, what, f"{what.replace('_', ' ')} `{o}` -> `{n}`", o, n))
    out += backend_paths_change(server, old_srv, new_srv) + backend_tls_change(server, old_srv, new_srv)
    out += tls_change(server, old_srv, new_srv)
    # The policy-wide union lowering computed (hand-built servers have none: the server's own).
    before, after = ({h.lower(): h for h in s.identity_headers or identity_headers(s)} for s in (old_srv, new_srv))
    out += [Change(WIDENING, server, None, f"header {h}", f"header `{h}` is no longer cleared: a client can send its "
                   "own value, and a backend still reading it would trust it", "cleared", "passed through")
            for k, h in before.items() if k not in after]
    return out + [Change(NEUTRAL, server, None, f"header {h}", f"header `{h}` is now set or cleared on every route: a "
                         "client's own value no longer reaches the backend", "passed through", "cleared")
                  for k, h in after.items() if k not in before]


def route_facts(server: str, old_srv: ir.Server, new_srv: ir.Server) -> list[Change]:
    """Headers and backends of routes present in both versions (who gets through is access's job)."""
    old_routes = {route_label(r): r for r in old_srv.routes}
    out = []
    for n in new_srv.routes:
        key = route_label(n)
        o = old_routes.get(key)
        if o is None:
            continue
        if o.backend != n.backend:
            out.append(Change(NEUTRAL, server, key, "backend", f"`{key}` now proxies to `{n.backend}` "
                              f"(was `{o.backend}`)", o.backend, n.backend))
        if ir.Mode.PUBLIC in (o.mode, n.mode):
            continue  # a public route clears every header; `became public` / `no longer public` say it
        before = {f.header.lower(): f for f in o.forward}
        after = {f.header.lower(): f for f in n.forward}
        for h, f in before.items():
            if h not in after:
                out.append(Change(NARROWING, server, key, f"header {f.header}", f"header `{f.header}` no longer "
                                  f"forwarded on `{key}`: the backend no longer learns the client's {f.field}",
                                  f.field, None))
            elif after[h].field != f.field:
                out.append(Change(NEUTRAL, server, key, f"header {f.header}", f"header `{f.header}` on `{key}` now "
                                  f"carries the {after[h].field} (was the {f.field})", f.field, after[h].field))
        out += [Change(NEUTRAL, server, key, f"header {f.header}", f"header `{f.header}` now forwarded on `{key}` "
                       f"({f.field})", None, f.field) for h, f in after.items() if h not in before]
    return out


def _key(server: ir.Server) -> tuple:
    return server.names, tuple(str(li) for li in server.listens)


def _match(old: ir.Policy, new: ir.Policy) -> tuple[list[tuple], list[ir.Server], list[ir.Server]]:
    """(old, new) server pairs, then the servers added and removed. A server is the same one when
    its names and listeners are; failing that, when it shares a name (names and listeners changed
    are then reported on it, not as a whole server added and removed)."""
    left = list(old.servers)
    pairs, added = [], []
    same = (lambda a, b: _key(a) == _key(b), lambda a, b: bool(set(a.names) & set(b.names)))
    for rule in same:
        unmatched = []
        for new_srv in added if rule is same[1] else new.servers:
            found = next((s for s in left if rule(s, new_srv)), None)
            if found is None:
                unmatched.append(new_srv)
            else:
                left.remove(found)
                pairs.append((found, new_srv))
        added = unmatched
    order = {id(s): i for i, s in enumerate(new.servers)}
    pairs.sort(key=lambda p: order[id(p[1])])
    return pairs, added, left


def _server_label(server: ir.Server, policies: tuple[ir.Policy, ...]) -> str:
    same = {str(s.listens[0]) for p in policies for s in p.servers if s.names[0] == server.names[0]}
    return server.names[0] if len(same) <= 1 else f"{server.names[0]}:{server.listens[0].port}"


def _whole_server(kind: str, label: str, s: ir.Server, verb: str) -> Change:
    routes = ", ".join(f"`{route_label(r)}` {mode_text_of(r)}" for r in s.routes)
    listen = ", ".join(str(li) for li in s.listens)
    return Change(kind, label, None, "server", f"server `{' '.join(s.names)}` (listen {listen}) {verb}: {routes}")


def server_changes(old: ir.Policy, new: ir.Policy, renames: dict[str, str],
                   changed: list[IdentityChange]) -> list[Change]:
    """Every server-level and access change, servers in the new policy's order, removed ones last."""
    pairs, added, removed = _match(old, new)
    clients = probes(old, new, renames, changed)
    out = []
    for old_srv, new_srv in pairs:
        label = _server_label(new_srv, (old, new))
        out += server_facts(label, old_srv, new_srv)
        out += access_changes(label, old_srv, new_srv, deltas(old_srv, new_srv, clients, renames))
        out += route_facts(label, old_srv, new_srv)
    out += [_whole_server(WIDENING, _server_label(s, (new,)), s, "added") for s in added]
    out += [_whole_server(NARROWING, _server_label(s, (old,)), s, "removed") for s in removed]
    return out

