"""The cast of test clients: which certificates a policy's tests need, and what each one is.

One definition shared by the emitted test script (which expects these files) and the lab PKI
generator (which mints them), so the two can never disagree about a file name or a subject.
Layout under the clients directory: `<ca>/<member>.crt` + `.key`, and `untrusted/client.*`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlsc import dn, ir
from mtlsc.evaluate import Client, identity_matches

STRANGER_SUBJECT = "CN=mtlsc-stranger,O=mtlsc lab"
UNTRUSTED_DIR = "untrusted"


@dataclass(frozen=True, slots=True)
class Member:
    file: str  # path under the clients directory, without .crt/.key
    kind: str  # identity | stranger | revoked | expired | untrusted
    ca: str | None  # the CA that issues it (None: a CA no server trusts)
    subject: str  # nginx form; for a fingerprint identity, unknown until the user supplies it
    identity: ir.Identity | None = None

    @property
    def mintable(self) -> bool:
        """False for fingerprint pins: only the user's own certificate has that fingerprint."""
        return self.identity is None or self.identity.kind is not ir.IdentityKind.FINGERPRINT

    def client(self, verified_by: str | None) -> Client:
        """How nginx sees this certificate, for the evaluator."""
        ident = self.identity
        if ident is not None and ident.kind is ir.IdentityKind.FINGERPRINT:
            return Client(self.subject, "", fingerprint=ident.fingerprint, verified_by=verified_by)
        if ident is not None and ident.kind is ir.IdentityKind.SERIAL:
            return Client(self.subject, ident.issuer, serial=ident.serial, verified_by=verified_by)
        return Client(self.subject, "", verified_by=verified_by)


def identity_subject(identity: ir.Identity) -> str:
    """A subject that satisfies the identity (SUBJECT and ATTRS kinds)."""
    if identity.kind is ir.IdentityKind.SUBJECT:
        return identity.subject
    if identity.kind is ir.IdentityKind.ATTRS:
        rdns, seen = [], set()
        for a in identity.attrs:
            if a.attr in seen:
                continue
            seen.add(a.attr)
            value = a.value if a.op == "eq" else dn.example_value(a.value)
            rdns.append(((a.attr, value),))
        return dn.format_dn(tuple(rdns))
    return f"CN=mtlsc-{identity.kind.value}-{identity.name},O=mtlsc lab"


def stranger_subject(policy: ir.Policy) -> str:
    """A subject no identity of the policy matches (the disallowed client)."""
    idents = policy.identities
    for n in range(100):
        subject = STRANGER_SUBJECT if n == 0 else f"CN=mtlsc-stranger-{n},O=mtlsc lab"
        client = Client(subject, "")
        if not any(identity_matches(i, client) for i in idents if i.kind in (ir.IdentityKind.SUBJECT, ir.IdentityKind.ATTRS)):
            return subject
    raise ValueError("every stranger subject matches some identity")  # patterns matching everything: caught by checks


def cast(policy: ir.Policy) -> list[Member]:
    """Every certificate the tests of `policy` use, in a stable order."""
    members: list[Member] = []
    stranger = stranger_subject(policy)
    allowed: dict[str, dict[str, ir.Identity]] = {}
    for server in policy.servers:
        for r in server.routes:
            if r.ca is not None:
                allowed.setdefault(r.ca.name, {}).update({i.name: i for i in r.allow})
    for ca in policy.cas:
        if ca.name not in allowed:
            continue
        members.append(Member(f"{ca.name}/client", "stranger", ca.name, stranger))
        members.append(Member(f"{ca.name}/expired", "expired", ca.name, stranger))
        if ca.crls:
            members.append(Member(f"{ca.name}/revoked", "revoked", ca.name, stranger))
        for name in sorted(allowed[ca.name]):
            ident = allowed[ca.name][name]
            members.append(Member(f"{ca.name}/id-{name}", "identity", ca.name, identity_subject(ident), ident))
    first_subject = next((i.subject for i in policy.identities if i.kind is ir.IdentityKind.SUBJECT), None)
    members.append(Member(f"{UNTRUSTED_DIR}/client", "untrusted", None, first_subject or "CN=mtlsc-untrusted,O=mtlsc lab"))
    return members
