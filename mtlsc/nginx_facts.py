"""nginx knowledge as data: the `$ssl_client_*` variables, forwardable fields, version gates.

The formats below were measured on nginx 1.22.1 (docs/nginx-facts.md §1, §7, §E2), whose
sections name the real-nginx tests that prove them (tests/test_dn_nginx.py, the differential test).
The texts are written for backend teams: they reach variables.md as they are.
"""

from __future__ import annotations

from dataclasses import dataclass


ENC = ("the values in certificate order, comma-separated, each percent-encoded: every byte but "
       "`A-Z a-z 0-9 - . _ ~ : / @` as `%XX` (uppercase hex), so a `,` inside a value arrives as `%2C`")


@dataclass(frozen=True, slots=True)
class Variable:
    name: str  # without the `$`
    holds: str  # what nginx puts in it
    empty_when: str
    backend_should: str
    since: tuple[int, int, int]


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        Variable(
            "ssl_client_verify",
            "`SUCCESS`, `NONE` (no certificate sent) or `FAILED:<reason>` (reason since 1.11.7). "
            "With mtlsc's config a `FAILED` value never reaches the backend: nginx refuses such a certificate before any route runs.",
            "never empty on a TLS connection",
            "Treat only the exact string `SUCCESS` as authenticated; never test for `!= NONE` or for a "
            "non-empty subject.",
            (1, 0, 0),
        ),
        Variable(
            "ssl_client_s_dn",
            "the subject DN in RFC 2253 form: most specific RDN first, `,` between RDNs without spaces, "
            "`+` inside multi-valued RDNs; `, + \" \\ < > ;` escaped with `\\`, a leading `#` or space and a "
            "trailing space escaped, every non-ASCII UTF-8 byte as `\\XX` (uppercase hex), so it is pure "
            "ASCII; `=` inside a value is not escaped",
            "no certificate was sent",
            "Parse it as RFC 2253 (respect `\\` escapes) or compare it whole; never split on `,` or match "
            "it with an unanchored regex: `CN=mallory\\,O=Acme` contains `O=Acme` as text.",
            (1, 11, 6),
        ),
        Variable(
            "ssl_client_i_dn",
            "the issuer DN of the client certificate, same format as `$ssl_client_s_dn`",
            "no certificate was sent",
            "Use it for display and logging. It names the immediate issuer only; any CA in the server's "
            "trust file could mint an issuer with the same DN, so do not authorise on it alone.",
            (1, 11, 6),
        ),
        Variable(
            "ssl_client_fingerprint",
            "SHA-1 of the DER certificate: 40 lowercase hex digits, no separators",
            "no certificate was sent",
            "Use it as a stable key for one certificate (it changes on every renewal). SHA-1 only in "
            "nginx: pin with it, do not use it for anything collision-sensitive.",
            (1, 7, 1),
        ),
        Variable(
            "ssl_client_serial",
            "the serial number as uppercase hex of its bytes, even length, leading zero kept: `0A00000001`",
            "no certificate was sent",
            "Unique only together with the issuer: compare serial and issuer, never serial alone.",
            (1, 0, 0),
        ),
        Variable(
            "ssl_client_escaped_cert",
            "the URL-encoded PEM of the client certificate: `-----BEGIN%20CERTIFICATE-----%0AMIIB...`",
            "no certificate was sent",
            "URL-decode, then parse as PEM if the backend needs more fields (SANs, extensions). The chain "
            "was already verified by nginx; do not re-verify against a different trust store.",
            (1, 13, 5),
        ),
        Variable(
            "ssl_client_v_start",
            "notBefore as `Nov 24 01:55:42 2036 GMT` (day padded with a space: `Jan  1`)",
            "no certificate was sent",
            "Informational.",
            (1, 11, 7),
        ),
        Variable(
            "ssl_client_v_end",
            "notAfter as `Nov 24 01:55:42 2036 GMT`",
            "no certificate was sent",
            "Use it to warn clients about renewal; nginx already refused expired certificates.",
            (1, 11, 7),
        ),
        Variable(
            "ssl_client_v_remain",
            "whole days left until notAfter, rounded down",
            "no certificate was sent",
            "Use it to warn clients about renewal.",
            (1, 11, 7),
        ),
        Variable(
            "ssl_client_raw_cert",
            "the PEM of the client certificate; mtlsc's njs module reads its subjectAltNames and SHA-256 from it",
            "no certificate was sent",
            "Not forwarded as such: forward `cert` if the backend needs the certificate.",
            (1, 13, 5),
        ),
        # Computed in njs from $ssl_client_raw_cert (mtlsc/emit/san.js.j2): per server `$<prefix><name>`.
        Variable("san_uri", "the URI subjectAltNames: " + ENC, "no certificate was sent, or it has no URI SAN, or "
                 "mtlsc could not read its SANs", "Split on `,` first, then percent-decode each value; "
                 "authorise on `spiffe_id` or on mtlsc's gate rather than on any one of several URIs.", (1, 22, 0)),
        Variable("san_dns", "the DNS subjectAltNames, as written in the certificate (any case): " + ENC,
                 "no certificate was sent, or it has no DNS SAN", "Split on `,`, percent-decode, compare "
                 "ASCII case-insensitively; a value may itself start with `*.` (a wildcard certificate).", (1, 22, 0)),
        Variable("san_email", "the e-mail (rfc822Name) subjectAltNames: " + ENC, "no certificate was sent, or it has "
                 "no e-mail SAN", "Split on `,`, percent-decode (`@` arrives as is).", (1, 22, 0)),
        Variable("san_ip", "the IP subjectAltNames, IPv4 dotted, IPv6 in RFC 5952 form (`2001:db8::1`), "
                 "comma-separated", "no certificate was sent, or it has no IP SAN", "Split on `,`.", (1, 22, 0)),
        Variable("spiffe_id", "the certificate's SPIFFE ID: its only URI SAN, when that is a valid SPIFFE ID "
                 "(`spiffe://trust-domain/path`, which needs no encoding)", "no certificate, none or several URI "
                 "SANs, or the one URI is not a valid SPIFFE ID", "Use it as the workload's identity; never "
                 "fall back to a URI of `san_uri` when it is empty.", (1, 22, 0)),
        Variable("sha256", "SHA-256 of the DER certificate: 64 lowercase hex digits", "no certificate was sent",
                 "Use it as a stable, collision-resistant key for one certificate (it changes on renewal).",
                 (1, 22, 0)),
        Variable("spki", "SHA-256 of the certificate's DER SubjectPublicKeyInfo (its public key): 64 lowercase "
                 "hex digits, as `openssl pkey -pubin -outform DER | openssl dgst -sha256` prints it",
                 "no certificate was sent", "Use it as the key's identity: it stays the same when the certificate "
                 "is renewed with the same key, and changes with the key.", (1, 22, 0)),
    )
}


