"""The differential test's oracle: what a generated policy MEANS, computed from the generator's own
description of it (a small spec tree), never from mtlsc's IR.

The differential test renders each spec to `.mtls` text, compiles it with mtlsc and runs it on
nginx; mtlsc's model (`mtlsc.model.evaluate`) judges the IR the compiler lowered. This module is the
third party: it knows only the spec and the request semantics mtlsc promises (docs/language.md:
canonical targets, segment routes, the normalised target forwarded, headers cleared everywhere,
an attribute named once). So a lowering bug (an allow list cut short, a route path mangled) makes
the compiled nginx and the model disagree with it. It deliberately imports nothing from
mtlsc.model.evaluate, mtlsc.ir, mtlsc.lower, mtlsc.pipeline or mtlsc.model.uri: paths, DNs and patterns are
read here by small implementations of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# ---- the spec: what the generator meant -----------------------------------------------------

Rdns = tuple[tuple[tuple[str, str], ...], ...]  # most specific RDN first; raw (unescaped) values


@dataclass(frozen=True)
class CaSpec:
    name: str
    size: int  # certificates in the bundle: a root and size-1 intermediates
    extra_depth: int  # depth = size - 1 + extra_depth
    crls: bool


@dataclass(frozen=True)
class AttrSpec:
    attr: str  # CN, O, OU, L
    op: str  # "eq": the raw value; "re": one of PATTERNS
    value: str


@dataclass(frozen=True)
class IdentitySpec:
    name: str
    kind: str  # subject | attrs | fingerprint | serial | san
    rdns: Rdns = ()  # subject: the subject; serial: the issuer
    attrs: tuple[AttrSpec, ...] = ()
    pin: str = ""  # fingerprint or serial, hex
    home: str | None = None  # serial pins: the CA that mints them
    san: tuple[str, str] = ()  # san: (kind, value as written: `spiffe`, `uri`, `dns`, `email`, `ip`)


@dataclass(frozen=True)
class RouteSpec:
    path: str
    exact: bool
    mode: str  # public | optional | require
    ca: str | None = None
    allow: tuple[str, ...] = ()  # identity names; empty: every certificate of the CA
    allow_any: bool = False  # `allow any` written (same meaning as no list)
    forwards: tuple[tuple[str, str | None], ...] = ()  # (field, header or None for the default)

    @property
    def handler(self) -> str:
        """The name of this route: what a backend's handler for it reports."""
        return f"= {self.path}" if self.exact else self.path


@dataclass(frozen=True)
class ServerSpec:
    names: tuple[str, ...]
    group: int  # servers of one group share a listen address
    routes: tuple[RouteSpec, ...]
    handshake: bool = False
    rejections: tuple[tuple[str, int, str | None], ...] = ()  # (reason, status, body or None)
    case_sensitive: bool = False
    literal_semicolons: bool = False
    strict_slashes: bool = False


@dataclass(frozen=True)
class PolicySpec:
    cas: tuple[CaSpec, ...]
    identities: tuple[IdentitySpec, ...]
    servers: tuple[ServerSpec, ...]
    clear_headers: tuple[str, ...] = ()

    def identity(self, name: str) -> IdentitySpec:
        return next(i for i in self.identities if i.name == name)


