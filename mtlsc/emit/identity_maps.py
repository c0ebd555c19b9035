"""The `map` blocks of a server's gates, and the ones that decide who is allowed: one deny variable
per distinct allow list, hashed maps for exact keys (subject, fingerprint, serial and issuer) and
one regex per attribute identity (mtlsc.dn.match).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from mtlsc import dn, ir
from mtlsc.emit import quote
from mtlsc.emit import san as san_emit
from mtlsc.emit.quote import Safe


@dataclass
class MapEntry:
    key: Safe
    value: Safe | int
    note: Safe = Safe("")


@dataclass
class MapView:
    note: Safe
    source: Safe
    var: Safe
    default: Safe | int
    entries: Sequence[MapEntry] = field(default_factory=list)


class IdentityEntries(Sequence):
    """An identity map's entries, built when first read. `mtlsc check` builds the server views for
    its emitter assertions (MTLS205, MTLS206), which never read these: at 50,000 identities
    building them was a sixth of a check (benchmarks/). `mtlsc compile` reads them once."""

    def __init__(self, idents: list[ir.Identity]):
        self._idents = idents
        self._built: list[MapEntry] | None = None

    def _entries(self) -> list[MapEntry]:
        if self._built is None:
            self._built = [MapEntry(_identity_key(i), 1, _identity_note(i)) for i in sorted(self._idents, key=lambda i: i.name)]
        return self._built

    def __getitem__(self, index):
        return self._entries()[index]

    def __iter__(self):
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._idents)


def _identity_maps(server: ir.Server, prefix: str, maps: list[MapView],
                   san_module: san_emit.SanModule) -> dict[tuple[str, ...], Safe]:
    """One deny variable per distinct allow list: hashed maps for exact keys, one regex per pattern,
    and for SAN identities and SHA-256 pins one njs variable (emit/san.py)."""
    gates: dict[tuple[str, ...], Safe] = {}
    for route in server.routes:
        key = tuple(sorted(i.name for i in route.allow))
        if not key or key in gates:
            continue
        n = len(gates) + 1
        parts = []
        by_source = {
            "subject": (Safe("$ssl_client_s_dn"), [i for i in route.allow if i.kind in (ir.IdentityKind.SUBJECT, ir.IdentityKind.ATTRS)]),
            "fingerprint": (Safe("$ssl_client_fingerprint"), [i for i in route.allow if i.kind is ir.IdentityKind.FINGERPRINT]),
            "serial": (quote.nginx_concat("ssl_client_serial", "ssl_client_i_dn"), [i for i in route.allow if i.kind is ir.IdentityKind.SERIAL]),
        }
        for label, (source, idents) in by_source.items():
            if not idents:
                continue
            var = f"{prefix}allow{n}_{label[:4]}"  # subj / fing / seri: short names hash in 64 bytes
            maps.append(MapView(quote.comment(f"1 when the certificate is one of: {', '.join(i.name for i in idents)}"),
                                source, quote.nginx_var(var), 0, IdentityEntries(idents)))
            parts.append(var)
        njs = san_emit.njs_identities(route.allow)
        if njs:
            parts.append(san_emit.add_allow_list(san_module, prefix, n, njs))
        deny = f"{prefix}deny{n}"
        # Exact keys for every combination holding a 1 (at most 7): a hashed lookup, where a
        # `~1` regex cost a PCRE match per request (benchmarks/: 10% of a keep-alive request).
        passing = [":".join(bits) for bits in itertools.product("01", repeat=len(parts)) if "1" in bits]
        maps.append(MapView(quote.comment(f"1 unless the certificate is one of: {', '.join(key)}"),
                            quote.nginx_concat(*parts), quote.nginx_var(deny), 1,
                            [MapEntry(quote.map_key(k), 0) for k in passing]))
        gates[key] = quote.nginx_var(deny)
    return gates


def _identity_note(ident: ir.Identity) -> Safe:
    """The comment on an identity's map entry. An attribute identity's key is a regex no reviewer
    can read, so its comment states the rule the regex implements (docs/nginx-facts.md §7, §F6)."""
    if ident.kind is not ir.IdentityKind.ATTRS:
        return quote.comment(f"identity {ident.name}")
    return quote.comment(f"identity {ident.name}: {_attrs_in_words(ident.attrs)}")


def _attrs_in_words(attrs: tuple[ir.AttrMatch, ...]) -> str:
    """`O = "Example Corp" and OU matches ^eng-, each present once`: the constraints per attribute,
    in the order written, and the rule of mtlsc.dn.match that every named attribute occurs once."""
    tests: dict[str, list[str]] = {}
    for a in attrs:
        tests.setdefault(a.attr, []).append(f"= {_literal(a.value)}" if a.op == "eq" else f"matches {a.value}")
    rule = " and ".join(f"{attr} {' and '.join(t)}" for attr, t in tests.items())
    return rule + (", each present once" if len(tests) > 1 else ", present once")


def _literal(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _identity_key(ident: ir.Identity) -> Safe:
    if ident.kind is ir.IdentityKind.SUBJECT:
        return quote.map_key(ident.subject)  # hashed, ASCII case-insensitive: X.509 caseIgnoreMatch
    if ident.kind is ir.IdentityKind.ATTRS:
        return quote.map_regex(dn.constraints_regex(tuple(dn.AttrConstraint(a.attr, a.op, a.value) for a in ident.attrs)))
    if ident.kind is ir.IdentityKind.FINGERPRINT:
        return quote.map_key(ident.fingerprint)
    return quote.map_key(f"{ident.serial}:{ident.issuer}")


def leaf_maps(server, pki, prefix, ca_index) -> list[MapView]:
    """A `leaf` CA's routes admit exactly its listed certificates, by SHA-1 fingerprint: the issuer
    DN of a self-signed leaf is a name anyone can copy into a sub-CA of another CA of the server,
    and a leaf without basicConstraints could issue (docs/language.md "Trusted leaf certificates")."""
    maps = []
    for ca in server.cas:
        if not ca.leaf:
            continue
        facts = pki.ca(ca.name)
        view = MapView(quote.comment(f"1 when a verified certificate is not one of the leaves of ca {ca.name}"),
                       quote.nginx_concat("ssl_client_verify", "ssl_client_fingerprint"),
                       quote.nginx_var(f"{prefix}not_leaf{ca_index[ca.name]}"), 0)
        for fp, subject in sorted({(c.fingerprint, c.subject) for c in facts.certs} if facts else ()):
            view.entries.append(MapEntry(quote.map_key(f"SUCCESS:{fp}"), 0, quote.comment(subject)))
        view.entries.append(MapEntry(quote.map_regex("^SUCCESS:"), 1))
        maps.append(view)
    return maps
