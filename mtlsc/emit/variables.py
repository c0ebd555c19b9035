"""IR -> variables.md: for the backend team, each `$ssl_client_*` variable the config uses,
what nginx puts in it, which header carries it on which routes, and what to do with it."""

from __future__ import annotations

from dataclasses import dataclass

from mtlsc import ir
from mtlsc.emit import quote
from mtlsc.emit.quote import Safe
from mtlsc.emit.templates import render
from mtlsc.nginx_facts import FORWARD_FIELDS, VARIABLES


@dataclass
class VariableRow:
    name: Safe
    holds: Safe
    empty_when: Safe
    headers: Safe
    used_by: Safe
    backend_should: Safe


@dataclass
class ServerTable:
    title: Safe
    rows: list[VariableRow]
    cleared: Safe
    public: Safe
    ocsp: Safe | None = None  # how the server checks OCSP; None: it does not


_md = quote.markdown_cell


def _gate_variables(server: ir.Server) -> dict[str, list[str]]:
    """Variables the gates read, with the routes whose gate reads them."""
    used: dict[str, list[str]] = {}
    for r in server.routes:
        multi_ca = len(server.cas) > 1
        if r.mode is ir.Mode.REQUIRE or (r.mode is ir.Mode.OPTIONAL and multi_ca):
            used.setdefault("ssl_client_verify", []).append(r.path)
        if r.mode is not ir.Mode.PUBLIC and multi_ca:
            used.setdefault("ssl_client_i_dn", []).append(r.path)
        for ident in r.allow:
            var = {
                ir.IdentityKind.SUBJECT: ["ssl_client_s_dn"],
                ir.IdentityKind.ATTRS: ["ssl_client_s_dn"],
                ir.IdentityKind.FINGERPRINT: ["ssl_client_fingerprint"],
                ir.IdentityKind.SERIAL: ["ssl_client_serial", "ssl_client_i_dn"],
                ir.IdentityKind.SAN: ["ssl_client_raw_cert"],
                ir.IdentityKind.SHA256: ["ssl_client_raw_cert"],
                ir.IdentityKind.SPKI: ["ssl_client_raw_cert"],
            }[ident.kind]
            for v in var:
                used.setdefault(v, []).append(r.path)
    return used


def _table(server: ir.Server) -> ServerTable:
    headers: dict[str, dict[str, list[str]]] = {}
    for r in server.routes:
        for f in r.forward:
            var = FORWARD_FIELDS[f.field].variable
            headers.setdefault(var, {}).setdefault(f.header, []).append(r.path)
    gates = _gate_variables(server)
    rows = []
    for name in sorted(set(headers) | set(gates)):
        v = VARIABLES[name]
        carried = "; ".join(f"`{h}` on {', '.join(f'`{p}`' for p in dict.fromkeys(paths))}"
                            for h, paths in sorted(headers.get(name, {}).items())) or "not forwarded"
        gate_routes = ", ".join(f"`{p}`" for p in dict.fromkeys(gates.get(name, [])))
        rows.append(VariableRow(
            name=_md(f"`${name}`" if name.startswith("ssl_") else f"`{name}` (njs, from `$ssl_client_raw_cert`)"),
            holds=_md(v.holds), empty_when=_md(v.empty_when),
            headers=_md(carried), used_by=_md(f"gate of {gate_routes}" if gate_routes else "-"),
            backend_should=_md(v.backend_should),
        ))
    all_headers = sorted({f.default_header for f in FORWARD_FIELDS.values()} |
                         {f.header for r in server.routes for f in r.forward}, key=str.lower)
    public = [r.path for r in server.routes if r.mode is ir.Mode.PUBLIC]
    return ServerTable(
        title=_md(f"{' '.join(server.names)} (listen {', '.join(str(l) for l in server.listens)})"),
        rows=rows,
        cleared=_md(", ".join(f"`{h}`" for h in all_headers)),
        public=_md(", ".join(f"`{p}`" for p in public) or "none"),
        ocsp=_ocsp_line(server),
    )


def _ocsp_line(server: ir.Server) -> Safe | None:
    """The server's OCSP setting in words: nginx takes the first `ocsp` of its CAs for all of them."""
    ocsp = next((c.ocsp for c in server.cas if c.ocsp), None)
    if ocsp is None:
        return None
    scope = "the client certificate and of each intermediate" if ocsp.mode == "on" else "the client certificate"
    where = f"the responder `{ocsp.responder}`" if ocsp.responder else "the responder each certificate names (AIA)"
    kept = "no answer is kept (`cache off`)" if ocsp.cache == "off" else f"answers are kept in a `{ocsp.cache}` cache"
    return _md(f"OCSP (`ocsp {ocsp.mode}`): the status of {scope} is asked of {where}; {kept}.")


def emit(policy: ir.Policy, pki) -> dict[str, str]:
    tables = [_table(s) for s in policy.servers]
    return {"variables.md": render("variables.md.j2", servers=tables, ocsp=any(t.ocsp for t in tables))}
