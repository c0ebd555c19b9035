"""Test certificates for SAN identities: one that matches, and the near misses a naive SAN gate lets in.

A near miss is kept only when no identity the CA's routes allow matches it (the model decides, as
for DN near misses in mtlsc.cast): the SAN only in the CN, a second URI SAN beside a SPIFFE ID, a
look-alike trust domain (`spiffe://prod.example.org.evil/...`), case and percent-encoding variants
of the path, a DNS suffix without the dot (`evil-example.org`), two labels for one wildcard label.
"""

from __future__ import annotations

import ipaddress

from mtlsc import dn, ir
from mtlsc.san import SanRule, Sans

EXAMPLE_SEGMENT = "mtlsc-x"
# A SPIFFE SVID has no subject of its own: the lab mints the matching certificate with an empty
# one, which nginx must still verify and the gate still match.
EMPTY_SUBJECT = ""


def example_sans(rule: SanRule) -> Sans:
    """A certificate's SANs that satisfy `rule`."""
    return Sans(((_cert_kind(rule), example_value(rule)),))


def _cert_kind(rule: SanRule) -> str:
    return "uri" if rule.kind == "spiffe" else rule.kind


def example_value(rule: SanRule) -> str:
    if rule.kind == "dns" and rule.pattern:
        return EXAMPLE_SEGMENT + rule.value[1:]
    if rule.kind == "spiffe" and rule.pattern:
        return "/".join(EXAMPLE_SEGMENT if p == "*" else p for p in rule.value.split("/"))
    return rule.value


def identity_subject(rule: SanRule) -> str:
    return EMPTY_SUBJECT if rule.kind == "spiffe" else f"CN=mtlsc-san-{rule.kind},O=mtlsc lab"


def near_candidates(rule: SanRule) -> list[tuple[str, str, Sans]]:
    """(what it tries, subject, SANs) of certificates that look like `rule`'s but should not match."""
    good = example_value(rule)
    kind = _cert_kind(rule)
    generic = f"CN=mtlsc-near-{rule.kind},O=mtlsc lab"
    out: list[tuple[str, str, Sans]] = []
    if kind != "ip" and len(good) <= 64:
        out.append(("the SAN only as the CN", dn.format_dn(((("CN", good),),)), Sans()))
    if rule.kind == "spiffe":
        td = rule.trust_domain
        path = good[len("spiffe://") + len(td):]
        out += [
            ("a second URI SAN beside the SPIFFE ID", EMPTY_SUBJECT,
             Sans((("uri", good), ("uri", f"spiffe://{td}/{EXAMPLE_SEGMENT}-second")))),
            ("a look-alike trust domain", EMPTY_SUBJECT, Sans((("uri", f"spiffe://{td}.evil{path}"),))),
            ("the trust domain in uppercase", EMPTY_SUBJECT, Sans((("uri", f"spiffe://{td.upper()}{path}"),))),
            ("the path in another case", EMPTY_SUBJECT, Sans((("uri", f"spiffe://{td}{_flip_case(path)}"),))),
            ("a percent-encoded path character", EMPTY_SUBJECT, Sans((("uri", f"spiffe://{td}{_escape_one(path)}"),))),
            ("one more path segment", EMPTY_SUBJECT, Sans((("uri", f"{good}/{EXAMPLE_SEGMENT}"),))),
        ]
    elif kind == "uri":
        out += [("the path in another case", generic, Sans((("uri", _flip_case_after_host(good)),))),
                ("a percent-encoded character", generic, Sans((("uri", _escape_one_after_host(good)),)))]
    elif kind == "dns":
        base = rule.value[2:] if rule.pattern else rule.value
        out += [("a suffix without the dot", generic, Sans((("dns", f"evil-{base}"),))),
                ("the name under another domain", generic, Sans((("dns", f"{good}.evil"),))),
                ("one more label", generic, Sans((("dns", f"{EXAMPLE_SEGMENT}.{good}"),)))]
        if rule.pattern:
            out.append(("the wildcard's own domain", generic, Sans((("dns", base),))))
    elif kind == "email":
        local, _, domain = good.rpartition("@")
        out += [("the local part in another case", generic, Sans((("email", f"{_flip_case(local)}@{domain}"),))),
                ("a look-alike domain", generic, Sans((("email", f"{local}@evil-{domain}"),)))]
    elif kind == "ip":
        address = ipaddress.ip_address(bytes.fromhex(good))
        out.append(("the next address", generic, Sans((("ip", (address + 1).packed.hex()),))))
    return out


def _flip_case(text: str) -> str:
    """The first letter in the other case (no letter: unchanged, and the model drops the candidate)."""
    for i, c in enumerate(text):
        if c.isalpha():
            return text[:i] + c.swapcase() + text[i + 1:]
    return text


def _escape_one(text: str) -> str:
    """The first letter after a `/` written as `%XX`: the same URI to a lax parser, not to the gate."""
    for i, c in enumerate(text):
        if c.isalnum():
            return text[:i] + f"%{ord(c):02X}" + text[i + 1:]
    return text


def _after_host(uri: str) -> int:
    scheme_end = uri.index(":") + 1
    if uri[scheme_end:scheme_end + 2] == "//":
        slash = uri.find("/", scheme_end + 2)
        return len(uri) if slash < 0 else slash
    return scheme_end


def _flip_case_after_host(uri: str) -> str:
    at = _after_host(uri)
    return uri[:at] + _flip_case(uri[at:])


def _escape_one_after_host(uri: str) -> str:
    at = _after_host(uri)
    return uri[:at] + _escape_one(uri[at:])


def ir_kind_needs_njs(ident: ir.Identity | None) -> bool:
    return ident is not None and ident.needs_njs
