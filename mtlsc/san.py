"""subjectAltName identities: the matching rules, one definition for lowering, the model and the emitter.

nginx prints no SAN, so the emitted config reads them in njs from `$ssl_client_raw_cert`
(mtlsc/emit/san.js.j2). The njs module never re-implements a rule: it normalises each SAN of the
certificate to a key (`cert_key`, mirrored there) and looks it up among the keys, or tests it
against the anchored regexes, that this module compiled from the policy (`compiled`).

Rules (docs/language.md "SAN identities"):
- `uri`: scheme and host compare case-insensitively, everything else exactly as written; `%`
  escapes are compared as written, and a policy value must write them canonically (uppercase hex,
  never an unreserved character), so a certificate spelling one differently does not match.
- `spiffe` (a `uri` with the scheme `spiffe`): the SPIFFE ID of the certificate, which has one only
  when it carries exactly one URI SAN and that one is a valid SPIFFE ID (lowercase scheme and trust
  domain, segments of `[A-Za-z0-9._-]`, no `.`/`..` segment, no escapes, query or port). A `*`
  stands for exactly one path segment; the trust domain is always literal.
- `dns`: ASCII case-insensitive, exact; `*.example.org` matches one more label of letters, digits
  and `-`, never a suffix (`evil-example.org`), nor the bare `example.org`, nor two labels.
- `email`: the domain case-insensitive, the local part exactly.
- `ip`: the address's bytes (IPv4 or IPv6), whatever its notation.
A certificate matches when any one of its SANs matches (a SPIFFE identity: its one SPIFFE ID).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

KINDS = ("uri", "spiffe", "dns", "email", "ip")

_SPIFFE_TD = r"[a-z0-9._-]+"
_SPIFFE_SEG = r"[A-Za-z0-9._-]+"
SPIFFE_ID = re.compile(rf"spiffe://({_SPIFFE_TD})((?:/{_SPIFFE_SEG})+)")  # a workload's ID has a path
SPIFFE_MAX = 2048  # SPIFFE-ID spec: URI SANs longer than 2048 bytes are not SPIFFE IDs
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]")
# A URI as a SAN identity: a scheme, then anything printable but space and the characters RFC 3986
# never allows unescaped.
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):([!-~]+)")
_URI_BAD = re.compile(r'[<>"{}|\\^`]')


class SanProblem(ValueError):
    def __init__(self, message: str, help: str):
        super().__init__(message)
        self.message, self.help = message, help


@dataclass(frozen=True, slots=True)
class SanRule:
    """One `san KIND "VALUE"` of an identity, checked and in canonical form."""

    kind: str  # uri | spiffe | dns | email | ip
    value: str  # canonical: what a matching certificate's key equals (exact) or the pattern as written
    pattern: bool = False  # `*` in a SPIFFE path segment or a leading `*.` label of a DNS name

    @property
    def trust_domain(self) -> str | None:
        return self.value[len("spiffe://"):].split("/", 1)[0] if self.kind == "spiffe" else None

    def regex(self) -> str:
        """The anchored regex over `cert_key` values a pattern stands for (ASCII only, no
        backtracking beyond one segment)."""
        if self.kind == "dns":
            return "^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?" + re.escape(self.value[1:]) + "$"
        parts = self.value.split("/")
        return "^" + "/".join(f"{_SPIFFE_SEG}" if p == "*" else re.escape(p) for p in parts) + "$"

    def matches_key(self, kind: str, key: str) -> bool:
        if kind != self.kind:
            return False
        # fullmatch: Python's `$` also matches before a final newline, JavaScript's (njs) does not
        return re.fullmatch(self.regex(), key) is not None if self.pattern else key == self.value


def policy_rule(kind: str, text: str) -> SanRule:
    """`san KIND "TEXT"` -> its rule, or SanProblem saying why no certificate could match it as written."""
    if kind not in ("uri", "spiffe", "dns", "email", "ip"):
        raise SanProblem(f"`{kind}` is not a SAN kind", "write `san uri`, `san spiffe`, `san dns`, `san email` or `san ip`")
    if kind == "ip":
        try:
            return SanRule("ip", ipaddress.ip_address(text).packed.hex())
        except ValueError:
            raise SanProblem(f"`{text}` is not an IP address", "write an IPv4 or IPv6 address, e.g. `10.0.0.7`") from None
    if kind == "dns":
        return _dns_rule(text)
    if kind == "email":
        local, at, domain = text.rpartition("@")
        if not at or not local or not domain or any(c.isspace() or not c.isprintable() or ord(c) > 126 for c in text):
            raise SanProblem(f"`{text}` is not an e-mail address", "write `local@domain`, e.g. `ops@example.org`")
        return SanRule("email", f"{local}@{ascii_lower(domain)}")
    if kind == "spiffe" or text[:7].lower() == "spiffe:":
        return _spiffe_rule(text)
    return _uri_rule(text)


def _dns_rule(text: str) -> SanRule:
    name = ascii_lower(text)
    wildcard = name.startswith("*.")
    labels = (name[2:] if wildcard else name).split(".")
    if "*" in name[1:] or not all(_LABEL.fullmatch(l) for l in labels) or len(name) > 253:
        raise SanProblem(f"`{text}` is not a DNS name mtlsc can match",
                         "write a host name (`api.example.org`) or one wildcard label first (`*.example.org`); "
                         "a wildcard never matches a suffix, only exactly one more label")
    if wildcard and len(labels) < 2:
        raise SanProblem(f"`{text}` would match every name under a top-level domain",
                         "name at least two labels after `*.`, e.g. `*.example.org`")
    return SanRule("dns", name, wildcard)


def _spiffe_rule(text: str) -> SanRule:
    m = re.fullmatch(r"spiffe://([^/]*)(.*)", text)
    if not m or not re.fullmatch(_SPIFFE_TD, m[1]):
        raise SanProblem(f"`{text}` is not a SPIFFE ID",
                         "write `spiffe://TRUST-DOMAIN/PATH` in lowercase, the trust domain of `a-z 0-9 . - _` "
                         "(SPIFFE IDs are case-sensitive there; no port, user or escapes)")
    segments = m[2].split("/")[1:]
    if not segments:
        raise SanProblem(f"`{text}` names a trust domain, not a workload",
                         "a workload's SPIFFE ID has a path (X509-SVID spec): `spiffe://TRUST-DOMAIN/PATH`")
    for seg in segments:
        if seg in (".", "..", "") or not (seg == "*" or re.fullmatch(_SPIFFE_SEG, seg)):
            raise SanProblem(f"`{text}` is not a SPIFFE ID: the path segment `{seg}` is not allowed",
                             "path segments are non-empty, of `A-Z a-z 0-9 . - _`, not `.` or `..`; "
                             "`*` alone stands for exactly one segment")
    if len(text) > SPIFFE_MAX:
        raise SanProblem("the SPIFFE ID is longer than 2048 bytes", "SPIFFE IDs are at most 2048 bytes")
    return SanRule("spiffe", text, "*" in segments)


def _uri_rule(text: str) -> SanRule:
    m = _URI.fullmatch(text)
    if not m or _URI_BAD.search(text) or "*" in text:
        raise SanProblem(f"`{text}` is not a URI mtlsc can match",
                         "write an absolute URI (`urn:...`, `https://host/path`) without spaces; "
                         "`*` patterns are for SPIFFE IDs only")
    for esc in re.finditer(r"%(.{0,2})", text):
        digits = esc[1]
        if not re.fullmatch(r"[0-9A-F]{2}", digits) or _UNRESERVED.fullmatch(chr(int(digits, 16))):
            raise SanProblem(f"`{text}` writes `%{digits}` in a form certificates should not",
                             "escapes are compared as written: use uppercase hex, and no escape for "
                             "`A-Z a-z 0-9 - . _ ~` (RFC 3986 §6.2.2)")
    return SanRule("uri", uri_key(text))


def ascii_lower(text: str) -> str:
    """Only A-Z lowercased: Unicode case folding could turn a non-ASCII character into an ASCII one."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def uri_key(text: str) -> str:
    """A URI with its scheme and host lowercased (ASCII); the rest exactly as written."""
    scheme, colon, rest = text.partition(":")
    if not colon:
        return text
    if rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        user, at, host = authority.rpartition("@")
        rest = "//" + user + at + ascii_lower(host) + slash + tail
    return ascii_lower(scheme) + ":" + rest


