"""The part of `mtlsc diff` the evaluator does not model: CA files, CRLs, OCSP, verify depth, and
which certificates a changed identity definition matches.

The evaluator treats a certificate as verified or not; whether a revoked certificate verifies, or
which roots a bundle holds, are facts of the CA files (`mtlsc.pki`). They are compared here by
content, never by file path: a `--git` revision is read from a temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlsc import dn, ir, san
from mtlsc.dn import examples as dn_examples
from mtlsc.review.change import NARROWING, NEUTRAL, WIDENING, Change, Side
from mtlsc.model.evaluate import Client, identity_matches
from mtlsc.pki import CaFacts, CertInfo, CrlInfo

# ----- CAs ------------------------------------------------------------------------------------


def used_cas(policy: ir.Policy) -> set[str]:
    """CAs some route names: a CA no route names reaches no trust file, so its changes are moot."""
    return {r.ca.name for s in policy.servers for r in s.routes if r.ca is not None}


def _facts(side: Side, name: str) -> CaFacts | None:
    return side[1].ca(name) if side[1] is not None else None


def _fingerprints(side: Side, name: str) -> frozenset[str]:
    facts = _facts(side, name)
    return frozenset(c.fingerprint for c in facts.certs) if facts else frozenset()


def ca_renames(old: Side, new: Side) -> dict[str, str]:
    """old name -> new name for CAs that only changed name (same certificates, by fingerprint)."""
    old_names = {c.name for c in old[0].cas} - {c.name for c in new[0].cas}
    new_names = {c.name for c in new[0].cas} - {c.name for c in old[0].cas}
    out = {}
    for o in sorted(old_names):
        prints = _fingerprints(old, o)
        match = [n for n in sorted(new_names) if prints and _fingerprints(new, n) == prints]
        if len(match) == 1:
            out[o] = match[0]
            new_names.discard(match[0])
    return out


def _short(fp: str) -> str:
    return fp[:16]


def _bundle_changes(name: str, old: CaFacts, new: CaFacts) -> list[Change]:
    before = {c.fingerprint: c for c in old.certs}
    after = {c.fingerprint: c for c in new.certs}
    gone = [c for f, c in before.items() if f not in after]
    added = [c for f, c in after.items() if f not in before]
    subjects = {c.subject.lower() for c in new.certs}
    out = []
    for cert in added:
        prior = next((c for c in gone if c.subject.lower() == cert.subject.lower()), None)
        if prior is not None:
            gone.remove(prior)
            out.append(_replaced(name, prior, cert))
        elif cert.self_signed:
            out.append(Change(WIDENING, None, None, f"ca {name}", f"CA `{name}` trusts a new root `{cert.subject}` "
                              f"(SHA-1 {_short(cert.fingerprint)}): every certificate it issues now passes "
                              "verification", None, cert.fingerprint))
        else:
            chained = cert.issuer.lower() in subjects
            out.append(Change(
                WIDENING if chained else NEUTRAL, None, None, f"ca {name}",
                f"CA `{name}` gains intermediate `{cert.subject}` (SHA-1 {_short(cert.fingerprint)}): "
                + ("clients it issued verify without sending it" if chained else
                   f"its issuer `{cert.issuer}` is not in the bundle, so it adds no trust"), None, cert.fingerprint))
    for cert in gone:
        what = "root" if cert.self_signed else "intermediate"
        out.append(Change(NARROWING, None, None, f"ca {name}",
                          f"CA `{name}` no longer trusts {what} `{cert.subject}` (SHA-1 {_short(cert.fingerprint)}): "
                          "clients whose chain runs through it are locked out", cert.fingerprint, None))
    return out


def _replaced(name: str, old: CertInfo, new: CertInfo) -> Change:
    what = "root" if new.self_signed else "intermediate"
    if old.ski and old.ski == new.ski:
        return Change(NEUTRAL, None, None, f"ca {name}", f"CA `{name}`: {what} `{new.subject}` re-issued with the "
                      f"same key (SHA-1 {_short(old.fingerprint)} -> {_short(new.fingerprint)}, not after "
                      f"{old.not_after:%Y-%m-%d} -> {new.not_after:%Y-%m-%d})", old.fingerprint, new.fingerprint)
    return Change(WIDENING, None, None, f"ca {name}", f"CA `{name}`: {what} `{new.subject}` replaced by a "
                  f"certificate with another key (SHA-1 {_short(old.fingerprint)} -> {_short(new.fingerprint)}): "
                  "certificates issued under the new key now verify, those under the old one no longer do",
                  old.fingerprint, new.fingerprint)


def _by_issuer(crls: tuple[CrlInfo, ...]) -> dict[str, CrlInfo]:
    return {c.issuer.lower(): c for c in crls}


def _crl_changes(name: str, old: ir.Ca, new: ir.Ca, of: CaFacts | None, nf: CaFacts | None) -> list[Change]:
    subject = f"ca {name}"
    if old.crls and not new.crls:
        return [Change(WIDENING, None, None, subject, f"CRL removed from CA `{name}` (revoked certificates would "
                       "now pass)", f"{len(old.crls)} CRL file(s)", "none")]
    if new.crls and not old.crls:
        return [Change(NARROWING, None, None, subject, f"CRL checking turned on for CA `{name}`: revoked "
                       "certificates are refused, and so is every client of a CA certificate without a CRL",
                       "none", f"{len(new.crls)} CRL file(s)")]
    if of is None or nf is None or not new.crls:
        return []
    before, after = _by_issuer(of.crls), _by_issuer(nf.crls)
    out = []
    for key in sorted(before.keys() | after.keys()):
        o, n = before.get(key), after.get(key)
        issuer = (n or o).issuer
        if n is None:
            out.append(Change(NARROWING, None, None, subject, f"CA `{name}` no longer has a CRL of `{issuer}`: nginx "
                              "refuses every certificate whose chain includes it (unable to get certificate CRL)"))
        elif o is None:
            out.append(Change(WIDENING, None, None, subject, f"CA `{name}` gains a CRL of `{issuer}`: clients of "
                              "that CA, locked out without it, now pass verification"))
        else:
            out += _revocations(subject, name, issuer, o, n)
    return out


def _serials(serials) -> str:
    shown = [dn.nginx_serial(s) for s in sorted(serials)[:3]]
    return ", ".join(shown) + (f" and {len(serials) - 3} more" if len(serials) > 3 else "")


def _revocations(subject: str, name: str, issuer: str, o: CrlInfo, n: CrlInfo) -> list[Change]:
    unrevoked = o.revoked_serials - n.revoked_serials
    revoked = n.revoked_serials - o.revoked_serials
    out = []
    if unrevoked:
        out.append(Change(WIDENING, None, None, subject, f"CA `{name}`: {len(unrevoked)} certificate(s) of "
                          f"`{issuer}` no longer revoked (serial {_serials(unrevoked)}): they pass again",
                          str(len(o.revoked_serials)), str(len(n.revoked_serials))))
    if revoked:
        out.append(Change(NARROWING, None, None, subject, f"CA `{name}`: {len(revoked)} more certificate(s) of "
                          f"`{issuer}` revoked (serial {_serials(revoked)})",
                          str(len(o.revoked_serials)), str(len(n.revoked_serials))))
    if not out and o.next_update != n.next_update:
        when = lambda d: f"{d:%Y-%m-%d %H:%M}" if d else "none"  # noqa: E731
        out.append(Change(NEUTRAL, None, None, subject, f"CA `{name}`: CRL of `{issuer}` re-issued with the same "
                          f"revocations (next update {when(o.next_update)} -> {when(n.next_update)})",
                          when(o.next_update), when(n.next_update)))
    return out


def _ocsp_word(o: ir.Ocsp | None) -> str:
    if o is None:
        return "off"
    return (f"{o.mode}" + (f" via {o.responder}" if o.responder else "")
            + (f", cache {o.cache}" if o.cache != ir.DEFAULT_OCSP_CACHE else ""))


def _ocsp_changes(name: str, old: ir.Ocsp | None, new: ir.Ocsp | None) -> list[Change]:
    subject, was, now = f"ca {name}", _ocsp_word(old), _ocsp_word(new)
    if old == new:
        return []
    if new is None:
        return [Change(WIDENING, None, None, subject, f"OCSP checking removed from CA `{name}` (revoked "
                       "certificates would now pass)", was, now)]
    if old is None:
        return [Change(NARROWING, None, None, subject, f"OCSP checking turned on for CA `{name}` ({now}): revoked "
                       "certificates are refused, and a failed OCSP lookup rejects the client", was, now)]
    if old.mode != new.mode:
        weaker = new.mode == "leaf"
        return [Change(WIDENING if weaker else NARROWING, None, None, subject,
                       f"OCSP of CA `{name}` {old.mode} -> {new.mode}: intermediates are "
                       + ("no longer checked" if weaker else "now checked too"), was, now)]
    if old.responder != new.responder:
        return [Change(NEUTRAL, None, None, subject, f"OCSP responder of CA `{name}` changed", was, now)]
    return [Change(NEUTRAL, None, None, subject, f"OCSP answer cache of CA `{name}`: {old.cache} -> {new.cache} "
                   "(how long a revocation can go unseen, and how many clients a responder outage refuses)", was, now)]


def ca_changes(old: Side, new: Side, renames: dict[str, str]) -> list[Change]:
    """Changes of the CAs some route of either version names, compared by content."""
    old_cas = {c.name: c for c in old[0].cas}
    new_cas = {c.name: c for c in new[0].cas}
    used = used_cas(old[0]) | used_cas(new[0])
    out = [Change(NEUTRAL, None, None, f"ca {o}", f"CA `{o}` renamed to `{n}` (same certificates)", o, n)
           for o, n in sorted(renames.items())]
    for o_name in sorted(old_cas):
        n_name = renames.get(o_name, o_name)
        if n_name not in new_cas or not ({o_name, n_name} & used):
            continue
        oc, nc = old_cas[o_name], new_cas[n_name]
        of, nf = _facts(old, o_name), _facts(new, n_name)
        if of is not None and nf is not None:
            out += _bundle_changes(n_name, of, nf)
        out += _crl_changes(n_name, oc, nc, of, nf)
        out += _ocsp_changes(n_name, oc.ocsp, nc.ocsp)
        out += _hidden_depth(new[0], oc, nc)
    return out


def _hidden_depth(policy: ir.Policy, old: ir.Ca, new: ir.Ca) -> list[Change]:
    """A CA depth change no server's ssl_verify_depth shows (another CA there allows more)."""
    if old.depth == new.depth:
        return []
    others = [max((c.depth for c in s.cas if c.name != new.name), default=-1)
              for s in policy.servers if new.name in {c.name for c in s.cas}]
    if not others or min(others) < max(old.depth, new.depth):
        return []  # some server's ssl_verify_depth changes: `depth_change` reports it there
    return [Change(NEUTRAL, None, None, f"ca {new.name}", f"CA `{new.name}`: depth {old.depth} -> {new.depth}, but "
                   f"no server's ssl_verify_depth changes (another CA on the same server allows {min(others)})",
                   str(old.depth), str(new.depth))]