# A value pattern as written in the policy -> (the same meaning as a Python regex over the value as
# nginx prints it, where `\X` is one escape pair and `,` `+` only occur escaped; a raw value it
# accepts). Hand-written per pattern: the oracle's own reading, not mtlsc.dn.regex's.
ANY_TOKEN = r"(?:\\.|[^\\])"
PATTERNS: dict[str, tuple[str, str]] = {
    "^svc-[a-z]+$": (r"svc-[a-z]+", "svc-a"),
    "^[0-9]{3}$": (r"[0-9]{3}", "123"),
    "^a.c$": (rf"a{ANY_TOKEN}c", "abc"),
    "^x(y|z)*$": (r"x(?:y|z)*", "xyz"),
    "^.*$": (rf"{ANY_TOKEN}*", "anything"),
    "^Acme( Corp)?$": (r"Acme(?: Corp)?", "Acme Corp"),
    r"^a\\,b$": (r"a\\,b", "a,b"),
    r"^J\\C3\\BCrgen$": (r"J\\C3\\BCrgen", "Jürgen"),
    r'^say \\"hi\\"$': (r'say \\"hi\\"', 'say "hi"'),
    r"^\\ sp.*$": (rf"\\ sp{ANY_TOKEN}*", " spx"),
    r"^[a-z]+\\\\$": (r"[a-z]+\\\\", "abc\\"),
    "^(ops|svc)-[0-9]+$": (r"(?:ops|svc)-[0-9]+", "ops-7"),
    "^[^,]*x$": (r"[^,+\\]*x", "box"),
}
DEFAULT_HEADERS = {"verify": "X-Client-Verify", "subject": "X-Client-Subject", "issuer": "X-Client-Issuer",
                   "fingerprint": "X-Client-Fingerprint", "serial": "X-Client-Serial", "cert": "X-Client-Cert",
                   "not_before": "X-Client-Not-Before", "not_after": "X-Client-Not-After",
                   "days_remaining": "X-Client-Days-Remaining"}
DEFAULT_REJECTIONS = {"no_cert": (403, "client certificate required"),
                      "bad_cert": (403, "client certificate not accepted"),
                      "forbidden": (403, "client certificate not allowed here")}
BAD_TARGET = (400, "request target not canonical")
NO_ROUTE = (404, "no route")


def header_of(forward: tuple[str, str | None]) -> str:
    return forward[1] or DEFAULT_HEADERS[forward[0]]


# ---- the request side -----------------------------------------------------------------------


@dataclass(frozen=True)
class Presented:
    """A client certificate as presented: who issued it and what nginx prints for it (inputs)."""

    ca: str | None  # the policy CA whose chain issued it; None: a CA no policy names
    valid: bool  # in its validity period and not revoked
    subject: str  # nginx-printed DN
    issuer: str
    serial: int
    fingerprint: str  # SHA-1, lower-case hex
    fields: dict = field(default_factory=dict, compare=False)  # forward field -> nginx's value
    # Issued by a sub-CA that `ca`'s root signed, not by a certificate of `ca`'s bundle (a look-alike
    # of another CA's issuing CA): one intermediate more than the bundle holds.
    via_sub_ca: bool = False
    sans: tuple[tuple[str, str], ...] = ()  # (uri | dns | email | ip, value as in the certificate; IPs as text)


@dataclass(frozen=True)
class Expected:
    status: int
    what: str  # "backend", "redirect", "nginx 400", or the response body
    route: RouteSpec | None = None
    headers: tuple[tuple[str, str], ...] = ()  # (lower-cased name, value), sorted
    target: str | None = None  # what the backend receives


# ---- paths ----------------------------------------------------------------------------------

HEX = "0123456789abcdefABCDEF"
REFUSED_ESCAPES = ("%2e", "%2f", "%5c", "%25", "%3b", "%00", "%c0", "%c1")


def split_target(raw: str) -> tuple[str, str | None]:
    """(path, query or None): the path ends at the first `?` or `#`; a query follows `?` and
    ends at `#` (the fragment is never forwarded)."""
    cut = min((i for i in (raw.find("?"), raw.find("#")) if i >= 0), default=len(raw))
    if raw[cut:cut + 1] != "?":
        return raw[:cut], None
    return raw[:cut], raw[cut + 1:].split("#", 1)[0]


