"""Checks on the IR (MTLS103-109, MTLS149, MTLS202-207): each code has a triggering policy and a
clean one, asserted by code, line:col and a message fragment. CA bundles are the committed
`policies/ca/*.pem` (absolute paths) or minted here with `mtlsc.lab.pki`."""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import datetime, timezone

import crossplane
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mtlsc import ir, pipeline
from mtlsc.checks import CHECKS, CheckContext, lockout, run_checks
from mtlsc.emit import nginx as emit_nginx
from mtlsc.model.evaluate import Client, evaluate, probe_path
from mtlsc.lab import pki as labpki
from support import REPO

CA = REPO / "policies" / "ca"
EXAMPLES = sorted((REPO / "policies").glob("*.mtls"))

# Line 1-4 of most policies below: one CA (a root, depth 0) and one identity with an organisation.
HEAD = f"""\
ca internal {{ bundle "{CA / 'internal-root.pem'}"  depth 0 }}
identity billing {{ cn "billing"  ou "services" }}
server api.example.com {{
  certificate "/etc/nginx/tls/a.crt" key "/etc/nginx/tls/a.key"  backend "http://127.0.0.1:8080"
"""


def check(tmp_path, text: str, name: str = "p.mtls") -> pipeline.Result:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    result = pipeline.check([str(path)])
    assert result.policy is not None, [(d.code, d.message) for d in result.diagnostics]
    return result


def codes(result) -> list[str]:
    return [d.code for d in result.diagnostics]


def assert_finding(result, code: str, line: int, col: int, fragment: str):
    hits = [d for d in result.diagnostics if d.code == code]
    assert any((d.span.line, d.span.col) == (line, col) and fragment in d.message for d in hits), \
        [(d.code, d.span.line, d.span.col, d.message) for d in result.diagnostics]
    return next(d for d in hits if (d.span.line, d.span.col) == (line, col))


def run_one(code: str, policy: ir.Policy, pki) -> list:
    """Run one registered check (and waivers) on an IR built or altered by the test."""
    ctx = CheckContext(policy, pki, datetime.now(timezone.utc))
    return run_checks(ctx, tuple(c for c in CHECKS if c.code == code))


# ---- MTLS101 public-route-behind-required-listener --------------------------------------------

def test_mtls101_triggers_on_public_and_optional_routes_behind_handshake_require(tmp_path):
    r = check(tmp_path, HEAD + """\
  handshake require
  route = /healthz { public }
  route / { optional internal  forward verify }
}
""")
    d = assert_finding(r, "MTLS101", 6, 3, "route `/healthz` is public but the whole listener requires a client certificate")
    assert d.related[0].span.line == 5 and d.severity.name == "ERROR"
    assert_finding(r, "MTLS101", 7, 3, "route `/` is optional but the whole listener requires")
    assert r.failed


def test_mtls101_clean_when_every_route_requires(tmp_path):
    r = check(tmp_path, HEAD + """\
  handshake require
  route /api/ { require internal  allow billing }
}
""")
    assert "MTLS101" not in codes(r) and not r.failed


# ---- MTLS103 probe-route-requires-certificate ------------------------------------------------

def test_mtls103_triggers_on_probe_route_behind_required_listener(tmp_path):
    r = check(tmp_path, HEAD + """\
  handshake require
  route = /healthz { require internal  allow any }
  route /api/ { require internal  allow billing }
}
""")
    d = assert_finding(r, "MTLS103", 6, 3, "probe path `/healthz` requires a client certificate: health checks without one get 403")
    assert "remove `handshake require`" in d.help and d.severity.name == "WARNING"


def test_mtls103_triggers_on_required_probe_route_without_handshake(tmp_path):
    r = check(tmp_path, HEAD + """\
  route /.well-known/ { require internal  allow any }
  route / { optional internal  forward verify }
}
""")
    assert_finding(r, "MTLS103", 5, 3, "probe path `/.well-known/` requires a client certificate")


