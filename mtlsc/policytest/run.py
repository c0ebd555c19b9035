"""Policy tests, run: every expectation checked with mtlsc's model (`expect_with_model`: no nginx)
or against a running lab nginx (`expect_on_lab`), and the report (`render_results`).

The model is mtlsc.model.evaluate, the specification users read; the lab is the reality. Both see the
request the same way: the path as nginx normalises it (`normalise_path`), the certificate as
nginx prints it.
"""

from __future__ import annotations

import hashlib
import http.client
import secrets
import socket
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mtlsc import dn, ir
from mtlsc.model import san_cast
from mtlsc.model.evaluate import BAD_TARGET, NO_ROUTE, Client, evaluate, identity_headers
from mtlsc.lab.client import Response, render_request, request, tls_context
from mtlsc.lab.pki import USER_CAST_DAYS, Issued, issue_client, make_root, no_key, write_pem
from mtlsc.lab.run import Lab
from mtlsc.lab.userca import ocsp_gap_for
from mtlsc.policytest import ClientSpec, Expectation, find_server, normalise_path, route_label
from mtlsc.san import Sans
from mtlsc.source import Source

MARKER = "X-Mtlsc-Test-Case"  # sent with every lab request, to find it among those the backend recorded


@dataclass(frozen=True, slots=True)
class Observed:
    """What answered a case: the model, or nginx and the echo backend behind it."""

    status: int  # 0: no HTTP answer (see `note`)
    reasons: tuple[str, ...]  # the model names one; an nginx answer fits every reason with its body
    headers: tuple[tuple[str, str], ...] | None  # what the backend received; None: nothing reached it
    leaked: tuple[str, ...] = ()  # spoofed headers whose forged value reached the backend
    route: str = ""  # the route the model chose
    note: str = ""
    target: str | None = None  # the request target the backend received


@dataclass(frozen=True, slots=True)
class Result:
    """The verdict on one case, by the model or by nginx."""

    case: Expectation
    verdict: str  # pass | fail | skip
    by: str  # model | nginx
    observed: Observed | None = None
    problems: tuple[str, ...] = ()  # why it failed, or why it was skipped
    required: bool = True  # for a skip: whether it fails the run unless skips are allowed


def counts(results: list[Result]) -> tuple[int, int, int]:
    """(passed, failed, skipped)."""
    return tuple(sum(r.verdict == v for r in results) for v in ("pass", "fail", "skip"))


# ---- the model -------------------------------------------------------------------------------


def model_client(spec: ClientSpec, server: ir.Server, policy: ir.Policy) -> Client | None:
    """How nginx sees the case's certificate (None: no certificate)."""
    trusted = {c.name for c in server.cas}
    if spec.kind == "none":
        return None
    # The URL-encoded PEM, and everything about a certificate mtlsc mints, is known only once the
    # certificate exists: the model uses stand-ins (MTLS409 keeps tests from expecting their values).
    stand_in = hashlib.sha1(f"{spec.ca}/{spec.subject}".encode()).hexdigest()
    if spec.file is not None:
        f = spec.file
        ok = f.valid and f.issued_by in trusted
        return Client(f.subject, f.issuer, f.fingerprint, f.serial, f.issued_by if ok else None, stand_in,
                      _nginx_time(f.not_before), _nginx_time(f.not_after),
                      str(max((f.not_after - datetime.now(timezone.utc)).days, 0)))
    fingerprint, serial, issuer = stand_in, stand_in[:20].upper(), f"CN=issuing CA of {spec.ca}"
    ident = next((i for i in policy.identities if i.name == spec.identity), None)
    if ident is not None and ident.kind is ir.IdentityKind.FINGERPRINT:
        fingerprint = ident.fingerprint
    if ident is not None and ident.kind is ir.IdentityKind.SERIAL:
        serial, issuer = ident.serial, ident.issuer
    ok = spec.ca in trusted and not spec.expired and not spec.revoked
    # A SAN identity's certificate carries its example SAN (mtlsc.san_cast, as the lab mints it).
    sans = san_cast.example_sans(ident.san) if ident is not None and ident.kind is ir.IdentityKind.SAN else Sans()
    sha256 = ident.fingerprint if ident is not None and ident.kind is ir.IdentityKind.SHA256 else ""
    spki = ident.fingerprint if ident is not None and ident.kind is ir.IdentityKind.SPKI else ""
    return Client(spec.subject, issuer, fingerprint, serial, spec.ca if ok else None, stand_in,
                  "Jan  1 00:00:00 2025 GMT", "Jan  1 00:00:00 2035 GMT", "365", sans=sans, sha256=sha256, spki=spki)


def _nginx_time(t: datetime) -> str:
    """A date as nginx prints $ssl_client_v_start / _v_end: `Nov  4 01:55:42 2036 GMT`."""
    return f"{t:%b} {t.day:2d} {t:%H:%M:%S %Y} GMT"