@dataclass(frozen=True, slots=True)
class ForwardField:
    name: str  # the word in `forward ...`
    variable: str  # the nginx variable it carries; for an njs field, the suffix of the server's js_set variable
    default_header: str
    njs: bool = False  # computed in njs from $ssl_client_raw_cert (mtlsc/emit/san.js.j2)


FORWARD_FIELDS: dict[str, ForwardField] = {
    f.name: f
    for f in (
        ForwardField("verify", "ssl_client_verify", "X-Client-Verify"),
        ForwardField("subject", "ssl_client_s_dn", "X-Client-Subject"),
        ForwardField("issuer", "ssl_client_i_dn", "X-Client-Issuer"),
        ForwardField("fingerprint", "ssl_client_fingerprint", "X-Client-Fingerprint"),
        ForwardField("serial", "ssl_client_serial", "X-Client-Serial"),
        ForwardField("cert", "ssl_client_escaped_cert", "X-Client-Cert"),
        ForwardField("not_before", "ssl_client_v_start", "X-Client-Not-Before"),
        ForwardField("not_after", "ssl_client_v_end", "X-Client-Not-After"),
        ForwardField("days_remaining", "ssl_client_v_remain", "X-Client-Days-Remaining"),
        # subjectAltNames, each value percent-encoded, comma-separated (the generated variables.md)
        ForwardField("san_uri", "san_uri", "X-Client-San-Uri", njs=True),
        ForwardField("san_dns", "san_dns", "X-Client-San-Dns", njs=True),
        ForwardField("san_email", "san_email", "X-Client-San-Email", njs=True),
        ForwardField("san_ip", "san_ip", "X-Client-San-Ip", njs=True),
        ForwardField("spiffe_id", "spiffe_id", "X-Client-Spiffe-Id", njs=True),
        ForwardField("fingerprint_sha256", "sha256", "X-Client-Fingerprint-Sha256", njs=True),
        ForwardField("spki_sha256", "spki", "X-Client-Spki-Sha256", njs=True),
    )
}

