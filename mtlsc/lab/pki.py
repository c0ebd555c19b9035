"""Throwaway PKIs for tests, `mtlsc demo-pki` and `mtlsc lab`: EC P-256 keys, SHA-256 signatures.

Every function takes the current time as `now`, so dates are reproducible in tests (keys and
serial numbers are random). Never for production: keys are written unencrypted. The certificate
primitives are in mtlsc.lab.certs, re-exported here.

`build_lab_pki` makes a PKI shaped like a policy and writes it where the policy and the emitted
`tests.sh` expect it. Which client certificates exist, and their subjects, come from
`mtlsc.model.cast`, the one definition shared with the test script generator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from mtlsc import dn, ir
from mtlsc.lab.certs import (  # noqa: F401 (re-exported)
    BACKDATE, LAB_ORG, MAX_SERIAL, CaChain, Issued, issue_client, issue_ocsp_signer, issue_server, make_chain, make_crl,
    make_intermediate, make_root, signing_hash, write_pem,
)
from mtlsc.lab.leaves import mint_leaf_ca, mint_user_leaf_near_misses
from mtlsc.model.cast import Member, cast


@dataclass(frozen=True, slots=True)
class UserCa:
    """A CA of the policy as the user's own files have it (mtlsc.lab.userca loads it): the lab
    trusts exactly those files and mints test clients only with the keys the user handed over."""

    chain: CaChain  # `user`: the bundle, keys where given
    # CRL position in the policy's `crl` list -> (the CA certificate whose key signs it again, the
    # entries of the user's CRL, kept): the lab adds its revoked client to those CRLs only.
    resign: Mapping[int, tuple[Issued, tuple[x509.RevokedCertificate, ...]]] = field(default_factory=dict)
    cast_gap: str | None = None  # why none of its test clients can be minted (they need answers the lab cannot sign)


@dataclass(frozen=True, slots=True)
class LabPki:
    """What `build_lab_pki` wrote: `clients/<ca>/<member>.crt|.key`, `server/<slug>.crt|.key` (with
    the issuing CA: mtlsc.lab.server_pki), `server-ca.pem` (the roots), and the CA and CRL files at the paths the policy names (for a user's CA
    only the CRLs it re-signs: its certificates stay the user's files)."""

    out_dir: Path
    chains: Mapping[str, CaChain]
    clients_dir: Path
    server_ca: Path  # PEM of the roots of the lab server certificates
    unsatisfiable: tuple[str, ...]  # identities no fresh certificate can satisfy (fingerprint pins)
    # What the lab's OCSP responder must answer other than `good`: (issuer, serial, status).
    ocsp_status: tuple[tuple[x509.Certificate, int, str], ...] = ()
    ocsp_urls: Mapping[str, str] = field(default_factory=dict)  # ca with `ocsp` -> OCSP URL of its certificates
    not_minted: Mapping[str, str] = field(default_factory=dict)  # cast member file -> why it was not written
    server_issuers: Mapping[str, Issued] = field(default_factory=dict)  # server slug -> the CA that issued its certificate

    def client(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of a cast member, e.g. `client("partners/id-acme")`."""
        return self.clients_dir / f"{name}.crt", self.clients_dir / f"{name}.key"

    def server(self, slug: str) -> tuple[Path, Path]:
        """(certificate, key) of a server, by `ir.Server.slug`."""
        return self.out_dir / "server" / f"{slug}.crt", self.out_dir / "server" / f"{slug}.key"


def _x509_name(subject: str) -> x509.Name:
    return dn.x509_name(dn.parse_dn(subject)) if subject else x509.Name([])


def _serial_issuers(ca: ir.Ca, members: list[Member]) -> tuple[dict[int, x509.Name], dict[str, int]]:
    """Give chain members the issuer DNs of serial pins, issuing CA first, so the pins can be minted.

    Returns (chain position -> subject, issuer DN lowercased -> position). Issuers beyond the
    chain's length get no position: their identities are unsatisfiable.
    """
    size = max(len(ca.bundle), 1)
    subjects: dict[int, x509.Name] = {}
    where: dict[str, int] = {}
    for m in members:
        ident = m.identity
        if m.ca != ca.name or ident is None or ident.kind is not ir.IdentityKind.SERIAL or not ident.issuer:
            continue
        key = ident.issuer.lower()  # DN comparison is case-insensitive, as in nginx map keys
        if key not in where and len(where) < size:
            where[key] = size - 1 - len(where)
            subjects[where[key]] = _x509_name(ident.issuer)
    return subjects, where


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path)
    return Path(os.path.normpath(p if p.is_absolute() or base_dir is None else base_dir / p))


# Why a cast member was not minted: `mtlsc lab` and `mtlsc mint-cast` print these.
PINNED_BY_FINGERPRINT = "pinned by fingerprint: only that one certificate matches; supply it yourself"
PINNED_BY_KEY = "pinned by public key (spki): only its holder's key matches; supply the certificate (and its renewal)"


def no_key(ca: str) -> str:
    return f"no key of ca {ca} was given (it is your own CA): pass --ca-key {ca}=KEY.pem"


def _mint(m: Member, chain: CaChain, serial_pos: dict[str, int], now: datetime,
          ocsp_url: str | None = None, days: int = 365, holder_keys: Mapping[str, object] | None = None) -> Issued | str:
    """The certificate of one cast member of a trusted CA, or why it cannot be minted.
    `ocsp_url` goes in its AIA; `holder_keys[identity]` is the key an SPKI identity pins."""
    ident = m.identity
    if ident is not None and ident.kind in (ir.IdentityKind.FINGERPRINT, ir.IdentityKind.SHA256):
        return PINNED_BY_FINGERPRINT
    held = (holder_keys or {}).get(ident.name) if m.holds_pinned_key else None
    if m.holds_pinned_key and held is None:
        return PINNED_BY_KEY
    signer = chain.signer
    if signer is None:
        return no_key(m.ca)
    subject = _x509_name(m.subject)
    if m.kind == "expired":
        return issue_client(signer, subject, now=now, not_before=now - timedelta(days=30), days=1,
                            ocsp_url=ocsp_url)
    if ident is not None and ident.kind is ir.IdentityKind.SERIAL:
        if chain.user:
            return (f"pinned by serial {ident.serial} of `{ident.issuer}`: mtlsc issues no second certificate "
                    "with that serial from your CA; supply the real one yourself")
        pos = serial_pos.get((ident.issuer or "").lower())
        serial = int(ident.serial or "0", 16)
        issuer = chain.members[pos] if pos is not None and pos < len(chain.members) else None
        if issuer is None or issuer.cert.subject != _x509_name(ident.issuer) or not 0 < serial <= MAX_SERIAL:
            return f"pinned by serial {ident.serial} of `{ident.issuer}`, which no certificate of the lab's chain is named"
        return issue_client(issuer, subject, now=now, serial=serial, ocsp_url=ocsp_url, days=days)
    return issue_client(signer, subject, now=now, ocsp_url=ocsp_url, days=days, sans=m.sans, key=held)


def _write_issued(base: Path, issued: Issued, chain: tuple[x509.Certificate, ...] = ()) -> None:
    write_pem(base.with_name(base.name + ".crt"), issued.cert, *chain)
    write_pem(base.with_name(base.name + ".key"), issued.key)


def _write_lookalike(base: Path, by: Issued, of: CaChain, subject: x509.Name, now: datetime, days: int) -> None:
    """A client of a sub-CA that `by` (a CA certificate of another CA) signed with the name of
    `of`'s issuing CA; the certificate file holds the sub-CA too, as a client sends it (nginx has
    only the real one)."""
    sub = make_intermediate(by, "", now=now, subject=of.issuing.cert.subject, days=days)
    leaf = issue_client(sub, subject, now=now, days=days)
    write_pem(base.with_name(base.name + ".crt"), leaf.cert, sub.cert)
    write_pem(base.with_name(base.name + ".key"), leaf.key)


# An OCSP URL nothing answers at: port 1 on loopback (tcpmux), which no lab process can bind.
DEAD_OCSP_URL = "http://127.0.0.1:1/"
# What the lab responder answers for a cast member other than `good` (mtlsc.lab.ocsp statuses).
_OCSP_ANSWER = {"revoked": "revoked", "ocsp-down": "unavailable"}


@dataclass
class MintedCast:
    """What `mint_cast` wrote, and what it could not."""

    revoked: dict[str, list[int]] = field(default_factory=dict)  # ca -> serials of `<ca>/revoked` (by its signer)
    ocsp_status: list[tuple[x509.Certificate, int, str]] = field(default_factory=list)
    not_minted: dict[str, str] = field(default_factory=dict)  # member file -> why
    unsatisfiable: list[str] = field(default_factory=list)  # pinned identities no certificate satisfies
    issued: dict[str, Issued] = field(default_factory=dict)  # member file -> its certificate


def mint_cast(members: list[Member], chains: Mapping[str, CaChain | str], clients_dir: Path, *, now: datetime,
              aia: Mapping[str, str] | None = None, serial_pos: Mapping[str, dict[str, int]] | None = None,
              days: int = 365, gaps: Mapping[str, str] | None = None,
              holder_keys: Mapping[str, object] | None = None) -> MintedCast:
    """Write `<member>.crt|.key` under `clients_dir` for every cast member `chains` can issue.

    `chains[ca]` is a chain, or why the CA has none (its files cannot be read); `gaps[ca]` says
    why none of its members may be minted. A CA in `aia` puts that OCSP URL in its clients'
    AIA (`<ca>/ocsp-down` gets DEAD_OCSP_URL). Look-alikes need a key of the CA that signs their
    sub-CA; the untrusted client comes from a throwaway root. `holder_keys[identity]`: the key
    an SPKI identity pins (its holder's certificate and renewal are minted with it)."""
    aia, serial_pos, gaps = aia or {}, serial_pos or {}, gaps or {}
    out = MintedCast()
    for m in (m for m in members if m.ca is not None and m.kind != "lookalike"):
        chain = chains.get(m.ca)
        if not isinstance(chain, CaChain) or m.ca in gaps:
            out.not_minted[m.file] = gaps.get(m.ca) or str(chain)
            continue
        url = aia.get(m.ca)
        issued = _mint(m, chain, serial_pos.get(m.ca, {}), now, DEAD_OCSP_URL if m.kind == "ocsp-down" and url else url,
                       days, holder_keys)
        if isinstance(issued, str):
            out.not_minted[m.file] = issued
            if m.identity is not None and m.identity.kind in (ir.IdentityKind.FINGERPRINT, ir.IdentityKind.SERIAL,
                                                              ir.IdentityKind.SHA256, ir.IdentityKind.SPKI):
                out.unsatisfiable.append(m.identity.name)
            continue
        if m.kind == "revoked":
            out.revoked.setdefault(m.ca, []).append(issued.cert.serial_number)
        if m.kind in _OCSP_ANSWER and url:
            out.ocsp_status.append((chain.signer.cert, issued.cert.serial_number, _OCSP_ANSWER[m.kind]))
        _write_issued(clients_dir / m.file, issued, chain.sent_with_leaves)
        out.issued[m.file] = issued
    for m in (m for m in members if m.kind == "lookalike"):
        by, of = chains.get(m.ca), chains.get(m.imitates)
        signer = next((c for c in (*by.members, *by.below) if c.key is not None), None) \
            if isinstance(by, CaChain) else None
        if not isinstance(of, CaChain):
            out.not_minted[m.file] = str(of)
        elif signer is None:
            out.not_minted[m.file] = f"its sub-CA is signed by ca {m.ca}: {no_key(m.ca) if isinstance(by, CaChain) else by}"
        else:
            _write_lookalike(clients_dir / m.file, signer, of, _x509_name(m.subject), now, days)
    outsider = make_root("mtlsc untrusted root", now=now)
    for m in (m for m in members if m.ca is None):
        _write_issued(clients_dir / m.file, issue_client(outsider, _x509_name(m.subject), now=now, days=days))
    return out


def _lab_chain(ca: ir.Ca, subjects: Mapping[int, x509.Name], now: datetime, aia: str | None,
               base_dir: Path | None, written: dict[Path, Issued]) -> CaChain:
    """One certificate per `bundle` file (root first), written there. A file another CA wrote
    keeps its certificate: two `ca` blocks naming the same files share one CA, as they do in
    production."""
    chain: list[Issued] = []
    for i, path in enumerate(ca.bundle):
        target = _resolve(path, base_dir)
        if target not in written:
            written[target] = (make_intermediate(chain[-1], f"{ca.name} intermediate {i}", now=now,
                                                 subject=subjects.get(i), ocsp_url=aia) if chain
                               else make_root(f"{ca.name} root", now=now, subject=subjects.get(0)))
            write_pem(target, written[target].cert)
        chain.append(written[target])
    if not chain:  # no bundle file (the policy's error, for the checks): a root for its clients
        chain.append(make_root(f"{ca.name} root", now=now, subject=subjects.get(0)))
    return CaChain(chain[0], tuple(chain[1:]))


def _write_crls(policy: ir.Policy, chains: Mapping[str, CaChain], user_cas: Mapping[str, UserCa],
                revoked: Mapping[str, list[int]], base_dir: Path | None, now: datetime, crl_valid: timedelta) -> None:
    """CRL i of a minted CA is signed by its certificate i and lists the CA's revoked client when
    that certificate issued it; a user's CA gets only the CRLs it has a key for signed again, its
    entries kept. A CA with fewer CRL files than certificates keeps that gap (the checks report
    it); CAs naming the same CRL file get one file listing the revoked clients of both."""
    plan: dict[Path, tuple[Issued, list[int], tuple]] = {}
    for ca in policy.cas:
        chain, user = chains[ca.name], user_cas.get(ca.name)
        for i, path in enumerate(ca.crls):
            if user is not None:
                if i not in user.resign:
                    continue
                issuer, keep = user.resign[i]
            elif i < len(chain.members):
                issuer, keep = chain.members[i], ()
            else:
                continue
            entry = plan.setdefault(_resolve(path, base_dir), (issuer, [], keep))
            if entry[0] is chain.signer:
                entry[1].extend(revoked.get(ca.name, ()))
    for target, (issuer, serials, keep) in plan.items():
        write_pem(target, make_crl(issuer, serials, now=now, next_update=crl_valid, keep=keep))


def build_lab_pki(policy: ir.Policy, out_dir: Path, *, now: datetime, base_dir: Path | None = None,
                  crl_valid: timedelta = timedelta(days=30), ocsp_url: str | None = None,
                  user_cas: Mapping[str, UserCa] | None = None,
                  holder_keys: Mapping[str, object] | None = None) -> LabPki:
    """Make a PKI shaped like `policy` and write it (layout: see `LabPki`).

    Each CA gets a chain with one certificate per `bundle` file (root first), written to those
    paths, and CRL i (signed by CA certificate i) at `crls[i]`; CAs naming the same files share
    their certificates. Relative policy paths are taken from `base_dir` (default: the current
    directory). CRLs are current for `crl_valid` (the committed demo PKI uses years, so the
    examples keep compiling).

    A CA in `user_cas` is the user's own: nothing is written over its files, its clients are
    issued with the keys it has (`not_minted` says which could not be), and only the CRLs in its
    `resign` are written, at the policy's paths for them (the lab points those into its workdir).

    For a CA with `ocsp`, the intermediates and the client certificates name `ocsp_url` as their
    OCSP responder (AIA), except `<ca>/ocsp-down`, which names `DEAD_OCSP_URL`; `ocsp_status`
    says which certificates the responder must call revoked (`<ca>/revoked`) or not answer for
    (`<ca>/ocsp-down`, for a policy whose `responder` sends every question to the lab's).
    `holder_keys[identity]`: the key an SPKI identity pins, when the lab holds it (`mint_cast`).
    """
    out_dir = Path(out_dir)
    user_cas = user_cas or {}
    members = cast(policy)
    chains: dict[str, CaChain] = {}
    serial_pos: dict[str, dict[str, int]] = {}
    urls = {ca.name: ocsp_url for ca in policy.cas if ca.ocsp and ocsp_url}
    written: dict[Path, Issued] = {}
    leaf_gaps: dict[str, str] = {}
    for ca in policy.cas:
        if ca.name in user_cas:
            chains[ca.name] = user_cas[ca.name].chain
            continue
        if ca.leaf:
            chains[ca.name], gaps = mint_leaf_ca(ca, members, [_resolve(p, base_dir) for p in ca.bundle],
                                                 out_dir / "clients", now=now)
            leaf_gaps.update(gaps)
            continue
        subjects, serial_pos[ca.name] = _serial_issuers(ca, members)
        chains[ca.name] = _lab_chain(ca, subjects, now, urls.get(ca.name), base_dir, written)
    gaps = {name: u.cast_gap for name, u in user_cas.items() if u.cast_gap}
    leaf_cas = {ca.name for ca in policy.cas if ca.leaf and ca.name not in user_cas}  # minted above
    minted = mint_cast([m for m in members if m.ca not in leaf_cas or m.kind == "lookalike"], chains,
                       out_dir / "clients", now=now, aia=urls, serial_pos=serial_pos, gaps=gaps,
                       days=USER_CAST_DAYS if user_cas else 365, holder_keys=holder_keys)
    minted.not_minted.update(leaf_gaps)
    for ca in (c for c in policy.cas if c.leaf and c.name in user_cas):
        for f in mint_user_leaf_near_misses(ca, members, chains[ca.name].root.cert, out_dir / "clients", now=now,
                                            days=USER_CAST_DAYS):
            minted.not_minted.pop(f, None)
    _write_crls(policy, chains, user_cas, minted.revoked, base_dir, now, crl_valid)
    from mtlsc.lab.server_pki import write_server_pki  # it imports this module

    servers = write_server_pki(policy, out_dir, now=now, ocsp_url=ocsp_url)
    return LabPki(out_dir, chains, out_dir / "clients", out_dir / "server-ca.pem",
                  tuple(sorted(set(minted.unsatisfiable))), tuple(minted.ocsp_status), urls, minted.not_minted,
                  {slug: issuing for slug, (_, issuing) in servers.items()})


# Certificates the lab issues with a user's CA key are real credentials of that CA: they live a
# day, long enough for a lab run, and the lab's workdir is deleted afterwards unless kept.
USER_CAST_DAYS = 1
