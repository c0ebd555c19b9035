"""Differential test: three parties judge generated policies and requests, and must agree.

- the oracle (tests/oracle.py): the generator's own meaning of the policy, from its spec;
- mtlsc's model (`mtlsc.model.evaluate`) on the IR the compiler lowered;
- real nginx running the compiled config, and the backend behind it: the echo backend (one
  for every server: a header one server forwards must not leak through another) or a real
  framework (Flask/Werkzeug, Express; one process per server, registered with that server's
  routes, so the handler that ran tells which route the *backend* judged it).

Policies have 1-3 servers (some sharing a listen address), custom header names; requests include
hostile targets (docs/language.md, Paths) and forged values of every identity header name.
Compared: status, what answered, the target and identity headers the backend received, the
handler that ran. A disagreement fails with the policy, request, client and every answer. CI:
40 policies x 30 requests, derandomized; `MTLSC_DIFFERENTIAL_EXAMPLES=N` runs N random ones.
"""

from __future__ import annotations


import ipaddress
import os
import tempfile
import urllib.parse
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import HealthCheck, Phase, example, given, reject, settings
from hypothesis import strategies as st

import oracle
from mtlsc import dn, pipeline
from mtlsc.model.cast import cast, lookalike_verifies
from mtlsc.model.evaluate import Client, evaluate
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import free_port, running_nginx
from mtlsc.lab.pki import build_lab_pki, issue_client, write_pem
from mtlsc.lab.run import LabError
from mtlsc.output import write_atomic
from mtlsc.san import Sans
from mtlsc.model.uri import normalise_path
from oracle import AttrSpec, CaSpec, IdentitySpec, PolicySpec, Presented, RouteSpec, ServerSpec
from real_backends import BackendUnavailable, running_backend, seen
from strategies import Deployment, lab_specs, render, requests, target_of

pytestmark = pytest.mark.nginx
REQUESTS_PER_POLICY = 30
EXAMPLES = int(os.environ.get("MTLSC_DIFFERENTIAL_EXAMPLES", "0"))
FORGED = "mtlsc-forged"
# Always forged, beside every name the policy forwards or clears: other proxies' names.
WELL_KNOWN = ("X-Forwarded-Client-Cert", "ssl-client-subject-dn", "ssl-client-verify", "X-SSL-Client-Cert",
              "Client-Cert", "X-Remote-User")
BACKENDS = ("echo", "flask", "express")
EMITTER_ASSERTIONS = {"MTLS205", "MTLS206"}  # "no policy causes it" (docs/checks.md)
STATS: Counter = Counter()  # what a run covered, printed at the end
# MTLSC_DIFFERENTIAL_SURVEY=1: record every disagreement by class and print one example of each
# at the end instead of failing at the first (a tool for reading a run, never for CI).
SURVEY = bool(os.environ.get("MTLSC_DIFFERENTIAL_SURVEY"))
SURVEYED: dict[str, str] = {}
PHASES = (Phase.explicit, Phase.reuse, Phase.generate)  # no shrinking: each attempt restarts nginx


# ---- the lab: the spec rendered for loopback, compiled, on nginx with its backends --------------
@dataclass
class Lab:
    spec: PolicySpec
    text: str
    policy: object  # the IR mtlsc lowered: only the model and the cast (clients) read it
    pki: object
    ports: dict  # listen group -> port
    backend: str
    workdir: Path


def _real_spec(spec: PolicySpec, backend: str) -> PolicySpec:
    """Express matches paths case-insensitively and `/p` as `/p/`: a server behind it may not claim otherwise."""
    if backend != "express":
        return spec
    return replace(spec, servers=tuple(replace(s, case_sensitive=False, strict_slashes=False) for s in spec.servers))


