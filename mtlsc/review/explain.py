"""`mtlsc explain`: the access matrix a reviewer reads.

Per server, one row per kind of client (no certificate, a certificate from a CA the server does not
trust, any certificate of each CA it trusts, each identity it allows somewhere) and one column per
route. Every cell is what `mtlsc.model.evaluate` answers for that client on a path the route really
handles (`probe_path`), so the matrix is the same model the emitted tests.sh asserts on nginx: the
rules are never re-derived here.

JSON output (`render_explanation(e, "json")`, sorted keys, documented in docs/review.md):
`{"format": "mtlsc-explain/1", "servers": [{"names", "listen", "handshake_require", "clients":
[{"key", "label", "kind", "ca", "identity"}], "routes": [{"route", "match", "path", "mode", "ca",
"depth", "allow", "revocation": {"crl", "crl_next_update", "ocsp", "ocsp_responder"}, "headers":
[{"header", "field"}], "backend", "probe", "cells": {client key: {"verdict", "status", "reason",
"headers"}}}]}]}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace

from mtlsc import ir
from mtlsc.model import san_cast
from mtlsc.model.cast import Member, identity_subject, stranger_subject
from mtlsc.model.evaluate import Client, allow_index, evaluate, probe_path
from mtlsc.model.locations import covers_text
from mtlsc.nginx_facts import FORWARD_FIELDS
from mtlsc.pki import Pki
from mtlsc.san import Sans

JSON_FORMAT = "mtlsc-explain/1"
UNTRUSTED_SUBJECT = "CN=mtlsc-untrusted,O=mtlsc lab"


@dataclass(frozen=True, slots=True)
class ClientRow:
    """One kind of client. `key` is stable: `none`, `untrusted`, `ca:NAME`, `identity:NAME@CA`."""

    key: str
    label: str
    kind: str  # none | untrusted | stranger | identity
    ca: str | None
    identity: str | None
    client: Client | None  # what nginx sees; None: no certificate


@dataclass(frozen=True, slots=True)
class Cell:
    verdict: str  # allow | deny | public
    status: int
    reason: str  # ok | no_cert | bad_cert | forbidden | no_route (as mtlsc.model.evaluate says)
    headers: tuple[str, ...]  # identity headers the backend receives with a value


@dataclass(frozen=True, slots=True)
class Revocation:
    crl: tuple[str, ...]  # CRL files, as the policy resolved them
    crl_next_update: str | None  # the earliest nextUpdate of those CRLs (ISO 8601), if known
    ocsp: str | None  # on | leaf
    ocsp_responder: str | None


@dataclass(frozen=True, slots=True)
class RouteRow:
    route: str  # `= /healthz` or `/partner/`, as written in the policy
    match: str
    path: str
    covers: str  # the paths it covers, in words (`/static and /static/...`)
    mode: str
    ca: str | None
    depth: int | None
    allow: tuple[str, ...]  # identity names; ("any",) for `allow any`; () for no list
    revocation: Revocation | None
    headers: tuple[tuple[str, str], ...]  # (header, field)
    backend: str
    probe: str | None  # the path evaluated; None when other routes shadow this one entirely
    cells: tuple[Cell, ...]  # one per client row of the server (empty when shadowed)


@dataclass(frozen=True, slots=True)
class ServerView:
    names: tuple[str, ...]
    listen: tuple[str, ...]
    handshake_require: bool
    clients: tuple[ClientRow, ...]
    routes: tuple[RouteRow, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    servers: tuple[ServerView, ...]


# ----- building the matrix ---------------------------------------------------------------------

def route_label(route: ir.Route) -> str:
    """How the policy writes the route: `= /healthz` (exact) or `/partner/` (prefix)."""
    return f"= {route.path}" if route.match is ir.PathMatch.EXACT else route.path


# Stand-ins for the fields a sample certificate leaves unknown: not hex, so they can never equal a
# pinned fingerprint or serial and change who matches.
_STAND_INS = {"issuer": "CN=mtlsc sample issuer", "serial": "MTLSC-SAMPLE"}


def full_certificate(client: Client) -> Client:
    """`client` with every field a real certificate has, so the evaluator reports every header
    the backend would get (it leaves out a header whose field is unknown)."""
    unknown = {f.name: _STAND_INS.get(f.name, "mtlsc-sample") for f in fields(Client)
               if f.name not in ("subject", "verified_by") and getattr(client, f.name) == ""}
    return replace(client, **unknown)


def identity_client(ident: ir.Identity, ca: str | None) -> Client:
    """The certificate of the cast (`mtlsc.model.cast`) that `ident` matches, issued by `ca`."""
    sans = san_cast.example_sans(ident.san) if ident.kind is ir.IdentityKind.SAN else Sans()
    return full_certificate(Member("", "identity", ca, identity_subject(ident), ident, sans=sans).client(ca))


def client_rows(policy: ir.Policy, server: ir.Server) -> tuple[ClientRow, ...]:
    """The clients a reviewer cares about on `server`, in a stable order."""
    trusted = [c.name for c in server.cas]
    first = next((i.subject for i in policy.identities if i.kind is ir.IdentityKind.SUBJECT), None)
    # The untrusted client carries an allowed subject: only the failed verification may stop it.
    rows = [ClientRow("none", "no certificate", "none", None, None, None),
            ClientRow("untrusted", "certificate from another CA", "untrusted", None, None,
                      full_certificate(Client(first or UNTRUSTED_SUBJECT, "")))]
    stranger = stranger_subject(policy)
    several = len(trusted) > 1
    leaves = {c.name for c in server.cas if c.leaf}
    for ca in trusted:
        what = f"any listed leaf of CA {ca}" if ca in leaves else f"any certificate of CA {ca}"
        rows.append(ClientRow(f"ca:{ca}", what, "stranger", ca, None,
                              full_certificate(Client(stranger, "", verified_by=ca))))
        allowed = {i.name: i for r in server.routes if r.ca is not None and r.ca.name == ca for i in r.allow}
        for name in sorted(allowed):
            label = f"identity {name}" + (f" (CA {ca})" if several else "")
            rows.append(ClientRow(f"identity:{name}@{ca}", label, "identity", ca, name,
                                  identity_client(allowed[name], ca)))
    return tuple(rows)


def _cell(server: ir.Server, route: ir.Route, path: str, row: ClientRow, index) -> Cell:
    out = evaluate(server, path, row.client, index)
    headers = tuple(h for h, _ in out.headers)
    if out.status != 200:
        return Cell("deny", out.status, out.reason, headers)
    public = out.route is not None and out.route.mode is ir.Mode.PUBLIC
    return Cell("public" if public else "allow", out.status, out.reason, headers)


def _revocation(ca: ir.Ca, pki: Pki | None) -> Revocation:
    facts = pki.ca(ca.name) if pki is not None else None
    dates = sorted(c.next_update for c in (facts.crls if facts else ()) if c.next_update is not None)
    return Revocation(
        crl=ca.crls,
        crl_next_update=dates[0].isoformat() if dates and ca.crls else None,
        ocsp=ca.ocsp.mode if ca.ocsp else None,
        ocsp_responder=ca.ocsp.responder if ca.ocsp else None,
    )


def _route_row(server: ir.Server, route: ir.Route, rows: tuple[ClientRow, ...], pki: Pki | None) -> RouteRow:
    probe = probe_path(server, route)
    index = allow_index(route.allow)
    cells = tuple(_cell(server, route, probe, r, index) for r in rows) if probe is not None else ()
    allow = ("any",) if route.allow_any else tuple(i.name for i in route.allow)
    return RouteRow(
        route=route_label(route), match=route.match.value, path=route.path, covers=covers_text(route),
        mode=route.mode.value,
        ca=route.ca.name if route.ca else None, depth=route.ca.depth if route.ca else None, allow=allow,
        revocation=_revocation(route.ca, pki) if route.ca else None,
        headers=tuple((f.header, f.field) for f in route.forward) if route.mode is not ir.Mode.PUBLIC else (),
        backend=route.backend, probe=probe, cells=cells,
    )


def explain(policy: ir.Policy, pki: Pki | None) -> Explanation:
    """The access matrix of every server of `policy` (pki: CRL dates; None leaves them out)."""
    views = []
    for server in policy.servers:
        rows = client_rows(policy, server)
        views.append(ServerView(
            names=server.names, listen=tuple(str(li) for li in server.listens),
            handshake_require=server.handshake_require, clients=rows,
            routes=tuple(_route_row(server, r, rows, pki) for r in server.routes),
        ))
    return Explanation(tuple(views))


# ----- words shared by the renderings ----------------------------------------------------------

def revocation_text(rev: Revocation | None) -> str:
    if rev is None:
        return "-"
    parts = []
    if rev.crl:
        when = f", next update {rev.crl_next_update[:10]}" if rev.crl_next_update else ""
        parts.append(f"CRL x{len(rev.crl)}{when}")
    if rev.ocsp:
        scope = "leaf only" if rev.ocsp == "leaf" else "leaf and intermediates"
        parts.append(f"OCSP {scope}" + (f" via {rev.ocsp_responder}" if rev.ocsp_responder else ""))
    return " + ".join(parts) or "none"


def headers_text(row: RouteRow) -> str:
    if row.mode == "public":
        return "none (all cleared)"
    return ", ".join(h if h == _default_header(f) else f"{h} ({f})" for h, f in row.headers) or "none"


def _default_header(field: str) -> str:
    return FORWARD_FIELDS[field].default_header


def mode_text(row: RouteRow) -> str:
    if row.mode == "public":
        return "public"
    allow = f", allow {' '.join(row.allow)}" if row.allow else ""
    return f"{row.mode} {row.ca}{allow}"


def cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    return cell.verdict if cell.verdict != "deny" else f"{cell.status} {cell.reason}"


def _cells_of(view: ServerView, col: int) -> list[Cell | None]:
    return [r.cells[col] if r.cells else None for r in view.routes]


def reach(view: ServerView) -> list[tuple[str, str]]:
    """(client label, the routes it gets through beyond the public ones, in words) per client row."""
    out = []
    for col, row in enumerate(view.clients):
        cells = _cells_of(view, col)
        allowed = [f"`{r.route}`" + (" (optional)" if r.mode == "optional" else "")
                   for r, c in zip(view.routes, cells) if c is not None and c.verdict == "allow"]
        if allowed:
            words = ", ".join(allowed)
        elif any(c is not None and c.verdict == "public" for c in cells):
            words = "only the public routes"
        else:
            words = "nothing (refused everywhere)"
        out.append((row.label, words))
    return out


def public_routes(view: ServerView) -> list[str]:
    """Routes that need no certificate (a certificate that is sent must still verify)."""
    return [r.route for r in view.routes if r.mode == "public"]


def _server_head(view: ServerView) -> str:
    how = ("required at the TLS handshake for every request" if view.handshake_require
           else "requested at the handshake, enforced per route")
    return f"listen {', '.join(view.listen)}; client certificate {how}"


# ----- renderings ------------------------------------------------------------------------------

def render_explanation(expl: Explanation, fmt: str = "text") -> str:
    """`md` (a PR comment), `text` (a terminal) or `json` (stable: sorted keys, documented)."""
    if fmt == "json":
        return json.dumps(to_json(expl), indent=2, sort_keys=True) + "\n"
    if fmt == "text":
        return "\n".join(_text_server(v) for v in expl.servers)
    if fmt == "md":
        return _markdown(expl)
    raise ValueError(f"unknown format {fmt!r}")


_ICON = {"allow": "✅ allow", "public": "🌐 public"}


def _md_cell(cell: Cell | None) -> str:
    if cell is None:
        return "– (shadowed)"
    return _ICON.get(cell.verdict) or f"⛔ {cell.status} {cell.reason}"


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]


def _markdown(expl: Explanation) -> str:
    out = ["## mtlsc explain: who can reach what", ""]
    for view in expl.servers:
        out += [f"### `{' '.join(view.names)}`", "", _server_head(view) + ".", ""]
        out += _md_table(["route", "covers", "mode", "verify depth", "revocation", "headers the backend gets"],
                         [[f"`{r.route}`", r.covers, mode_text(r), "-" if r.depth is None else str(r.depth),
                           revocation_text(r.revocation), headers_text(r)] for r in view.routes])
        out.append("")
        out += _md_table(["client \\ route"] + [f"`{r.route}`" for r in view.routes],
                         [[row.label] + [_md_cell(c) for c in _cells_of(view, col)]
                          for col, row in enumerate(view.clients)])
        out += ["", "**Who can reach what**", ""]
        pub = public_routes(view)
        out.append(f"- public (no certificate needed): {_md_list(pub) if pub else 'none'}")
        out += [f"- {label}: {words}" for label, words in reach(view)]
        out.append("")
    out += [
        "<sub>✅ allow: proxied (status 200); the backend gets the headers listed. 🌐 public: no certificate "
        "needed; every identity header is cleared. ⛔ deny: the status and reason the client gets "
        "(`no_cert`: a certificate is required and none was sent; `bad_cert`: it failed verification or "
        "comes from another CA of the server; `forbidden`: not on the route's allow list). A certificate "
        "that fails verification (another CA, expired, revoked) is refused before any route runs, public "
        "ones too. An `optional` route lets clients without a certificate through: the backend must "
        "check `X-Client-Verify`. Computed by mtlsc's evaluator, the model the emitted tests.sh checks "
        "on nginx.</sub>", "",
    ]
    return "\n".join(out)


def _md_list(routes: list[str]) -> str:
    return ", ".join(f"`{r}`" for r in routes)


def _text_table(rows: list[list[str]], indent: str) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _text_server(view: ServerView) -> str:
    out = [f"server {' '.join(view.names)}", f"  {_server_head(view)}", "", "  routes:"]
    out += _text_table([["route", "covers", "mode", "depth", "revocation", "backend gets"]]
                       + [[r.route, r.covers, mode_text(r), "-" if r.depth is None else str(r.depth),
                           revocation_text(r.revocation), headers_text(r)] for r in view.routes], "    ")
    out += ["", "  access:"]
    out += _text_table([["client"] + [r.route for r in view.routes]]
                       + [[row.label] + [cell_text(c) for c in _cells_of(view, col)]
                          for col, row in enumerate(view.clients)], "    ")
    out += ["", "  who can reach what:"]
    pub = public_routes(view)
    out.append(f"    public (no certificate needed): {', '.join(pub) if pub else 'none'}")
    out += [f"    {label}: {words.replace('`', '')}" for label, words in reach(view)]
    return "\n".join(out) + "\n"


def _route_json(row: RouteRow, clients: tuple[ClientRow, ...]) -> dict:
    rev = row.revocation
    return {
        "route": row.route, "match": row.match, "path": row.path, "covers": row.covers, "mode": row.mode,
        "ca": row.ca,
        "depth": row.depth, "allow": list(row.allow), "backend": row.backend, "probe": row.probe,
        "revocation": None if rev is None else {
            "crl": list(rev.crl), "crl_next_update": rev.crl_next_update,
            "ocsp": rev.ocsp, "ocsp_responder": rev.ocsp_responder},
        "headers": [{"header": h, "field": f} for h, f in row.headers],
        "cells": {c.key: {"verdict": cell.verdict, "status": cell.status, "reason": cell.reason,
                          "headers": list(cell.headers)} for c, cell in zip(clients, row.cells)},
    }


def to_json(expl: Explanation) -> dict:
    """The JSON document (a dict); its shape is versioned by `format`."""
    return {"format": JSON_FORMAT, "servers": [{
        "names": list(v.names), "listen": list(v.listen), "handshake_require": v.handshake_require,
        "clients": [{"key": c.key, "label": c.label, "kind": c.kind, "ca": c.ca, "identity": c.identity}
                    for c in v.clients],
        "routes": [_route_json(r, v.clients) for r in v.routes],
    } for v in expl.servers]}


def run_explain(paths: list[str], fmt: str = "text") -> tuple[int, str, str]:
    """`mtlsc explain POLICY...` -> (exit code, stdout, stderr).

    The matrix is printed whenever the policy lowers, even with findings (a reviewer wants to see
    what a broken policy would do); exit 1 when a finding is an error (the policy would not
    compile), 2 when a file cannot be read, else 0. Diagnostics go to stderr."""
    from mtlsc import pipeline
    from mtlsc.render import render

    result = pipeline.check(paths)
    err = render(result.diagnostics, result.sources) if result.diagnostics else ""
    if result.policy is None:
        return (2 if result.io_error else 1), "", err
    out = render_explanation(explain(result.policy, result.pki), fmt)
    return (2 if result.io_error else 1 if result.failed else 0), out, err