def test_mtls103_clean_when_probe_route_is_public(tmp_path):
    r = check(tmp_path, HEAD + """\
  route = /healthz { public }
  route /api/ { require internal  allow billing }
}
""")
    assert "MTLS103" not in codes(r) and "MTLS104" not in codes(r)


# ---- MTLS104 no-public-health-route ----------------------------------------------------------

def test_mtls104_triggers_when_every_route_requires_a_certificate(tmp_path):
    r = check(tmp_path, HEAD + """\
  route /api/ { require internal  allow billing }
  route / { require internal  allow any }
}
""")
    assert_finding(r, "MTLS104", 3, 1, "every route of `api.example.com` requires a client certificate")


def test_mtls104_clean_with_a_public_or_optional_route(tmp_path):
    for extra in ("route = /status { public }", "route / { optional internal  forward verify }"):
        r = check(tmp_path, HEAD + f"""\
  route /api/ {{ require internal  allow billing }}
  {extra}
}}
""")
        assert "MTLS104" not in codes(r), extra


# ---- MTLS105 bad-certificate-refused-on-public-routes ----------------------------------------

def test_mtls105_triggers_once_per_server_with_public_routes_and_verification(tmp_path):
    r = check(tmp_path, HEAD + """\
  reject bad_cert 495 "bad certificate"
  route = /healthz { public }
  route /.well-known/ { public }
  route /api/ { require internal  allow billing }
}
""")
    d = assert_finding(r, "MTLS105", 6, 3, "untrusted or expired certificate gets 495 on public routes too (`/healthz`, `/.well-known/`)")
    assert d.severity.name == "NOTE" and d.related[0].span.line == 8
    assert codes(r).count("MTLS105") == 1


def test_mtls105_clean_without_client_verification(tmp_path):
    r = check(tmp_path, HEAD + """\
  route = /healthz { public }
  route / { public }
}
""")
    assert "MTLS105" not in codes(r)


# ---- MTLS106 issuer-not-in-ca -----------------------------------------------------------------

def _serial_policy(issuer: str, depth: int) -> str:
    return f"""\
ca internal {{ bundle "{CA / 'internal-root.pem'}"  depth {depth} }}
identity old {{ serial "0A00000001"  issuer "{issuer}" }}
server api.example.com {{
  certificate "/etc/nginx/tls/a.crt" key "/etc/nginx/tls/a.key"  backend "http://127.0.0.1:8080"
  route = /healthz {{ public }}
  route /api/ {{ require internal  allow old }}
}}
"""


def test_mtls106_triggers_on_issuer_outside_the_bundle_depth_0(tmp_path):
    r = check(tmp_path, _serial_policy("CN=Retired CA,O=Acme", 0))
    d = assert_finding(r, "MTLS106", 2, 1, "names issuer `CN=Retired CA,O=Acme`, which is no certificate of ca `internal`: "
                       "so no certificate it accepts can match")
    assert d.related[0].span.line == 6


def test_mtls106_triggers_with_depth_naming_client_sent_intermediates(tmp_path):
    r = check(tmp_path, _serial_policy("CN=Retired CA,O=Acme", 1))
    assert_finding(r, "MTLS106", 2, 1, "only clients that send that issuer as an intermediate themselves can match")


def test_mtls106_clean_when_issuer_is_in_the_bundle_ignoring_case(tmp_path):
    r = check(tmp_path, _serial_policy("CN=Internal Root,O=MTLSC Lab", 0))
    assert "MTLS106" not in codes(r)


# ---- MTLS107 route-never-reached -------------------------------------------------------------