def observe_model(case: Expectation, policy: ir.Policy) -> Observed:
    """What mtlsc's model says nginx answers, and what the backend would receive."""
    server = find_server(policy, case.server)
    try:
        path = normalise_path(case.path)
    except ValueError as exc:
        return Observed(400, ("bad_request",), None, note=str(exc))
    out = evaluate(server, path, model_client(case.client, server, policy), target=case.path)
    reached = 200 <= out.status < 300
    # Every proxied location sets or clears each identity header, and nginx drops names with `_`
    # (docs/nginx-facts.md §6): any other forged header passes unchanged.
    cleared = {h.lower() for h in identity_headers(server)}
    leaked = tuple(n for n, _ in case.spoof if reached and "_" not in n and n.lower() not in cleared)
    return Observed(out.status, (out.reason,), out.headers if reached else None, leaked,
                    route_label(case.server, out.route), target=out.target if reached else None)


def expect_with_model(policy: ir.Policy, expectations: list[Expectation]) -> list[Result]:
    """Check every expectation with mtlsc.model.evaluate (no nginx, no certificates minted)."""
    results = []
    for case in expectations:
        observed = observe_model(case, policy)
        problems = problems_of(case, observed)
        results.append(Result(case, "fail" if problems else "pass", "model", observed, tuple(problems)))
    return results


def _expected(case: Expectation) -> str:
    return f"{case.expect}{' ' + case.reason if case.reason else ''}"


def problems_of(case: Expectation, seen: Observed) -> list[str]:
    """Every way `seen` misses the expectation (empty: the case passes)."""
    out = []
    allowed = 200 <= seen.status < 300
    want = case.expect
    got = f"{seen.status or seen.note} {'/'.join(seen.reasons) or '(unknown reason)'}"
    if (want == "allow" and not allowed) or (want == "deny" and allowed) or (isinstance(want, int) and seen.status != want):
        out.append(f"expected {_expected(case)}, got {got}")
    elif case.reason and case.reason not in seen.reasons:
        out.append(f"expected reason {case.reason}, got {got}")
    if allowed and case.headers and seen.headers is None:
        out.append("the request never reached the backend, so no header can be checked")
    for name, value in case.headers if seen.headers is not None else ():
        got_values = [v for k, v in seen.headers if k.lower() == name.lower()]
        shown = ", ".join(repr(v) for v in got_values) or "absent"
        if (value is None and got_values) or (value is True and not got_values) or \
                (isinstance(value, str) and got_values != [value]):
            want_text = "absent" if value is None else "present" if value is True else repr(value)
            out.append(f"header {name}: expected {want_text}, got {shown}")
    out += [f"spoofed header {name} reached the backend" for name in seen.leaked]
    if case.received is not None and seen.target is not None and seen.target != case.received:
        out.append(f"the backend received {seen.target!r}, expected {case.received!r}")
    return out


# ---- the lab (real nginx) --------------------------------------------------------------------


def _write(directory: Path, name: str, issued: Issued, chain: tuple = ()) -> tuple[Path, Path]:
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    write_pem(crt, issued.cert, *chain)
    write_pem(key, issued.key)
    return crt, key


@dataclass(frozen=True, slots=True)
class Skip:
    """Why the lab cannot present a case's client. `required`: the run fails unless skips are
    allowed (what is missing is something the user can give, a CA key); a fingerprint pin, which
    only one certificate in the world satisfies, is reported and never fails it."""

    reason: str
    required: bool = True


def files_cas(expectations: list[Expectation]) -> set[str]:
    """The CAs of the policy that signed the `cert:` files of these cases: the lab must trust
    exactly those CAs' files for the files to get the answer the user's nginx gives."""
    return {e.client.file.issued_by for e in expectations if e.client.file and e.client.file.issued_by}


def _ocsp_gap(lab: Lab, ca_name: str, issuer: x509.Certificate) -> str | None:
    chain = lab.pki.chains.get(ca_name)
    ca = next((c for c in lab.policy.cas if c.name == ca_name), None)
    if chain is None or not chain.user or ca is None or ca.ocsp is None:
        return None
    return ocsp_gap_for(ca, chain, issuer)