# ----- verify depth ---------------------------------------------------------------------------

def _effective_depth(server: ir.Server) -> int | None:
    # One ssl_verify_depth per server: the largest depth of its CAs (as mtlsc.emit.nginx writes it).
    return max((c.depth for c in server.cas), default=None)


_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _intermediates(lo: int, hi: int) -> str:
    word = lambda n: _NUMBERS[n] if n < len(_NUMBERS) else str(n)  # noqa: E731
    count = word(lo) if lo == hi else f"{word(lo)} to {word(hi)}"
    return f"{count} intermediate{'s' if hi > 1 else ''}"


def depth_change(server: str, old_srv: ir.Server, new_srv: ir.Server) -> list[Change]:
    """A change of the server's ssl_verify_depth: what nginx enforces, whichever CA caused it."""
    o, n = _effective_depth(old_srv), _effective_depth(new_srv)
    if o is None or n is None or o == n:
        return []
    cas = ", ".join(c.name for c in new_srv.cas)
    head = f"verify depth {o} -> {n} (ssl_verify_depth, CA {cas})"
    if n < o:
        return [Change(NARROWING, server, None, "verify depth",
                       f"{head}: clients behind {_intermediates(n + 1, o)} are locked out", str(o), str(n))]
    return [Change(WIDENING, server, None, "verify depth",
                   f"{head}: certificates behind {_intermediates(o + 1, n)} now verify", str(o), str(n))]