@contextmanager
def _lab(spec: PolicySpec, backend: str, nginx_bin: str, now: datetime):
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        w = Path(tmp)
        if backend == "echo":
            url = stack.enter_context(running_echo_backend()).url
            urls = {i: url for i in range(len(spec.servers))}
        else:
            urls = {i: stack.enter_context(running_backend(
                backend, [r.handler for r in s.routes], w / "backend")).url for i, s in enumerate(spec.servers)}
        ports = {g: free_port() for g in sorted({s.group for s in spec.servers})}
        where = Deployment(ports, urls, str(w / "ca"), str(w / "lab" / "server"), str(w / "out" / "mtls"))
        text = render(spec, where)
        (w / "p.mtls").write_text(text, encoding="utf-8")
        front = pipeline.read_and_lower([str(w / "p.mtls")])
        if front.policy is None:
            raise LabError("the policy has errors", front.diagnostics, front.sources)
        pki = build_lab_pki(front.policy, w / "lab", now=now)
        result = pipeline.compile_policy([str(w / "p.mtls")], now=now)
        if result.failed:
            raise LabError("the policy does not compile", result.diagnostics, result.sources)
        write_atomic(w / "out", result.outputs)
        with running_nginx(f"include {w / 'out'}/nginx/*.conf;", w / "nginx", ports=sorted(ports.values()),
                           nginx_bin=nginx_bin):
            yield Lab(spec, text, front.policy, pki, ports, backend, w)


# ---- clients: cast members, like an identity, or minted at random --------------------------------


@dataclass(frozen=True)
class Cert:
    label: str
    crt: Path
    key: Path
    presented: Presented  # what the oracle gets
    client: Client  # what the model gets


def _nginx_time(t: datetime) -> str:
    return f"{t:%b} {t.day:2d} {t:%H:%M:%S %Y} GMT"  # openssl's ASN1_TIME_print: day padded with a space


def _cert(label: str, crt: Path, key: Path, ca: str | None, valid: bool, via_sub_ca: bool = False) -> Cert:
    """The certificate as nginx prints it (nginx-facts §7): input facts for both judges."""
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    left = cert.not_valid_after_utc - datetime.now(timezone.utc)
    fields = {"subject": dn.nginx_dn_of(cert.subject), "issuer": dn.nginx_dn_of(cert.issuer),
              "fingerprint": cert.fingerprint(hashes.SHA1()).hex(), "serial": dn.nginx_serial(cert.serial_number),
              "cert": urllib.parse.quote(pem, safe=""), "not_before": _nginx_time(cert.not_valid_before_utc),
              "not_after": _nginx_time(cert.not_valid_after_utc), "days_remaining": str(max(left.days, 0))}
    sans = _sans_of(cert)
    presented = Presented(ca, valid, fields["subject"], fields["issuer"], cert.serial_number, fields["fingerprint"], fields,
                          via_sub_ca, sans)
    model_sans = Sans(tuple((k, ipaddress.ip_address(v).packed.hex() if k == "ip" else v) for k, v in sans))
    return Cert(label, crt, key, presented, Client(verified_by=ca if valid else None, foreign_issuer=via_sub_ca,
                                                   sans=model_sans, **fields))


