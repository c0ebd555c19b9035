"""The lab's side of a `leaf` CA: the cast members it "issues" are self-signed client certificates,
and the lab lists them in the CA's leaf files (which it writes, like a bundle's). Near misses that
nginx must refuse are minted beside them and not listed: an expired copy and a twin with the
`client` leaf's subject and serial but another key (docs/language.md "Trusted leaf certificates")."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from mtlsc import dn, ir
from mtlsc.lab.certs import CaChain, Issued, issue_client, write_pem
from mtlsc.model.cast import Member

LISTED_KINDS = ("stranger", "identity", "near")


def _name(subject: str) -> x509.Name:
    return dn.x509_name(dn.parse_dn(subject)) if subject else x509.Name([])


def _write(clients_dir: Path, m: Member, issued: Issued) -> None:
    base = clients_dir / m.file
    write_pem(base.with_name(base.name + ".crt"), issued.cert)
    write_pem(base.with_name(base.name + ".key"), issued.key)


def mint_leaf_ca(ca: ir.Ca, members: list[Member], files: list[Path], clients_dir: Path, *, now: datetime,
                 days: int = 365) -> tuple[CaChain, dict[str, str]]:
    """Mint `ca`'s members, write the listed ones into `files` (the policy's `leaf` paths, one
    certificate or more each, every file at least one), and return a chain whose root is the first
    listed leaf (a look-alike copies its name) and the members not minted, with why."""
    listed: list[Issued] = []
    not_minted: dict[str, str] = {}
    client: Issued | None = None
    for m in (m for m in members if m.ca == ca.name and m.kind in LISTED_KINDS):
        if not m.mintable:
            not_minted[m.file] = "pinned by fingerprint: only that one certificate matches; supply it yourself"
            continue
        issued = issue_client(None, _name(m.subject), now=now, days=days, sans=m.sans)
        _write(clients_dir, m, issued)
        listed.append(issued)
        client = issued if m.kind == "stranger" else client
    while len(listed) < len(files):  # a file the cast has no member for still holds a leaf
        listed.append(issue_client(None, _name(f"CN=mtlsc-leaf-{len(listed)},O=mtlsc lab"), now=now, days=days))
    for m in (m for m in members if m.ca == ca.name):
        if m.kind == "twin" and client is not None:
            _write(clients_dir, m, issue_client(None, client.cert.subject, now=now, days=days,
                                                serial=client.cert.serial_number))
        elif m.kind == "expired":
            _write(clients_dir, m, issue_client(None, _name(m.subject), now=now, not_before=now - timedelta(days=30),
                                                days=1))
    for i, path in enumerate(files):
        write_pem(path, *(c.cert for c in listed[i::len(files)]))
    return CaChain(listed[0]), not_minted


def mint_user_leaf_near_misses(ca: ir.Ca, members: list[Member], first: x509.Certificate, clients_dir: Path, *,
                               now: datetime, days: int) -> set[str]:
    """For a `leaf` CA kept as the user's own files: the near misses no holder's key is needed
    for, a twin of the first listed leaf (its subject and serial, another key) and an expired copy
    of it. Returns the member files written."""
    written = set()
    for m in (m for m in members if m.ca == ca.name):
        if m.kind == "twin":
            issued = issue_client(None, first.subject, now=now, days=days, serial=first.serial_number)
        elif m.kind == "expired":
            issued = issue_client(None, first.subject, now=now, not_before=now - timedelta(days=30), days=1)
        else:
            continue
        _write(clients_dir, m, issued)
        written.add(m.file)
    return written