_PATH_WORDS = (("case_sensitive", "backend_case_sensitive", "differ from a route only in letter case"),
               ("literal_semicolons", "backend_literal_semicolons", "hold a `;`"),
               ("strict_slashes", "backend_strict_slashes", "add a `/` to an exact route's path"))


def backend_tls_change(server: str, old_srv: ir.Server, new_srv: ir.Server) -> list[Change]:
    """How nginx checks an `https://` backend: turning verification off widens (anyone on that hop
    receives the identities); other changes (CA, name, nginx's certificate) are reported as neutral."""
    old, new = old_srv.backend_tls or ir.BackendTls(), new_srv.backend_tls or ir.BackendTls()
    if old == new:
        return []
    if old.verify != new.verify:
        kind, what = (WIDENING, "no longer verified") if old.verify else (NARROWING, "verified again")
        return [Change(kind, server, None, "backend_verify", f"the `https://` backend is {what}",
                       "on" if old.verify else "off", "on" if new.verify else "off")]
    return [Change(NEUTRAL, server, None, "backend TLS", "how nginx verifies the `https://` backend changed "
                   "(backend_ca, backend_name or backend_client_certificate)", None, None)]


def backend_paths_change(server: str, old_srv: ir.Server, new_srv: ir.Server) -> list[Change]:
    """A `backend_paths` word lets through paths mtlsc refuses by default (the evaluator does not
    model that refusal per word): adding one widens, removing one narrows."""
    return [Change(WIDENING, server, None, f"backend_paths {word}", f"`backend_paths {word}` added: paths that {what} "
                   "are no longer refused and reach the backend", "refused", "proxied") if getattr(new_srv, attr) else
            Change(NARROWING, server, None, f"backend_paths {word}", f"`backend_paths {word}` removed: paths that {what} "
                   "are refused (400) again", "proxied", "refused")
            for word, attr, what in _PATH_WORDS if getattr(old_srv, attr) != getattr(new_srv, attr)]


