"""The cast of test clients: which certificates a policy's tests need, and what each one is.

One definition shared by the emitted test script (which expects these files) and the lab PKI
generator (which mints them), so the two can never disagree about a file name or a subject.
Layout under the clients directory: `<ca>/<member>.crt` + `.key`, and `untrusted/client.*`.

Near misses (`<ca>/near-<identity>-<n>`) are the counter-examples a DN gate gets wrong when it
compares strings naively: an extra RDN, a `,` smuggled into a value as `\\,` (docs/nginx-facts.md §7), an
attribute set that satisfies every constraint but one, a named attribute held twice (in its own
RDN first or last, or the good RDN made multi-valued: `CN=mallory+CN=globex-a`). Each is kept only
if no identity allowed on that CA matches it, so the evaluator refuses it on every allow-list route.

An SPKI identity (a public-key pin) gets its holder's certificate (`id-<identity>`), that
certificate renewed with the same key (`renewed-<identity>`, allowed as well) and a certificate with
the same subject and another key (`near-<identity>-1`, refused). Only the key's holder can make the
first two: the lab pins a key of its own in its copy of the policy (mtlsc.lab.run).

For a `leaf` CA every member it "issues" (stranger, identities, near misses) is a self-signed leaf
the lab lists in the CA's files; its `expired` one and its `twin` (the `client` leaf's subject and
serial, another key) are self-signed and not listed, so nginx refuses them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mtlsc import dn, ir
from mtlsc.model import san_cast
from mtlsc.model.evaluate import AllowIndex, Client, allow_index, identity_matches
from mtlsc.san import Sans

STRANGER_SUBJECT = "CN=mtlsc-stranger,O=mtlsc lab"
# Identities only their holder's certificate (or key) satisfies: a CA key alone cannot mint it.
PINNED_KINDS = (ir.IdentityKind.FINGERPRINT, ir.IdentityKind.SHA256, ir.IdentityKind.SPKI)
# Identities tested per allow list: a longer list is sampled (first, last and evenly between), so
# tests.sh and the lab PKI stay proportional to the policy, not to routes x identities.
IDENTITY_SAMPLE = 8
UNTRUSTED_DIR = "untrusted"


@dataclass(frozen=True, slots=True)
class Member:
    file: str  # path under the clients directory, without .crt/.key
    kind: str  # identity | renewed | near | stranger | revoked | ocsp-down | expired | untrusted | lookalike | twin
    ca: str | None  # the CA that issues it (None: a CA no server trusts)
    subject: str  # nginx form; for a fingerprint identity, unknown until the user supplies it
    identity: ir.Identity | None = None  # for `near`: the identity it imitates
    imitates: str | None = None  # for `lookalike`: the CA whose issuing CA's name its sub-CA copies
    sans: Sans = Sans()  # its subjectAltNames (SAN identities and their near misses)
    note: str = ""  # for a SAN near miss: what it tries

    @property
    def holds_pinned_key(self) -> bool:
        """The certificate of an SPKI identity's key holder, or its renewal."""
        return self.identity is not None and self.identity.kind is ir.IdentityKind.SPKI and self.kind != "near"

    @property
    def mintable(self) -> bool:
        """False for fingerprint pins: only the user's own certificate has that fingerprint (or key)."""
        return self.identity is None or (self.identity.kind not in PINNED_KINDS or self.kind == "near")

    @property
    def shown(self) -> str:
        """How a test case names it: the subject, or for a SAN near miss what it tries."""
        return self.note or self.subject

    def client(self, verified_by: str | None) -> Client:
        """How nginx sees this certificate, for the evaluator."""
        seen = self._client(verified_by)
        return dataclasses.replace(seen, expired=True) if self.kind == "expired" else seen

    def _client(self, verified_by: str | None) -> Client:
        ident = self.identity
        if ident is not None and ident.kind is ir.IdentityKind.FINGERPRINT:
            return Client(self.subject, "", fingerprint=ident.fingerprint, verified_by=verified_by)
        if ident is not None and ident.kind is ir.IdentityKind.SHA256 and self.kind == "identity":
            return Client(self.subject, "", sha256=ident.fingerprint, verified_by=verified_by)
        if self.holds_pinned_key:
            return Client(self.subject, "", spki=ident.fingerprint, verified_by=verified_by)
        if self.sans.names:
            return Client(self.subject, "", verified_by=verified_by, sans=self.sans)
        if ident is not None and ident.kind is ir.IdentityKind.SERIAL:
            return Client(self.subject, ident.issuer, serial=ident.serial, verified_by=verified_by)
        return Client(self.subject, "", verified_by=verified_by, foreign_issuer=self.kind == "lookalike")