# ---- a certificate's SANs, as the model (and, mirrored, the njs module) sees them
@dataclass(frozen=True, slots=True)
class Sans:
    """A certificate's subjectAltNames, in certificate order: (kind, value) with kind
    uri | dns | email | ip; an IP value is its packed bytes in hex."""

    names: tuple[tuple[str, str], ...] = ()

    def of(self, kind: str) -> list[str]:
        return [v for k, v in self.names if k == kind]

    @property
    def spiffe_id(self) -> str:
        """The certificate's SPIFFE ID: its only URI SAN, when that is a valid one; else ""."""
        uris = self.of("uri")
        if len(uris) != 1 or len(uris[0]) > SPIFFE_MAX or not SPIFFE_ID.fullmatch(uris[0]):
            return ""
        if any(s in (".", "..") for s in uris[0].split("/")[3:]):
            return ""
        return uris[0]

    def keys(self) -> list[tuple[str, str]]:
        """(kind, key) of every SAN, plus ("spiffe", ID) when it has a SPIFFE ID."""
        out = []
        for kind, value in self.names:
            if kind == "uri":
                out.append(("uri", uri_key(value)))
            elif kind == "dns":
                out.append(("dns", ascii_lower(value)))
            elif kind == "email":
                local, at, domain = value.rpartition("@")
                out.append(("email", f"{local}@{ascii_lower(domain)}" if at else value))
            elif kind == "ip":
                out.append(("ip", value))
        if self.spiffe_id:
            out.append(("spiffe", self.spiffe_id))
        return out


def matches(rule: SanRule, sans: Sans) -> bool:
    return any(rule.matches_key(kind, key) for kind, key in sans.keys())


# ---- forwarding: `forward san_uri` etc. (the generated variables.md)
_FORWARD_SAFE = re.compile(r"[A-Za-z0-9._~:/@-]")


def encode_value(value: str) -> str:
    """One SAN value for a header: every byte but `A-Z a-z 0-9 - . _ ~ : / @` as `%XX` (UTF-8), so
    `,` only ever separates values and no control character or `%` reaches the backend raw."""
    return "".join(c if _FORWARD_SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def ip_text(packed_hex: str) -> str:
    return str(ipaddress.ip_address(bytes.fromhex(packed_hex)))


def forwarded(sans: Sans, kind: str) -> str:
    """The header value of `forward san_<kind>`: that kind's SANs, each encoded, comma-separated."""
    values = sans.of(kind)
    if kind == "ip":
        values = [ip_text(v) for v in values]
    return ",".join(encode_value(v) for v in values)
