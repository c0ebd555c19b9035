"""Every diagnostic code mtlsc can print, with a slug and a one-line summary, for tools (SARIF
rules) and for the docs meta-test. Check codes come from the registry (the check's function name
is its slug, its docstring its help); the rest are listed here once.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from mtlsc.diagnostics import Severity


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    slug: str
    summary: str
    help: str  # longer text: the check's docstring, or the summary again
    severity: Severity
    docs: str  # the docs page that describes it


# Codes that are not checks: syntax, names and values (0xx), file facts found while loading
# (30x), policy test files (4xx) and input/output (9xx).
_OTHER: dict[str, tuple[str, str, Severity]] = {
    "MTLS001": ("unexpected-character", "a character that cannot start any token here", Severity.ERROR),
    "MTLS002": ("unterminated-string", "a string with no closing quote on its line", Severity.ERROR),
    "MTLS003": ("unexpected-token", "a word where the grammar expects something else", Severity.ERROR),
    "MTLS004": ("unexpected-end-of-file", "the file ends inside a block", Severity.ERROR),
    "MTLS010": ("duplicate-name", "two `ca` or `identity` blocks with one name", Severity.ERROR),
    "MTLS011": ("missing-statement", "a required statement is absent", Severity.ERROR),
    "MTLS012": ("invalid-value", "a value outside its domain", Severity.ERROR),
    "MTLS013": ("stated-twice", "a statement that may appear once appears twice", Severity.ERROR),
    "MTLS014": ("invalid-identity", "an identity that can never match what nginx shows", Severity.ERROR),
    "MTLS015": ("route-mode", "a route without exactly one of public / optional / require", Severity.ERROR),
    "MTLS016": ("not-with-this-mode", "a statement that the route's mode does not allow", Severity.ERROR),
    "MTLS017": ("unknown-field", "`forward` names an unknown certificate field", Severity.ERROR),
    "MTLS018": ("unknown-ca", "a route names an undefined CA", Severity.ERROR),
    "MTLS019": ("unknown-identity", "`allow` names an undefined identity", Severity.ERROR),
    "MTLS020": ("unsafe-string", "a string that cannot be placed in nginx config safely", Severity.ERROR),
    "MTLS021": ("unclean-path", "a route path that is not absolute and normalised", Severity.ERROR),
    "MTLS022": ("duplicate-route", "two routes with the same match and path on one server", Severity.ERROR),
    "MTLS023": ("conflicting-declarations", "two declarations of one server or target disagree", Severity.ERROR),
    "MTLS024": ("invalid-host-name", "a server name that is not a DNS name", Severity.ERROR),
    "MTLS025": ("same-identity-twice", "two identities match exactly the same certificates", Severity.ERROR),
    "MTLS026": ("leaf-ca-statement", "a `ca` with `leaf` and a statement only a CA bundle takes (`bundle`, `depth`, "
                "`crl`, `ocsp`)", Severity.ERROR),
    "MTLS030": ("needs-njs", "a feature stock nginx lacks (SAN identities, SHA-256 pins) without `with njs` on the target",
                Severity.ERROR),
    "MTLS031": ("nginx-too-old", "the target nginx predates what mtlsc needs", Severity.ERROR),
    "MTLS032": ("reserved-header-name", "a header name HTTP, nginx or mtlsc already gives a meaning", Severity.ERROR),
    "MTLS035": ("name-cryptography-refuses", "a certificate nginx reads whose name strings mtlsc's X.509 library refuses", Severity.ERROR),
    "MTLS036": ("reserved-route-path", "a route path under `/.mtlsc/`, where mtlsc keeps its internal locations", Severity.ERROR),
    "MTLS037": ("refused-nginx-directive", "an `nginx { }` directive that could undo a gate, or one mtlsc does not know",
                Severity.ERROR),
    "MTLS038": ("unreadable-nginx-block", "an `nginx { }` block nginx would not read as simple directives",
                Severity.ERROR),
    "MTLS040": ("hsts-preload-requirements", "`hsts ... preload` without what the HSTS preload list requires", Severity.ERROR),
    "MTLS050": ("cannot-read-nginx-config", "the nginx config mtlsc's files join cannot be read", Severity.ERROR),
    "MTLS051": ("nginx-hash-too-small", "your nginx config's hash bucket size is too small for mtlsc's names",
                Severity.ERROR),
    "MTLS052": ("nginx-hash-smaller", "your nginx config sets a hash size below what mtlsc needs", Severity.WARNING),
    "MTLS053": ("default-server-verifies", "your default server on mtlsc's address verifies client certificates",
                Severity.ERROR),
    "MTLS054": ("default-server-underscores", "your default server on mtlsc's address reads `_` in header names",
                Severity.ERROR),
    "MTLS055": ("default-server-kept", "your default server on mtlsc's address stands in for mtlsc's", Severity.NOTE),
    "MTLS301": ("bundle-without-certificate", "a CA bundle gives nginx no certificate", Severity.ERROR),
    "MTLS302": ("crl-file-without-crl", "a CRL file gives nginx no CRL", Severity.ERROR),
    "MTLS303": ("private-key-in-file", "a private key inside a CA or CRL file", Severity.WARNING),
    "MTLS304": ("damaged-pem-block", "a truncated or undecodable PEM block", Severity.ERROR),
    "MTLS305": ("block-of-the-wrong-kind", "a PEM block of the wrong kind, left out of the compiled file", Severity.WARNING),
    "MTLS401": ("cannot-read-tests", "a policy test file cannot be read", Severity.ERROR),
    "MTLS402": ("test-syntax", "a test file that is not valid YAML, or a key given twice", Severity.ERROR),
    "MTLS403": ("unknown-test-key", "a key the test format does not have", Severity.ERROR),
    "MTLS404": ("missing-test-key", "a required key of a test file or case is absent", Severity.ERROR),
    "MTLS405": ("invalid-test-value", "a test value outside its domain", Severity.ERROR),
    "MTLS406": ("unknown-test-server", "a test names a server the policy does not have", Severity.ERROR),
    "MTLS407": ("unknown-test-name", "a test client names an undefined identity or CA", Severity.ERROR),
    "MTLS408": ("unusable-client", "no certificate can be made or read for a test client", Severity.ERROR),
    "MTLS409": ("certificate-specific-header", "an exact value for a header of a minted certificate",
                Severity.ERROR),
    # `mtlsc audit` of a hand-written nginx configuration (5xx, docs/audit.md)
    "MTLS500": ("cannot-read-nginx-file", "a file of the audited nginx configuration cannot be read", Severity.ERROR),
    "MTLS501": ("not-understood", "a construct of the audited configuration mtlsc does not model", Severity.NOTE),
    "MTLS510": ("default-server-hole", "the default server of an address verifies clients unlike a server behind it",
                Severity.ERROR),
    "MTLS511": ("verify-on-locks-out", "`ssl_verify_client on` on a server with probe or public locations",
                Severity.ERROR),
    "MTLS512": ("unverified-certificate-reaches", "`optional_no_ca`: an unverified certificate reaches a proxied location",
                Severity.ERROR),
    "MTLS513": ("optional-unchecked", "`optional`: a proxied location never checks `$ssl_client_verify`",
                Severity.WARNING),
    "MTLS514": ("identity-header-dropped", "a proxied location does not set or clear an identity header",
                Severity.ERROR),
    "MTLS515": ("underscores-in-headers", "`underscores_in_headers on` where identity headers are forwarded",
                Severity.ERROR),
    "MTLS520": ("dn-regex-unanchored", "a DN regex that matches inside another attribute's value", Severity.ERROR),
    "MTLS521": ("dn-regex-comma-unsafe", "a DN regex that an escaped `\\,` in a value satisfies", Severity.ERROR),
    "MTLS522": ("dn-case-or-form", "a DN test assuming a letter case or a form nginx does not print",
                Severity.WARNING),
    "MTLS523": ("if-misuse", "an `if` that never fires, or does more than refuse", Severity.WARNING),
    "MTLS530": ("regex-location-takes-over", "a regex location takes requests away from a gated prefix location",
                Severity.ERROR),
    "MTLS531": ("raw-target-forwarded", "an open location forwards the raw target to a gated location's backend",
                Severity.WARNING),
    "MTLS540": ("public-ca-trusted", "a public CA or a system store verifies client certificates", Severity.ERROR),
    "MTLS541": ("trusted-certificate-verifies-clients", "`ssl_trusted_certificate` widens the client trust set",
                Severity.WARNING),
    "MTLS542": ("crl-missing-for-ca", "`ssl_crl` has no CRL for a CA certificate of the chain", Severity.ERROR),
    "MTLS543": ("crl-out-of-date", "a CRL past its nextUpdate, or not yet valid", Severity.ERROR),
    "MTLS544": ("verify-depth-too-small", "`ssl_verify_depth` below what the CA file's chains need", Severity.ERROR),
    "MTLS545": ("trust-file-not-read", "a CA or CRL file the configuration names could not be read here",
                Severity.NOTE),
    "MTLS546": ("no-revocation", "a server verifies clients with neither `ssl_crl` nor `ssl_ocsp`", Severity.WARNING),
    "MTLS547": ("tls13-off", "`ssl_protocols` (or nginx 1.22's default) leaves TLS 1.3 off", Severity.WARNING),
    "MTLS548": ("session-outlives-revocation", "a shared session cache or fixed ticket key resumes revoked clients",
                Severity.WARNING),
    "MTLS549": ("plain-listener-verifies", "client verification on a server that also listens without TLS",
                Severity.ERROR),
    "MTLS900": ("cannot-read-policy", "a policy file cannot be read", Severity.ERROR),
    "MTLS901": ("cannot-read-file", "a CA or CRL file the policy names cannot be read", Severity.ERROR),
    "MTLS902": ("cannot-write-output", "the output directory cannot be written", Severity.ERROR),
}


def rules() -> dict[str, Rule]:
    """Every code, check or not, sorted by code."""
    from mtlsc.checks import CHECKS

    out = {code: Rule(code, slug, summary, summary, sev, "docs/audit.md" if code.startswith("MTLS5") else "docs/diagnostics.md")
           for code, (slug, summary, sev) in _OTHER.items()}
    for check in CHECKS:
        doc = inspect.getdoc(check.find) or ""
        first = doc.split("\n\n", 1)[0].replace("\n", " ")
        summary = first.removeprefix("What it catches:").strip()
        out[check.code] = Rule(check.code, check.find.__name__.replace("_", "-"), summary, doc, check.severity,
                               "docs/checks.md")
    return dict(sorted(out.items()))


def severity_of(code: str) -> Severity:
    """The severity a code not from the check registry is reported with."""
    return _OTHER[code][2]
