"""Hypothesis strategies: random policies as text, built from the grammar's own pieces."""

from __future__ import annotations

import hashlib

from hypothesis import strategies as st

from mtlsc import dn
from mtlsc.nginx_facts import FORWARD_FIELDS
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
# `running_lab` mints a fresh PKI at the paths a policy names, so these policies name relative
# files (`ca/<name>-<i>.pem` beside the policy), never the committed demo CA files.

LAB_CAS = ("corp", "partners", "devices")
PATH_SEGMENTS = ("a", "b", "ab", "A", "a.b", "c-d")  # shared with requests, so paths hit routes
DN_ATTRS = ("CN", "O", "OU", "L")
# Letters plus every character nginx escapes in a DN (§7), spaces and non-ASCII (printed `\XX`).
DN_ALPHABET = "abcxyzACME019-. " + ',+"\\<>;#=' + "éÜ中"
dn_values = st.text(alphabet=DN_ALPHABET, min_size=1, max_size=10)
dn_rdns = st.lists(
    st.lists(st.tuples(st.sampled_from(DN_ATTRS), dn_values), min_size=1, max_size=2, unique_by=lambda av: av[0]),
    min_size=1, max_size=3,
)
# Patterns in the nginx-printed form of one value: escape pairs, UTF-8 bytes, classes, alternation.
LAB_PATTERNS = ("^svc-[a-z]+$", "^[0-9]{3}$", "^a.c$", "^x(y|z)*$", "^.*$", "^Acme( Corp)?$", r"^a\\,b$",
                r"^J\\C3\\BCrgen$", r'^say \\"hi\\"$', r"^\\ sp.*$", r"^[a-z]+\\\\$", "^(ops|svc)-[0-9]+$", "^[^,]*x$")
LAB_STATUSES = (400, 401, 403, 404, 421, 429, 451, 494, 495, 496, 497, 499, 500, 503, 599)
FORWARD_HEADERS = ("X-Id", "x-client-verify", "X-Client-Subject", "X-Other")


@st.composite
def lab_identity(draw, name: str, cas: list[str], taken: set) -> tuple[str, str | None]:
    """(identity text, home CA or None). A serial pin is minted by its home CA only: the lab gives
    that CA the pin's issuer DN, and two CAs sharing one DN is an error (MTLS201)."""
    kind = draw(st.sampled_from(["subject", "subject", "attrs", "attrs", "fingerprint", "serial"]))
    if kind == "subject":
        subject = dn.format_dn(draw(dn_rdns.filter(lambda r: dn.format_dn(r).lower() not in taken)))
        taken.add(subject.lower())  # subjects differing in case are one identity (MTLS025)
        return f"identity {name} {{ subject {_q(subject)} }}", None
    if kind == "fingerprint":
        return f"identity {name} {{ fingerprint {_q(hashlib.sha1(name.encode()).hexdigest())} }}", None
    if kind == "serial":
        issuer = dn.format_dn(draw(dn_rdns.filter(lambda r: dn.format_dn(r).lower() not in taken)))
        taken.add(issuer.lower())
        serial = draw(st.sampled_from(["01", "0A00000001", "7F", "00FF", "1234567890ABCDEF"]))
        return f"identity {name} {{ serial {_q(serial)}  issuer {_q(issuer)} }}", draw(st.sampled_from(cas))
    attrs = draw(st.lists(st.sampled_from(DN_ATTRS), min_size=1, max_size=3, unique=True))
    parts = []
    for attr in attrs:
        if draw(st.booleans()):
            parts.append(f"{attr.lower()} {_q(draw(dn_values))}")
        else:
            parts.append(f"{attr.lower()} ~ {_q(draw(st.sampled_from(LAB_PATTERNS)))}")
    return f"identity {name} {{ {'  '.join(parts)} }}", None


def _route_paths():
    segs = st.lists(st.sampled_from(PATH_SEGMENTS), min_size=0, max_size=2)
    return st.tuples(segs, st.booleans(), st.booleans()).map(
        lambda t: ("/" + "/".join(t[0]) + ("/" if t[0] and t[1] else ""), t[2]))


