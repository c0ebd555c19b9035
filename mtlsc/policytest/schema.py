"""Policy tests, the shared pieces of the YAML schema: diagnostic codes, reading nodes with
their positions, and the `client:` of a case (who connects, and with which certificate).

`mtlsc.policytest` reads whole test files with these; docs/language.md, "Policy tests", is the
format's reference.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from mtlsc import dn, files, ir
from mtlsc.model import cast
from mtlsc.diagnostics import Diagnostic, error
from mtlsc.pki import load_pki
from mtlsc.source import Source, Span

CANNOT_READ, SYNTAX, UNKNOWN_KEY, MISSING_KEY, INVALID = "MTLS401", "MTLS402", "MTLS403", "MTLS404", "MTLS405"
UNKNOWN_SERVER, UNKNOWN_NAME, UNUSABLE_CLIENT, CERT_SPECIFIC = "MTLS406", "MTLS407", "MTLS408", "MTLS409"

UNTRUSTED = "untrusted"  # `ca: untrusted`: a CA no server of the policy trusts
NO_CLIENT = "none"  # `client: none`: no certificate at all
REASONS = ("ok", "no_cert", "bad_cert", "forbidden", "no_route", "redirect", "bad_request", "bad_target")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Forwarded fields whose value belongs to one certificate: a certificate minted for a test has
# other values in every run (and in the model), so a test may only ask whether they are present.
VARYING_FIELDS = frozenset({"fingerprint", "serial", "issuer", "cert", "not_before", "not_after", "days_remaining"})
TOKEN = re.compile(r"[!#$%&'*+.^`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)


@dataclass(frozen=True, slots=True)
class CertFile:
    """A real client certificate named by `cert:`/`key:`, read when the tests are loaded."""

    cert: str  # paths, resolved against the test file's directory
    key: str
    subject: str  # as nginx prints $ssl_client_s_dn
    issuer: str
    serial: str  # as nginx prints $ssl_client_serial
    fingerprint: str
    issued_by: str | None  # the policy CA whose bundle signed it (None: none of them)
    issuer_index: int  # position of the signing certificate in that CA's bundle
    valid: bool  # in date, within the CA's depth and not revoked by its CRL, at load time
    subject_name: x509.Name  # the lab re-issues the certificate under this exact name
    serial_number: int
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """Who connects. `kind`: none | identity | subject | stranger (`{ca: X}`: any certificate of X
    that no identity matches) | file."""

    kind: str
    label: str  # how reports name the client
    ca: str | None = None  # the issuing CA: a policy CA name or UNTRUSTED
    identity: str | None = None
    subject: str | None = None  # nginx form
    expired: bool = False
    revoked: bool = False
    file: CertFile | None = None


# ---- YAML nodes -> checked values ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ctx:
    """What reading one test file needs; `out` collects its diagnostics."""

    source: Source
    policy: ir.Policy
    now: datetime
    out: list[Diagnostic]
    cache: dict  # the policy's Pki, read once when a certificate file needs it

    def span(self, node: yaml.Node) -> Span:
        s, e = node.start_mark, node.end_mark
        return Span(self.source.path, s.line + 1, s.column + 1, e.line + 1, e.column + 1)

    def error(self, code: str, node: yaml.Node, message: str, help: str = "") -> None:
        self.out.append(error(code, self.span(node), message, help))


def did_you_mean(word: str, choices) -> str:
    """`did you mean `x`?` for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


def mapping(ctx: Ctx, node: yaml.Node, what: str, keys: tuple[str, ...],
            required: tuple[str, ...] = ()) -> dict[str, yaml.Node] | None:
    """The entries of a mapping node, after reporting unknown, repeated and missing keys."""
    if not isinstance(node, yaml.MappingNode):
        ctx.error(INVALID, node, f"{what} must be a mapping (`key: value` lines)")
        return None
    found: dict[str, yaml.Node] = {}
    for k, v in node.value:
        name = k.value if isinstance(k, yaml.ScalarNode) else "?"
        if name not in keys:
            ctx.error(UNKNOWN_KEY, k, f"unknown key `{name}` in {what}",
                      did_you_mean(name, keys) or f"known keys: {', '.join(keys)}")
        elif name in found:
            ctx.error(SYNTAX, k, f"`{name}` appears twice in {what}", "keep one")
        else:
            found[name] = v
    for name in required:
        if name not in found:
            ctx.error(MISSING_KEY, node, f"{what} has no `{name}`", f"add `{name}:`")
    return found


def text(ctx: Ctx, node: yaml.Node, what: str) -> str | None:
    """A scalar as the text written (numbers too: a serial `1234` stays `1234`); None if not one."""
    if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null":
        return node.value
    ctx.error(INVALID, node, f"{what} must be a single value")
    return None


def is_bool(node: yaml.Node, value: bool) -> bool:
    """Whether the node is the YAML boolean `value` (`true`/`yes`/`on` or their opposites)."""
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool" \
        and node.value.lower() in (("true", "yes", "on") if value else ("false", "no", "off"))