def identity_subject(identity: ir.Identity) -> str:
    """A subject that satisfies the identity (SUBJECT and ATTRS kinds)."""
    if identity.kind is ir.IdentityKind.SAN:
        return san_cast.identity_subject(identity.san)
    if identity.kind is ir.IdentityKind.SUBJECT:
        return identity.subject
    if identity.kind is ir.IdentityKind.ATTRS:
        groups: dict[str, list[ir.AttrMatch]] = {}
        for a in identity.attrs:
            groups.setdefault(a.attr, []).append(a)
        return dn.format_dn(tuple(((attr, _value_for(attr, group)),) for attr, group in groups.items()))
    return f"CN=mtlsc-{identity.kind.value}-{identity.name},O=mtlsc lab"


def _value_for(attr: str, group: list[ir.AttrMatch]) -> str:
    """A value of `attr` satisfying every constraint on it (its one occurrence must), chosen among
    each constraint's own value (an `eq` value, a pattern's example); else the first of those."""
    tried = [a.value if a.op == "eq" else dn.example_value(a.value) for a in group]
    if len(tried) == 1:
        return tried[0]
    constraints = [dn.AttrConstraint(attr, a.op, a.value) for a in group]
    return next((v for v in tried if dn.matches_constraints(dn.format_dn((((attr, v),),)), constraints)), tried[0])


NEAR_VALUES = ("mtlsc-near", "ZZ", "0")  # wrong values to try, the short ones fit `C`


def _subject_candidates(identity: ir.Identity) -> list[list | None]:
    """One extra RDN first; the first RDN's value swallowing the second as `\\,` plus `O=Other`:
    `CN=acme-billing\\,O=Acme Corp,O=Other,C=US` (None when the first two RDNs are not simple)."""
    rdns = list(dn.parse_dn(identity.subject))
    extra = [(("OU", "x"),), *rdns]
    if len(rdns) < 2 or len(rdns[0]) != 1 or len(rdns[1]) != 1:
        return [extra, None]
    (a0, v0), (a1, v1) = rdns[0][0], rdns[1][0]
    return [extra, [((a0, f"{v0},{a1}={v1}"),), (("O", "Other"),), *rdns[2:]]]


def _attrs_candidates(identity: ir.Identity) -> list[list[list]]:
    """Per constrained attribute A, subjects satisfying every constraint but A's: A's value is
    wrong, and the good `A=value` is smuggled into an extra RDN (`OU=x\\,O=Globex Inc,...`) or not.
    Then per A the subjects holding A twice (`_repeat_candidates`)."""
    good = list(dn.parse_dn(identity_subject(identity)))
    groups = []
    for i, ((attr, value),) in enumerate(good):
        group = []
        for wrong in NEAR_VALUES:
            bad = [*good[:i], ((attr, wrong),), *good[i + 1:]]
            host = "OU" if attr != "OU" else "L"
            group += [[((host, f"x,{attr}={value}"),), *bad], bad]
        groups.append(group)
    for i, ((attr, value),) in enumerate(good):
        groups += _repeat_candidates(good, i, attr, value)
    return groups


REPEAT_VALUES = ("mtlsc-near", "ZZ", "0", "AA")  # C takes two letters


def _repeat_candidates(good: list, i: int, attr: str, value: str) -> list[list[list]]:
    """The good subject plus a second `attr`: a named attribute must occur exactly once
    (mtlsc.dn.match), since a backend reading the first (or last) one would see the other value.
    Four groups: a separate RDN first in the DN and last in it, and a multi-valued RDN
    (`CN=mallory+CN=globex-a`) that nginx prints with the intruder before and after the good
    AVA (nginx orders AVAs of an RDN by their DER, so each group tries values until one fits)."""
    first = [[((attr, w),), *good] for w in REPEAT_VALUES]
    last = [[*good, ((attr, w),)] for w in REPEAT_VALUES]
    # A longer value is printed first in an RDN (its DER sorts later), a shorter one last.
    intruders = (*REPEAT_VALUES, f"mtlsc-near-{value}")
    multi = [[*good[:i], ((attr, value), (attr, w)), *good[i + 1:]] for w in intruders if w != value]
    ahead = [c for c in multi if _printed_first(c[i], attr)]
    behind = [c for c in multi if not _printed_first(c[i], attr)]
    return [first, last, ahead, behind]


