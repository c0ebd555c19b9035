"""Distinguished names exactly as nginx prints `$ssl_client_s_dn` (docs/nginx-facts.md §7).

nginx calls `X509_NAME_print_ex(..., XN_FLAG_RFC2253)`: the most specific RDN first, `,` between
RDNs and `+` between the AVAs of one RDN (no spaces), `, + " \\ < > ;` escaped with a backslash,
a leading `#` or space and a trailing space escaped, and every control or non-ASCII UTF-8 byte
printed as `\\XX`, so the string is pure ASCII. Each claim is pinned by tests/test_dn_nginx.py
against the real nginx and openssl binaries; the quirks they found are noted where they matter.

Values here are *raw* (unescaped) strings unless a name says "escaped" or "nginx form".

Modules: `attributes` (attribute names, one value escaped and read back), `der` (names read from a
certificate's own bytes), `regex` (user value patterns confined to one value), `examples` (values
a pattern matches), `match` (attribute identities: the model and the gate regex). This module
reads and prints whole DNs and re-exports the rest.
"""

from __future__ import annotations

import difflib
import functools
import re

from cryptography import x509
from cryptography.x509.name import _ASN1Type  # the only way to pick a string type

from mtlsc.dn import der
from mtlsc.dn.attributes import (  # names and single values; re-exported
    _BY_OID, _HEX, _LOOKUP, _PLAIN, ATTRIBUTES, Rdns, _canonical, _parse_value, attribute_spellings,
    canonical_attribute, escape_value,
)
from mtlsc.dn.match import (  # attribute identities: the model and the gate regex, re-exported
    AttrConstraint, constraints_regex, example_value, matches_constraints, matches_subject,
)
from mtlsc.dn.regex import DnError, check_value_pattern, pcre_literal

__all__ = ["ATTRIBUTES", "AttrConstraint", "DnError", "Rdns", "attribute_spellings", "canonical_attribute", "copied_form", "check_value_pattern",
           "constraints_regex", "escape_value", "example_value", "format_dn", "matches_constraints",
           "matches_subject", "nginx_dn_of", "nginx_form", "nginx_serial", "parse_dn", "pcre_literal", "x509_name"]

# ---- whole DNs ------------------------------------------------------------------------------


