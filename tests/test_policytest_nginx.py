"""Policy tests on the real nginx: the shipped example test files pass in a lab (`running_lab` +
`expect_on_lab`), a wrong expectation fails, and on every case the model and nginx agree."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509

from mtlsc import pipeline
from mtlsc.lab.run import running_lab
from mtlsc.policytest import load_tests, normalise_path
from mtlsc.model.uri import forwarded_target
from mtlsc.policytest.run import _nginx_time, counts, expect_on_lab, expect_with_model, files_cas, render_results
from mtlsc.render import render
from support import REPO
from test_policytest import write_file_pki

pytestmark = pytest.mark.nginx

EXAMPLES = sorted((REPO / "policies").glob("*.mtls-test.yaml"))
PARTNER = REPO / "policies" / "partner-api.mtls"


def _policy_of(test_file: Path) -> Path:
    return test_file.with_name(test_file.name.replace("-test.yaml", ""))


def _both(policy_path: Path, test_file: Path, workdir: Path, nginx_bin: str):
    """(cases, model results, nginx results, requests the backend received, report of both)."""
    policy = pipeline.read_and_lower([str(policy_path)]).policy
    cases, diags, source = load_tests(test_file, policy)
    assert not diags, render(diags, {source.path: source})
    with running_lab([str(policy_path)], workdir, nginx_bin=nginx_bin, keep_cas=files_cas(cases)) as lab:
        on_nginx = expect_on_lab(lab, cases)
        received = lab.echo.snapshot()
    model = expect_with_model(policy, cases)
    report = render_results(model, {source.path: source}) + render_results(on_nginx, {source.path: source})
    return cases, model, on_nginx, received, report


def _agree(model, on_nginx) -> list[str]:
    """Cases where nginx's status or reason is not the model's."""
    return [f"{m.case.name}: model {m.observed.status} {m.observed.reasons}, nginx {n.observed.status} "
            f"{n.observed.reasons}" for m, n in zip(model, on_nginx)
            if n.verdict != "skip" and (m.observed.status != n.observed.status
                                        or m.observed.reasons[0] not in n.observed.reasons)]


@pytest.mark.parametrize("test_file", EXAMPLES, ids=lambda p: p.name.split(".")[0])
def test_shipped_examples_pass_on_real_nginx(test_file, nginx_bin, tmp_path):
    cases, model, on_nginx, received, report = _both(_policy_of(test_file), test_file, tmp_path, nginx_bin)
    assert counts(on_nginx) == (len(cases), 0, 0), report
    assert not _agree(model, on_nginx), report
    # The backend receives the normalised path nginx routed on (proxy_pass with a URI part),
    # never the raw spelling the client sent (docs/language.md "Paths").
    reached = [c.path for c, r in zip(cases, on_nginx) if r.observed.headers is not None]
    odd = [p for p in reached if p.split("?")[0] != normalise_path(p)]
    assert odd, "the example should send paths nginx normalises"
    got = {r.path for r in received}
    assert not set(odd) & got, "a raw, unnormalised target reached the backend"
    assert {forwarded_target(p) for p in odd} <= got


def test_a_wrong_expectation_fails_on_nginx(nginx_bin, tmp_path):
    test_file = tmp_path / "wrong.mtls-test.yaml"
    test_file.write_text("""\
cases:
  - name: right
    client: acme
    request: /partner//orders
    expect: allow
  - name: wrong status
    client: none
    request: /partner/x
    expect: allow
  - name: wrong header
    client: acme
    request: /%70artner/x
    expect: allow
    headers: {X-Client-Subject: "CN=acme-billing,O=Acme Corp,C=DE"}
  - name: leaking custom header
    client: none
    request: /
    spoof: {X-Role: admin}
    expect: allow