# The oldest nginx the emitted config runs on: `ssl_reject_handshake` (1.19.4) closes the
# no-SNI default-server hole, and nothing else mtlsc emits is newer.
MIN_NGINX = (1, 19, 4)

# Directives / variables newer than some targets users might name.
FEATURE_SINCE = {
    "ssl_reject_handshake": (1, 19, 4),
    "ssl_ocsp": (1, 19, 0),
}

# CVE-2025-23419, fixed in 1.26.3 and 1.27.4 (distributions backport it: Debian 1.22.1-9+deb12u*):
# a session made with one server of an address can be resumed under another server's name,
# skipping that server's client-certificate check (docs/nginx-facts.md §F8).
def resumption_cve_possible(target: tuple[int, int, int]) -> bool:
    """Whether the policy's target range (`nginx ">= X"`) includes builds without the fix."""
    return target < (1, 26, 3) or (1, 27, 0) <= target < (1, 27, 4)


def client_auth(server) -> tuple:
    """What a server checks of client certificates, for comparing servers that share an address."""
    return server.handshake_require, tuple(sorted(c.name for c in server.cas))


def cross_resumption_servers(policy) -> set[str]:
    """Slugs of servers sharing a listen address with a server that checks clients differently:
    where CVE-2025-23419 would let a session of one skip the other's check."""
    by_address: dict[str, list] = {}
    for server in policy.servers:
        for listen in server.listens:
            by_address.setdefault(str(listen), []).append(server)
    return {s.slug for group in by_address.values() for s in group
            if len({client_auth(t) for t in group}) > 1}


# nginx's internal statuses when a certificate fails before any location runs, which
# `error_page` can answer (docs/nginx-facts.md §1, §E1).
STATUS_BAD_CERT = 495
STATUS_NO_CERT = 496


# ---- header names ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReservedHeaders:
    why: str  # completes "`Name` ...": what the header does and what a certificate field there breaks
    names: tuple[str, ...]


# Names `forward ... as` and `clear_headers` refuse (MTLS032): each means something to nginx, to
# HTTP or to the backend's framework, so a certificate field there breaks the request instead of
# describing the client (docs/language.md, "Identity headers").
RESERVED_HEADERS: tuple[ReservedHeaders, ...] = (
    # Hop-by-hop (RFC 9110 §7.6.1): they govern one connection; nginx consumes and rewrites them.
    ReservedHeaders(
        "is a hop-by-hop header: it governs the connection between nginx and the backend, and a value "
        "set there breaks or takes over that connection",
        ("Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
         "Proxy-Authenticate", "Proxy-Authorization"),
    ),
    # Framing and body: nginx sends the real body beside a set value (docs/nginx-facts.md §F4).
    ReservedHeaders(
        "frames the request body: a forged value smuggles requests toward the backend",
        ("Content-Length", "Content-Type", "Content-Encoding", "Content-Range", "Expect"),
    ),
    # Routing: backends and frameworks pick the virtual host, client address, scheme, path or
    # method from these; mtlsc itself sets Host, X-Forwarded-For and X-Forwarded-Proto.
    ReservedHeaders(
        "routes the request: the backend reads the host, client address, scheme, path or method from it, "
        "so a value set there sends the request somewhere else",
        ("Host", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port",
         "X-Forwarded-Prefix", "X-Real-IP", "X-Original-URL", "X-Original-URI", "X-Rewrite-URL",
         "X-HTTP-Method-Override", "X-Method-Override"),
    ),
    # Credentials: the backend would take a certificate field for the client's password or session.
    ReservedHeaders(
        "carries credentials: the backend would read a certificate field as the client's password, "
        "token or session, and the client's own value would be lost",
        ("Authorization", "Cookie", "Set-Cookie", "Proxy-Authorization"),
    ),
)