def normalise(raw: str) -> str | None:
    """The path nginx routes on (each byte as one latin-1 character), or None where nginx refuses
    the request line itself: a bad escape, `%00`, `..` above the root. A decoded `/` or `.` acts
    like a raw one; merged slashes; a path ending in `/`, `/.` or `/..` keeps its final `/`."""
    path, _ = split_target(raw)
    if not path.startswith("/"):
        return None
    text, i, data = [], 0, path.encode("utf-8")
    while i < len(data):
        pair = data[i + 1:i + 3].decode("latin-1")
        if data[i] != 0x25:
            text.append(chr(data[i]))
            i += 1
        elif len(pair) < 2 or any(c not in HEX for c in pair) or int(pair, 16) == 0:
            return None
        else:
            text.append(chr(int(pair, 16)))
            i += 3
    segments = "".join(text).split("/")[1:]
    kept: list[str] = []
    for seg in segments:
        if seg == "..":
            if not kept:
                return None
            kept.pop()
        elif seg not in ("", "."):
            kept.append(seg)
    directory = segments[-1] in ("", ".", "..")
    return "/" + "/".join(kept) + ("/" if directory and kept else "")


def non_canonical(raw: str, path: str, server: ServerSpec) -> bool:
    """§2: a target mtlsc refuses (400 bad_target) before any route runs."""
    part, _ = split_target(raw)
    lowered = part.lower()
    if any(seg in (".", "..") for seg in part.split("/")):
        return True
    if any(e in lowered for e in REFUSED_ESCAPES) or "\\" in part:
        return True
    if ";" in part and not server.literal_semicolons:
        return True
    # An exact route's path plus `/` that no route claims: Express's non-strict routing would
    # serve it with that exact route's handler (letter case folded unless case_sensitive).
    fold = (lambda x: x) if server.case_sensitive else ascii_lower
    claimed = {_location_name(r) for r in server.routes}
    if not server.strict_slashes and any(r.exact and r.path != "/" and r.path + "/" not in claimed
                                         and fold(path) == fold(r.path) + "/" for r in server.routes):
        return True
    # And the other way: an exact route `/p/` whose `/p` no route claims (Express's `/p/` handler
    # serves `/p` too). `/p` is claimed by `route = /p` and by the segment route `route /p`.
    owners = {r.path for r in server.routes if r.exact or not r.path.endswith("/")}
    if not server.strict_slashes and any(r.exact and r.path.endswith("/") and r.path != "/"
                                         and r.path[:-1] not in owners and fold(path) == fold(r.path[:-1])
                                         for r in server.routes):
        return True
    if server.case_sensitive:
        return False
    low = ascii_lower(path)
    return any(_covers(r, low, fold=True) and not _covers(r, path) for r in server.routes)


def ascii_lower(s: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in s)


def _covers(route: RouteSpec, path: str, fold: bool = False) -> bool:
    p = ascii_lower(route.path) if fold else route.path
    if route.exact:
        return path == p
    if p.endswith("/"):
        return path.startswith(p)
    return path == p or path.startswith(p + "/")


def choose_route(server: ServerSpec, path: str) -> RouteSpec | str | None:
    """The route a path reaches, "redirect" for nginx's 301 to `path/`, or None (no route)."""
    exact = [r for r in server.routes if r.path == path and (r.exact or not r.path.endswith("/"))]
    if exact:
        return exact[0]
    if any(_location_name(r) == path + "/" for r in server.routes):
        return "redirect"  # a proxying `location /p/` answers `/p` with 301 before any gate
    best, size = None, -1
    for r in server.routes:
        if not r.exact and _covers(r, path):
            length = len(r.path) + (0 if r.path.endswith("/") else 1)
            if length > size:
                best, size = r, length
    return best


def _location_name(route: RouteSpec) -> str:
    return route.path if route.exact or route.path.endswith("/") else route.path + "/"


def forwarded_target(raw: str, path: str) -> str:
    """§5: the normalised path, escaped as nginx does when the target had a `%` escape, + query."""
    part, query = split_target(raw)
    out = path
    if "%" in part:
        out = "".join(f"%{ord(c):02X}" if c in " #%?" or ord(c) < 0x20 or ord(c) >= 0x7f else c for c in path)
    return out + (f"?{query}" if query else "")


