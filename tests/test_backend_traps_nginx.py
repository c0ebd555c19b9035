"""Issue #10 on real nginx with real backend frameworks (Flask/Werkzeug, Express 4) behind it.

Every bypass of issue #10 sent as a hostile client sends it (raw targets, raw headers) to a
compiled policy whose backend is a real framework with one handler per route (tests/backends/).
Semantics of each expectation: docs/language.md (request targets, route coverage, what the
backend receives, identity headers). The property throughout: without a certificate no gated
handler runs, and when a handler runs it is the handler of the route nginx judged, receiving
the normalised path nginx routed on.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from mtlsc import dn, ir
from mtlsc.model.evaluate import Client, evaluate
from mtlsc.lab.pki import issue_client, write_pem
from real_backends import (FRAMEWORKS, BackendUnavailable, route_spec, running_framework_lab, send,
                           without_and_with_cert)
from support import REPO, run_cli

pytestmark = pytest.mark.nginx

PARTNER_API = REPO / "policies" / "partner-api.mtls"

PUBLIC_CATCH_ALL = """
ca partners { bundle "ca/root.pem" }
server api.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route = /admin   { require partners  allow any }
  route /partner/  { require partners  allow any }
  route /          { public }
}
"""

SEGMENTS = """
ca corp { bundle "ca/root.pem" }
server static.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route /static { public }
  route /       { require corp  allow any }
}
server partner.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route /partner { require corp  allow any }
  route /        { public }
}
"""

# Three servers compiled together, one backend: only `a` forwards the subject as X-Remote-User.
SHARED_BACKEND = """
clear_headers "X-Legacy-User"
ca partners { bundle "ca/partners.pem" }
ca vendors  { bundle "ca/vendors.pem" }
server a.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route = /healthz { public }
  route /partner/  { require partners  allow any  forward subject as "X-Remote-User" }
  route /          { optional partners  forward subject fingerprint }
}
server b.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route / { public }
}
server c.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route /v/ { require vendors  allow any  forward verify }
  route /   { public }
}
"""

# A case-sensitive backend that reads `;` literally (Flask/Werkzeug does both) says so.
DECLARED = """
ca partners { bundle "ca/root.pem" }
server api.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  backend_paths case_sensitive literal_semicolons
  route /partner/  { require partners  allow any }
  route /          { public }
}
"""

POLICIES = {"partner": None, "public": PUBLIC_CATCH_ALL, "segments": SEGMENTS, "shared": SHARED_BACKEND,
            "declared": DECLARED}
# A certificate each policy's gated routes accept (cast member of the lab PKI).
CERTS = {"partner": "partners/id-acme", "public": "partners/client", "segments": "corp/client",
         "declared": "partners/client"}


def _policy_path(key: str, tmp: Path) -> str:
    if POLICIES[key] is None:
        return str(PARTNER_API)
    path = tmp / "policy" / f"{key}.mtls"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(POLICIES[key])
    return str(path)


@pytest.fixture(scope="module")
def labs(tmp_path_factory, nginx_bin, now):
    """`labs(policy_key, framework)`: a running lab, started once per module and reused."""
    with ExitStack() as stack:
        cache = {}

        def get(key: str, framework: str):
            if (key, framework) not in cache:
                tmp = tmp_path_factory.mktemp(f"{key}-{framework}")
                try:
                    cache[key, framework] = stack.enter_context(
                        running_framework_lab([_policy_path(key, tmp)], tmp / "lab", framework,
                                              nginx_bin=nginx_bin, now=now))
                except BackendUnavailable as exc:
                    # CI installs node and Express: there a missing framework is a failure.
                    (pytest.skip if exc.skippable else pytest.fail)(str(exc))
            return cache[key, framework]

        yield get

# §1 --- (id, policy, target, status without cert, status with cert, handler, received) -------------
# handler/received: for the 200 answers. Targets are sent as is, never normalised by the client.
S1 = [
    ("dotdot", "partner", "/partner/../healthz", 400, 400, None, None),
    ("enc-dotdot", "partner", "/partner/%2e%2e/healthz", 400, 400, None, None),
    ("enc-dotdot-upper", "partner", "/partner/%2E%2E/healthz", 400, 400, None, None),
    ("dot-enc-dot", "partner", "/partner/.%2e/healthz", 400, 400, None, None),
    ("dotdot-enc-slash", "partner", "/partner/..%2fhealthz", 400, 400, None, None),
    ("enc-slash-climb", "partner", "/partner/x%2F..%2F..%2Fhealthz", 400, 400, None, None),
    ("dot-segment", "partner", "/partner/./x", 400, 400, None, None),
    ("wellknown-dotdot-semicolon", "partner", "/.well-known/..;/partner/x", 400, 400, None, None),
    ("semicolon", "partner", "/partner;x/y", 400, 400, None, None),
    ("backslash", "partner", "/partner\\x", 400, 400, None, None),
    ("enc-backslash", "partner", "/partner%5cx", 400, 400, None, None),
    ("enc-percent", "partner", "/partner/%252e%252e/x", 400, 400, None, None),
    ("upper", "partner", "/PARTNER/x", 400, 400, None, None),
    ("capital", "partner", "/Partner/x", 400, 400, None, None),
    ("double-slash", "partner", "/partner//x", 403, 200, "/partner/", "/partner/x"),
    ("leading-double-slash", "partner", "//partner/x", 403, 200, "/partner/", "/partner/x"),
    ("enc-letter", "partner", "/%70artner/x", 403, 200, "/partner/", "/partner/x"),
    ("enc-space", "partner", "/partner/a%20b", 403, 200, "/partner/", "/partner/a%20b"),
    # What the backend receives: the normalised path, re-escaped as nginx does (uppercase hex).
    ("enc-utf8-lower-hex", "partner", "/partner/%c3%a9", 403, 200, "/partner/", "/partner/%C3%A9"),
    ("enc-plus", "partner", "/partner/a%2Bb", 403, 200, "/partner/", "/partner/a+b"),
    ("enc-question-mark", "partner", "/partner/a%3Fb?c=%2e", 403, 200, "/partner/", "/partner/a%3Fb?c=%2e"),
    ("no-slash-redirect", "partner", "/partner", 301, 301, None, None),
    ("plain-gated", "partner", "/partner/x?q=1", 403, 200, "/partner/", "/partner/x?q=1"),
    ("plain-public", "partner", "/healthz", 200, 200, "= /healthz", "/healthz"),
    ("plain-optional", "partner", "/x?a=%2e", 200, 200, "/", "/x?a=%2e"),
    ("public-semicolon", "public", "/partner;x/y", 400, 400, None, None),
    ("public-backslash", "public", "/partner\\x", 400, 400, None, None),
    ("public-enc-backslash", "public", "/partner%5cx", 400, 400, None, None),
    ("public-upper", "public", "/PARTNER/x", 400, 400, None, None),
    ("public-capital", "public", "/Partner/x", 400, 400, None, None),
    ("public-exact-upper", "public", "/ADMIN", 400, 400, None, None),
    # nginx would judge `/admin/` as `route /` (public) while Express's non-strict routing runs the
    # gated `= /admin` handler for it: mtlsc refuses an exact path plus `/` that no route claims.
    ("public-exact-trailing-slash", "public", "/admin/", 400, 400, None, None),
    ("public-exact-upper-trailing-slash", "public", "/ADMIN/", 400, 400, None, None),
    ("public-exact-below", "public", "/admin/x", 200, 200, "/", "/admin/x"),
    ("public-neighbour", "public", "/partnerx", 200, 200, "/", "/partnerx"),
    ("public-gated", "public", "/partner/x", 403, 200, "/partner/", "/partner/x"),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", S1, ids=[c[0] for c in S1])
def test_s1_path_confusion(labs, framework, case):
    _, key, target, no_cert, with_cert, handler, received = case
    lab = labs(key, framework)
    problems = without_and_with_cert(lab, target, lab.pki.client(CERTS[key]), statuses=(no_cert, with_cert),
                                      handler=handler, received=received)
    assert problems == [], f"{framework} {target!r}: {problems}"


# `backend_paths case_sensitive literal_semicolons`, true of Flask/Werkzeug: those targets are
# proxied, and the backend's handler is still the route nginx judged. (Not run on Express: it is
# case-insensitive, so declaring `case_sensitive` for it would be the policy's mistake.)
S1_DECLARED = [
    ("declared-upper", "/PARTNER/x", 200, 200, "/", "/PARTNER/x"),
    ("declared-semicolon", "/partner;x/y", 200, 200, "/", "/partner;x/y"),
    ("declared-semicolon-gated", "/partner/x;y", 403, 200, "/partner/", "/partner/x;y"),
    ("declared-dotdot", "/partner/../x", 400, 400, None, None),
    ("declared-enc-backslash", "/partner%5cx", 400, 400, None, None),
]


@pytest.mark.parametrize("case", S1_DECLARED, ids=[c[0] for c in S1_DECLARED])
def test_s1_declared_backend_paths(labs, case):
    _, target, no_cert, with_cert, handler, received = case
    lab = labs("declared", "flask")
    problems = without_and_with_cert(lab, target, lab.pki.client(CERTS["declared"]), statuses=(no_cert, with_cert),
                                      handler=handler, received=received)
    assert problems == [], f"flask {target!r}: {problems}"


# Absolute-form targets and HTTP/1.0 without Host: (id, target, version, send Host, no cert, cert, handler, received)
S1_FORMS = [
    ("absolute-form", "https://api.example.com/partner/x", "HTTP/1.1", True, 403, 200, "/partner/", "/partner/x"),
    ("absolute-form-dotdot", "https://api.example.com/partner/../healthz", "HTTP/1.1", True, 400, 400, None, None),
    ("absolute-form-public", "https://api.example.com/healthz", "HTTP/1.1", True, 200, 200, "= /healthz", "/healthz"),
    # Without Host the request stays on mtlsc's default server of the address, which answers 421.
    ("http10-no-host", "/partner/x", "HTTP/1.0", False, 421, 421, None, None),
    ("http10-no-host-dotdot", "/partner/../healthz", "HTTP/1.0", False, 421, 421, None, None),
    ("http10-no-host-public", "/healthz", "HTTP/1.0", False, 421, 421, None, None),
    ("http10-host", "/partner/x", "HTTP/1.0", True, 403, 200, "/partner/", "/partner/x"),
    ("http10-host-dotdot", "/partner/../healthz", "HTTP/1.0", True, 400, 400, None, None),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", S1_FORMS, ids=[c[0] for c in S1_FORMS])
def test_s1_request_forms(labs, framework, case):
    _, target, version, send_host, no_cert, with_cert, handler, received = case
    lab = labs("partner", framework)
    problems = without_and_with_cert(lab, target, lab.pki.client(CERTS["partner"]), statuses=(no_cert, with_cert),
                                      handler=handler, received=received, host="" if send_host else None,
                                      version=version)
    assert problems == [], f"{framework} {version} {target!r}: {problems}"


# §2 --- forged identity headers to every route of every server sharing one backend ---------------
FORGED = "CN=admin,O=B Corp"
S2 = {
    "x-remote-user": [("X-Remote-User", FORGED)],
    "odd-case": [("x-rEMOTE-uSER", FORGED)],
    "duplicated": [("X-Remote-User", FORGED), ("X-Remote-User", FORGED)],
    "trailing-space-value": [("X-Remote-User", FORGED + " ")],
    "trailing-space-name": [("X-Remote-User ", FORGED)],
    "underscore": [("X_Remote_User", FORGED)],
    "ssl-client-subject-dn": [("ssl-client-subject-dn", FORGED)],
    "ssl-client-subject-dn-odd-case": [("SSL-Client-Subject-DN", FORGED)],
    "xfcc": [("X-Forwarded-Client-Cert", f'Hash=00;Subject="{FORGED}"')],
    "x-client-subject": [("X-Client-Subject", FORGED)],
    "clear-headers": [("X-Legacy-User", FORGED)],
    "all-at-once": [("X-Remote-User", FORGED), ("ssl-client-subject-dn", FORGED), ("X-SSL-Client-S-DN", FORGED),
                    ("X-Forwarded-Client-Cert", f'Subject="{FORGED}"'), ("X-Client-Subject", FORGED),
                    ("ssl-client-verify", "SUCCESS"), ("X-Client-Verify", "SUCCESS")],
}


def _sample_target(route) -> str:
    if route.match is ir.PathMatch.EXACT:
        return route.path
    return route.path + ("x" if route.path.endswith("/") else "/x")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("variant", list(S2))
def test_s2_forged_identity_headers_never_reach_the_backend(labs, framework, variant):
    lab = labs("shared", framework)
    problems, reached, refused = [], 0, 0
    for server in lab.policy.servers:
        certs = [None] + [lab.pki.client(f"{ca.name}/client") for ca in server.cas]
        for route in server.routes:
            for cert in certs:
                resp = send(lab, _sample_target(route), server=server, cert=cert, headers=S2[variant])
                got = resp.backend
                where = f"{server.names[0]} {route_spec(route)} cert={cert and cert[0].stem}"
                if got is None:
                    refused += resp.status == 400
                    if resp.status not in (400, 403):
                        problems.append(f"{where}: unexpected {resp.status} {resp.text[:120]!r} {resp.error}")
                    continue
                reached += 1
                leaked = [(k, v) for k, v in got["headers"]
                          if "admin" in v.lower() or (cert is None and v.strip() == "SUCCESS")]
                if leaked:
                    problems.append(f"{where}: backend saw {leaked}")
                remote = [v for k, v in got["headers"] if k.lower() == "x-remote-user"]
                if route.path == "/partner/" and cert is not None and remote != [_subject(cert)]:
                    problems.append(f"{where}: X-Remote-User {remote}, nginx's value expected")
    # nginx may refuse a malformed header line outright (400 for every request): safe, and nothing to audit.
    assert reached >= 6 or reached == 0 and refused >= 6, "too few requests reached the backend to mean anything"
    assert problems == [], f"{framework}: {problems}"


def _subject(cert) -> str:
    from cryptography import x509

    return x509.load_pem_x509_certificate(Path(cert[0]).read_bytes()).subject.rfc4514_string()


# §3 --- forward ... as a name that breaks HTTP: refused by `mtlsc check` -------------------------
S3 = [("subject", "Host"), ("serial", "Content-Length"), ("subject", "Transfer-Encoding"),
      ("subject", "Connection"), ("subject", "Authorization"), ("subject", "Cookie"),
      ("subject", "X-Forwarded-For"), ("serial", "X-Client-Verify")]
CA_DIR = REPO / "policies" / "ca"


def _forward_policy(tmp_path: Path, field: str, name: str) -> Path:
    path = tmp_path / "p.mtls"
    path.write_text(f"""