def _sans_of(cert: x509.Certificate) -> tuple[tuple[str, str], ...]:
    """The certificate's URI, DNS, e-mail and IP SANs in order, as its DER holds them."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    kinds = {x509.UniformResourceIdentifier: "uri", x509.DNSName: "dns", x509.RFC822Name: "email", x509.IPAddress: "ip"}
    return tuple((kinds[type(n)], str(n.value)) for n in names if type(n) in kinds)


def _like_sans(san: tuple[str, str], how: str) -> tuple[list, tuple[tuple[str, str], ...]]:
    """(subject, SANs) of a certificate like a SAN identity's: the value, changed in case, beside a
    second URI, under a look-alike domain, or only in the CN."""
    kind, value = san
    good = value.replace("*", "mtlsc-x")
    cert_kind = "uri" if kind == "spiffe" else kind
    cn = [[("CN", "mtlsc-san")]]
    if how == "upper":
        return cn, ((cert_kind, good.upper()),)
    if how == "lower":
        return cn, ((cert_kind, good.lower()),)
    if how == "extra RDN":  # one more SAN: a second URI makes a SPIFFE ID none
        return cn, ((cert_kind, good), ("uri", "spiffe://prod.example.org/other"))
    if how == "glued RDNs":  # a look-alike: the domain glued to another
        return cn, ((cert_kind, good.replace("example.org", "example.org.evil").replace("10.0.0.7", "10.0.0.70")),)
    if how == "repeat attribute" and len(good) <= 64:  # the value only in the CN
        return [[("CN", good)]], ()
    return cn, ((cert_kind, good),)


def _satisfying(ident: IdentitySpec) -> list[list[tuple[str, str]]]:
    if ident.kind == "subject":
        return [list(r) for r in ident.rdns]
    return [[(a.attr, a.value if a.op == "eq" else oracle.PATTERNS[a.value][1])] for a in ident.attrs]


def _like(rdns: list, how: str) -> list:
    """A subject like `rdns`: changed in case, by an extra or glued RDN, or an attribute repeated."""
    (a, v) = rdns[0][0]
    if how in ("upper", "lower"):
        return [[(x, getattr(y, how)()) for x, y in r] for r in rdns]
    if how == "extra RDN":
        return rdns + [[("CN", "x")]]
    if how == "glued RDNs" and len(rdns) > 1 and len(rdns[0]) == len(rdns[1]) == 1:
        (a2, v2) = rdns[1][0]
        return [[(a, f"{v},{a2}={v2}")]] + rdns[2:]
    if how == "repeat attribute":
        return [[(a, "mallory")]] + rdns
    if how == "repeat in RDN":
        return rdns + [[("L" if a != "L" else "OU", "z"), (a, "mallory")]]
    if how == "repeat same":
        return rdns + [rdns[0]]
    return rdns


@dataclass
class Clients:
    lab: Lab
    now: datetime
    minted: dict

    def resolve(self, spec: tuple) -> Cert | None:
        lab = self.lab
        if spec[0] == "cast":
            members = [m for m in cast(lab.policy) if lab.pki.client(m.file)[0].exists()]
            pool = [m for m in members if spec[1] == "any" or m.kind == spec[1]] or [m for m in members if m.ca] or members
            m = pool[spec[2] % len(pool)]
            return _cert(f"cast member {m.file} ({m.kind})", *lab.pki.client(m.file), m.ca,
                         m.kind not in ("expired", "revoked"), m.kind == "lookalike")
        if spec[0] == "like":
            idents = [i for i in lab.spec.identities if i.kind in ("subject", "attrs", "san")]
            if not idents:
                return None
            ident = idents[spec[1] % len(idents)]
            if ident.kind == "san":
                rdns, sans = _like_sans(ident.san, spec[2])
                return self._mint(spec[3], 0, rdns, f"{spec[2]} of SAN identity {ident.name}", sans)
            return self._mint(spec[3], 0, _like(_satisfying(ident), spec[2]), f"{spec[2]} of identity {ident.name}")
        if spec[0] == "mint":
            return self._mint(spec[1], spec[2], [list(r) for r in dn.parse_dn(spec[3])], "random subject")
        return None

    def _mint(self, ca_n: int, level: int, rdns: list, label: str, sans: tuple = ()) -> Cert:
        ca = self.lab.spec.cas[ca_n % len(self.lab.spec.cas)]
        chain = self.lab.pki.chains[ca.name]
        key = (ca.name, level, repr(rdns), sans)
        if key not in self.minted:
            issuer = chain.members[max(len(chain.members) - 1 - level, 0)]
            packed = Sans(tuple((k, ipaddress.ip_address(v).packed.hex() if k == "ip" else v) for k, v in sans))
            try:
                issued = issue_client(issuer, dn.x509_name(rdns), now=self.now, sans=packed)
            except ValueError:  # cryptography's limits (CN <= 64, C = 2 letters, one attribute per RDN)
                issued = issue_client(issuer, dn.x509_name([[("CN", "mtlsc-mint")]]), now=self.now)
            base = self.lab.workdir / f"minted-{len(self.minted)}"
            self.minted[key] = (write_pem(f"{base}.crt", issued.cert), write_pem(f"{base}.key", issued.key))
        return _cert(f"{label}, minted by ca {ca.name} (chain member {level} from the issuing CA)",
                     *self.minted[key], ca.name, True)


# ---- the three answers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    status: int
    what: str  # "backend", "redirect", "nginx <status>", or the response body
    headers: tuple | None = None  # identity headers the backend got: (lower-cased name, value), sorted
    target: str | None = None  # the request target the backend got
    handler: str | None = None  # the backend handler that ran (real frameworks), or the route chosen
    forged: tuple = ()  # headers that reached the backend with a forged value


def _field_values(headers: tuple | None) -> tuple | None:
    """Header values as HTTP defines them: without trailing whitespace (RFC 9110 §5.5). nginx sends
    a DN ending in an escaped space (`CN=x\\ `) as is; Node drops the space, Python keeps it."""
    return None if headers is None else tuple((k, v.rstrip(" \t")) for k, v in headers)


def _agree(a: Answer, b: Answer) -> bool:
    same = [(x, y) for x, y in zip((_field_values(a.headers), a.target, a.handler),
                                   (_field_values(b.headers), b.target, b.handler))
            if x is not None and y is not None]
    return (a.status, a.what, a.forged) == (b.status, b.what, b.forged) and all(x == y for x, y in same)


def oracle_answer(lab: Lab, server: ServerSpec, target: str, cert: Cert | None) -> Answer:
    e = oracle.judge(lab.spec, server, target, cert.presented if cert else None)
    if e.what != "backend":
        return Answer(e.status, e.what)
    return Answer(e.status, e.what, e.headers, e.target, e.route.handler)


def model_answer(lab: Lab, name: str, target: str, cert: Cert | None) -> Answer:
    server = next(s for s in lab.policy.servers if name in s.names)
    try:
        path = normalise_path(target)
    except ValueError:
        return Answer(400, "nginx 400")
    client = cert.client if cert else None
    if client is not None and client.foreign_issuer and not lookalike_verifies(server):
        client = replace(client, verified_by=None)  # no room for the sub-CA, or no CRL for it
    out = evaluate(server, path, client, target=target)
    if out.reason == "ok":
        handler = f"= {out.route.path}" if out.route.location.startswith("=") else out.route.path
        headers = tuple(sorted((h.lower(), v) for h, v in out.headers))
        return Answer(200, "backend", headers, getattr(out, "target", None), handler)
    return Answer(out.status, "redirect" if out.reason == "redirect" else out.body + "\n")


def nginx_answer(lab: Lab, server: ServerSpec, name: str, target: str, cert: Cert | None, forged: list) -> Answer:
    resp = request("127.0.0.1", lab.ports[server.group], target, server_name=name,
                   cert=cert.crt if cert else None, key=cert.key if cert else None,
                   headers=[(h, FORGED) for h in forged])
    if resp.status == 0:
        return Answer(0, f"no response ({resp.error})")
    names = {h.lower() for h in forged}
    data = seen(resp.body)
    if data is not None:
        got = [tuple(h) for h in data["headers"]]
        first, handler = data["target"], data["handler"]
    elif resp.status == 200 and resp.text.startswith("GET "):
        first, *lines = resp.text.splitlines()
        got, first, handler = [tuple(line.split(": ", 1)) for line in lines], first[len("GET "):], None
    elif resp.status == 301:
        return Answer(301, "redirect")
    elif "<html>" in resp.text and "nginx" in resp.text:
        return Answer(resp.status, f"nginx {resp.status}")
    else:
        return Answer(resp.status, resp.text)
    ident = tuple(sorted((k.lower(), v) for k, v in got if k.lower() in names))
    return Answer(resp.status, "backend", ident, first, handler, tuple(sorted(k for k, v in got if v == FORGED)))


def _forged(spec: PolicySpec) -> list[str]:
    """Every identity header name the policy forwards or clears, the defaults, and well-known ones."""
    names = {h: None for h in (*oracle.DEFAULT_HEADERS.values(), *WELL_KNOWN, *spec.clear_headers)}
    for s in spec.servers:
        names.update({oracle.header_of(f): None for r in s.routes for f in r.forwards})
    return sorted(names, key=str.lower)


def _describe(lab: Lab, name: str, target: str, cert: Cert | None, answers: dict) -> str:
    who = "no certificate" if cert is None else (
        f"{cert.label}\n  subject {cert.presented.subject}\n  issuer  {cert.presented.issuer}\n"
        f"  ca {cert.presented.ca}, valid: {cert.presented.valid}")
    parts = "\n".join(f"--- {party}\n{answer}" for party, answer in answers.items())
    return (f"oracle, model and nginx+{lab.backend} disagree\n--- policy\n{lab.text}--- request\n"
            f"GET {target}  (SNI and Host {name}; nginx routes on {oracle.normalise(target)!r})\n"
            f"--- client\n{who}\n{parts}")


def first_disagreement(lab: Lab, reqs, now: datetime, count: bool = True) -> str | None:
    pool, forged = Clients(lab, now, {}), _forged(lab.spec)
    for where, target_spec, client_spec in reqs:
        server = lab.spec.servers[where % len(lab.spec.servers)]
        name = server.names[where // len(lab.spec.servers) % len(server.names)]
        target = target_of(target_spec, server)
        cert = pool.resolve(client_spec)
        answers = {"oracle": oracle_answer(lab, server, target, cert), "model": model_answer(lab, name, target, cert),
                   f"nginx+{lab.backend}": nginx_answer(lab, server, name, target, cert, forged)}
        if count:
            STATS["requests"] += 1
            STATS[f"requests via {lab.backend}"] += 1
            STATS[f"oracle: {answers['oracle'].status} {answers['oracle'].what[:30]!r}"] += 1
        first = answers["oracle"]
        if not all(_agree(first, other) for other in answers.values()):
            if not SURVEY:
                return _describe(lab, name, target, cert, answers)
            kind = " / ".join(f"{p} {_diff(first, a)}" for p, a in answers.items() if not _agree(first, a))
            SURVEYED.setdefault(kind, _describe(lab, name, target, cert, answers))
            STATS[f"disagreement: {kind}"] += 1
    return None


def _diff(a: Answer, b: Answer) -> str:
    """Which fields of `b` differ from `a`, and a hint of how: a survey's class of disagreement."""
    if (a.status, a.what) != (b.status, b.what):
        return f"answers {b.status} {b.what[:20]!r} for {a.status} {a.what[:20]!r}"
    fields = [f for f in ("headers", "target", "handler", "forged")
              if getattr(a, f) is not None and getattr(b, f) is not None and getattr(a, f) != getattr(b, f)]
    return "differs in " + ", ".join(fields)