def _printed_first(rdn, attr: str) -> bool:
    """Whether nginx prints this two-AVA RDN with its second (intruding) AVA first."""
    try:
        return dn.parse_dn(dn.format_dn((rdn,)))[0][0] == (attr, rdn[1][1])
    except dn.DnError:
        return False


def _mintable(rdns) -> bool:
    try:
        dn.x509_name(rdns)  # cryptography's length rules: `C` two letters, `CN` at most 64
    except ValueError:
        return False
    return True


def sample_names(names: list[str], limit: int = IDENTITY_SAMPLE) -> list[str]:
    """`names` (sorted) when there are at most `limit`, else `limit` of them: the first, the last
    and evenly spaced ones between. Deterministic, so tests.sh and the lab PKI pick the same."""
    if len(names) <= limit:
        return list(names)
    step = (len(names) - 1) / (limit - 1)
    return [names[round(i * step)] for i in range(limit)]


def near_subjects(identity: ir.Identity, allowed: tuple[ir.Identity, ...] | AllowIndex) -> list[str]:
    """Subjects that look like `identity` but that no identity in `allowed` matches, deduplicated.
    One per candidate kind for a subject; for attribute matches one per constrained attribute with
    a wrong value, and four per constrained attribute holding it twice.
    `allowed` may be given indexed (`allow_index`), when many identities share one list."""
    if identity.kind is ir.IdentityKind.SUBJECT:
        groups = [[c] for c in _subject_candidates(identity)]
    elif identity.kind is ir.IdentityKind.ATTRS:
        groups = _attrs_candidates(identity)
    else:
        return []
    index = allowed if isinstance(allowed, AllowIndex) else allow_index(allowed)
    out: list[str] = []
    for group in groups:
        for rdns in (c for c in group if c is not None and _mintable(c)):
            subject = dn.format_dn(rdns)
            client = Client(subject, "")
            if index.matches(client) or subject in out:
                continue  # the policy really allows it: not a counter-example
            assert not identity_matches(identity, client), subject
            out.append(subject)
            break
    return out


def _san_near(ca: str, ident: ir.Identity, on_ca: AllowIndex) -> list[Member]:
    """The SAN near misses of `ident` that no identity allowed on `ca` matches."""
    out: list[Member] = []
    for what, subject, sans in san_cast.near_candidates(ident.san):
        if not _mintable_subject(subject) or any(sans == m.sans and subject == m.subject for m in out):
            continue
        if on_ca.matches(Client(subject, "", sans=sans)):
            continue  # the policy really allows it: not a counter-example
        out.append(Member(f"{ca}/near-{ident.name}-{len(out) + 1}", "near", ca, subject, ident, sans=sans, note=what))
    return out


def _key_companions(ca: str, ident: ir.Identity, on_ca: AllowIndex) -> list[Member]:
    """An SPKI pin's renewal (same key, another certificate: allowed) and its near miss (same
    subject, another key), kept only when no identity allowed on `ca` admits that subject anyway."""
    subject = identity_subject(ident)
    out = [Member(f"{ca}/renewed-{ident.name}", "renewed", ca, subject, ident)]
    if not on_ca.matches(Client(subject, "")):
        out.append(Member(f"{ca}/near-{ident.name}-1", "near", ca, subject, ident, note=f"{subject}, another key"))
    return out


def _mintable_subject(subject: str) -> bool:
    return subject == "" or _mintable(dn.parse_dn(subject))


def lookalike_verifies(server: ir.Server) -> bool:
    """Whether nginx verifies a look-alike's chain on `server` (when its sub-CA's signer may sign
    one): there must be room for the sub-CA in the verify depth, and no CRL or OCSP check, which
    would ask about the sub-CA (or its client) and find nothing."""
    return (max((c.depth for c in server.cas), default=0) >= 1
            and not any(c.crls or c.ocsp for c in server.cas))