def lab_certificate(lab: Lab, spec: ClientSpec, name: str, now: datetime, cache: dict
                    ) -> tuple[Path, Path] | None | Skip:
    """(certificate, key) for the case's client in the lab, None for no certificate, or why it
    cannot be presented (the case is skipped). A `cert:` file is sent as it is: the lab trusts
    its CA's own files (`files_cas`). Other clients come from the lab's cast or are minted into
    `<lab>/policytest/` by the CA's chain (a user's CA: with the key the user gave); `cache`
    keeps the one untrusted root of a run."""
    policy, pki = lab.policy, lab.pki
    ident = next((i for i in policy.identities if i.name == spec.identity), None)
    if spec.kind == "none":
        return None
    f = spec.file
    if f is not None:
        chain = pki.chains.get(f.issued_by) if f.issued_by else None
        if chain is not None and not chain.user:
            return Skip(f"the lab minted its own ca {f.issued_by}, which did not sign this file: start it with "
                        "the CAs of the tests' files kept (`mtlsc lab` does)")
        issuer = next((m.cert for m in (*chain.members, *chain.below) if dn.nginx_dn_of(m.cert.subject) == f.issuer),
                      None) if chain is not None else None
        gap = _ocsp_gap(lab, f.issued_by, issuer) if issuer is not None else None
        return Skip(gap) if gap else (Path(f.cert), Path(f.key))
    if ident is not None and ident.kind in (ir.IdentityKind.FINGERPRINT, ir.IdentityKind.SHA256, ir.IdentityKind.SPKI):
        return Skip("a fingerprint pin matches only the user's own certificate: name it in a case with "
                    "`client: {cert: ..., key: ...}`", required=False)
    if spec.revoked or (spec.kind == "identity" and not spec.expired):
        cast_file = f"{spec.ca}/revoked" if spec.revoked else f"{spec.ca}/id-{spec.identity}"
        if pki.client(cast_file)[0].exists():
            return pki.client(cast_file)
        if cast_file in pki.not_minted:
            return Skip(f"`{cast_file}` was not minted: {pki.not_minted[cast_file]}")
        if spec.revoked or (ident.kind is ir.IdentityKind.SERIAL and spec.ca in pki.chains):
            return Skip(f"the lab has no `{cast_file}`: it makes one only for a CA and identity that a route uses")
    if not spec.expired and any(c.name == spec.ca and c.leaf for c in policy.cas):
        # a certificate the lab makes now is not in the CA's list: nginx would refuse it
        return Skip(f"ca {spec.ca} is a `leaf` CA: the lab lists only its cast's leaves; name an identity a route "
                    "of it allows, or your own listed certificate (`client: {cert: ..., key: ...}`)")
    if "outsider" not in cache:
        cache["outsider"] = make_root("mtlsc policy-test untrusted root", now=now)
    chain = pki.chains.get(spec.ca)
    issuer = chain.signer if chain is not None else cache["outsider"]
    if issuer is None:
        return Skip(no_key(spec.ca))
    if chain is not None and (gap := _ocsp_gap(lab, spec.ca, issuer.cert)):
        return Skip(gap)
    subject = dn.x509_name(dn.parse_dn(spec.subject)) if spec.subject else x509.Name([])
    sans = san_cast.example_sans(ident.san) if ident is not None and ident.kind is ir.IdentityKind.SAN else Sans()
    dates = {"not_before": now - timedelta(days=30), "days": 1} if spec.expired else {"days": USER_CAST_DAYS}
    # A CA with `ocsp`: the lab's responder answers `good` for it (the cast's URL in its AIA).
    issued = issue_client(issuer, subject, now=now, ocsp_url=pki.ocsp_urls.get(spec.ca), sans=sans, **dates)
    return _write(pki.out_dir / "policytest", name, issued, chain.sent_with_leaves if chain else ())


def _send(method: str, port: int, path: str, sni: str, cert, key, headers) -> Response:
    if method == "GET":
        return request("127.0.0.1", port, path, server_name=sni, cert=cert, key=key, headers=headers)
    # mtlsc.lab.client sends GET only: other methods go the same way with their own request line.
    ctx = tls_context(str(cert) if cert else None, str(key) if key else None)
    raw = method.encode() + render_request(path, sni, headers)[3:]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            with ctx.wrap_socket(plain, server_hostname=sni) as tls:
                tls.sendall(raw)
                resp = http.client.HTTPResponse(tls, method=method)
                resp.begin()
                return Response(resp.status, resp.read(), resp.getheaders())
    except (OSError, http.client.HTTPException) as exc:
        return Response(0, error=f"{type(exc).__name__}: {exc}")


def nginx_reasons(server: ir.Server, resp: Response) -> tuple[str, ...]:
    """The reasons whose answer (status and body) nginx gave: several when bodies are equal."""
    if 200 <= resp.status < 300:
        return ("ok",)
    answer = (resp.status, resp.text.rstrip("\n"))
    found = [r for r in ("no_cert", "bad_cert", "forbidden")
             if answer == (getattr(server.rejections, r).status, getattr(server.rejections, r).body)]
    found += ["no_route"] if answer == (NO_ROUTE.status, NO_ROUTE.body) else []
    found += ["bad_target"] if answer == (BAD_TARGET.status, BAD_TARGET.body) else []
    found += ["redirect"] if resp.status == 301 else []
    found += ["bad_request"] if resp.status == 400 and "<title>400 Bad Request</title>" in resp.text else []
    return tuple(found)