def test_mtls107_triggers_on_a_route_shadowed_everywhere(tmp_path):
    # Lowering refuses two routes with one path (MTLS022), so the shadowed route is made in the IR,
    # as a merge or emitter bug would make it: route `= /b` (line 6) becomes a second `= /a`.
    r = check(tmp_path, HEAD + """\
  route = /a { public }
  route = /b { public }
}
""")
    server = r.policy.servers[0]
    shadowed = dataclasses.replace(server.routes[1], path="/a")
    policy = dataclasses.replace(r.policy, servers=(dataclasses.replace(server, routes=(server.routes[0], shadowed)),))
    [d] = run_one("MTLS107", policy, r.pki)
    assert (d.span.line, d.span.col) == (6, 3)
    assert "route `/a` is never reached: other routes of `api.example.com` take every path it covers" in d.message


def test_mtls107_clean_when_only_a_longer_path_reaches_the_route(tmp_path):
    # `/a` is taken by the exact route and `/a/b/...` by the longer prefix, but `/a/x` reaches it.
    r = check(tmp_path, HEAD + """\
  route = /a { public }
  route /a/b/ { public }
  route /a { require internal  allow billing }
}
""")
    assert "MTLS107" not in codes(r)
    server = r.policy.servers[0]
    assert probe_path(server, server.routes[2]) == "/a/mtlsc-probe"  # what tests.sh probes it with


# ---- MTLS118 routes-differ-only-in-case --------------------------------------------------------

def test_mtls118_triggers_on_routes_differing_only_in_case(tmp_path):
    r = check(tmp_path, HEAD + """\
  route /api/ { public }
  route /API/ { require internal  allow billing }
}
""")
    [d] = [d for d in r.diagnostics if d.code == "MTLS118"]
    assert (d.span.line, d.span.col) == (6, 3)
    assert "routes `/api/` and `/API/` differ only in letter case" in d.message


def test_mtls118_clean_when_the_backend_is_case_sensitive(tmp_path):
    r = check(tmp_path, HEAD.replace('backend "', 'backend_paths case_sensitive\n  backend "', 1) + """\
  route /api/ { public }
  route /API/ { require internal  allow billing }
}
""")
    assert "MTLS118" not in codes(r)


# ---- MTLS235 segment-route-overlaps-prefix -----------------------------------------------------

def test_mtls235_triggers_on_a_segment_route_beside_its_slashed_prefix(tmp_path):
    r = check(tmp_path, HEAD + """\
  route /static { public }
  route /static/ { require internal  allow billing }
}
""")
    [d] = [d for d in r.diagnostics if d.code == "MTLS235"]
    assert (d.span.line, d.span.col) == (5, 3)
    assert "route `/static` covers `/static/...`, which route `/static/` also declares" in d.message
    assert r.outputs is None or not r.outputs


def test_mtls235_clean_with_an_exact_route_beside_the_prefix(tmp_path):
    r = check(tmp_path, HEAD + """\
  route = /static { public }
  route /static/ { require internal  allow billing }
}
""")
    assert "MTLS235" not in codes(r)


# ---- MTLS108 dn-written-root-first ------------------------------------------------------------

def test_mtls108_triggers_on_root_first_subject_and_issuer(tmp_path):
    r = check(tmp_path, f"""\
ca internal {{ bundle "{CA / 'internal-root.pem'}"  depth 0 }}
identity alice {{ subject "C=US,O=Acme,CN=alice" }}
identity old {{ serial "0A"  issuer "C=US,O=Acme,CN=Acme Issuing" }}
server api.example.com {{
  certificate "/etc/nginx/tls/a.crt" key "/etc/nginx/tls/a.key"  backend "http://127.0.0.1:8080"
  route /api/ {{ require internal  allow alice old }}
}}
""")
    assert_finding(r, "MTLS108", 2, 1, "the subject of identity `alice` is written root-first: nginx prints `CN=alice,O=Acme,C=US`")
    assert_finding(r, "MTLS108", 3, 1, "the issuer of identity `old` is written root-first")