def _lookalikes(policy: ir.Policy, members: list[Member], stranger: str) -> list[Member]:
    """Per pair of CAs sharing a server: a client of a sub-CA that ca `by` signed with the name of
    ca `of`'s issuing CA, holding a subject `of` allows (docs/language.md "Several CAs on one
    server"). Whether `by` may sign such a sub-CA depends on the CA files: if it may, only the key
    check refuses it; if not, nginx's own verification does. Either way no CA-bound route takes it."""
    subjects = {m.ca: m.subject for m in members if m.kind == "identity" and m.mintable}
    pairs: set[tuple[str, str]] = set()
    for server in policy.servers:
        if max((c.depth for c in server.cas), default=0) < 1:
            continue  # no room for the copy's sub-CA: nginx refuses it in the handshake
        bound = sorted({r.ca.name for r in server.routes if r.ca is not None})
        # a `leaf` CA signs no sub-CA (its leaves are CA:FALSE: nginx refuses the chain)
        pairs.update((of, by) for of in bound for by in (c.name for c in server.cas if not c.leaf) if by != of)
    return [Member(f"{of}/lookalike-by-{by}", "lookalike", by, subjects.get(of, stranger), imitates=of)
            for of, by in sorted(pairs)]


def stranger_subject(policy: ir.Policy) -> str:
    """A subject no identity of the policy matches (the disallowed client)."""
    idents = policy.identities
    # A pattern like `o ~ "^.*$"` matches every subject with an `O`: then try other attributes.
    shapes = ("CN=mtlsc-stranger{},O=mtlsc lab", "CN=mtlsc-stranger{}", "UID=mtlsc-stranger{}", "DC=mtlsc-stranger{}")
    for shape in shapes:
        for n in range(25):
            subject = shape.format(f"-{n}" if n else "")
            client = Client(subject, "")
            if not any(identity_matches(i, client) for i in idents if i.kind in (ir.IdentityKind.SUBJECT, ir.IdentityKind.ATTRS)):
                return subject
    raise ValueError("every stranger subject matches some identity")  # patterns matching everything: caught by checks


def cast(policy: ir.Policy) -> list[Member]:
    """Every certificate the tests of `policy` use, in a stable order."""
    members: list[Member] = []
    stranger = stranger_subject(policy)
    allowed: dict[str, dict[str, ir.Identity]] = {}
    sampled: dict[str, set[str]] = {}  # per CA: the identities some route's tests use
    lists: set[tuple[str, tuple[str, ...]]] = set()
    for server in policy.servers:
        for r in server.routes:
            if r.ca is not None:
                allowed.setdefault(r.ca.name, {}).update({i.name: i for i in r.allow})
                names = tuple(sorted(i.name for i in r.allow))
                if (r.ca.name, names) not in lists:
                    lists.add((r.ca.name, names))
                    sampled.setdefault(r.ca.name, set()).update(sample_names(list(names)))
    for ca in policy.cas:
        if ca.name not in allowed:
            continue
        members.append(Member(f"{ca.name}/client", "stranger", ca.name, stranger))
        members.append(Member(f"{ca.name}/expired", "expired", ca.name, stranger))
        if ca.leaf:
            # a self-signed copy of the listed `client` leaf: its subject and serial, another key
            members.append(Member(f"{ca.name}/twin", "twin", ca.name, stranger))
        if ca.crls or ca.ocsp:
            members.append(Member(f"{ca.name}/revoked", "revoked", ca.name, stranger))
        if ca.ocsp:  # its OCSP lookup gets no answer: refused like a revoked one
            members.append(Member(f"{ca.name}/ocsp-down", "ocsp-down", ca.name, stranger))
        for name in sorted(sampled[ca.name]):
            ident = allowed[ca.name][name]
            sans = san_cast.example_sans(ident.san) if ident.kind is ir.IdentityKind.SAN else Sans()
            members.append(Member(f"{ca.name}/id-{name}", "identity", ca.name, identity_subject(ident), ident, sans=sans))
        on_ca = allow_index(tuple(allowed[ca.name][n] for n in sorted(allowed[ca.name])))  # once per CA
        for name in sorted(sampled[ca.name]):
            ident = allowed[ca.name][name]
            for n, subject in enumerate(near_subjects(ident, on_ca), 1):
                members.append(Member(f"{ca.name}/near-{name}-{n}", "near", ca.name, subject, ident))
            if ident.kind is ir.IdentityKind.SAN:
                members += _san_near(ca.name, ident, on_ca)
            if ident.kind is ir.IdentityKind.SPKI:
                members += _key_companions(ca.name, ident, on_ca)
    members += _lookalikes(policy, members, stranger)
    first_subject = next((i.subject for i in policy.identities if i.kind is ir.IdentityKind.SUBJECT), None)
    members.append(Member(f"{UNTRUSTED_DIR}/client", "untrusted", None, first_subject or "CN=mtlsc-untrusted,O=mtlsc lab"))
    return members