# ----- identities -----------------------------------------------------------------------------

# Characters that need no escaping in a DN: variants of the evaluator's own example values, so
# that a narrowed pattern (`[a-z0-9]` -> `[a-z]`) meets a sample it no longer matches.
_VARIANT_CHARS = "a0Z-._"
_MAX_SAMPLES = 64


def _value_samples(pattern: str) -> list[str]:
    base = [c for c in dn_examples.candidates(pattern) if "\\" not in c]
    out = list(base)
    for c in base[:4]:
        for i in range(len(c) + 1):
            out.append(c[:i] + c[i + 1:])
            out += [c[:i] + ch + c[i + 1:] for ch in _VARIANT_CHARS]
    return list(dict.fromkeys(v for v in out if v))


def identity_samples(ident: ir.Identity) -> list[Client]:
    """Certificates (as nginx sees them) that `ident` matches: its example first, then variants."""
    kind = ident.kind
    if kind is ir.IdentityKind.FINGERPRINT:
        return [Client(f"CN=mtlsc-fingerprint-{ident.name},O=mtlsc lab", "", fingerprint=ident.fingerprint)]
    if kind is ir.IdentityKind.SERIAL:
        return [Client(f"CN=mtlsc-serial-{ident.name},O=mtlsc lab", ident.issuer, serial=ident.serial)]
    if kind is ir.IdentityKind.SUBJECT:
        return [Client(ident.subject, "")]
    if kind is ir.IdentityKind.SHA256:
        return [Client(f"CN=mtlsc-sha256-{ident.name},O=mtlsc lab", "", sha256=ident.fingerprint)]
    if kind is ir.IdentityKind.SPKI:
        return [Client(f"CN=mtlsc-spki-{ident.name},O=mtlsc lab", "", spki=ident.fingerprint)]
    if kind is ir.IdentityKind.SAN:
        from mtlsc.model import san_cast
        return [Client(san_cast.identity_subject(ident.san), "", sans=san_cast.example_sans(ident.san))]
    values: dict[str, list[str]] = {}
    for a in ident.attrs:
        values.setdefault(a.attr, [a.value] if a.op == "eq" else _value_samples(a.value))
    width = max((len(v) for v in values.values()), default=0)
    subjects = []
    for k in range(min(width, _MAX_SAMPLES)):
        try:
            subjects.append(dn.format_dn(tuple(((attr, vs[k % len(vs)]),) for attr, vs in values.items() if vs)))
        except dn.DnError:
            continue
    clients = [Client(s, "") for s in dict.fromkeys(subjects)]
    return [c for c in clients if identity_matches(ident, c)]