def find_server(policy: ir.Policy, name: str) -> ir.Server | None:
    """The server whose names include `name` (case-insensitive; `*.x` covers `a.x` and `a.b.x`,
    as in nginx's server_name)."""
    name = name.lower()
    for server in policy.servers:
        for n in (n.lower() for n in server.names):
            if n == name or (n.startswith("*.") and name.endswith(n[1:]) and len(name) >= len(n)):
                return server
    return None


# ---- clients ---------------------------------------------------------------------------------

CLIENT_KEYS = ("identity", "subject", "ca", "cert", "key", "expired", "revoked")


def _flag(ctx: Ctx, found: dict[str, yaml.Node], key: str) -> bool:
    node = found.get(key)
    if node is None or is_bool(node, False):
        return False
    if not is_bool(node, True):
        ctx.error(INVALID, node, f"`{key}` is `true` or `false`")
    return is_bool(node, True)


def _name(ctx: Ctx, node: yaml.Node, kind: str, known: list[str]) -> str | None:
    name = text(ctx, node, f"`{kind}`")
    if name is not None and name not in known:
        ctx.error(UNKNOWN_NAME, node, f"the policy has no {kind} `{name}`",
                  did_you_mean(name, known) or f"{kind} names: {', '.join(known)}")
        return None
    return name


def _default_ca(policy: ir.Policy, server: ir.Server, route: ir.Route | None, identity: str | None) -> str | None:
    """The CA that issues a test certificate when the case names none: for an identity, the one CA
    of the server whose routes allow it (its real issuer); else the route's CA; else the server's
    only CA."""
    allowing = {r.ca.name for r in server.routes if r.ca and any(i.name == identity for i in r.allow)}
    if len(allowing) == 1:
        return allowing.pop()
    if route is not None and route.ca is not None:
        return route.ca.name
    return server.cas[0].name if len(server.cas) == 1 else None


def _subject(ctx: Ctx, node: yaml.Node, written: str) -> str | None:
    """The nginx form of a subject mtlsc can mint, or None (reported). "" is the empty subject of a
    SPIFFE SVID (a SAN identity's certificate)."""
    if written == "":
        return ""
    try:
        return dn.nginx_dn_of(dn.x509_name(dn.parse_dn(written)))
    except (dn.DnError, ValueError) as exc:
        ctx.error(UNUSABLE_CLIENT, node, f"no certificate can carry the subject `{written}`: {exc.args[0]}",
                  "write the DN as nginx prints it (docs/language.md, `identity`)")
        return None


def client_spec(ctx: Ctx, node: yaml.Node, server: ir.Server, route: ir.Route | None) -> ClientSpec | None:
    """Read `client:`: `none`, an identity name, or a mapping (CLIENT_KEYS)."""
    policy = ctx.policy
    if isinstance(node, yaml.ScalarNode) and node.value == NO_CLIENT:
        return ClientSpec("none", "no certificate")
    found = {"identity": node} if isinstance(node, yaml.ScalarNode) else mapping(ctx, node, "`client`", CLIENT_KEYS)
    if found is None:
        return None
    kinds = [k for k in ("identity", "subject", "cert") if k in found]
    expired, revoked = _flag(ctx, found, "expired"), _flag(ctx, found, "revoked")
    if len(kinds) > 1 or ("cert" in found and {"ca", "expired", "revoked"} & found.keys()):
        ctx.error(INVALID, node, "a client is one of: an identity, a subject, a CA alone, or a certificate file",
                  "split this into separate cases")
        return None
    if "cert" in found or "key" in found:
        return _file_client(ctx, node, found)
    if not kinds and "ca" not in found:
        ctx.error(MISSING_KEY, node, "`client` names no identity, subject, CA or certificate file",
                  "write e.g. `client: acme`, `client: none` or `client: {ca: NAME}`")
        return None
    identity = _name(ctx, found["identity"], "identity", [i.name for i in policy.identities]) \
        if "identity" in found else None
    cas = [c.name for c in policy.cas] + ([] if UNTRUSTED in [c.name for c in policy.cas] else [UNTRUSTED])
    ca = _name(ctx, found["ca"], "ca", cas) if "ca" in found else _default_ca(policy, server, route, identity)
    if ("identity" in found and identity is None) or ("ca" in found and ca is None):
        return None
    if ca is None:
        ctx.error(UNUSABLE_CLIENT, node, "cannot tell which CA issues this client's certificate for this path",
                  "add `ca:` to the client")
        return None
    if revoked and (kinds or not any(c.name == ca and (c.crls or c.ocsp) for c in policy.cas)):
        ctx.error(INVALID, found["revoked"], "`revoked` needs a CA with a CRL or OCSP and no identity or subject: "
                  "the lab revokes one certificate per CA", "write `client: {ca: NAME, revoked: true}`")
        return None
    try:
        if identity is not None:
            written, where = cast.identity_subject(next(i for i in policy.identities if i.name == identity)), node
        elif "subject" in found:
            written, where = text(ctx, found["subject"], "`subject`"), found["subject"]
        else:
            written, where = cast.stranger_subject(policy), node
    except (dn.DnError, ValueError) as exc:
        ctx.error(UNUSABLE_CLIENT, node, f"mtlsc cannot make a certificate for this client: {exc.args[0]}")
        return None
    subject = _subject(ctx, where, written) if written is not None else None
    if subject is None:
        return None
    kind = "identity" if identity else "subject" if "subject" in found else "stranger"
    what = identity if identity else f"`{subject}`" if kind == "subject" else "a certificate"
    state = "expired " if expired else "revoked " if revoked else ""
    origin = " from an untrusted CA" if ca == UNTRUSTED else f" from {ca}" if "ca" in found or kind != "identity" else ""
    return ClientSpec(kind, f"{state}{what}{origin}", ca, identity, subject, expired, revoked)