# ---- the test ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\ndifferential: {STATS.pop('policies', 0)} policies, {STATS['requests']} requests, "
          f"{STATS.pop('requests', 0)} (policy, request, backend) triples, "
          f"{STATS.pop('disagreements', 0) + sum(STATS[k] for k in list(STATS) if k.startswith('disagreement:'))} "
          "disagreements; by backend: "
          + ", ".join(f"{b} {STATS.pop(f'requests via {b}', 0)}" for b in BACKENDS))
    for kind, text in SURVEYED.items():
        print(f"\n=== {kind}\n{text}")
    if os.environ.get("MTLSC_DIFFERENTIAL_STATS"):
        for key, n in sorted(STATS.items()):
            print(f"  {n:5d}  {key}")


# Two servers on one address, one backend: a name server A forwards must reach no backend from B.
SHARED = PolicySpec(
    (CaSpec("corp", 2, 0, True), CaSpec("partners", 1, 0, False)),
    (IdentitySpec("ops", "attrs", attrs=(AttrSpec("CN", "re", "^(ops|svc)-[0-9]+$"), AttrSpec("O", "eq", "Acme"))),
     IdentitySpec("bob", "subject", rdns=((("CN", "bob"),), (("O", "Acme"),)))),
    (ServerSpec(("api.example.com",), 0, (
        RouteSpec("/a", False, "require", "corp", ("bob", "ops"), forwards=(("subject", "X-Remote-User"), ("verify", None))),
        RouteSpec("/", False, "public"))),
     ServerSpec(("admin.example.com",), 0, (
         RouteSpec("/", False, "optional", "partners", forwards=(("issuer", "ssl-client-subject-dn"),)),
         RouteSpec("/a/", False, "public"), RouteSpec("/b", True, "require", "partners"))),
     ServerSpec(("shop.example.org",), 1, (RouteSpec("/", False, "public"),), literal_semicolons=True)),
    ("X-Legacy-User",),
)
LIKE_OPS = [(0, ("like", 0, how, 0)) for how in ("same", "repeat attribute", "repeat in RDN", "repeat same", "upper")]
# SAN identities of every kind on one route: the lab's SAN cast and near misses, and certificates
# like each identity (upper case, a second URI, a look-alike domain, the value only in the CN).
SANS = PolicySpec(
    (CaSpec("mesh", 1, 0, False),),
    tuple(IdentitySpec(f"s{i}", "san", san=san) for i, san in enumerate(
        (("spiffe", "spiffe://prod.example.org/ns/*/sa/worker"), ("dns", "*.svc.example.org"),
         ("uri", "urn:example:svc:Billing"), ("email", "ops@Example.org"), ("ip", "2001:db8::7")))),
    (ServerSpec(("api.example.com",), 0, (
        RouteSpec("/m/", False, "require", "mesh", ("s0", "s1", "s2", "s3", "s4"), forwards=(("subject", None),)),
        RouteSpec("/w/", False, "require", "mesh", ("s0",)), RouteSpec("/", False, "public"))),),
)
SAN_HOWS = ("same", "upper", "lower", "extra RDN", "glued RDNs", "repeat attribute")


