"""`mtlsc explain`: every cell is the evaluator's answer and the emitted tests.sh's expectation;
the Markdown is a golden file; the JSON shape is stable."""

from __future__ import annotations

import json

import pytest

from mtlsc import pipeline
from mtlsc.emit.testscript import Case, read_table
from mtlsc.model.evaluate import evaluate
from mtlsc.review.explain import JSON_FORMAT, explain, render_explanation, run_explain
from support import HERE, REPO, assert_golden

POLICIES = sorted(p.relative_to(REPO) for p in (REPO / "policies").glob("*.mtls"))


def _load(policy, monkeypatch):
    monkeypatch.chdir(REPO)
    result = pipeline.compile_policy([str(policy)])
    assert not result.failed, result.diagnostics
    return result


def _cells(expl):
    for view in expl.servers:
        for route in view.routes:
            for client, cell in zip(view.clients, route.cells):
                yield view, route, client, cell


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.stem)
def test_every_cell_is_what_the_evaluator_answers(policy, monkeypatch):
    result = _load(policy, monkeypatch)
    expl = explain(result.policy, result.pki)
    servers = {s.names: s for s in result.policy.servers}
    count = 0
    for view, route, client, cell in _cells(expl):
        out = evaluate(servers[view.names], route.probe, client.client)
        assert (cell.status, cell.reason) == (out.status, out.reason), (view.names, route.route, client.key)
        assert cell.verdict == ("deny" if out.status != 200 else "public" if route.mode == "public" else "allow")
        count += 1
    assert count >= 8


def _tests_sh_cases(text):
    """(host, path, cert file, expected status) of every HTTP case of an emitted tests.sh."""
    for case in read_table(text):
        if isinstance(case, Case):
            yield case.host, case.path, case.cert, case.status


def _client_key(cert: str) -> str | None:
    if cert == "":
        return "none"
    if cert == "untrusted/client":
        return "untrusted"
    ca, member = cert.split("/")
    if member == "client":
        return f"ca:{ca}"
    if member.startswith("id-"):
        return f"identity:{member[3:]}@{ca}"
    return None  # expired / revoked: not rows of the matrix (the evaluator sees them as untrusted)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.stem)
def test_cells_agree_with_the_emitted_test_script(policy, monkeypatch):
    result = _load(policy, monkeypatch)
    expl = explain(result.policy, result.pki)
    cells = {(v.names[0].replace("*", "mtlsc-wildcard"), r.probe, c.key): cell for v, r, c, cell in _cells(expl)}
    checked = 0
    for host, path, cert, status in _tests_sh_cases(result.outputs["tests.sh"]):
        key = _client_key(cert)
        if key is None or (host, path, key) not in cells:
            continue  # the no-route probe, or a cast member that is not a matrix row
        assert cells[(host, path, key)].status == status, (host, path, cert)
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.stem)
def test_markdown_golden(policy, monkeypatch):
    result = _load(policy, monkeypatch)
    assert_golden(HERE / "golden" / "explain" / f"{policy.stem}.md",
                  render_explanation(explain(result.policy, result.pki), "md"))


def test_text_golden(monkeypatch):
    result = _load("policies/multi-ca.mtls", monkeypatch)
    assert_golden(HERE / "golden" / "explain" / "multi-ca.txt",
                  render_explanation(explain(result.policy, result.pki), "text"))


def test_json_golden_and_schema(monkeypatch):
    result = _load("policies/partner-api.mtls", monkeypatch)
    text = render_explanation(explain(result.policy, result.pki), "json")
    assert_golden(HERE / "golden" / "explain" / "partner-api.json", text)
    doc = json.loads(text)
    assert set(doc) == {"format", "servers"} and doc["format"] == JSON_FORMAT
    server = doc["servers"][0]
    assert set(server) == {"names", "listen", "handshake_require", "clients", "routes"}
    assert set(server["clients"][0]) == {"key", "label", "kind", "ca", "identity"}
    route = next(r for r in server["routes"] if r["route"] == "/partner/")
    assert set(route) == {"route", "match", "path", "covers", "mode", "ca", "depth", "allow", "backend", "probe",
                          "revocation", "headers", "cells"}
    assert set(route["revocation"]) == {"crl", "crl_next_update", "ocsp", "ocsp_responder"}
    assert set(route["cells"]) == {c["key"] for c in server["clients"]}
    assert route["cells"]["identity:acme@partners"] == {
        "verdict": "allow", "status": 200, "reason": "ok",
        "headers": ["X-Client-Subject", "X-Client-Fingerprint", "X-Client-Verify", "X-Client-Serial"]}
    assert route["cells"]["ca:partners"]["reason"] == "forbidden"
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"  # keys sorted: diffs of it stay small


def test_ocsp_and_all_public_server(tmp_path):
    ca = REPO / "policies" / "ca" / "internal-root.pem"
    (tmp_path / "p.mtls").write_text(f"""
ca internal {{ bundle "{ca}"  depth 0  ocsp leaf responder "http://127.0.0.1:8888/ocsp" }}
server a.example {{
  certificate "/c" key "/k"  backend "http://127.0.0.1:1"
  route /api/ {{ require internal  allow any  forward verify }}
  route / {{ optional internal }}
}}
server static.example {{
  certificate "/c" key "/k"  backend "http://127.0.0.1:1"
  route / {{ public }}
}}
""")
    result = pipeline.check([str(tmp_path / "p.mtls")])
    assert result.policy is not None, result.diagnostics
    expl = explain(result.policy, result.pki)
    text = render_explanation(expl, "text")
    assert "OCSP leaf only via http://127.0.0.1:8888/ocsp" in text
    static = expl.servers[1]
    # No route names a CA: nginx asks for no certificate, so any certificate is simply not seen.
    assert [c.key for c in static.clients] == ["none", "untrusted"]
    assert [c.verdict for c in static.routes[0].cells] == ["public", "public"]


def test_unknown_format_is_refused(monkeypatch):
    result = _load("policies/partner-api.mtls", monkeypatch)
    with pytest.raises(ValueError):
        render_explanation(explain(result.policy, result.pki), "html")


def test_run_explain_exit_codes(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, err = run_explain(["policies/partner-api.mtls"], "text")
    assert code == 0 and out.startswith("server api.example.com") and "error[" not in err
    code, out, err = run_explain([str(tmp_path / "missing.mtls")])
    assert (code, out) == (2, "") and "MTLS900" in err
    bad = tmp_path / "bad.mtls"
    # MTLS101: a public route behind `handshake require` is an error, yet the matrix still shows it.
    bad.write_text(f"""
ca internal {{ bundle "{REPO}/policies/ca/internal-root.pem"  depth 0 }}
server a.example {{
  certificate "/c" key "/k"  backend "http://127.0.0.1:1"  handshake require
  route = /healthz {{ public }}
  route / {{ require internal  allow any }}
}}
""")
    code, out, err = run_explain([str(bad)], "text")
    assert code == 1 and "MTLS101" in err and "403 no_cert" in out