def test_mtls108_clean_when_most_specific_first(tmp_path):
    r = check(tmp_path, HEAD.replace('cn "billing"  ou "services"', 'subject "CN=alice,O=Acme,C=US"') + """\
  route /api/ { require internal  allow billing }
}
""")
    assert "MTLS108" not in codes(r)


def test_mtls108_clean_when_the_ca_itself_prints_root_first(tmp_path, now):
    # A CA whose DER lists CN first: nginx prints its names `C=US,O=Odd,CN=...`, so its clients' may be too.
    reversed_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Odd Root"),
                               x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Odd"),
                               x509.NameAttribute(NameOID.COUNTRY_NAME, "US")])
    root = labpki.make_root("x", now=now, subject=reversed_name)
    labpki.write_pem(tmp_path / "odd.pem", root.cert)
    r = check(tmp_path, """\
ca odd { bundle "odd.pem"  depth 0 }
identity alice { subject "C=US,O=Odd,CN=alice" }
server api.example.com {
  certificate "/etc/nginx/tls/a.crt" key "/etc/nginx/tls/a.key"  backend "http://127.0.0.1:8080"
  route /api/ { require odd  allow alice }
}
""")
    assert r.pki.ca("odd").certs[0].subject == "C=US,O=Odd,CN=Odd Root"
    assert "MTLS108" not in codes(r)


# ---- MTLS109 target-predates-421 -------------------------------------------------------------

SHARED_PORT = f"""\
ca internal {{ bundle "{CA / 'internal-root.pem'}"  depth 0 }}
server a.example.com {{
  listen 8443  certificate "/etc/nginx/tls/a.crt" key "/etc/nginx/tls/a.key"  backend "http://127.0.0.1:8080"
  route / {{ public }}
}}
server b.example.com {{
  listen 8443  certificate "/etc/nginx/tls/b.crt" key "/etc/nginx/tls/b.key"  backend "http://127.0.0.1:8080"
  route / {{ require internal  allow any }}
}}
"""


def test_mtls109_triggers_for_a_target_older_than_1_11(tmp_path):
    # MTLS031 refuses targets below 1.19.4 at lowering, so the old target is set on the IR.
    r = check(tmp_path, SHARED_PORT)
    [d] = run_one("MTLS109", dataclasses.replace(r.policy, nginx_version=(1, 10, 3)), r.pki)
    assert (d.span.line, d.span.col) == (6, 1)
    assert "nginx 1.10.3 answers 400, not 421, when the SNI names `a.example.com` and Host `b.example.com`" in d.message


def test_mtls109_clean_for_supported_targets(tmp_path):
    assert "MTLS109" not in codes(check(tmp_path, SHARED_PORT))
    (tmp_path / "old.mtls").write_text('nginx ">= 1.10"\n' + SHARED_PORT)
    assert "MTLS031" in codes(pipeline.check([str(tmp_path / "old.mtls")]))  # why 109 cannot fire today


# ---- MTLS149 unused-waiver -------------------------------------------------------------------

def test_mtls149_triggers_on_stale_unknown_and_error_waivers(tmp_path):
    r = check(tmp_path, HEAD + """\
  route = /healthz { public }
  route /api/ { require internal  allow billing  waive MTLS207 "dedicated CA" }
  waive MTLS999 "no such check"
  waive MTLS101 "errors are not waivable"
}
""")
    assert_finding(r, "MTLS149", 6, 50, "nothing in this block reports `MTLS207`: the waiver is unused")
    assert_finding(r, "MTLS149", 7, 3, "no check reports `MTLS999`")
    assert_finding(r, "MTLS149", 8, 3, "`MTLS101` is an error: a waiver cannot silence it")


def test_mtls149_clean_when_the_waiver_silences_a_finding(tmp_path):
    r = check(tmp_path, HEAD + """\
  route = /healthz { public }
  route /api/ { require internal  waive MTLS207 "the internal CA issues only to this API" }
}
""")
    [d] = [d for d in r.diagnostics if d.code == "MTLS207"]
    assert d.waived == "the internal CA issues only to this API"
    assert "MTLS149" not in codes(r)