@example(spec=SHARED, backend="echo", reqs=[
    (w, t, c) for w in (0, 1, 2) for t in ("/a", "/a/x", "/A/x", "/a;x/y", "/a/..%2fb", "/b?x=1", "/%61/x", "/a\\x")
    for c in (("cast", "identity", 0), ("like", 1, "same", 0), ("none",))
] + [(w, "/a/x", c) for w, c in LIKE_OPS])
@example(spec=SANS, backend="echo", reqs=[
    (0, t, c) for t in ("/m/x", "/w/x")
    for c in [("cast", k, i) for k in ("identity", "near") for i in range(12)]
    + [("like", n, how, 0) for n in range(5) for how in SAN_HOWS] + [("none",)]])
@settings(max_examples=EXAMPLES or 40, derandomize=not EXAMPLES, deadline=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(spec=lab_specs(), backend=st.sampled_from(BACKENDS), reqs=requests(REQUESTS_PER_POLICY))
def test_oracle_model_and_nginx_agree(nginx_bin, now, spec, backend, reqs):
    spec = _real_spec(spec, backend)
    try:
        with _lab(spec, backend, nginx_bin, now) as lab:
            STATS["policies"] += 1
            found = first_disagreement(lab, reqs, now)
    except BackendUnavailable as exc:
        if exc.skippable:
            reject()
        raise
    except LabError as exc:
        codes = sorted({d.code for d in exc.diagnostics if d.severity.name == "ERROR"})
        # The strategy only writes valid policies; a check (MTLS1xx-3xx) may still refuse one,
        # except the checks that assert on mtlsc's own output: those are mtlsc bugs.
        message = f"{exc}: {codes}\n" + "\n".join(f"  {d.code} line {d.span.line}: {d.message}" for d in exc.diagnostics)
        bug = not codes or any(c < "MTLS100" or c in EMITTER_ASSERTIONS for c in codes)
        if bug and SURVEY:
            SURVEYED.setdefault(f"policy refused: {codes}", f"{message}\n{render(spec)}")
        assert not bug or SURVEY, f"{message}\n{render(spec)}"
        STATS[f"policies refused: {' '.join(codes)}"] += 1
        reject()
    if found:
        STATS["disagreements"] += 1
        pytest.fail(found, pytrace=False)