# ---- distinguished names --------------------------------------------------------------------


def avas(printed: str) -> list[tuple[str, str, bool]]:
    """(attribute, printed value, starts an RDN) of an nginx-printed DN: split on unescaped `,` `+`."""
    out, start, i, new_rdn = [], 0, 0, True
    while i <= len(printed):
        if i < len(printed) and printed[i] == "\\":
            i += 2
            continue
        if i == len(printed) or printed[i] in ",+":
            attr, _, value = printed[start:i].partition("=")
            out.append((attr, value, new_rdn))
            new_rdn = i < len(printed) and printed[i] == ","
            start = i + 1
        i += 1
    return out


def unescape(value: str) -> str:
    """A printed value back to its raw text: `\\XX` is a byte, `\\c` the character c."""
    raw, i = bytearray(), 0
    while i < len(value):
        if value[i] == "\\" and value[i + 1:i + 3] and all(c in HEX for c in value[i + 1:i + 3]) and len(value[i + 1:i + 3]) == 2:
            raw.append(int(value[i + 1:i + 3], 16))
            i += 3
        elif value[i] == "\\":
            raw += value[i + 1].encode()
            i += 2
        else:
            raw += value[i].encode()
            i += 1
    return raw.decode("utf-8", "replace")


def rdns_of(printed: str) -> list[list[tuple[str, str]]]:
    rdns: list[list[tuple[str, str]]] = []
    for attr, value, new in avas(printed):
        if new or not rdns:
            rdns.append([])
        rdns[-1].append((attr, unescape(value)))
    return rdns


def same_dn(printed: str, rdns: Rdns) -> bool:
    """ASCII case-insensitive; the members of a multi-valued RDN form a set."""
    def key(seq):
        return [sorted((ascii_lower(a), ascii_lower(v)) for a, v in rdn) for rdn in seq]
    return key(rdns_of(printed)) == key(rdns)


_SPIFFE = re.compile(r"spiffe://[a-z0-9._-]+(?:/[A-Za-z0-9._-]+)+")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


def _scheme_host_lower(uri: str) -> str:
    """RFC 3986 §6.2.2.1: scheme and host are case-insensitive; the rest is compared as sent."""
    if ":" not in uri:
        return uri
    scheme, rest = uri.split(":", 1)
    if rest[:2] == "//":
        authority = rest[2:].split("/", 1)
        at = authority[0].rfind("@")
        authority[0] = authority[0][:at + 1] + ascii_lower(authority[0][at + 1:])
        rest = "//" + "/".join(authority)
    return ascii_lower(scheme) + ":" + rest


def san_matches(kind: str, value: str, sans: tuple[tuple[str, str], ...]) -> bool:
    """The SAN rules of docs/language.md "SAN identities", read independently of mtlsc.san."""
    of = lambda k: [v for kk, v in sans if kk == k]  # noqa: E731
    if kind == "spiffe":
        uris = of("uri")  # an X509-SVID has exactly one URI SAN, which is its SPIFFE ID
        if len(uris) != 1 or len(uris[0]) > 2048 or not _SPIFFE.fullmatch(uris[0]):
            return False
        got, want = uris[0][len("spiffe://"):].split("/"), value[len("spiffe://"):].split("/")
        return (len(got) == len(want) and not any(s in (".", "..") for s in got)
                and all(w == "*" or w == g for g, w in zip(got, want)) and got[0] == want[0])
    if kind == "uri":
        return any(_scheme_host_lower(u) == _scheme_host_lower(value) for u in of("uri"))
    if kind == "dns":
        names = [ascii_lower(n) for n in of("dns")]
        want = ascii_lower(value)
        if not want.startswith("*."):
            return want in names
        return any(n.endswith(want[1:]) and _LDH_LABEL.fullmatch(n[:-len(want) + 1]) for n in names)
    if kind == "email":
        def norm(e):
            local, _, domain = e.rpartition("@")
            return local, ascii_lower(domain)
        return norm(value) in [norm(e) for e in of("email") if "@" in e]
    import ipaddress
    return ipaddress.ip_address(value) in [ipaddress.ip_address(a) for a in of("ip")]