def _parse_attr(text: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(text) and text[j] not in "=,+":
        j += 1
    name = text[i:j]
    if j == len(text) or text[j] != "=":
        if not name:
            raise DnError("empty component: remove the extra separator", i)
        hint = "; if the `,` or `+` before it is part of the previous value, escape it (`\\,`)" if i else ""
        raise DnError(f"`{name}` is not `attribute=value`{hint}", i)
    if name != name.strip():
        raise DnError("spaces around an attribute name: nginx prints `CN=x,O=y` with no spaces", i)
    attr = canonical_attribute(name)
    if attr is None:
        close = difflib.get_close_matches(name.lower(), list(_LOOKUP), n=1)
        hint = f"; did you mean `{_LOOKUP[close[0]]}`?" if close else ""
        raise DnError(f"unknown attribute `{name}`{hint}" if name else "missing attribute name", i)
    return attr, j + 1


# Lowering parses each identity's DN and checks (MTLS108) parse the nginx form it printed, which is
# the same text when the user wrote it as nginx prints it: a cache the size of a large policy's
# identities halves that work (benchmarks/, r10-i50000). Results are immutable tuples; a DnError
# is raised afresh each time, never cached.
PARSE_CACHE_SIZE = 1 << 17


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse_dn(text: str) -> Rdns:
    """Parse an RFC 2253 DN as a user writes it -> RDNs of (canonical attribute, raw value).

    RDNs keep the written order (nginx's: most specific first); the AVAs of a multi-valued RDN
    come back in the order nginx prints them, so `parse_dn(format_dn(r))` reproduces `r` up to
    that order.
    """
    if not text:
        raise DnError("the DN is empty", 0)
    if text.startswith("/"):
        rfc2253 = ",".join(reversed([part for part in text.split("/") if part]))
        raise DnError("this is the legacy `/`-separated format; nginx's $ssl_client_s_dn is RFC 2253: "
                      f"`{rfc2253}` (most specific first)", 0)
    rdns, rdn, i = [], [], 0
    while True:
        attr, i = _parse_attr(text, i)
        value, i = _parse_value(text, i)
        rdn.append((attr, value))
        if i == len(text):
            break
        if text[i + 1 : i + 2] == " ":
            raise DnError(f"space after `{text[i]}`: nginx never prints spaces after separators", i + 1)
        if text[i] == ",":
            rdns.append(rdn)
            rdn = []
        i += 1
    rdns.append(rdn)
    return tuple(_nginx_order(r) for r in rdns)


# A DN written exactly as nginx prints it, one attribute per RDN under its canonical name and
# every value plain (escape_value leaves it as it is), is its own nginx form: most policies'
# subjects, read without parsing (benchmarks/, r10-i50000). tests/test_dn.py checks the shortcut
# against parse + format on generated DNs.
_ATTRIBUTE_NAME = "(?:" + "|".join(re.escape(a) for a in sorted(ATTRIBUTES, key=len, reverse=True)) + ")"
_NGINX_PLAIN_DN = re.compile(f"{_ATTRIBUTE_NAME}=(?:{_PLAIN.pattern})(?:,{_ATTRIBUTE_NAME}=(?:{_PLAIN.pattern}))*")


def nginx_form(text: str) -> str:
    """`text` as nginx prints it: `format_dn(parse_dn(text))`, raising DnError the same way."""
    if _NGINX_PLAIN_DN.fullmatch(text):
        return text
    return format_dn(parse_dn(text))


# ---- DNs copied from elsewhere: the form nginx prints instead -------------------------------

# `openssl x509 -noout -subject` prints `subject=C = US, O = Acme, CN = x` (OpenSSL 1.0: `subject= /C=US/...`).
_PRINTED_PREFIX = re.compile(r"\s*(subject|issuer)\s*=\s*(?=/|[A-Za-z0-9.]+\s*=)", re.I)
_ONELINE_ATTR = re.compile(r"\s*([A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)(\s*)=(\s*)")
_ONELINE_SEP = re.compile(r"\s*([,+])\s*")
_SPACED_SEP = re.compile(r"(?<!\\)([,+]) +")


def _oneline_value(text: str, i: int) -> tuple[str, int] | None:
    """One value of openssl's `oneline` form from text[i:]: quoted (`"Acme, Inc."`, with `\\"`
    and `\\\\` inside) when it holds specials, else bare; `\\XX` is a byte either way."""
    quoted = text[i : i + 1] == '"'
    data, j = bytearray(), i + quoted
    while j < len(text):
        ch = text[j]
        if quoted and ch == '"':
            break
        if not quoted and ch in ",+":
            break
        if ch == "\\":
            pair = text[j + 1 : j + 3]
            if len(pair) == 2 and all(c in _HEX for c in pair):
                data.append(int(pair, 16))
                j += 3
                continue
            if j + 1 == len(text):
                return None
            ch, j = text[j + 1], j + 1
        elif ch == '"':
            return None
        data += ch.encode("utf-8", "surrogatepass")
        j += 1
    if quoted:
        if j == len(text):
            return None
        j += 1
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return (value if quoted else value.rstrip()), j


def _oneline(text: str) -> Rdns | None:
    """RDNs as written (root first) when `text` is in the form `openssl x509 -subject` prints by
    default (XN_FLAG_ONELINE: ` = `, `, `, ` + `, quoted values), else None. Every `=` after an
    attribute must have spaces on both sides, as openssl prints it: other text is meant as RFC 2253
    and parse_dn says where it goes wrong."""
    rdns, rdn, i = [], [], 0
    while True:
        m = _ONELINE_ATTR.match(text, i)
        attr = canonical_attribute(m[1]) if m else None
        if attr is None or not (m[2] and m[3]):
            return None
        value = _oneline_value(text, m.end())
        if value is None:
            return None
        rdn.append((attr, value[0]))
        i = value[1]
        if not text[i:].strip():
            break
        sep = _ONELINE_SEP.match(text, i)
        if sep is None:
            return None
        if sep[1] == ",":
            rdns.append(tuple(rdn))
            rdn = []
        i = sep.end()
    rdns.append(tuple(rdn))
    return tuple(rdns)


def copied_form(text: str) -> tuple[str, str] | None:
    """(the form `text` is written in, the DN nginx prints) when `text` is a DN in a form nginx
    never prints but mtlsc recognises, else None. Meant for text parse_dn refuses, to say what to
    write instead:
    - openssl's default form `C = US, O = Acme, CN = x`: the RDNs in the certificate's own order,
      which nginx prints reversed (so reversed here, whichever RDN comes first);
    - the legacy `/C=US/O=Acme/CN=x` form, also in the certificate's order;
    - either, or an RFC 2253 DN, after the `subject=` / `issuer=` label openssl prints;
    - RFC 1779 as Java and LDAP tools print it, `CN=x, O=Acme`: nginx's order, with spaces."""
    prefix = _PRINTED_PREFIX.match(text)
    body = text[prefix.end():] if prefix else text
    labelled = f" with the `{prefix[1]}=` label openssl prints before it" if prefix else ""
    try:
        rdns = _oneline(body)
        if rdns is not None:
            return (f"the form `openssl x509 -{(prefix[1] if prefix else 'subject').lower()}` prints by default"
                    f"{labelled} (root first, spaces around `=`)", format_dn(rdns[::-1]))
        if body.startswith("/"):
            return (f"the legacy `/`-separated form{labelled} (root first)",
                    format_dn(parse_dn(",".join(reversed([part for part in body.split("/") if part])))))
        if prefix:
            return f"RFC 2253{labelled}", format_dn(parse_dn(body))
        if _SPACED_SEP.search(body):
            return ("RFC 1779, with spaces after `,` (as Java and LDAP tools print DNs)",
                    format_dn(parse_dn(_SPACED_SEP.sub(r"\1", body))))
    except DnError:
        return None
    return None


def format_dn(rdns) -> str:
    """RDNs of (attribute, raw value) -> the DN exactly as nginx prints it."""
    return ",".join("+".join(f"{a}={escape_value(v)}" for a, v in _nginx_order(rdn)) for rdn in rdns)


# ---- DER: AVA order inside an RDN, and what OpenSSL reads back ------------------------------

_PRINTABLE_STRING = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")
_ONE_BYTE_TAGS = {0x12, 0x13, 0x14, 0x16}  # OpenSSL reads these as Latin-1
# Value tags OpenSSL's X509_NAME reader takes (B_ASN1_PRINTABLE, and a constructed UTF8String): it
# refuses a certificate with a VisibleString, a UTCTime, an OCTET STRING... in a name.
_OPENSSL_TAGS = {0x03, 0x07, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x12, 0x13, 0x14, 0x16, 0x1C, 0x1D, 0x1E, 0x30, 0x2C}
_WIDE_TAGS = {0x0C: "utf-8", 0x1E: "utf-16-be", 0x1C: "utf-32-be"}
_WIDE_NAMES = {0x0C: "UTF8String", 0x1E: "BMPString", 0x1C: "UniversalString"}


def _string_type(attr: str, value: str) -> _ASN1Type:
    # UTF8String unless cryptography's default is PrintableString and the value fits: IA5String
    # (its default for DC and email) is read back as Latin-1, double-encoding non-ASCII (_print_ava).
    if attr in ("C", "jurisdictionC") and _PRINTABLE_STRING.fullmatch(value):
        return _ASN1Type.PrintableString
    return _ASN1Type.UTF8String


def _ava_der(attr: str, value: str) -> bytes:
    body = value.encode("utf-8", "surrogatepass")
    return der.encode(0x30, der.oid_der(ATTRIBUTES[attr]) + der.encode(_string_type(attr, value).value, body))


def _nginx_order(rdn) -> tuple[tuple[str, str], ...]:
    # DER sorts a SET OF by encoding (cryptography does on write) and XN_FLAG_DN_REV prints the
    # AVAs of an RDN in reverse, so `CN=multi+OU=Eng` is printed in that order however written
    # (test_dn_nginx: multirdn, triple-cn).
    avas = [(_canonical(attr), value) for attr, value in rdn]
    if len(avas) < 2:
        return tuple(avas)  # nothing to sort: skip the DER encoding (most RDNs; benchmarks/)
    return tuple(sorted(avas, key=lambda av: _ava_der(*av), reverse=True))


def _attribute_der(attr: x509.NameAttribute) -> bytes:
    # cryptography's encoding of one attribute, done here: 51.x refuses to write a value that does
    # not fit its string type (IA5String "é"), which certificates carry and OpenSSL reads all the same.
    tag = attr._type.value
    if isinstance(attr.value, bytes):  # x500UniqueIdentifier: a BIT STRING, no unused bits
        body = b"\0" + attr.value
    else:
        body = attr.value.encode(_WIDE_TAGS.get(tag, "utf-8"), "surrogatepass")
    return der.encode(0x30, der.oid_der(attr.oid.dotted_string) + der.encode(tag, body))


def _name_der(name: x509.Name) -> bytes:
    sets = (der.encode(der.SET, b"".join(sorted(_attribute_der(a) for a in rdn))) for rdn in name.rdns)
    return der.encode(der.SEQUENCE, b"".join(sets))


def _print_ava(data: bytes, oid: str, tag: int, element_at: int, value_at: int, value_end: int) -> str:
    name = _BY_OID.get(oid)
    if tag not in _OPENSSL_TAGS:
        raise ValueError(f"`{name or oid}` has a value of ASN.1 tag 0x{tag:02X}, which OpenSSL does not take "
                         "in a name: OpenSSL, and so nginx, cannot read it")
    if name is None or (tag not in _ONE_BYTE_TAGS and tag not in _WIDE_TAGS):
        # XN_FLAG_DUMP_UNKNOWN_FIELDS / ASN1_STRFLGS_DUMP_DER: `#` + the whole element in hex.
        return f"{name or oid}=#{data[element_at:value_end].hex().upper()}"
    body = data[value_at:value_end]
    if tag in _ONE_BYTE_TAGS:
        return f"{name}={escape_value(body.decode('latin-1'))}"
    try:
        return f"{name}={escape_value(body.decode(_WIDE_TAGS[tag]))}"
    except UnicodeDecodeError:
        # OpenSSL converts names to UTF-8 when it loads a certificate and fails on these bytes
        # (a lone surrogate too: strict decoding, as it does)
        raise ValueError(f"`{name}` is a {_WIDE_NAMES[tag]} whose bytes `{body[:16].hex()}` are not "
                         f"valid {_WIDE_TAGS[tag].upper()}: OpenSSL, and so nginx, cannot read it") from None


def nginx_dn_of(name: x509.Name | bytes) -> str:
    """What nginx puts in `$ssl_client_s_dn` for a certificate whose subject is `name`: a
    cryptography Name, or the DER of a Name as the certificate carries it (mtlsc.dn.der.cert_names).

    Reads the DER as OpenSSL does: RDNs and the AVAs inside each RDN in reverse order, values
    decoded by string type (one-byte types as Latin-1, a quirk that double-encodes non-ASCII in
    IA5String), unknown attributes as `OID=#HEX`. Raises ValueError on bytes OpenSSL cannot read
    either (a BMPString of odd length, a UTF8String that is not UTF-8, broken DER).
    """
    data = name if isinstance(name, bytes) else _name_der(name)
    rdns = der.name_avas(data)
    return ",".join("+".join(_print_ava(data, *ava) for ava in reversed(rdn)) for rdn in reversed(rdns))


def x509_name(rdns) -> x509.Name:
    """A Name whose nginx form is `format_dn(rdns)` (C as PrintableString, else UTF8String).

    cryptography still enforces its length limits (`C` two bytes, `CN` 1-64 bytes).
    """
    return x509.Name([
        x509.RelativeDistinguishedName([
            x509.NameAttribute(x509.ObjectIdentifier(ATTRIBUTES[attr]), value, _string_type(attr, value))
            for attr, value in _nginx_order(rdn)
        ])
        for rdn in reversed(rdns)  # DER lists the root-most RDN first; nginx prints it last
    ])


def nginx_serial(n: int) -> str:
    """What nginx puts in `$ssl_client_serial`: i2a_ASN1_INTEGER, i.e. uppercase hex of the
    magnitude in whole bytes (`01`, `80`, `0A00000001`), `00` for zero, `-` before a negative
    one, and a `\\` + newline after every 35 bytes (test_dn_nginx: serial checks)."""
    if n < 0:
        return "-" + nginx_serial(-n)
    digits = f"{n:X}".rjust(2 * max(1, (n.bit_length() + 7) // 8), "0")
    return "\\\n".join(digits[i : i + 70] for i in range(0, len(digits), 70))