ca partners {{
  bundle "{CA_DIR}/partners-root.pem" "{CA_DIR}/partners-issuing.pem"  depth 1
  crl "{CA_DIR}/partners-root.crl" "{CA_DIR}/partners-issuing.crl"
}}
server api.example.com {{
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route = /healthz {{ public }}
  route /p/ {{ require partners  allow any  forward {field} as "{name}" }}
}}
""")
    return path


@pytest.mark.parametrize("field,name", S3, ids=[n for _, n in S3])
def test_s3_forward_as_reserved_name_is_refused(tmp_path, field, name):
    code, out, err = run_cli("check", str(_forward_policy(tmp_path, field, name)))
    assert code == 1 and "MTLS032" in out + err, (code, out, err)


def test_s3_forward_as_own_name_is_accepted(tmp_path):
    code, out, err = run_cli("check", str(_forward_policy(tmp_path, "subject", "X-Remote-User")))
    assert code == 0 and "MTLS032" not in out + err, (code, out, err)


# §4 --- segment prefixes: (id, server, target, status without cert, status with cert, handler) ----
S4 = [
    ("static-admin", "static.example.com", "/static-admin/export", 403, 200, "/"),
    ("staticfoo", "static.example.com", "/staticfoo", 403, 200, "/"),
    ("static", "static.example.com", "/static", 200, 200, "/static"),
    ("static-slash", "static.example.com", "/static/", 200, 200, "/static"),
    ("static-x", "static.example.com", "/static/x", 200, 200, "/static"),
    ("partnership", "partner.example.com", "/partnership/", 200, 200, "/"),
    ("partnerx", "partner.example.com", "/partnerx", 200, 200, "/"),
    ("partner", "partner.example.com", "/partner", 403, 200, "/partner"),
    ("partner-x", "partner.example.com", "/partner/x", 403, 200, "/partner"),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", S4, ids=[c[0] for c in S4])
def test_s4_prefix_routes_cover_whole_segments(labs, framework, case):
    _, name, target, no_cert, with_cert, handler = case
    lab = labs("segments", framework)
    problems = without_and_with_cert(lab, target, lab.pki.client(CERTS["segments"]), statuses=(no_cert, with_cert),
                                      handler=handler, received=target, server=lab.server(name))
    assert problems == [], f"{framework} {name} {target!r}: {problems}"


# §5 --- attribute identities with repeated attributes: (id, subject, status) ---------------------
S5 = [
    ("extra-cn-first", "CN=mallory,CN=globex-a,O=Globex Inc", 403),
    ("extra-o-last", "CN=globex-a,O=Globex Inc,O=Evil Org", 403),
    ("multi-valued-cn", "CN=globex-a+CN=mallory,O=Globex Inc", 403),
    ("exact-once", "CN=globex-a,O=Globex Inc", 200),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", S5, ids=[c[0] for c in S5])
def test_s5_attribute_identity_needs_each_attribute_once(labs, framework, case, tmp_path, now):
    _, subject, status = case
    lab = labs("partner", framework)
    issued = issue_client(lab.pki.chains["partners"].issuing, dn.x509_name(dn.parse_dn(subject)), now=now)
    cert = (write_pem(tmp_path / "c.crt", issued.cert), write_pem(tmp_path / "c.key", issued.key))
    resp = send(lab, "/partner/x", cert=cert)
    got = resp.backend
    model = evaluate(lab.server(), "/partner/x", Client(subject, "", verified_by="partners")).status
    assert (resp.status, model) == (status, status), (resp.status, model, resp.text[:200])
    if status == 200:
        assert got is not None and got["handler"] == "/partner/", got
        assert [v for k, v in got["headers"] if k.lower() == "x-client-subject"] == [subject], got["headers"]
    else:
        assert got is None and "not allowed" in resp.text, (got, resp.text)