def reserved_header(name: str) -> str | None:
    """Why `name` may not carry a certificate field (a clause after the name), or None."""
    key = name.lower()
    return next((g.why for g in RESERVED_HEADERS if key in {n.lower() for n in g.names}), None)


# Client-certificate and identity headers other proxies and products set. Every proxied location of
# every server compiled together clears them (when it does not set them), so a backend that once sat
# behind one of these products cannot be handed a client's own value (issue: ingress-nginx #8299).
_WELL_KNOWN_GROUPS: tuple[tuple[str, ...], ...] = (
    # Envoy, Istio
    ("X-Forwarded-Client-Cert",),
    # RFC 9440 (Client-Cert HTTP header field)
    ("Client-Cert", "Client-Cert-Chain"),
    # Traefik (passTLSClientCert)
    ("X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info"),
    # ingress-nginx (auth-tls-pass-certificate-to-upstream and the verify/DN headers)
    ("ssl-client-cert", "ssl-client-verify", "ssl-client-subject-dn", "ssl-client-issuer-dn"),
    # Common nginx, HAProxy and Apache recipes
    ("X-SSL-Client-Cert", "X-SSL-Client-Verify", "X-SSL-Client-DN", "X-SSL-Client-S-DN", "X-SSL-Client-I-DN",
     "X-SSL-Client-Subject", "X-SSL-Client-Issuer", "X-SSL-Client-Serial", "X-SSL-Client-Fingerprint",
     "X-SSL-Client-SHA1", "X-SSL-Client-CN", "X-SSL-Issuer", "X-SSL-Subject", "SSL-Client-Cert", "X-Client-Cert",
     "X-Client-DN", "X-Client-CN", "X-Client-Subject", "X-Client-Issuer", "X-Client-Verify", "X-Client-Serial",
     "X-Client-Fingerprint"),
    # Azure App Service / Application Request Routing
    ("X-ARR-ClientCert",),
    # AWS Application Load Balancer (mTLS passthrough and verify modes)
    ("X-Amzn-Mtls-Clientcert", "X-Amzn-Mtls-Clientcert-Serial-Number", "X-Amzn-Mtls-Clientcert-Issuer",
     "X-Amzn-Mtls-Clientcert-Subject", "X-Amzn-Mtls-Clientcert-Validity", "X-Amzn-Mtls-Clientcert-Leaf"),
    # Kubernetes API server front proxy (requestheader), oauth2-proxy
    ("X-Remote-User", "X-Remote-Group", "X-Forwarded-User", "X-Forwarded-Email", "X-Auth-Request-User",
     "X-Auth-Request-Email"),
    # Google Cloud load balancer mTLS custom headers
    ("X-Client-Cert-Present", "X-Client-Cert-Chain-Verified", "X-Client-Cert-Error", "X-Client-Cert-Hash",
     "X-Client-Cert-Serial-Number", "X-Client-Cert-SPIFFE", "X-Client-Cert-URI-SANs", "X-Client-Cert-DNSName-SANs"),
)


def _unique(names) -> tuple[str, ...]:
    """First spelling of each name, compared case-insensitively, in order."""
    seen: dict[str, str] = {}
    for n in names:
        seen.setdefault(n.lower(), n)
    return tuple(seen.values())


WELL_KNOWN_IDENTITY_HEADERS: tuple[str, ...] = _unique(n for group in _WELL_KNOWN_GROUPS for n in group)
