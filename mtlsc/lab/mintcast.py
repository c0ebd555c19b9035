"""`mtlsc mint-cast`: the client certificates the emitted tests.sh expects, issued by the user's
own CA with the keys the user hands over, so that tests.sh proves the policy on the user's nginx
with the user's PKI, nothing skipped.

What a key cannot make is said, with what to do instead: a fingerprint or serial pin names a
certificate only the user has; a look-alike's sub-CA is signed by the other CA, so it needs that
CA's key; `<ca>/revoked` is refused only once the user's CRL (or OCSP responder) says so, which
the user does with their own tools (mtlsc prints the serial and the commands).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from mtlsc import dn, ir, pipeline
from mtlsc.model.cast import cast
from mtlsc.lab.leaves import mint_user_leaf_near_misses
from mtlsc.lab.pki import CaChain, MintedCast, PINNED_BY_FINGERPRINT, PINNED_BY_KEY, mint_cast
from mtlsc.lab.userca import CaKey, UserCaError, load_user_ca
from mtlsc.render import render

DEFAULT_DAYS = 7  # the cast is a set of real credentials of the user's CA: short-lived


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")


def _chains(policy: ir.Policy, keys: Sequence[CaKey]) -> tuple[dict[str, CaChain | str], dict[str, object]]:
    """Each CA as the user's files have it (or why not), and the loaded CAs with keys."""
    known = {c.name for c in policy.cas}
    if unknown := sorted({k.ca for k in keys} - known):
        raise UserCaError(f"--ca-key {unknown[0]}=...: the policy has no ca `{unknown[0]}` "
                          f"(cas: {', '.join(sorted(known))})")
    chains: dict[str, CaChain | str] = {}
    users = {}
    for ca in policy.cas:
        try:
            users[ca.name] = load_user_ca(ca, list(keys))
            chains[ca.name] = users[ca.name].chain
        except UserCaError as exc:
            if any(k.ca == ca.name for k in keys):
                raise
            chains[ca.name] = str(exc)
    return chains, users


def _ocsp_urls(policy: ir.Policy, urls: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(ca -> the OCSP URL its clients carry, ca -> why its clients cannot be minted). Behind a
    `responder` nginx asks it about every certificate: the clients carry no URL."""
    aia, gaps = {}, {}
    for ca in (c for c in policy.cas if c.ocsp is not None and c.ocsp.responder is None):
        if ca.name in urls:
            aia[ca.name] = urls[ca.name]
        else:
            gaps[ca.name] = (f"ca {ca.name} checks OCSP at the URL each certificate names: pass "
                             f"--ocsp-url {ca.name}=URL (your responder's)")
    return aia, gaps


def _todo(policy: ir.Policy, users: dict, minted: MintedCast, out: Path) -> list[str]:
    """What the user must do before tests.sh can pass: revoke `<ca>/revoked`, teach a responder."""
    lines = []
    for ca in policy.cas:
        serials = minted.revoked.get(ca.name)
        if not serials:
            continue
        user = users[ca.name]
        signer = user.chain.signer
        hexes = ", ".join(dn.nginx_serial(s) for s in serials)
        crl = next((ca.crls[i] for i, (issuer, _) in user.resign.items() if issuer is signer), None)
        where = f"{out / ca.name / 'revoked.crt'} (serial {hexes}, issued by {dn.nginx_dn_of(signer.cert.subject)})"
        if ca.crls:
            target = crl or "the CRL of that issuer (none of the ca's `crl` files is)"
            lines.append(f"ca {ca.name}: revoke {where} and publish the CRL at {target}; with `openssl ca`: "
                         f"openssl ca -config CA.cnf -revoke {out / ca.name / 'revoked.crt'} && "
                         f"openssl ca -config CA.cnf -gencrl -out {target}; then compile and install again")
        if ca.ocsp is not None:
            lines.append(f"ca {ca.name}: your OCSP responder must answer `revoked` for serial {hexes} and `good` for "
                         f"the other certificates under {out / ca.name}")
        if ca.ocsp is not None and ca.ocsp.responder is not None:
            lines.append(f"ca {ca.name}: {ca.name}/ocsp-down is refused only if your responder gives no answer "
                         "for it; behind `responder` mtlsc cannot arrange that")
    return lines


def mint_cast_command(policies: list[str], keys: Sequence[CaKey], out: Path, *, days: int = DEFAULT_DAYS,
                      force: bool = False, ocsp_urls: dict[str, str] | None = None,
                      now: datetime | None = None) -> int:
    front = pipeline.read_and_lower(policies)
    if front.policy is None:
        sys.stderr.write(render(front.diagnostics, front.sources))
        return 2 if front.io_error else 1
    policy = front.policy
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        _say(f"error: {out} exists and is not empty; pass --force to write the cast into it")
        return 2
    try:
        chains, users = _chains(policy, keys)
    except UserCaError as exc:
        _say(f"error: {exc}")
        return 2
    aia, gaps = _ocsp_urls(policy, ocsp_urls or {})
    gaps.update({name: u.cast_gap for name, u in users.items() if u.cast_gap and name not in gaps})  # `leaf` CAs
    members = cast(policy)
    minted = mint_cast(members, chains, out, now=now or datetime.now(timezone.utc), aia=aia, days=days, gaps=gaps)
    for ca in (c for c in policy.cas if c.leaf and isinstance(chains.get(c.name), CaChain)):
        for f in mint_user_leaf_near_misses(ca, members, chains[ca.name].root.cert, out,
                                            now=now or datetime.now(timezone.utc), days=days):
            minted.not_minted.pop(f, None)
    written = sum(1 for m in members if m.file not in minted.not_minted)
    _say(f"mtlsc mint-cast: wrote {written} of {len(members)} client certificates to {out}, valid {days} day(s). "
         "They are real credentials of your CA: keep the directory private and delete it after the run.")
    required = {f: r for f, r in minted.not_minted.items() if r not in (PINNED_BY_FINGERPRINT, PINNED_BY_KEY)}
    if minted.not_minted:
        _say("not minted (tests.sh skips their cases; it fails on those not pinned by fingerprint unless --allow-skips):")
        for f, reason in sorted(minted.not_minted.items()):
            _say(f"  {f}: {reason}")
    todo = _todo(policy, users, minted, out)
    if todo:
        _say("before running tests.sh:")
        for line in todo:
            _say(f"  {line}")
    _say(f"then: bash DIR/tests.sh --certs {out}   (DIR: the output of `mtlsc compile`)")
    return 1 if required else 0
