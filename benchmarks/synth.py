"""Synthetic policies (and the CA files they name) at any size.

A policy has `cas` CAs (root + issuing intermediate, depth 1, one CRL per certificate), `identities`
identities (mostly exact subjects, every tenth a SHA-1 fingerprint pin: both are hashed `map` keys
in nginx) and `routes` routes on one server: a public `/healthz`, then per route in turn a public,
an optional and several `require` routes, the latter allowing one group of identities each (or
`allow any`). `/partner/` allows every identity, so the identity sweep has one huge allow list.

The CA chains are minted once per directory and reused by every size, so generating a policy costs
only its text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mtlsc.lab import pki as labpki

GROUP = 10  # identities per allow-list group
SERVER = "api.bench.example"


@dataclass(frozen=True)
class Shape:
    routes: int
    identities: int
    cas: int = 3

    @property
    def name(self) -> str:
        return f"r{self.routes}-i{self.identities}-c{self.cas}"


def subject(n: int) -> str:
    return f"CN=client-{n:05d},OU=unit-{n % 97},O=Bench Partner {n % 13},C=US"


def fingerprint(n: int) -> str:
    return hashlib.sha1(f"bench-{n}".encode()).hexdigest()


def is_pinned(n: int) -> bool:
    """Every tenth identity is a fingerprint pin (never the first: runtime clients need a subject)."""
    return n % 10 == 9


def ensure_cas(ca_dir: Path, count: int, now: datetime | None = None) -> dict[str, labpki.CaChain]:
    """Write `ca/c<k>-root.pem`, `-issuing.pem`, `-root.crl`, `-issuing.crl` for k < count (once).

    Returns the chains minted now (empty when the files were already there): the runtime benchmark
    needs their keys to issue client certificates, so it mints into a fresh directory."""
    now = now or datetime.now(timezone.utc)
    chains = {}
    for k in range(count):
        name = f"c{k}"
        if (ca_dir / f"{name}-issuing.crl").exists():
            continue
        chain = labpki.make_chain(f"bench {name}", 1, now=now)
        labpki.write_pem(ca_dir / f"{name}-root.pem", chain.root.cert)
        labpki.write_pem(ca_dir / f"{name}-issuing.pem", chain.issuing.cert)
        for member, suffix in ((chain.root, "root"), (chain.issuing, "issuing")):
            crl = labpki.make_crl(member, [], now=now, next_update=timedelta(days=3650))
            labpki.write_pem(ca_dir / f"{name}-{suffix}.crl", crl)
        chains[name] = chain
    return chains


def policy_text(shape: Shape, *, crl: bool = True, backend: str = "http://127.0.0.1:8080",
                listen: str = "443", cert: str = "/etc/nginx/tls/bench.crt", key: str = "/etc/nginx/tls/bench.key",
                install: str | None = None) -> str:
    """The policy for `shape`, one statement per line, allow lists one name per line."""
    out = ['# synthetic benchmark policy (benchmarks/synth.py)', 'nginx ">= 1.22"', ""]
    for k in range(shape.cas):
        crl_line = f'  crl "ca/c{k}-root.crl" "ca/c{k}-issuing.crl"\n' if crl else ""
        out.append(f'ca c{k} {{\n  bundle "ca/c{k}-root.pem" "ca/c{k}-issuing.pem"\n  depth 1\n{crl_line}}}\n')
    for n in range(shape.identities):
        if is_pinned(n):
            out.append(f'identity id{n:05d} {{ fingerprint "{fingerprint(n)}" }}')
        else:
            out.append(f'identity id{n:05d} {{ subject "{subject(n)}" }}')
    out += ["", f"server {SERVER} {{", f"  listen {listen}", f'  certificate "{cert}" key "{key}"',
            f'  backend "{backend}"']
    if install:
        out.append(f'  install "{install}"')
    out += ["  route = /healthz { public }"]
    groups = max(1, -(-shape.identities // GROUP))
    if shape.identities:
        out.append("  route /partner/ {\n    require c0\n    allow")
        out += [f"      id{n:05d}" for n in range(shape.identities)]
        out.append("    forward subject verify fingerprint\n  }")
    for i in range(max(shape.routes - 2, 0)):
        path = f"/svc{i:05d}/"
        ca = f"c{i % shape.cas}"
        kind = i % 10
        if kind == 0 or not shape.identities and kind > 1:
            out.append(f"  route {path} {{ public }}")
        elif kind == 1:
            out.append(f"  route {path} {{ optional {ca}  forward verify subject }}")
        elif kind == 2:
            out.append(f"  route {path} {{ require {ca}  allow any  forward subject }}")
        else:
            g = i % groups
            names = " ".join(f"id{n:05d}" for n in range(g * GROUP, min((g + 1) * GROUP, shape.identities)))
            out.append(f"  route {path} {{ require {ca}  allow {names}  forward subject serial verify }}")
    out += ["}", ""]
    return "\n".join(out)


def write_policy(directory: Path, shape: Shape, **kwargs) -> Path:
    """Write `<directory>/<shape>.mtls` beside `<directory>/ca/` (minted once); return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    ensure_cas(directory / "ca", shape.cas)
    path = directory / f"{shape.name}.mtls"
    path.write_text(policy_text(shape, **kwargs))
    return path
