"""Attribute names and single values as nginx prints them: the short names OpenSSL uses,
escaping a raw value into nginx's form and reading one back. The layer mtlsc.dn and
mtlsc.dn.match both stand on (it imports neither).
"""

from __future__ import annotations

import re

from mtlsc.dn.regex import DnError

Rdns = tuple[tuple[tuple[str, str], ...], ...]

# Short name exactly as OpenSSL 3.0 prints it -> OID (each checked with `openssl x509 -nameopt
# RFC2253` and nginx in tests/test_dn_nginx.py). Note `street`, `mail` and `jurisdictionC` spellings.
ATTRIBUTES: dict[str, str] = {
    "CN": "2.5.4.3", "SN": "2.5.4.4", "serialNumber": "2.5.4.5", "C": "2.5.4.6", "L": "2.5.4.7",
    "ST": "2.5.4.8", "street": "2.5.4.9", "O": "2.5.4.10", "OU": "2.5.4.11", "title": "2.5.4.12",
    "description": "2.5.4.13", "businessCategory": "2.5.4.15", "postalCode": "2.5.4.17",
    "name": "2.5.4.41", "GN": "2.5.4.42", "initials": "2.5.4.43", "generationQualifier": "2.5.4.44",
    "dnQualifier": "2.5.4.46", "pseudonym": "2.5.4.65", "role": "2.5.4.72",
    "organizationIdentifier": "2.5.4.97", "UID": "0.9.2342.19200300.100.1.1",
    "mail": "0.9.2342.19200300.100.1.3", "DC": "0.9.2342.19200300.100.1.25",
    "emailAddress": "1.2.840.113549.1.9.1", "unstructuredName": "1.2.840.113549.1.9.2",
    "jurisdictionL": "1.3.6.1.4.1.311.60.2.1.1", "jurisdictionST": "1.3.6.1.4.1.311.60.2.1.2",
    "jurisdictionC": "1.3.6.1.4.1.311.60.2.1.3",
}
_ALIASES = {
    "commonname": "CN", "surname": "SN", "countryname": "C", "localityname": "L",
    "stateorprovincename": "ST", "streetaddress": "street", "organizationname": "O",
    "organizationalunitname": "OU", "givenname": "GN", "domaincomponent": "DC", "userid": "UID",
    "email": "emailAddress", "e": "emailAddress", "jurisdictioncountryname": "jurisdictionC",
    "jurisdictionstateorprovincename": "jurisdictionST", "jurisdictionlocalityname": "jurisdictionL",
}
_LOOKUP = {**{k.lower(): k for k in ATTRIBUTES}, **{v: k for k, v in ATTRIBUTES.items()}, **_ALIASES}
_BY_OID = {oid: name for name, oid in ATTRIBUTES.items()}


def canonical_attribute(name: str) -> str | None:
    """The canonical short name for a user-written attribute (`cn`, `commonName`, `2.5.4.3`)."""
    return _LOOKUP.get(name.lower())


def attribute_spellings() -> tuple[str, ...]:
    """Every way a policy may name an attribute (lowercase names, long names, OIDs): the
    candidates of a `did you mean`."""
    return tuple(sorted(_LOOKUP))


def _canonical(name: str) -> str:
    attr = canonical_attribute(name)
    if attr is None:
        raise DnError(f"unknown attribute `{name}`", 0)
    return attr


# ---- values ---------------------------------------------------------------------------------

_BACKSLASHED = frozenset(',+"\\<>;')
_ESCAPABLE = _BACKSLASHED | frozenset("#= ")  # RFC 4514 lets a writer escape these anywhere
_HEX = "0123456789abcdefABCDEF"
# A value nginx prints as it is and that reads back as it is: printable ASCII without the
# characters above, no space at either end. The fast path of escape_value and _parse_value.
_PLAIN_CHAR = "[" + "".join(re.escape(chr(c)) for c in range(0x21, 0x7F) if chr(c) not in ',+"\\<>;#') + "]"
_PLAIN = re.compile(f"{_PLAIN_CHAR}(?:(?:{_PLAIN_CHAR}| )*{_PLAIN_CHAR})?")


def escape_value(raw: str) -> str:
    """Raw attribute value -> exactly what nginx prints for it."""
    if _PLAIN.fullmatch(raw):
        return raw
    out = []
    for i, ch in enumerate(raw):
        last = i == len(raw) - 1
        # OpenSSL quirk (do_buf in a_strex.c): a one-character value gets only the "last" rule,
        # so a lone `#` is printed bare while `#x` becomes `\#x` (test_dn_nginx: lone-hash).
        first = i == 0 and not last
        if ch in _BACKSLASHED or (ch == " " and (first or last)) or (ch == "#" and first):
            out.append("\\" + ch)
        elif ch < " " or ch >= "\x7f":
            out.append("".join(f"\\{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def _parse_value(text: str, start: int) -> tuple[str, int]:
    """Read one escaped value from text[start:]; return (raw value, index of its end)."""
    plain = _PLAIN.match(text, start)
    if plain and (plain.end() == len(text) or text[plain.end()] in ",+"):
        return plain.group(), plain.end()
    data, where = bytearray(), []  # bytes of the value, and the text offset of each byte
    i = start
    while i < len(text) and text[i] not in ",+":
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if not nxt:
                raise DnError("dangling `\\` at the end: escape a backslash as `\\\\`", i)
            if nxt in _HEX and text[i + 2 : i + 3] in tuple(_HEX):
                data.append(int(text[i + 1 : i + 3], 16))
                where.append(i)
                i += 3
                continue
            if nxt not in _ESCAPABLE:
                raise DnError(f"invalid escape `\\{nxt}`: escape one of `, + \" \\ < > ; # = space` "
                              "or write a byte as two hex digits (`\\C3`)", i)
            ch, i = nxt, i + 1
        elif ch in '"<>;':
            raise DnError(f"unescaped `{ch}` in a value: nginx prints it as `\\{ch}`", i)
        elif ch == "#" and i == start and text[i + 1 : i + 2] not in ("", ",", "+"):
            raise DnError("a value cannot start with a bare `#` (hex-encoded values are not "
                          "supported): nginx prints a leading `#` as `\\#`", i)
        elif ch == " " and (i == start or text[i + 1 : i + 2] in ("", ",", "+")):
            raise DnError("unescaped space at the edge of a value: nginx prints it as `\\ `, and "
                          "never puts spaces around `,` `+` `=`", i)
        encoded = ch.encode("utf-8", "surrogatepass")
        data += encoded
        where += [i] * len(encoded)
        i += 1
    try:
        return data.decode("utf-8"), i
    except UnicodeDecodeError as exc:
        raise DnError("the escaped bytes are not valid UTF-8", where[exc.start]) from None