# ---- MTLS202 over-broad-identity-pattern ------------------------------------------------------

@pytest.mark.parametrize("pattern", ["^.*$", "^.+$", "^[^/]+$", "^(admin|.*)$", "^.{1,64}$"])
def test_mtls202_triggers_on_patterns_matching_any_value(tmp_path, pattern):
    r = check(tmp_path, HEAD.replace('cn "billing"', f'cn ~ "{pattern}"') + """\
  route /api/ { require internal  allow billing }
}
""")
    assert_finding(r, "MTLS202", 2, 20, f"pattern `{pattern}` of identity `billing` matches any `CN`")


def test_mtls202_clean_for_a_narrow_pattern(tmp_path):
    r = check(tmp_path, HEAD.replace('cn "billing"', 'cn ~ "^billing-[0-9]{2}$"') + """\
  route /api/ { require internal  allow billing }
}
""")
    assert "MTLS202" not in codes(r)


# ---- MTLS203 cn-only-identity ----------------------------------------------------------------

def test_mtls203_triggers_on_cn_only_identity(tmp_path):
    r = check(tmp_path, HEAD.replace('  ou "services"', "") + """\
  route /api/ { require internal  allow billing }
}
server b.example.com {
  certificate "/etc/nginx/tls/b.crt" key "/etc/nginx/tls/b.key"  backend "http://127.0.0.1:8080"
  route /x/ { require internal  allow any }
}
""")
    d = assert_finding(r, "MTLS203", 2, 1, "identity `billing` matches only `CN`: any certificate of ca `internal` "
                       "with that name passes, whatever its organisation; `internal` is trusted by 2 servers")
    assert d.related[0].span.line == 5


def test_mtls203_clean_with_an_organisation_constraint(tmp_path):
    r = check(tmp_path, HEAD + """\
  route /api/ { require internal  allow billing }
}
""")
    assert "MTLS203" not in codes(r)


# ---- MTLS204 optional-forward-without-verify ------------------------------------------------

def test_mtls204_triggers_on_optional_route_forwarding_subject_only(tmp_path):
    r = check(tmp_path, HEAD + """\
  route / { optional internal  forward subject fingerprint }
}
""")
    assert_finding(r, "MTLS204", 5, 3, "optional route `/` forwards `subject`, `fingerprint` but not `verify`")


def test_mtls204_clean_when_verify_is_forwarded(tmp_path):
    r = check(tmp_path, HEAD + """\
  route / { optional internal  forward verify subject }
  route /p/ { require internal  allow billing  forward subject }
}
""")
    assert "MTLS204" not in codes(r)


# ---- MTLS205 identity-header-not-set-or-cleared (emitter assertion) ------------------------------

CUSTOM_HEADERS = HEAD + """\
  route = /healthz { public }
  route /api/ { require internal  allow billing  forward subject as "X-Service" verify }
  route / { optional internal  forward verify }
}
"""


def test_mtls205_triggers_when_the_emitter_drops_a_header(tmp_path, monkeypatch):
    real = emit_nginx._location

    def dropping(server, route, *args):
        view = real(server, route, *args)
        view.headers = [(n, v) for n, v in view.headers if n.lower() != "x-service"]
        return view

    monkeypatch.setattr(emit_nginx, "_location", dropping)
    r = check(tmp_path, CUSTOM_HEADERS)
    for line in (5, 6, 7):
        d = assert_finding(r, "MTLS205", line, 3, "does not set or clear `x-service`: clients could send their own identity headers")
        assert d.severity.name == "ERROR"