def _lab_model_client(spec: ClientSpec, server: ir.Server, policy: ir.Policy, crt: Path | None) -> Client | None:
    """The model's view of the certificate the lab really sent: its own names, serial, fingerprint."""
    base = model_client(spec, server, policy)
    if base is None or crt is None:
        return base
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    return replace(base, subject=dn.nginx_dn_of(cert.subject), issuer=dn.nginx_dn_of(cert.issuer),
                   fingerprint=cert.fingerprint(hashes.SHA1()).hex(), serial=dn.nginx_serial(cert.serial_number))


def _leaked(case: Expectation, server: ir.Server, policy: ir.Policy, crt: Path | None, got) -> tuple[str, ...]:
    """Spoofed headers whose forged value reached the backend, other than as the one value nginx
    itself sets for the certificate the lab sent (a client may guess its own subject)."""
    try:
        path = normalise_path(case.path)
    except ValueError:
        path = case.path  # nginx proxied what the model refuses: the forged values still count
    sets = set(evaluate(server, path, _lab_model_client(case.client, server, policy, crt)).headers)
    return tuple(n for n, v in case.spoof
                 if v in got.header_values(n) and ((n, v) not in sets or len(got.header_values(n)) > 1))


def observe_nginx(lab: Lab, case: Expectation, files: tuple[Path, Path] | None, marker: str) -> Observed:
    """Send the case to the lab nginx; read what came back and what the backend received."""
    server = find_server(lab.policy, case.server)
    crt, key = files or (None, None)
    resp = _send(case.method, server.listens[0].port, case.path, case.server, crt, key, [(MARKER, marker), *case.spoof])
    got = next((r for r in lab.echo.snapshot() if marker in r.header_values(MARKER)), None)
    leaked = _leaked(case, server, lab.policy, crt, got) if got is not None else ()
    return Observed(resp.status, nginx_reasons(server, resp), got.headers if got else None, leaked,
                    note=resp.error, target=got.path if got else None)


def expect_on_lab(lab: Lab, expectations: list[Expectation], now: datetime | None = None) -> list[Result]:
    """Check every expectation against the lab's real nginx (see mtlsc.lab.run.running_lab, and
    its `keep_cas=files_cas(expectations)`).

    `cert:` files are sent as they are; other clients come from the lab's cast (`<ca>/id-<name>`,
    `<ca>/revoked`) or are minted from the lab's chains. What cannot be presented is reported as
    skipped, never passed (`Result.required`: whether that skip fails the run)."""
    now = now or datetime.now(timezone.utc)
    run, cache, results = secrets.token_hex(4), {}, []
    for n, case in enumerate(expectations):
        files = lab_certificate(lab, case.client, f"case-{n}", now, cache)
        if isinstance(files, Skip):
            results.append(Result(case, "skip", "nginx", problems=(files.reason,), required=files.required))
            continue
        observed = observe_nginx(lab, case, files, f"{run}-{n}")
        problems = problems_of(case, observed)
        results.append(Result(case, "fail" if problems else "pass", "nginx", observed, tuple(problems)))
    return results


def required_skips(results: list[Result]) -> int:
    """Skipped cases that fail a run unless skips are allowed."""
    return sum(r.verdict == "skip" and r.required for r in results)


# ---- the report ------------------------------------------------------------------------------

_VERDICT = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}


def render_results(results: list[Result], sources: dict[str, Source] | None = None) -> str:
    """One line per case grouped by route, the reasons under each failure or skip, and a closing
    `N passed, N failed[, N skipped]` line. `sources` lets a failure quote its YAML line."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.case.route, []).append(r)
    lines = []
    for route, members in groups.items():
        lines.append(route)
        for r in members:
            span = r.case.span
            lines.append(f"  {_VERDICT[r.verdict]}  {r.case.name}  ({span.path}:{span.line})" if span else
                         f"  {_VERDICT[r.verdict]}  {r.case.name}")
            if r.verdict == "pass":
                continue
            for problem in r.problems:
                lines.append(f"          {r.by}: {problem}" if r.verdict == "fail" else f"          {problem}")
            seen = r.observed
            if r.verdict == "fail" and seen is not None:
                heard = ", ".join(f"{k}: {v}" for k, v in seen.headers or () if k.lower().startswith("x-client-"))
                lines.append(f"          {r.by} answered {seen.status} {'/'.join(seen.reasons)}"
                             + (f" at {seen.route}" if seen.route else "") + (f"; backend got {heard}" if heard else ""))
            source = (sources or {}).get(span.path) if span else None
            if r.verdict == "fail" and source is not None:
                lines.append(f"          | {source.line_text(span.line).strip()}")
    passed, failed, skipped = counts(results)
    lines.append(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return "\n".join(lines) + "\n"