def identity_matches(ident: IdentitySpec, cert: Presented) -> bool:
    if ident.kind == "san":
        return san_matches(ident.san[0], ident.san[1], cert.sans)
    if ident.kind == "subject":
        return same_dn(cert.subject, ident.rdns)
    if ident.kind == "fingerprint":
        return cert.fingerprint.lower() == ident.pin.lower()
    if ident.kind == "serial":
        return cert.serial == int(ident.pin, 16) and same_dn(cert.issuer, ident.rdns)
    found = avas(cert.subject)
    for a in ident.attrs:
        values = [v for attr, v, _ in found if attr.upper() == a.attr.upper()]
        if len(values) != 1:  # §7: a named attribute occurs exactly once
            return False
        ok = unescape(values[0]) == a.value if a.op == "eq" else re.fullmatch(PATTERNS[a.value][0], values[0])
        if not ok:
            return False
    return True


# ---- the judgement --------------------------------------------------------------------------


def _reject(server: ServerSpec, reason: str, route: RouteSpec | None) -> Expected:
    status, body = DEFAULT_REJECTIONS[reason]
    for r, s, b in server.rejections:
        if r == reason:
            status, body = s, (b if b is not None else body)
    return Expected(status, body + "\n", route)


def judge(spec: PolicySpec, server: ServerSpec, raw: str, cert: Presented | None) -> Expected:
    """What `server` must answer to `GET raw` from `cert` (None: no certificate)."""
    path = normalise(raw)
    if path is None:
        return Expected(400, "nginx 400")
    cas = {r.ca for r in server.routes if r.ca}
    depth = max((c.size - 1 + c.extra_depth for c in spec.cas if c.name in cas), default=0)
    # a chain through a sub-CA no bundle holds needs one more level, and has no CRL of its own
    sub_ca_verifies = depth >= 1 and not any(c.crls for c in spec.cas if c.name in cas)
    if not cas:
        cert = None  # no certificate is asked for
    elif cert is not None and not (cert.valid and cert.ca in cas and (not cert.via_sub_ca or sub_ca_verifies)):
        return _reject(server, "bad_cert", None)
    if server.handshake and cert is None:
        return _reject(server, "no_cert", None)
    if non_canonical(raw, path, server):
        return Expected(BAD_TARGET[0], BAD_TARGET[1] + "\n")
    route = choose_route(server, path)
    if route == "redirect":
        return Expected(301, "redirect")
    if route is None:
        return Expected(NO_ROUTE[0], NO_ROUTE[1] + "\n")
    ok = Expected(200, "backend", route, (), forwarded_target(raw, path))
    if route.mode == "public":
        return ok
    if cert is None and route.mode == "optional":
        return _with_headers(ok, route, None)
    if cert is None:
        return _reject(server, "no_cert", route)
    if cert.ca != route.ca:
        return _reject(server, "bad_cert", route)
    if cert.via_sub_ca and len(cas) > 1:
        # with several CAs, a route takes only certificates that a bundle certificate of its own CA
        # issued: a sub-CA's copy of a name (or of a key identifier) does not count
        return _reject(server, "bad_cert", route)
    if route.allow and not any(identity_matches(spec.identity(n), cert) for n in route.allow):
        return _reject(server, "forbidden", route)
    return _with_headers(ok, route, cert)


def _with_headers(ok: Expected, route: RouteSpec, cert: Presented | None) -> Expected:
    out = []
    for f in route.forwards:
        value = ("SUCCESS" if cert else "NONE") if f[0] == "verify" else (cert.fields.get(f[0], "") if cert else "")
        if value:  # nginx sends no header for an empty value
            out.append((header_of(f).lower(), value))
    return Expected(ok.status, ok.what, ok.route, tuple(sorted(out)), ok.target)
