"""Hypothesis strategies: random policies as text, built from the grammar's own pieces."""

from __future__ import annotations

import hashlib

from hypothesis import strategies as st

from mtlsc import dn
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
        lines.append(f'  reject forbidden {draw(st.integers(400, 599))} {_q(draw(values))}')
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
