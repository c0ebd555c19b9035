"""Just enough DER to find and read certificate names the way OpenSSL does.

cryptography validates name strings on load and on write (51.x refuses an IA5String holding a
non-ASCII byte), while OpenSSL, and so nginx, accepts any byte in a one-byte string type. mtlsc
therefore prints names from the certificate's own bytes (mtlsc.dn.nginx_dn_of) and never from a
re-encoding. Every reader here raises ValueError on malformed input, never IndexError.
"""

from __future__ import annotations

import base64
import binascii
import re

SEQUENCE, SET = 0x30, 0x31


def encode(tag: int, body: bytes) -> bytes:
    n, width = len(body), (len(body).bit_length() + 7) // 8
    return bytes([tag]) + (bytes([n]) if n < 0x80 else bytes([0x80 | width]) + n.to_bytes(width, "big")) + body


def oid_der(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return encode(0x06, bytes(out))


def oid_text(body: bytes) -> str:
    arcs, acc = [], 0
    for b in body:
        acc = (acc << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(acc)
            acc = 0
    if not arcs:
        raise ValueError("empty object identifier")
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))


def read_tlv(data: bytes, i: int, end: int | None = None) -> tuple[int, int, int]:
    """(tag, start of the content, end of the element) of the element at data[i], within data[:end]."""
    end = len(data) if end is None else end
    if i + 2 > end:
        raise ValueError("truncated DER element")
    tag, n, i = data[i], data[i + 1], i + 2
    if n & 0x80:
        width = n & 0x7F
        if width == 0 or width > 4 or i + width > end:
            raise ValueError("bad DER length")
        n, i = int.from_bytes(data[i : i + width], "big"), i + width
    if i + n > end:
        raise ValueError("DER element longer than its container")
    return tag, i, i + n


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, element end) of each element in data[start:end]."""
    out, i = [], start
    while i < end:
        tag, content, nxt = read_tlv(data, i, end)
        out.append((tag, i, content, nxt))
        i = nxt
    return out


def _sequence(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    tag, content, stop = read_tlv(data, start, end)
    if tag != SEQUENCE:
        raise ValueError("expected a SEQUENCE")
    return children(data, content, stop)


def cert_names(der: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    """(start, end) of the issuer and of the subject Name elements in a DER certificate."""
    (_, tbs_at, _, tbs_end), *_ = _sequence(der, 0, len(der))
    fields = _sequence(der, tbs_at, tbs_end)
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version
        fields = fields[1:]
    if len(fields) < 5:
        raise ValueError("too few fields in tbsCertificate")
    return (fields[2][1], fields[2][3]), (fields[4][1], fields[4][3])


def crl_issuer(der: bytes) -> tuple[int, int]:
    """(start, end) of the issuer Name element in a DER CRL."""
    (_, tbs_at, _, tbs_end), *_ = _sequence(der, 0, len(der))
    fields = _sequence(der, tbs_at, tbs_end)
    if fields and fields[0][0] == 0x02:  # version INTEGER
        fields = fields[1:]
    if len(fields) < 2:
        raise ValueError("too few fields in tbsCertList")
    return fields[1][1], fields[1][3]


def name_avas(der: bytes, start: int = 0, end: int | None = None) -> list[list[tuple[str, int, int, int, int]]]:
    """The RDNs of the Name element at der[start:end], in DER order, each a list of AVAs
    (OID, value tag, value element start, value content start, value end)."""
    end = len(der) if end is None else end
    rdns = []
    for tag, _, content, stop in _sequence(der, start, end):
        if tag != SET:
            raise ValueError("expected a SET in a Name")
        rdn = []
        for _, ava_at, _, ava_end in children(der, content, stop):
            parts = _sequence(der, ava_at, ava_end)
            if len(parts) != 2 or parts[0][0] != 0x06:
                raise ValueError("an attribute is not (OID, value)")
            (_, _, oid_at, oid_end), (vtag, element_at, value_at, value_end) = parts
            rdn.append((oid_text(der[oid_at:oid_end]), vtag, element_at, value_at, value_end))
        rdns.append(rdn)
    return rdns


TYPE_NAMES = {0x0C: "UTF8String", 0x12: "NumericString", 0x13: "PrintableString", 0x14: "T61String",
              0x16: "IA5String", 0x1A: "VisibleString", 0x1C: "UniversalString", 0x1E: "BMPString"}
# What each one-byte type may hold by X.680 (and so by cryptography's reader); OpenSSL takes any byte.
_FITS = {0x12: re.compile(rb"[0-9 ]*"), 0x13: re.compile(rb"[A-Za-z0-9 '()+,\-./:=?]*"),
         0x14: re.compile(rb"[\x00-\x7f]*"), 0x16: re.compile(rb"[\x00-\x7f]*"), 0x1A: re.compile(rb"[\x20-\x7e]*")}


def misfit(data: bytes, names: list[tuple[int, int]]) -> tuple[str, int, bytes] | None:
    """(OID, tag, value) of the first value in the Names at `names` that is no string type
    (TYPE_NAMES), or a one-byte string whose bytes its type does not allow (an IA5String with
    non-ASCII, a PrintableString with `@`); None when there is none."""
    for start, end in names:
        for rdn in name_avas(data, start, end):
            for oid, tag, _, value_at, value_end in rdn:
                if tag not in TYPE_NAMES or (tag in _FITS and not _FITS[tag].fullmatch(data[value_at:value_end])):
                    return oid, tag, data[value_at:value_end]
    return None


def with_plain_names(data: bytes, names: list[tuple[int, int]]) -> bytes:
    """A copy of `data` whose primitive values in the Names at `names` are UTF8String `x...x` of
    the same length: every length stays valid, so whatever else is wrong with it still is."""
    out = bytearray(data)
    for start, end in names:
        for rdn in name_avas(data, start, end):
            for _, tag, element_at, value_at, value_end in rdn:
                if not tag & 0x20:
                    out[element_at] = 0x0C
                    out[value_at:value_end] = b"x" * (value_end - value_at)
    return bytes(out)


def pem_body(pem: bytes) -> bytes:
    """The DER inside one PEM block (BEGIN and END lines included in `pem`)."""
    lines = pem.strip().splitlines()[1:-1]
    try:
        return base64.b64decode(b"".join(line.strip() for line in lines if b":" not in line), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"bad base64: {exc}") from None
