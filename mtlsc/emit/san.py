"""The njs module of a server's SAN identities, SHA-256 and SPKI pins and SAN forwarding (san.js.j2).

Only servers that need it get one: a route allowing such an identity, or forwarding such a field.
Each allow list with njs identities gets a js_set variable (`<prefix>allow<n>_njs`, "1" or "0")
that joins the list's deny map beside the DN, fingerprint and serial maps; each forwarded field a
js_set variable `<prefix><field>`. nginx computes a js_set variable only when a gate or header reads
it, so routes without them pay nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mtlsc import ir
from mtlsc.emit import quote
from mtlsc.emit.quote import Safe
from mtlsc.nginx_facts import FORWARD_FIELDS


@dataclass
class JsFunction:
    name: Safe  # exported name
    body: Safe  # the JS expression it returns


@dataclass
class JsSet:
    var: Safe  # `$<prefix>...`
    function: Safe  # `<module>.<name>`


@dataclass
class SanModule:
    module: Safe
    file: Safe
    js_sets: list[JsSet] = field(default_factory=list)
    functions: list[JsFunction] = field(default_factory=list)
    table: dict = field(default_factory=dict)
    spki: bool = False  # some allow list pins a public key, or `forward spki_sha256`: the module reads the key

    def js(self) -> Safe:
        """The LISTS table as a JS literal: JSON, ASCII-only (every policy string escaped)."""
        return Safe(json.dumps(self.table, indent=4, sort_keys=True, ensure_ascii=True))


_FORWARD_BODY = {
    "san_uri": 'forward(r, "uri")', "san_dns": 'forward(r, "dns")', "san_email": 'forward(r, "email")',
    "san_ip": 'forward(r, "ip")', "spiffe_id": "encode(spiffeId(info(r).sans))", "sha256": "sha256(info(r))",
    "spki": "spki(info(r))",
}


def njs_identities(allow: tuple[ir.Identity, ...]) -> list[ir.Identity]:
    return [i for i in allow if i.needs_njs]


def module_for(server: ir.Server, prefix: str) -> SanModule:
    return SanModule(module=quote.bare(prefix + "san"),
                     file=quote.nginx_text(f"{server.install_dir.rstrip('/')}/{server.slug}.san.js"))


def add_allow_list(m: SanModule, prefix: str, n: int, idents: list[ir.Identity]) -> str:
    """The js_set variable (without `$`) that is "1" when the certificate is one of `idents`."""
    name = f"allow{n}"
    exact: dict[str, int] = {}
    patterns: list[list[str]] = []
    pins: list[str] = []
    keys: list[str] = []
    for ident in sorted(idents, key=lambda i: i.name):
        if ident.kind is ir.IdentityKind.SHA256:
            pins.append(ident.fingerprint)
        elif ident.kind is ir.IdentityKind.SPKI:
            keys.append(ident.fingerprint)
        elif ident.san.pattern:
            patterns.append([ident.san.kind, ident.san.regex()])
        else:
            exact[f"{ident.san.kind} {ident.san.value}"] = 1
    m.table[name] = {"exact": exact, "patterns": patterns, "sha256": pins,
                     "identities": sorted(i.name for i in idents)}
    if keys:  # only then: a module without public-key pins stays as it was
        m.table[name]["spki"] = keys
        m.spki = True
    var = f"{prefix}allow{n}_njs"
    m.functions.append(JsFunction(quote.bare(name), Safe(f'allowed(r, "{name}")')))
    m.js_sets.append(JsSet(quote.nginx_var(var), quote.bare(f"{prefix}san.{name}")))
    return var


def forward_variable(m: SanModule, prefix: str, field_name: str) -> str:
    """The js_set variable (without `$`) that carries `forward <field_name>`, declared once."""
    suffix = FORWARD_FIELDS[field_name].variable
    var = f"{prefix}{suffix}"
    name = "fwd_" + suffix  # apart from the module's own functions (`sha256`)
    if not any(f.name == name for f in m.functions):
        m.spki = m.spki or suffix == "spki"
        m.functions.append(JsFunction(quote.bare(name), Safe(_FORWARD_BODY[suffix])))
        m.js_sets.append(JsSet(quote.nginx_var(var), quote.bare(f"{prefix}san.{name}")))
    return var