""")
    cases, model, on_nginx, _, report = _both(PARTNER, test_file, tmp_path / "lab", nginx_bin)
    assert [r.verdict for r in on_nginx] == ["pass", "fail", "fail", "fail"], report
    assert [r.case.span.line for r in on_nginx if r.verdict == "fail"] == [6, 10, 15]
    assert on_nginx[1].problems == ("expected allow, got 403 no_cert",)
    assert on_nginx[2].problems == ("header X-Client-Subject: expected 'CN=acme-billing,O=Acme Corp,C=DE', "
                                    "got 'CN=acme-billing,O=Acme Corp,C=US'",)
    assert on_nginx[3].problems == ("spoofed header X-Role reached the backend",)
    assert [r.problems for r in model] == [r.problems for r in on_nginx]
    assert report.endswith("1 passed, 3 failed\n")


TRICKY_PATHS = ["/partner", "/partner?q=1", "/.well-known", "/PARTNER/x", "/partner/%2e%2e/healthz", "/healthz/",
                "/healthz/.", "/healthz%2F", "/healthz?x=/partner/", "/partner/x#y", "/%2e%2e/x", "/a%2", "/a%00",
                "/partner/..", "/.well-known%2F..%2Fpartner/x", "/partner%2F"]


def test_model_and_nginx_agree_on_tricky_paths(nginx_bin, tmp_path):
    lines = ["cases:"]
    for path in TRICKY_PATHS:
        for client in ("none", "acme", "{ca: partners}"):
            lines.append(f"  - {{client: {client}, request: '{path}', expect: allow}}")
    test_file = tmp_path / "tricky.mtls-test.yaml"
    test_file.write_text("\n".join(lines) + "\n")
    _, model, on_nginx, _, report = _both(PARTNER, test_file, tmp_path / "lab", nginx_bin)
    assert not _agree(model, on_nginx), "\n".join(_agree(model, on_nginx))
    assert {r.observed.status for r in on_nginx} >= {200, 301, 400, 403}


def test_certificate_files_and_fingerprint_pins_in_the_lab(nginx_bin, tmp_path):
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    write_file_pki(pki_dir, datetime.now(timezone.utc))
    cases, model, on_nginx, _, report = _both(pki_dir / "corp.mtls", pki_dir / "corp.mtls-test.yaml",
                                              tmp_path / "lab", nginx_bin)
    assert counts(model) == counts(on_nginx) == (3, 0, 0), report
    # The lab sends alice's own file, trusting the CA files that signed it: nginx prints its dates
    # the way the model does, and forwards its own PEM.
    got = dict(on_nginx[0].observed.headers)
    alice = x509.load_pem_x509_certificate((pki_dir / "alice.crt").read_bytes())
    assert got["X-Client-Not-After"] == _nginx_time(alice.not_valid_after_utc)
    assert got["X-Client-Cert"].startswith("-----BEGIN%20CERTIFICATE-----%0A")
    assert not (tmp_path / "lab" / "lab" / "policytest").exists(), "a certificate file was re-issued"
    # A fingerprint pin matches one real certificate only: the lab reports it skipped, never passed.
    policy = pki_dir / "pinned.mtls"
    policy.write_text((pki_dir / "corp.mtls").read_text().replace(
        'identity alice { subject "CN=alice,O=Corp" }',
        'identity alice { subject "CN=alice,O=Corp" }\nidentity pin { fingerprint "' + "ab" * 20 + '" }')
        .replace("allow alice", "allow alice pin"))
    test_file = pki_dir / "pinned.mtls-test.yaml"
    test_file.write_text("cases:\n  - {client: pin, request: /app/x, expect: allow}\n"
                         "  - {client: alice, request: /app/x, expect: allow}\n")
    _, model, on_nginx, _, report = _both(policy, test_file, tmp_path / "lab2", nginx_bin)
    assert counts(model) == (2, 0, 0)
    assert counts(on_nginx) == (1, 0, 1), report
    assert "fingerprint pin" in on_nginx[0].problems[0] and not on_nginx[0].required
    assert report.endswith("1 passed, 0 failed, 1 skipped\n")