@st.composite
def lab_policies(draw) -> str:
    """A policy for `running_lab`: one server, 1-3 CAs (CRLs for all or none, 0-2 intermediates),
    identities of every kind with tricky DNs, overlapping exact and prefix routes, custom headers
    and rejections; sometimes a CA no route uses, sometimes `handshake require`."""
    cas = draw(st.lists(st.sampled_from(LAB_CAS), min_size=1, max_size=3, unique=True))
    with_crls = draw(st.booleans())
    lines = ['nginx ">= 1.22"']
    for ca in cas:
        size = draw(st.integers(1, 3))
        bundle = " ".join(_q(f"ca/{ca}-{i}.pem") for i in range(size))
        crl = (" crl " + " ".join(_q(f"ca/{ca}-{i}.crl") for i in range(size))) if with_crls else ""
        lines.append(f"ca {ca} {{ bundle {bundle}  depth {size - 1 + draw(st.integers(0, 1))}{crl} }}")
    used = cas[:-1] if len(cas) > 1 and draw(st.booleans()) else cas  # the last one may serve no route
    names = draw(st.lists(st.from_regex(r"[a-z]{1,5}", fullmatch=True).filter(lambda n: n != "any"),
                          max_size=5, unique=True))
    home: dict[str, str | None] = {}
    taken: set = set()
    for n in names:
        text, home[n] = draw(lab_identity(n, used, taken))
        lines.append(text)
    routes = draw(st.lists(st.tuples(_route_paths(), st.sampled_from(["public", "optional", "require", "require"])),
                           min_size=1, max_size=6, unique_by=lambda r: (r[0][0], r[0][1] and r[0][0] != "/")))
    handshake = all(m == "require" for _, m in routes) and draw(st.booleans())
    lines += ["server api.example.com {", "  listen 443", '  certificate "/x.crt" key "/x.key"',
              '  backend "http://127.0.0.1:9"']
    if handshake:
        lines.append("  handshake require")
    for reason in ("no_cert", "bad_cert", "forbidden"):
        if draw(st.integers(0, 3)) == 0:
            body = f" {_q(draw(values))}" if draw(st.booleans()) else ""
            lines.append(f"  reject {reason} {draw(st.sampled_from(LAB_STATUSES))}{body}")
    for (path, exact), mode in routes:
        body = mode
        if mode != "public":
            ca = draw(st.sampled_from(used))
            body = f"{mode} {ca}"
            if mode == "require":
                mine = [n for n in names if home[n] in (None, ca)]
                allow = draw(st.lists(st.sampled_from(mine), unique=True, max_size=3)) if mine else []
                if allow or draw(st.booleans()):
                    body += " allow " + (" ".join(allow) if allow else "any")
            fields = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=4))
            headers: set = set()
            parts = []
            for f in fields:
                header = draw(st.sampled_from(FORWARD_HEADERS)) if draw(st.integers(0, 3)) == 0 else None
                key = (header or FORWARD_FIELDS[f].default_header).lower()
                if key in headers:
                    continue  # one header per field in a route (MTLS013)
                headers.add(key)
                parts.append(f + (f" as {_q(header)}" if header else ""))
            if parts:
                body += " forward " + " ".join(parts)
        lines.append(f"  route {'= ' if exact and path != '/' else ''}{path} {{ {body} }}")
    lines.append("}")
    return "\n".join(lines) + "\n"


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


MUTATIONS = {
    "double slash": _insert_at_slash("/"),
    "dot segment": _insert_at_slash("/."),
    "dot-dot segment": _insert_at_slash("/zz/.."),
    "percent-encode": _percent,
    "swap case": _swapcase,
    "query": lambda p, n: p + ("?q=/a/", "?", "?x=%2F..")[n % 3],
    "fragment": lambda p, n: p + "#/a/",
    "above the root": lambda p, n: "/.." + p,
    "trailing": lambda p, n: p + ("/", "/.", "/..", "x")[n % 4],
    "drop trailing slash": lambda p, n: p.rstrip("/") or "/",
}


# Weighted: most requests should reach a location; nginx's own 400 (`above the root`) stays rare.
MUTATION_CHOICES = tuple(m for m in sorted(MUTATIONS) if m != "above the root") * 3 + (
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
    """The concrete request target of a `targets()` spec on `server` (an `ir.Server`)."""
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
LIKE = ("same", "upper", "lower", "extra RDN", "glued RDNs")
clients = st.one_of(
    st.tuples(st.just("cast"), st.sampled_from(CAST_KINDS), st.integers(0, 20)),  # a cast member of that kind
    st.tuples(st.just("like"), st.integers(0, 9), st.sampled_from(LIKE), st.integers(0, 3)),  # identity, how, CA
    st.tuples(st.just("mint"), st.integers(0, 3), st.integers(0, 2), dn_rdns.map(dn.format_dn)),  # CA, level, subject
    st.just(("none",)),
)


def requests(n: int):
    """`n` (target, client) pairs; the test resolves both against its lab."""
    return st.lists(st.tuples(targets(), clients), min_size=n, max_size=n)