def _file_client(ctx: Ctx, node: yaml.Node, found: dict[str, yaml.Node]) -> ClientSpec | None:
    """A real certificate and key; what nginx would make of the certificate is worked out now."""
    if "cert" not in found or "key" not in found:
        ctx.error(MISSING_KEY, node, "a certificate file client needs both `cert` and `key`", "add the missing one")
        return None
    base = Path(ctx.source.path).parent
    paths = [text(ctx, found[k], f"`{k}`") for k in ("cert", "key")]
    if None in paths:
        return None
    cert_path, key_path = (str(base / p) for p in paths)
    try:
        cert = x509.load_pem_x509_certificate(files.read_bytes(cert_path))
    except (OSError, ValueError) as exc:
        ctx.error(UNUSABLE_CLIENT, found["cert"], f"cannot read a PEM certificate from `{cert_path}`: {exc}")
        return None
    try:
        key = serialization.load_pem_private_key(files.read_bytes(key_path), password=None)
    except (OSError, ValueError, TypeError) as exc:
        ctx.error(UNUSABLE_CLIENT, found["key"], f"cannot read an unencrypted PEM key from `{key_path}`: {exc}")
        return None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        ctx.error(UNUSABLE_CLIENT, found["key"], f"`{key_path}` is not the key of `{cert_path}`")
        return None
    start, end = (getattr(cert, f"{n}_utc", None) or getattr(cert, n).replace(tzinfo=timezone.utc)
                  for n in ("not_valid_before", "not_valid_after"))
    try:  # names cryptography refuses to decode (cryptography 51: a T61String `é`) are not usable here
        subject_dn, issuer_dn, _ = dn.nginx_dn_of(cert.subject), dn.nginx_dn_of(cert.issuer), cert.subject
    except (ValueError, KeyError) as exc:
        ctx.error(UNUSABLE_CLIENT, found["cert"], f"cannot read the names of `{cert_path}`: {exc}",
                  "re-issue the certificate with UTF8String names")
        return None
    issued_by, index, valid = _verify(ctx, cert, start <= ctx.now <= end)
    info = CertFile(cert_path, key_path, subject_dn, issuer_dn,
                    dn.nginx_serial(cert.serial_number), cert.fingerprint(hashes.SHA1()).hex(), issued_by, index,
                    valid, cert.subject, cert.serial_number, start, end)
    return ClientSpec("file", f"`{paths[0]}`", file=info)


def _verify(ctx: Ctx, cert: x509.Certificate, in_date: bool) -> tuple[str | None, int, bool]:
    """(CA, position in its bundle, valid): which policy CA signed `cert`, and whether nginx would
    accept it: in date, within the CA's depth, not on its CRL. An approximation of OpenSSL's chain
    building that holds for the bundles mtlsc accepts (root first, then each intermediate)."""
    if "pki" not in ctx.cache:
        ctx.cache["pki"] = load_pki(ctx.policy)[0]
    pki = ctx.cache["pki"]
    issuer = dn.nginx_dn_of(cert.issuer).lower()
    for ca in ctx.policy.cas:
        facts = pki.ca(ca.name)
        for i, info in enumerate(facts.certs if facts else ()):
            if ca.leaf:  # only the listed certificate itself: nginx verifies it, the fingerprint gate admits it
                if info.fingerprint == cert.fingerprint(hashes.SHA1()).hex():
                    return ca.name, i, in_date
                continue
            try:
                if info.subject.lower() != issuer:
                    continue
                cert.verify_directly_issued_by(x509.load_pem_x509_certificate(info.pem.encode()))
            except (ValueError, TypeError, InvalidSignature):
                continue
            revoked = any(c.issuer.lower() == issuer and cert.serial_number in c.revoked_serials for c in facts.crls)
            return ca.name, i, in_date and not revoked and i <= ca.depth
    return None, 0, in_date