def test_mtls205_triggers_when_a_header_is_set_on_a_route_that_does_not_forward_it(tmp_path, monkeypatch):
    real = emit_nginx._location

    def leaking(server, route, *args):
        view = real(server, route, *args)
        view.headers = [(n, "$ssl_client_s_dn" if n.lower() == "x-client-subject" else v) for n, v in view.headers]
        return view

    monkeypatch.setattr(emit_nginx, "_location", leaking)
    assert_finding(check(tmp_path, CUSTOM_HEADERS), "MTLS205", 5, 3, "does not set or clear `x-client-subject`")


@pytest.mark.parametrize("policy", EXAMPLES, ids=lambda p: p.stem)
def test_mtls205_clean_on_every_example_and_custom_headers(policy, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert not {"MTLS205", "MTLS206"} & set(codes(pipeline.check([str(policy)])))
    assert "MTLS205" not in codes(check(tmp_path, CUSTOM_HEADERS))


# ---- MTLS206 route-accepts-another-ca (emitter assertion) ------------------------------------

def test_mtls206_triggers_when_the_emitter_drops_the_ca_binding(monkeypatch):
    real = emit_nginx._location

    def unbound(server, route, *args):
        view = real(server, route, *args)
        view.gates = [g for g in view.gates if "not_ca" not in g.var]
        return view

    monkeypatch.setattr(emit_nginx, "_location", unbound)
    monkeypatch.chdir(REPO)
    r = pipeline.check(["policies/multi-ca.mtls"])
    assert_finding(r, "MTLS206", 25, 3, "the emitted location for `/internal/` would accept certificates of the server's other CAs")
    assert_finding(r, "MTLS206", 26, 3, "not only `vendors`")


def test_mtls206_triggers_when_the_issuer_map_lists_another_cas_certificate(monkeypatch):
    real = emit_nginx._ca_binding_maps

    def mixed(server, pki, prefix, ca_index):
        maps = real(server, pki, prefix, ca_index)
        maps[0].entries = [dataclasses.replace(e, value=type(e.value)("ca0")) for e in maps[0].entries]
        return maps

    monkeypatch.setattr(emit_nginx, "_ca_binding_maps", mixed)
    monkeypatch.chdir(REPO)
    assert_finding(pipeline.check(["policies/multi-ca.mtls"]), "MTLS206", 25, 3, "not only `internal`")


def test_mtls206_triggers_when_the_emitter_drops_the_key_check(monkeypatch):
    real = emit_nginx._location

    def unchecked(*args):
        return dataclasses.replace(real(*args), key_check=None)

    monkeypatch.setattr(emit_nginx, "_location", unchecked)
    monkeypatch.chdir(REPO)
    r = pipeline.check(["policies/multi-ca.mtls"])
    assert_finding(r, "MTLS206", 25, 3, "not only `internal`")
    assert_finding(r, "MTLS206", 26, 3, "not only `vendors`")


def test_mtls206_triggers_when_the_key_table_holds_another_cas_key(monkeypatch):
    real = emit_nginx._key_binding

    def swapped(*args):
        b = real(*args)
        b.table["ca0"] = b.table["ca1"]
        return b

    monkeypatch.setattr(emit_nginx, "_key_binding", swapped)
    monkeypatch.chdir(REPO)
    assert_finding(pipeline.check(["policies/multi-ca.mtls"]), "MTLS206", 25, 3, "not only `internal`")


def test_mtls206_clean_multi_ca_policy_refuses_the_other_ca_in_the_model(monkeypatch):
    """Compiled multi-CA policy: no MTLS206, and mtlsc's model of the config answers `bad_cert` to a
    client of the other CA on every gated route, even one whose subject the route allows."""
    monkeypatch.chdir(REPO)
    r = pipeline.compile_policy(["policies/multi-ca.mtls"])
    assert "MTLS206" not in codes(r) and not r.failed
    server = r.policy.servers[0]
    staff = "CN=dev-1,OU=Staff,O=Example Corp"
    supplier = "CN=supplier-portal,O=Initech,C=US"
    assert evaluate(server, "/internal/x", Client(staff, "", verified_by="internal")).reason == "ok"
    assert evaluate(server, "/internal/x", Client(staff, "", verified_by="vendors")).reason == "bad_cert"
    assert evaluate(server, "/partner/x", Client(supplier, "", verified_by="vendors")).reason == "ok"
    assert evaluate(server, "/partner/x", Client(supplier, "", verified_by="internal")).reason == "bad_cert"
    assert evaluate(server, "/x", Client(staff, "", verified_by="vendors")).reason == "bad_cert"  # optional internal
    # a look-alike: vendors signed a sub-CA named like internal's issuing CA
    lookalike = Client(staff, "", verified_by="vendors", foreign_issuer=True)
    assert {evaluate(server, p, lookalike).reason for p in ("/internal/x", "/partner/x", "/x")} == {"bad_cert"}


# ---- MTLS207 require-without-allow -----------------------------------------------------------

def test_mtls207_triggers_on_require_without_allow(tmp_path):
    r = check(tmp_path, HEAD + """\
  route = /healthz { public }
  route /partner/ { require internal }
}
""")
    assert_finding(r, "MTLS207", 6, 3, "route `/partner/` requires a certificate of `internal` but allows no identities")


def test_mtls207_clean_with_allow_any_or_a_list(tmp_path):
    r = check(tmp_path, HEAD + """\
  route = /healthz { public }
  route /partner/ { require internal  allow any }
  route /api/ { require internal  allow billing }
}
""")
    assert "MTLS207" not in codes(r)


# ---- optional_no_ca / ssl_trusted_certificate: never emitted (no check code, docs/checks.md) ----

@pytest.mark.parametrize("policy", EXAMPLES, ids=lambda p: p.stem)
def test_emitted_config_never_uses_optional_no_ca_or_trusted_certificate(policy, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    r = pipeline.compile_policy([str(policy.relative_to(REPO))])
    assert not r.failed
    confs = {rel: text for rel, text in r.outputs.items() if rel.startswith("nginx/")}
    assert len(confs) >= 2
    for rel, text in confs.items():
        path = tmp_path / rel.replace("/", "_")
        path.write_text(text)
        payload = crossplane.parse(str(path), single=True, check_ctx=False, comments=False)
        assert payload["status"] == "ok", payload["errors"]
        seen = []

        def walk(block):
            for d in block:
                seen.append((d["directive"], tuple(d["args"])))
                walk(d.get("block", []))

        walk(payload["config"][0]["parsed"])
        assert ("ssl_trusted_certificate" not in {n for n, _ in seen}), rel
        assert all("optional_no_ca" not in args for n, args in seen if n == "ssl_verify_client"), rel
        assert not any("optional_no_ca" in a for _, args in seen for a in args), rel


# ---- MTLS236 slash-twins-with-different-gates -------------------------------------------------

def test_mtls236_triggers_on_an_exact_route_and_its_slashed_prefix_with_other_gates(tmp_path):
    r = check(tmp_path, HEAD + """\
  route = /admin { public }
  route /admin/ { require internal  allow billing }
}
""")
    [d] = [d for d in r.diagnostics if d.code == "MTLS236"]
    assert (d.span.line, d.span.col) == (6, 3)
    assert "`/admin` and `/admin/` differ only by a trailing slash but have different gates" in d.message


def test_mtls236_clean_with_the_same_gate_or_strict_slashes(tmp_path):
    same = check(tmp_path, HEAD + """\
  route = /admin { require internal  allow billing }
  route /admin/ { require internal  allow billing }
}
""")
    assert "MTLS236" not in codes(same)
    strict = check(tmp_path, HEAD.replace('backend "', 'backend_paths strict_slashes\n  backend "', 1) + """\
  route = /admin { public }
  route /admin/ { require internal  allow billing }
}
""", name="strict.mtls")
    assert "MTLS236" not in codes(strict)