def describe_identity(ident: ir.Identity) -> str:
    """The identity as the policy writes it."""
    if ident.kind is ir.IdentityKind.SUBJECT:
        return f'subject "{ident.subject}"'
    if ident.kind is ir.IdentityKind.FINGERPRINT:
        return f'fingerprint "{ident.fingerprint}"'
    if ident.kind is ir.IdentityKind.SERIAL:
        return f'serial "{ident.serial}" issuer "{ident.issuer}"'
    if ident.kind is ir.IdentityKind.SHA256:
        return f'fingerprint sha256 "{ident.fingerprint}"'
    if ident.kind is ir.IdentityKind.SPKI:
        return f'fingerprint spki "{ident.fingerprint}"'
    if ident.kind is ir.IdentityKind.SAN:
        return f'san {ident.san.kind} "{ident.san.value if ident.san.kind != "ip" else san.ip_text(ident.san.value)}"'
    return " ".join(f'{a.attr.lower()} {"~ " if a.op == "re" else ""}"{a.value}"' for a in ident.attrs)


def cert_word(c: Client) -> str:
    """A sample certificate in words: its subject, serial or fingerprint."""
    if c.fingerprint:
        return f"SHA-1 {_short(c.fingerprint)}"
    if c.sha256:
        return f"SHA-256 {_short(c.sha256)}"
    if c.spki:
        return f"public key SHA-256 {_short(c.spki)}"
    if c.sans.names:
        return ", ".join(f"{k.upper()} `{san.ip_text(v) if k == 'ip' else v}`" for k, v in c.sans.names)
    if c.serial:
        return f"serial {c.serial} of `{c.issuer}`"
    return f"`{c.subject}`"


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """An identity whose definition changed, with the sample certificates that tell the versions
    apart (they join the clients `mtlsc.review.diff_access` evaluates)."""

    name: str
    gained: tuple[Client, ...]  # matched by the new definition only
    lost: tuple[Client, ...]  # matched by the old definition only
    changes: tuple[Change, ...]


def _identity_change(old: ir.Identity, new: ir.Identity) -> IdentityChange:
    gained = tuple(c for c in identity_samples(new) if not identity_matches(old, c))
    lost = tuple(c for c in identity_samples(old) if not identity_matches(new, c))
    subject, was, now = f"identity {new.name}", describe_identity(old), describe_identity(new)
    head = f"identity `{new.name}` changed from `{was}` to `{now}`"
    out = []
    if gained:
        out.append(Change(WIDENING, None, None, subject, f"{head}: certificate {cert_word(gained[0])} now matches it "
                          "(and gets wherever it is allowed)", was, now))
    if lost:
        out.append(Change(NARROWING, None, None, subject,
                          f"{head}: certificate {cert_word(lost[0])} no longer matches it", was, now))
    same_name = old.kind is new.kind is ir.IdentityKind.SUBJECT and old.subject.lower() == new.subject.lower()
    if not out and same_name:
        out.append(Change(NEUTRAL, None, None, subject, f"{head}: only the case changed, and subjects compare "
                          "case-insensitively (as nginx's map keys do), so it matches the same certificates", was, now))
    elif not out:
        out.append(Change(NEUTRAL, None, None, subject, f"{head}: every sample certificate mtlsc tried matches both "
                          "versions, so the direction is unknown; review the definition", was, now))
    return IdentityChange(new.name, gained[:1], lost[:1], tuple(out))


def identity_changes(old: ir.Policy, new: ir.Policy) -> list[IdentityChange]:
    """Identities defined in both versions whose definition differs (renamed ones show in access)."""
    before = {i.name: i for i in old.identities}
    return [_identity_change(before[i.name], i) for i in new.identities
            if i.name in before and before[i.name] != i]
