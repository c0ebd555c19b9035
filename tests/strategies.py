"""Hypothesis strategies: random policies as text, built from the grammar's own pieces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from hypothesis import strategies as st

from mtlsc import dn
from mtlsc.nginx_facts import FORWARD_FIELDS
from oracle import PATTERNS, AttrSpec, CaSpec, IdentitySpec, PolicySpec, RouteSpec, ServerSpec
from support import REPO

CA_FILES = {
    "partners": (["partners-root.pem", "partners-issuing.pem"], ["partners-root.crl", "partners-issuing.crl"]),
    "devices": (["devices-root.pem", "devices-issuing.pem"], ["devices-root.crl", "devices-issuing.crl"]),
    "internal": (["internal-root.pem"], []),
    "vendors": (["vendors-root.pem"], []),
}

names = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True).filter(lambda n: n not in {"any", "ca", "route", "public"})
segments = st.from_regex(r"[a-z0-9._~-]{1,8}", fullmatch=True).filter(lambda s: s not in {".", ".."})
values = st.text(alphabet=st.characters(codec="utf-8", exclude_characters='"\\\n\r\t$', exclude_categories=("Cc", "Cs")),
                 min_size=1, max_size=12)
FIELDS = ["verify", "subject", "issuer", "fingerprint", "serial", "cert", "not_before", "not_after", "days_remaining"]


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def identities(draw, name):
    kind = draw(st.sampled_from(["subject", "attrs", "fingerprint"]))
    if kind == "subject":
        cn = dn.escape_value(draw(values) + "x-" + name)
        return f"identity {name} {{ subject {_q('CN=' + cn + ',O=Acme')} }}"
    if kind == "fingerprint":  # unique per name, so no two identities pin one certificate (MTLS025)
        return f"identity {name} {{ fingerprint {_q(hashlib.sha1(name.encode()).hexdigest())} }}"
    o = draw(values)
    return f"identity {name} {{ cn ~ {_q('^' + draw(st.sampled_from(['svc-[a-z]+', '[0-9]{3}', 'a.c', 'x(y|z)*'])) + '$')}  o {_q(o)} }}"


@st.composite
def policies(draw) -> str:
    """A policy that lowers without errors: CAs from the committed demo files, random routes."""
    cas = draw(st.lists(st.sampled_from(sorted(CA_FILES)), min_size=1, max_size=2, unique=True))
    ident_names = draw(st.lists(names, min_size=0, max_size=4, unique=True))
    lines = ['nginx ">= 1.22"']
    for ca in cas:
        bundle, crls = CA_FILES[ca]
        files = " ".join(_q(str(REPO / "policies" / "ca" / f)) for f in bundle)
        crl = (" crl " + " ".join(_q(str(REPO / "policies" / "ca" / f)) for f in crls)) if crls else ""
        lines.append(f"ca {ca} {{ bundle {files} depth {len(bundle) - 1}{crl} }}")
    for n in ident_names:
        lines.append(draw(identities(n)))
    lines.append("server api.example.com {")
    lines.append(f"  listen 127.0.0.1:{draw(st.integers(20000, 60000))}")
    lines.append('  certificate "/tmp/x.crt" key "/tmp/x.key"')
    lines.append('  backend "http://127.0.0.1:9"')
    if draw(st.booleans()):
        lines.append(f'  reject forbidden {draw(st.integers(400, 599).filter(lambda s: s != 444))} {_q(draw(values))}')
    paths = draw(st.lists(st.lists(segments, min_size=0, max_size=3), min_size=1, max_size=5,
                          unique_by=lambda p: "/".join(p)))
    for parts in paths:
        path = "/" + "/".join(parts) + ("/" if parts else "")
        exact = draw(st.booleans()) and parts
        mode = draw(st.sampled_from(["public", "optional", "require"]))
        body = mode
        if mode != "public":
            body = f"{mode} {draw(st.sampled_from(cas))}"
            if mode == "require":
                allow = draw(st.lists(st.sampled_from(ident_names), unique=True)) if ident_names else []
                body += " allow " + (" ".join(allow) if allow else "any")
            fields = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=4))
            if fields:
                body += " forward " + " ".join(fields)
        lines.append(f"  route {'= ' if exact else ''}{path.rstrip('/') if exact else path} {{ {body} }}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- lab policies: for the differential test against real nginx ------------------------------
# The generator draws a spec (tests/oracle.py: what the policy means) and renders its text; the
# differential test's oracle judges requests from the spec, never from what mtlsc lowered.

LAB_CAS = ("corp", "partners", "devices")
PATH_SEGMENTS = ("a", "b", "ab", "A", "a.b", "c-d")  # shared with requests, so paths hit routes
DN_ATTRS = ("CN", "O", "OU", "L")
# Letters plus every character nginx escapes in a DN (§7), spaces and non-ASCII (printed `\XX`).
DN_ALPHABET = "abcxyzACME019-. " + ',+"\\<>;#=' + "éÜ中"
dn_values = st.text(alphabet=DN_ALPHABET, min_size=1, max_size=10)
dn_rdns = st.lists(
    st.lists(st.tuples(st.sampled_from(DN_ATTRS), dn_values), min_size=1, max_size=2, unique_by=lambda av: av[0]),
    min_size=1, max_size=3,
).map(lambda rdns: tuple(tuple(r) for r in rdns))
LAB_STATUSES = (400, 401, 403, 404, 421, 429, 451, 494, 495, 496, 497, 499, 500, 503, 599)
SERVER_NAMES = ("api.example.com", "admin.example.com", "shop.example.org")
ALIASES = ("api-alias.example.com", "admin-alias.example.com", "shop-alias.example.org")
# Custom names: other proxies' well-known ones and our own; never one with `_` (nginx drops those).
CUSTOM_HEADERS = ("X-Remote-User", "X-Id", "X-Other", "ssl-client-subject-dn", "X-SSL-Client-Cert",
                  "X-Forwarded-Client-Cert")
CLEARED_HEADERS = ("X-Legacy-User", "X-Auth-Subject")


# SAN identities (docs/language.md "SAN identities"): exact and pattern SPIFFE IDs, a URN, DNS names
# exact and wildcard, an e-mail, IPv4 and IPv6. One identity per value (MTLS025).
SAN_IDENTITIES = (("spiffe", "spiffe://prod.example.org/ns/default/sa/web"),
                  ("spiffe", "spiffe://prod.example.org/ns/*/sa/worker"), ("uri", "urn:example:svc:Billing"),
                  ("dns", "api.example.org"), ("dns", "*.svc.example.org"), ("email", "ops@Example.org"),
                  ("ip", "10.0.0.7"), ("ip", "2001:db8::7"))


@st.composite
def lab_identity(draw, name: str, cas: list[str], taken: set) -> IdentitySpec:
    """A serial pin is minted by its home CA only: the lab gives that CA the pin's issuer DN, and
    two CAs sharing one DN is an error (MTLS201)."""
    kind = draw(st.sampled_from(["subject", "subject", "attrs", "attrs", "fingerprint", "serial", "san"]))
    if kind == "san":
        free = [s for s in SAN_IDENTITIES if s not in taken]
        if free:
            san = draw(st.sampled_from(free))
            taken.add(san)
            return IdentitySpec(name, "san", san=san)
        kind = "subject"
    if kind in ("subject", "serial"):
        rdns = draw(dn_rdns.filter(lambda r: dn.format_dn(r).lower() not in taken))
        taken.add(dn.format_dn(rdns).lower())  # subjects differing in case are one identity (MTLS025)
        if kind == "subject":
            return IdentitySpec(name, "subject", rdns=rdns)
        serial = draw(st.sampled_from(["01", "0A00000001", "7F", "1234567890ABCDEF"]))
        return IdentitySpec(name, "serial", rdns=rdns, pin=serial, home=draw(st.sampled_from(cas)))
    if kind == "fingerprint":
        return IdentitySpec(name, "fingerprint", pin=hashlib.sha1(name.encode()).hexdigest())
    attrs = draw(st.lists(st.sampled_from(DN_ATTRS), min_size=1, max_size=3, unique=True))
    return IdentitySpec(name, "attrs", attrs=tuple(
        AttrSpec(a, "eq", draw(dn_values)) if draw(st.booleans()) else AttrSpec(a, "re", draw(st.sampled_from(sorted(PATTERNS))))
        for a in attrs))


def _locations(route: RouteSpec) -> set:
    """The nginx locations a route owns (segment prefixes own `= /p` and `^~ /p/`): two routes of
    a server never share one."""
    if route.exact or route.path.endswith("/"):
        return {("=" if route.exact else "^~", route.path)}
    return {("=", route.path), ("^~", route.path + "/")}


@st.composite
def lab_route(draw, used: list[str], idents: list[IdentitySpec]) -> RouteSpec:
    segs = draw(st.lists(st.sampled_from(PATH_SEGMENTS), max_size=2))
    path = "/" + "/".join(segs) + ("/" if segs and draw(st.booleans()) else "")
    exact = path != "/" and draw(st.booleans())
    mode = draw(st.sampled_from(["public", "optional", "require", "require"]))
    if mode == "public":
        return RouteSpec(path, exact, mode)
    ca = draw(st.sampled_from(used))
    allow, allow_any = (), False
    if mode == "require":
        mine = [i.name for i in idents if i.home in (None, ca)]
        allow = tuple(draw(st.lists(st.sampled_from(mine), unique=True, max_size=3))) if mine else ()
        allow_any = not allow and draw(st.booleans())
    forwards, taken = [], set()
    for f in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=4)):
        header = draw(st.sampled_from(CUSTOM_HEADERS)) if draw(st.integers(0, 2)) == 0 else None
        key = (header or FORWARD_FIELDS[f].default_header).lower()
        if key not in taken:  # one header per field in a route (MTLS013)
            taken.add(key)
            forwards.append((f, header))
    return RouteSpec(path, exact, mode, ca, allow, allow_any, tuple(forwards))


@st.composite
def lab_server(draw, i: int, shared: bool, used: list[str], idents: list[IdentitySpec], group: int) -> ServerSpec:
    routes: list[RouteSpec] = []
    owned: set = set()
    for r in draw(st.lists(lab_route(used, idents), min_size=1, max_size=5)):
        if not _locations(r) & owned:
            owned |= _locations(r)
            routes.append(r)
    handshake = not shared and all(r.mode == "require" for r in routes) and draw(st.booleans())
    rejections = tuple((reason, draw(st.sampled_from(LAB_STATUSES)), draw(st.one_of(st.none(), values)))
                       for reason in ("no_cert", "bad_cert", "forbidden") if draw(st.integers(0, 3)) == 0)
    names = (SERVER_NAMES[i],) + ((ALIASES[i],) if draw(st.integers(0, 3)) == 0 else ())
    return ServerSpec(names, group, tuple(routes), handshake, rejections,
                      case_sensitive=draw(st.integers(0, 4)) == 0, literal_semicolons=draw(st.integers(0, 4)) == 0,
                      strict_slashes=draw(st.integers(0, 4)) == 0)


@st.composite
def lab_specs(draw) -> PolicySpec:
    """1-3 CAs (CRLs for all or none, 0-2 intermediates), identities of every kind with tricky DNs,
    1-3 servers (some sharing a listen address) with overlapping exact, prefix and segment routes,
    custom header names, rejections; sometimes a CA no route uses, `handshake require`,
    `backend_paths`, `clear_headers`."""
    names = draw(st.lists(st.sampled_from(LAB_CAS), min_size=1, max_size=3, unique=True))
    crls = draw(st.booleans())
    cas = tuple(CaSpec(n, draw(st.integers(1, 3)), draw(st.integers(0, 1)), crls) for n in names)
    used = names[:-1] if len(names) > 1 and draw(st.booleans()) else names  # the last may serve no route
    ident_names = draw(st.lists(st.from_regex(r"[a-z]{1,5}", fullmatch=True).filter(lambda n: n != "any"),
                                max_size=5, unique=True))
    taken: set = set()
    idents = [draw(lab_identity(n, used, taken)) for n in ident_names]
    count = draw(st.integers(1, 3))
    groups = [0] + [draw(st.integers(0, i)) for i in range(1, count)]
    servers = tuple(draw(lab_server(i, groups.count(groups[i]) > 1, used, idents, groups[i])) for i in range(count))
    cleared = tuple(draw(st.lists(st.sampled_from(CLEARED_HEADERS), unique=True, max_size=2)))
    return PolicySpec(cas, tuple(idents), servers, cleared)


@dataclass(frozen=True)
class Deployment:
    """Where a rendered policy runs: the port of each listen group, files, backend."""

    ports: dict
    backend: str | dict = "http://127.0.0.1:9"  # or server index -> URL
    ca_dir: str = "ca"
    cert_dir: str = "/x"
    install_dir: str = ""

    def port(self, group: int) -> int:
        return self.ports.get(group, 443 + group)


def render(spec: PolicySpec, where: Deployment = Deployment({})) -> str:
    """The .mtls text of `spec`."""
    njs = any(i.kind == "san" for i in spec.identities)
    lines = ['nginx ">= 1.22"' + (" with njs" if njs else "")]
    if spec.clear_headers:
        lines.append("clear_headers " + " ".join(_q(h) for h in spec.clear_headers))
    for ca in spec.cas:
        files = [f"{where.ca_dir}/{ca.name}-{i}" for i in range(ca.size)]
        crl = (" crl " + " ".join(_q(f + ".crl") for f in files)) if ca.crls else ""
        lines.append(f"ca {ca.name} {{ bundle {' '.join(_q(f + '.pem') for f in files)}  "
                     f"depth {ca.size - 1 + ca.extra_depth}{crl} }}")
    lines += [_render_identity(i) for i in spec.identities]
    for i, server in enumerate(spec.servers):
        port = where.port(server.group)
        backend = where.backend if isinstance(where.backend, str) else where.backend[i]
        lines += [f"server {' '.join(server.names)} {{", f"  listen {'127.0.0.1:' if where.ports else ''}{port}",
                  f'  certificate "{where.cert_dir}/{server.names[0]}_{port}.crt" key "{where.cert_dir}/{server.names[0]}_{port}.key"',
                  f"  backend {_q(backend)}"]
        lines += [f"  install {_q(where.install_dir)}"] if where.install_dir else []
        words = (["case_sensitive"] * server.case_sensitive + ["literal_semicolons"] * server.literal_semicolons
                 + ["strict_slashes"] * server.strict_slashes)
        lines += [f"  backend_paths {' '.join(words)}"] if words else []
        lines += ["  handshake require"] if server.handshake else []
        lines += [f"  reject {r} {s}{'' if b is None else ' ' + _q(b)}" for r, s, b in server.rejections]
        lines += [f"  route {'= ' if r.exact else ''}{r.path} {{ {_route_body(r)} }}" for r in server.routes]
        lines.append("}")
    return "\n".join(lines) + "\n"


def _render_identity(i: IdentitySpec) -> str:
    if i.kind == "san":
        return f"identity {i.name} {{ san {i.san[0]} {_q(i.san[1])} }}"
    if i.kind == "subject":
        return f"identity {i.name} {{ subject {_q(dn.format_dn(i.rdns))} }}"
    if i.kind == "serial":
        return f"identity {i.name} {{ serial {_q(i.pin)}  issuer {_q(dn.format_dn(i.rdns))} }}"
    if i.kind == "fingerprint":
        return f"identity {i.name} {{ fingerprint {_q(i.pin)} }}"
    parts = [f"{a.attr.lower()} {'~ ' if a.op == 're' else ''}{_q(a.value)}" for a in i.attrs]
    return f"identity {i.name} {{ {'  '.join(parts)} }}"


def _route_body(r: RouteSpec) -> str:
    if r.mode == "public":
        return "public"
    body = f"{r.mode} {r.ca}"
    if r.allow or r.allow_any:
        body += " allow " + (" ".join(r.allow) if r.allow else "any")
    if r.forwards:
        body += " forward " + " ".join(f + (f" as {_q(h)}" if h else "") for f, h in r.forwards)
    return body


def lab_policies():
    """Policy texts of `lab_specs` (deployed on the default ports)."""
    return lab_specs().map(render)


# ---- requests for the differential test: a target and a client spec --------------------------
# Specs, not certificates: the test resolves them against its lab (`target_of`, and its
# `Clients`), so a failing example can be replayed with `@example`.


def _insert_at_slash(insert: str):
    def apply(path: str, n: int) -> str:
        slashes = [i for i, c in enumerate(path) if c == "/"] or [0]
        at = slashes[n % len(slashes)]
        return path[:at] + insert + path[at:]
    return apply


def _percent(path: str, n: int) -> str:
    if len(path) < 2:
        return "/%" + ("2F", "2f", "2E", "61")[n % 4]  # the leading `/` stays: `%2F...` is a 400
    i = 1 + n % (len(path) - 1)
    code = f"%{ord(path[i]):02X}"
    return path[:i] + (code.lower() if n % 2 else code) + path[i + 1:]


def _swapcase(path: str, n: int) -> str:
    i = n % len(path)
    return path[:i] + path[i].swapcase() + path[i + 1:]


def _at_segment_end(insert: str):
    """`insert` at the end of one segment: `/a;x/b`."""
    def apply(path: str, n: int) -> str:
        ends = [i for i, c in enumerate(path) if c == "/" and i > 0] + [len(path)]
        at = ends[n % len(ends)]
        return path[:at] + insert + path[at:]
    return apply


def _replace_slash(path: str, n: int) -> str:
    slashes = [i for i, c in enumerate(path) if c == "/" and i > 0]
    if not slashes:
        return path + ("%2f", "%2F")[n % 2] + "x"
    at = slashes[n % len(slashes)]
    return path[:at] + ("%2f", "%2F", "%5c", "\\")[n % 4] + path[at + 1:]


MUTATIONS = {
    "double slash": _insert_at_slash("/"),
    "dot segment": _insert_at_slash("/."),
    "dot-dot segment": _insert_at_slash("/zz/.."),
    "percent-encode": _percent,
    "swap case": _swapcase,
    "query": lambda p, n: p + ("?q=/a/", "?", "?x=%2F..", "?a=1#f")[n % 4],
    "fragment": lambda p, n: p + "#/a/",
    "above the root": lambda p, n: "/.." + p,
    "trailing": lambda p, n: p + ("/", "/.", "/..", "x", "/%2e", "/%2E%2e")[n % 6],
    "drop trailing slash": lambda p, n: p.rstrip("/") or "/",
    # hostile (request semantics §2): refused before routing, unless the server says otherwise
    "encoded dot-dot": _insert_at_slash("/zz/%2e%2E"),
    "encoded dot": _insert_at_slash("/%2e"),
    "encoded slash or backslash": _replace_slash,
    "encoded percent": _at_segment_end("%25" + "41"),
    "semicolon": lambda p, n: _at_segment_end((";x", ";", "%3b", "%3B..")[n % 4])(p, n // 4),
    "backslash": _at_segment_end("\\"),
    "overlong": _at_segment_end("%c0%af"),
    "utf-8": _at_segment_end("%c3%A9"),
    "escaped query": _at_segment_end("%3F"),
}


HOSTILE = ("encoded dot-dot", "encoded dot", "encoded slash or backslash", "encoded percent", "semicolon",
           "backslash", "overlong", "utf-8", "escaped query")
# Weighted: most requests should reach a location; nginx's own 400 (`above the root`) stays rare.
MUTATION_CHOICES = tuple(m for m in sorted(MUTATIONS) if m not in HOSTILE and m != "above the root") * 3 + HOSTILE + (
    "percent-encode", "double slash", "dot-dot segment", "drop trailing slash", "above the root")


@st.composite
def targets(draw) -> tuple:
    """(route index or None, segments, trailing slash, mutations): a path below one of the
    policy's routes (or from the routes' own segments), then 0-3 mutations nginx normalises or
    refuses. `target_of` makes it concrete; a plain string is taken as it is (for `@example`)."""
    route = draw(st.sampled_from((None, None, 0, 1, 2, 3, 4, 5)))
    segs = draw(st.lists(st.sampled_from((*PATH_SEGMENTS, "x")), max_size=2 if route is not None else 3))
    mutations = draw(st.lists(st.tuples(st.sampled_from(MUTATION_CHOICES), st.integers(0, 20)), max_size=3))
    return route, tuple(segs), draw(st.booleans()), tuple(mutations)


def target_of(spec: tuple | str, server) -> str:
    """The concrete request target of a `targets()` spec on `server` (anything with `routes`
    that have a `path`: an `ir.Server`, or the differential test's `oracle.ServerSpec`)."""
    if isinstance(spec, str):
        return spec
    route, segs, slash, mutations = spec
    path = server.routes[route % len(server.routes)].path if route is not None else "/"
    if segs:
        path += ("" if path.endswith("/") else "/") + "/".join(segs) + ("/" if slash else "")
    for name, n in mutations:
        path = MUTATIONS[name](path, n)
    return path


CAST_KINDS = ("any", "identity", "identity", "near", "near", "stranger", "expired", "revoked", "untrusted")
LIKE = ("same", "upper", "lower", "extra RDN", "glued RDNs", "repeat attribute", "repeat in RDN", "repeat same")
clients = st.one_of(
    st.tuples(st.just("cast"), st.sampled_from(CAST_KINDS), st.integers(0, 20)),  # a cast member of that kind
    st.tuples(st.just("like"), st.integers(0, 9), st.sampled_from(LIKE), st.integers(0, 3)),  # identity, how, CA
    st.tuples(st.just("mint"), st.integers(0, 3), st.integers(0, 2), dn_rdns.map(dn.format_dn)),  # CA, level, subject
    st.just(("none",)),
)


def requests(n: int):
    """`n` (where, target, client) triples; the test resolves them against its lab. `where`
    picks the server (where % servers) and the name it is asked for (SNI = Host)."""
    return st.lists(st.tuples(st.integers(0, 5), targets(), clients), min_size=n, max_size=n)
