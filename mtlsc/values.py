"""Parsers for the small value syntaxes inside a policy: versions, listen addresses, URLs,
route paths, host names, fingerprints and serials.

Each returns the normalised value or raises `ValueProblem` with a message and a fix; lowering
turns that into a located diagnostic.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass


@dataclass
class ValueProblem(ValueError):
    message: str
    help: str = ""
    offset: int = 0  # into the value, for a caret inside a string


_VERSION = re.compile(r"\s*(?:>=\s*)?(\d+)\.(\d+)(?:\.(\d+))?\s*")


def nginx_version(text: str) -> tuple[int, int, int]:
    m = _VERSION.fullmatch(text)
    if not m:
        raise ValueProblem(f"`{text}` is not an nginx version", 'write the oldest version you deploy to, e.g. `nginx ">= 1.22"`')
    return int(m[1]), int(m[2]), int(m[3] or 0)


def listen(text: str) -> tuple[str | None, int]:
    """`443`, `127.0.0.1:8443` or `[::1]:443` -> (address or None, port)."""
    address, _, port_text = text.rpartition(":") if ":" in text else ("", "", text)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueProblem(f"port {port} is out of range", "use a port from 1 to 65535")
    if not address:
        return None, port
    bare_addr = address[1:-1] if address.startswith("[") else address
    try:
        ip = ipaddress.ip_address(bare_addr)
    except ValueError:
        raise ValueProblem(f"`{address}` is not an IP address", "write `IP:port`, `[IPv6]:port` or just the port") from None
    return (f"[{ip.compressed}]" if ip.version == 6 else str(ip)), port


_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def hostname(text: str) -> str:
    """A server name: DNS name, optionally `*.` wildcard; returned lower-cased."""
    name = text.lower()
    labels = name[2:].split(".") if name.startswith("*.") else name.split(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueProblem(f"`{text}` is not a host name", "use a DNS name such as `api.example.com` or `*.example.com`")
    return name


URL_MAX = 2000  # a URL is one nginx config argument: well below nginx's 4 KiB limit for one
_URL = re.compile(r"(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?/?")


def backend_url(text: str) -> str:
    """`http://host[:port]` with no path: nginx then passes the request URI unchanged."""
    m = _URL.fullmatch(text) if len(text) <= URL_MAX else None
    if not m:
        raise ValueProblem(
            f"`{text}` is not a backend URL mtlsc accepts",
            "write `http://HOST:PORT` or `https://HOST:PORT` without a path; nginx then forwards the request path unchanged",
        )
    if m[3] and not 1 <= int(m[3]) <= 65535:
        raise ValueProblem(f"port {m[3]} is out of range", "use a port from 1 to 65535")
    return f"{m[1]}://{m[2]}" + (f":{m[3]}" if m[3] else "")


_RESPONDER = re.compile(r"http://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?(?:/[A-Za-z0-9._~!&'()*+,=:@/-]*)?")


def ocsp_responder(text: str) -> str:
    if len(text) > URL_MAX or not _RESPONDER.fullmatch(text):
        raise ValueProblem(
            f"`{text}` is not an OCSP responder nginx accepts",
            "write `http://HOST[:PORT][/path]`; nginx refuses `https` responders at `nginx -t` (docs/nginx-facts.md §10)",
        )
    return text


_QUANTITY = re.compile(r"([0-9]{1,9})([A-Za-z]*)")
OCSP_CACHE_MIN = 32 * 1024  # nginx refuses a cache under 8 memory pages ("is too small"): 32k with 4 KiB pages
OCSP_CACHE_MAX = 1024 * 1024 * 1024


def ocsp_cache(text: str) -> str:
    """`off`, or the size of nginx's shared OCSP cache: `10m`, `512k` (bytes without a unit);
    returned lower-cased, as nginx takes it."""
    if text == "off":
        return text
    m = _QUANTITY.fullmatch(text)
    unit = m[2].lower() if m else ""
    if not m or unit not in ("", "k", "m"):
        raise ValueProblem(f"`{text}` is not a cache size", "write a size such as `10m` or `512k`, or `off`")
    size = int(m[1]) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit]
    if not OCSP_CACHE_MIN <= size <= OCSP_CACHE_MAX:
        raise ValueProblem(f"an OCSP cache of `{text}` is outside what nginx takes",
                           "give at least `32k` (nginx's minimum, 8 memory pages) and at most `1024m`; "
                           "`10m` holds about 40,000 answers")
    return f"{int(m[1])}{unit}"


RESOLVER_TIMEOUT_MAX_MS = 60_000


def resolver_timeout(text: str) -> str:
    """How long nginx waits for DNS: `5s` or `500ms`, more than 0 and at most 60 s."""
    m = _QUANTITY.fullmatch(text)
    unit = m[2] if m else ""
    if not m or unit not in ("ms", "s"):
        raise ValueProblem(f"`{text}` is not a timeout", "write seconds or milliseconds, such as `5s` or `500ms`")
    ms = int(m[1]) * (1000 if unit == "s" else 1)
    if not 0 < ms <= RESOLVER_TIMEOUT_MAX_MS:
        raise ValueProblem(f"a DNS timeout of `{text}` is out of range",
                           "every handshake that needs a lookup waits this long when DNS is down: give 1s to 60s")
    return f"{int(m[1])}{unit}"


def resolver_address(text: str) -> str:
    """A DNS server as nginx's `resolver` takes it: `IP`, `IP:port`, `[IPv6]` or `[IPv6]:port`
    (a bare IPv6 address gets its brackets)."""
    host, port = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            host = ""
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueProblem(f"`{text}` is not a DNS server address",
                           "write an IP address, optionally with a port: `10.0.0.2`, `10.0.0.2:53`, `[2001:db8::53]`; "
                           "a host name would itself need resolving") from None
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueProblem(f"`{port}` is not a port", "use a port from 1 to 65535, or leave it out for 53")
    shown = f"[{ip.compressed}]" if ip.version == 6 else str(ip)
    return shown + (f":{int(port)}" if port is not None else "")


# What may appear in a route path: RFC 3986 pchar minus `%` (nginx matches the decoded path,
# so a percent sign in a location would never match what the user meant, docs/nginx-facts.md §2).
_PATH_BAD = re.compile(r"[^A-Za-z0-9._~!&'()*+,=:@/-]")


def route_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueProblem(f"`{text}` does not start with `/`", "route paths are absolute: `/partner/`")
    m = _PATH_BAD.search(text)  # one scan: a regex call per character took 20 s for a 10 MB path
    bad = m.start() if m else None
    if bad is not None:
        raise ValueProblem(
            f"`{text[bad]}` is not allowed in a route path",
            "nginx matches the decoded, normalised path; write the path as nginx sees it, without `%`, `?` or `\\`",
            bad,
        )
    padded = text + "/"  # so that a trailing `/.` or `/..` is caught like an inner one
    for dirty in ("//", "/./", "/../"):
        at = (text if dirty == "//" else padded).find(dirty)
        if at >= 0:
            raise ValueProblem(
                f"`{text}` is not a clean path: it contains `{dirty.rstrip('/') if at + len(dirty) > len(text) else dirty}`",
                "nginx normalises `//`, `/./` and `/../` before matching, so this route could never match; write the normalised path",
                at,
            )
    return text


def fingerprint(text: str, algorithm: str | None = None) -> str:
    """40 (SHA-1) or 64 (SHA-256) lowercase hex digits; `algorithm` (`sha1`/`sha256`/`spki`) fixes
    which. An `spki` pin may also be written as curl and HPKP print it, `sha256//BASE64`."""
    if algorithm == "spki" and text.startswith("sha256//"):
        return _spki_base64(text)
    hexdigits = text.replace(":", "").lower()
    sizes = {"sha1": 40, "sha256": 64, "spki": 64}
    wanted = (sizes[algorithm],) if algorithm else (40, 64)
    if not re.fullmatch(r"[0-9a-f]+", hexdigits) or len(hexdigits) not in wanted:
        if algorithm == "spki":
            raise ValueProblem(f"`{text}` is not an SPKI pin", SPKI_HELP)
        if text.startswith("sha256//"):
            raise ValueProblem(f"`{text}` is a public-key (SPKI) pin, not a certificate fingerprint",
                               f'write `fingerprint spki "{text}"`')
        what = {None: "a SHA-1 or SHA-256", "sha1": "a SHA-1", "sha256": "a SHA-256"}[algorithm]
        return_help = ("write 40 (SHA-1) or 64 (SHA-256) hex digits, with or without `:` "
                       "(`openssl x509 -noout -fingerprint -sha256 -in CERT`)")
        raise ValueProblem(f"`{text}` is not {what} fingerprint", return_help)
    return hexdigits


SPKI_HELP = ("write the SHA-256 of the certificate's public key as 64 hex digits (`openssl x509 -in CERT -noout "
             "-pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256`) or as `sha256//BASE64` (curl's "
             "--pinnedpubkey form)")


def _spki_base64(text: str) -> str:
    """`sha256//BASE64` (32 bytes, standard base64 with padding) as 64 lowercase hex digits."""
    body = text[len("sha256//"):]
    try:
        raw = base64.b64decode(body, validate=True) if re.fullmatch(r"[A-Za-z0-9+/]{43}=", body) else b""
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise ValueProblem(f"`{text}` is not an SPKI pin: after `sha256//` come 44 base64 characters", SPKI_HELP)
    return raw.hex()


def serial(text: str) -> str:
    """Normalised as nginx prints `$ssl_client_serial`: uppercase hex, even length."""
    digits = text.replace(":", "").upper()
    digits = digits[2:] if digits.startswith("0X") else digits
    if not re.fullmatch(r"[0-9A-F]+", digits):
        raise ValueProblem(f"`{text}` is not a hex serial number", "write it as `openssl x509 -noout -serial` prints it")
    digits = digits.lstrip("0") or "0"
    return digits if len(digits) % 2 == 0 else "0" + digits
