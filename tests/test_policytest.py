"""Policy tests (`*.mtls-test.yaml`) without nginx: the schema's diagnostics (code, line:col and the
underlined text), the model's verdicts on the shipped examples, path normalisation, file clients."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mtlsc import dn, pipeline
from mtlsc.lab.pki import issue_client, make_chain, make_root, write_pem
from mtlsc.policytest import load_tests, normalise_path, policy_test_path
from mtlsc.policytest.run import _nginx_time, counts, expect_with_model, render_results
from mtlsc.render import render
from support import REPO

EXAMPLES = sorted((REPO / "policies").glob("*.mtls-test.yaml"))
PARTNER = REPO / "policies" / "partner-api.mtls"


def _policy(path: Path):
    front = pipeline.read_and_lower([str(path)])
    assert front.policy is not None, front.diagnostics
    return front.policy


def _load(tmp_path: Path, text: str, policy_path: Path = PARTNER):
    test_file = tmp_path / "t.mtls-test.yaml"
    test_file.write_text(text)
    return load_tests(test_file, _policy(policy_path))


def _underlined(source, span) -> str:
    line = source.line_text(span.line)
    return line[span.col - 1 : span.end_col - 1] if span.end_line == span.line else line[span.col - 1 :]


# ---- the shipped examples --------------------------------------------------------------------


def test_every_example_policy_with_tests_is_covered():
    assert {p.name for p in EXAMPLES} >= {"partner-api.mtls-test.yaml", "multi-ca.mtls-test.yaml"}
    for test_file in EXAMPLES:
        assert policy_test_path(test_file.with_name(test_file.name.replace("-test.yaml", ""))) == test_file


@pytest.mark.parametrize("test_file", EXAMPLES, ids=lambda p: p.name.split(".")[0])
def test_shipped_examples_pass_in_the_model(test_file):
    policy = _policy(test_file.with_name(test_file.name.replace("-test.yaml", "")))
    cases, diags, source = load_tests(test_file, policy)
    assert not diags, render(diags, {source.path: source})
    results = expect_with_model(policy, cases)
    report = render_results(results, {source.path: source})
    assert counts(results) == (len(cases), 0, 0), report
    assert len(cases) >= 15
    assert report.endswith(f"{len(cases)} passed, 0 failed\n")


def test_a_wrong_expectation_fails_at_its_line(tmp_path):
    text = (REPO / "policies" / "partner-api.mtls-test.yaml").read_text()
    wrong = text.replace("acme-challenge/token\n    expect: allow", "acme-challenge/token\n    expect: 403")
    assert wrong != text
    cases, diags, source = _load(tmp_path, wrong)
    assert not diags
    results = expect_with_model(_policy(PARTNER), cases)
    failed = [r for r in results if r.verdict == "fail"]
    assert len(failed) == 1
    line = next(i for i, t in enumerate(wrong.splitlines(), 1) if "ACME challenges are public" in t)
    assert failed[0].case.span.line == line
    report = render_results(results, {source.path: source})
    assert f"  FAIL  ACME challenges are public  ({source.path}:{line})" in report
    assert "model: expected 403, got 200 ok" in report
    assert report.endswith(f"{len(cases) - 1} passed, 1 failed\n")


def test_header_and_spoof_expectations_are_checked(tmp_path):
    cases, diags, _ = _load(tmp_path, """\
cases:
  - client: acme
    request: /partner/x
    expect: allow
    headers: {X-Client-Subject: "CN=someone else", X-Client-Fingerprint: null, X-Client-Issuer: true}
  - client: none
    request: /healthz
    spoof: {X-Client-Verify: SUCCESS, X-Custom-Role: admin}
    expect: allow
""")
    assert not diags
    first, second = expect_with_model(_policy(PARTNER), cases)
    assert first.problems == (
        "header X-Client-Subject: expected 'CN=someone else', got 'CN=acme-billing,O=Acme Corp,C=US'",
        "header X-Client-Fingerprint: expected absent, got "
        f"{dict(first.observed.headers)['X-Client-Fingerprint']!r}",
        "header X-Client-Issuer: expected present, got absent",
    )
    # Identity headers are set or cleared by nginx; any other forged header reaches the backend.
    assert second.problems == ("spoofed header X-Custom-Role reached the backend",)


# ---- schema errors: code, line:col, the underlined text --------------------------------------

SCHEMA_ERRORS = [
    ("syntax", "cases: [\n", "MTLS402", 2, 1, ""),
    ("duplicate-key", "cases:\n  - client: none\n    client: acme\n    request: /\n    expect: allow\n",
     "MTLS402", 3, 5, "client"),
    ("unknown-top-key", "case:\n  - client: none\n", "MTLS403", 1, 1, "case"),
    ("unknown-case-key", "cases:\n  - client: none\n    request: /\n    expcet: allow\n", "MTLS403", 4, 5, "expcet"),
    ("missing-expect", "cases:\n  - client: none\n    request: /\n", "MTLS404", 2, 5, "client: none"),
    ("empty-file", "# nothing\n", "MTLS404", 1, 1, ""),
    ("bad-status", "cases:\n  - {client: none, request: /, expect: 999}\n", "MTLS405", 2, 40, "999"),
    ("bad-expect", "cases:\n  - {client: none, request: /, expect: alow}\n", "MTLS405", 2, 40, "alow"),
    ("bad-reason", "cases:\n  - {client: none, request: /, expect: deny, reason: forbiden}\n",
     "MTLS405", 2, 54, "forbiden"),
    ("reason-contradicts", "cases:\n  - {client: none, request: /, expect: allow, reason: no_cert}\n",
     "MTLS405", 2, 55, "no_cert"),
    ("bad-method", "cases:\n  - {client: none, request: FETCH /, expect: allow}\n", "MTLS405", 2, 29, "FETCH /"),
    ("relative-path", "cases:\n  - {client: none, request: partner/x, expect: allow}\n",
     "MTLS405", 2, 29, "partner/x"),
    ("headers-on-deny", "cases:\n  - {client: none, request: /partner/, expect: 403, headers: {X-A: b}}\n",
     "MTLS405", 2, 62, "{X-A: b}"),
    ("case-not-mapping", "cases:\n  - just a string\n", "MTLS405", 2, 5, "just a string"),
    ("unknown-server", "server: api.example.org\ncases: []\n", "MTLS406", 1, 9, "api.example.org"),
    ("unknown-identity", "cases:\n  - {client: acne, request: /partner/, expect: allow}\n",
     "MTLS407", 2, 14, "acne"),
    ("unknown-ca", "cases:\n  - {client: {ca: partner}, request: /partner/, expect: deny}\n",
     "MTLS407", 2, 19, "partner"),
    ("legacy-subject", "cases:\n  - client: {subject: /CN=x/O=y, ca: partners}\n    request: /\n    expect: allow\n",
     "MTLS408", 2, 23, "/CN=x/O=y"),
    ("subject-too-long", f"cases:\n  - client: {{subject: CN={'x' * 70}}}\n    request: /\n    expect: allow\n",
     "MTLS408", 2, 23, f"CN={'x' * 70}"),
    ("missing-cert-file", "cases:\n  - client: {cert: nope.crt, key: nope.key}\n    request: /\n    expect: allow\n",
     "MTLS408", 2, 20, "nope.crt"),
    ("revoked-with-subject", "cases:\n  - client: {subject: CN=x, ca: partners, revoked: true}\n"
     "    request: /\n    expect: deny\n", "MTLS405", 2, 52, "true"),
    ("minted-fingerprint-value", "cases:\n  - client: acme\n    request: /partner/x\n    expect: allow\n"
     "    headers: {X-Client-Fingerprint: 0123456789abcdef0123456789abcdef01234567}\n",
     "MTLS409", 5, 15, "X-Client-Fingerprint"),
]


@pytest.mark.parametrize(("text", "code", "line", "col", "underlined"),
                         [p[1:] for p in SCHEMA_ERRORS], ids=[p[0] for p in SCHEMA_ERRORS])
def test_schema_errors_are_located_diagnostics(tmp_path, text, code, line, col, underlined):
    cases, diags, source = _load(tmp_path, text)
    found = [(d.code, d.span.line, d.span.col) for d in diags]
    assert (code, line, col) in found, render(diags, {source.path: source})
    diag = next(d for d in diags if (d.code, d.span.line, d.span.col) == (code, line, col))
    if underlined:
        assert _underlined(source, diag.span) == underlined
    rendered = render(diags, {source.path: source})  # never a traceback
    assert f"error[{code}]" in rendered and f"{source.path}:{line}:{col}" in rendered


def test_did_you_mean_for_keys_and_names(tmp_path):
    _, diags, _ = _load(tmp_path, "cases:\n  - {client: acne, request: /partner/, expcet: allow}\n")
    helps = {d.code: d.help for d in diags}
    assert helps["MTLS407"] == "did you mean `acme`?"
    assert helps["MTLS403"] == "did you mean `expect`?"


def test_unreadable_test_file_is_mtls401(tmp_path):
    cases, diags, source = load_tests(tmp_path / "missing.mtls-test.yaml", _policy(PARTNER))
    assert source is None and cases == [] and [d.code for d in diags] == ["MTLS401"]


def test_several_servers_need_a_server(tmp_path):
    policy = tmp_path / "two.mtls"
    policy.write_text('server a.example { certificate "a.crt" key "a.key" backend "http://127.0.0.1:1" '
                      'route / { public } }\n'
                      'server b.example { certificate "b.crt" key "b.key" backend "http://127.0.0.1:1" '
                      'route / { public } }\n')
    text = "cases:\n  - {client: none, request: /, expect: allow}\n  - {server: b.example, client: none, " \
           "request: /, expect: allow}\n"
    cases, diags, _ = _load(tmp_path, text, policy)
    assert [(d.code, d.span.line) for d in diags] == [("MTLS404", 2)]
    assert "several" in diags[0].message
    assert [c.server for c in cases] == ["b.example"]


# ---- normalisation, as nginx does it before matching locations (nginx-facts §2) --------------

NORMALISED = [
    ("/partner//x", "/partner/x"), ("/healthz/../partner/x", "/partner/x"), ("/%70artner/x", "/partner/x"),
    ("/partner%2Fx", "/partner/x"), ("/partner/%2e%2E/healthz", "/healthz"), ("/a/./b", "/a/b"),
    ("/a/.", "/a/"), ("/a/..", "/"), ("/a/b/../../c", "/c"), ("//", "/"), ("/a//", "/a/"),
    ("/x?y=/../../..", "/x"), ("/x#/../..", "/x"), ("/a/..?q", "/"), ("/a%23b", "/a#b"), ("/a%3fb", "/a?b"),
    ("/a%25", "/a%"), ("/a%252F", "/a%2F"), ("/a+b", "/a+b"), ("/a..b", "/a..b"), ("/.../x", "/.../x"),
    ("/.hidden", "/.hidden"), ("/%C3%BC", "/\u00fc"),
]
REFUSED = ["/..", "/../x", "/a/../..", "/%2e%2e/x", "/%00", "/a%2", "/a%zz", "/a%", "partner/x", "/a b"]


@pytest.mark.parametrize(("raw", "path"), NORMALISED)
def test_normalise_path(raw, path):
    assert normalise_path(raw) == path


@pytest.mark.parametrize("raw", REFUSED)
def test_normalise_path_refuses_what_nginx_answers_400(raw):
    with pytest.raises(ValueError):
        normalise_path(raw)


def test_a_bad_request_line_is_400_in_the_model(tmp_path):
    cases, diags, _ = _load(tmp_path, "cases:\n  - {client: acme, request: /../partner/x, expect: 400, "
                                      "reason: bad_request}\n")
    assert not diags and cases[0].route == "api.example.com (request refused before routing)"
    assert expect_with_model(_policy(PARTNER), cases)[0].verdict == "pass"


# ---- certificate files -----------------------------------------------------------------------


def write_file_pki(directory: Path, now: datetime) -> None:
    """A policy `corp.mtls` whose CA files are here, and client files: alice (valid), old (expired),
    evil (alice's subject from another CA)."""
    chain = make_chain("corp", 1, now=now)
    write_pem(directory / "root.pem", chain.root.cert)
    write_pem(directory / "issuing.pem", chain.issuing.cert)
    alice = dn.x509_name(dn.parse_dn("CN=alice,O=Corp"))
    for name, issuer, extra in [("alice", chain.issuing, {}), ("evil", make_root("evil", now=now), {}),
                                ("old", chain.issuing, {"not_before": now - timedelta(days=30), "days": 1})]:
        issued = issue_client(issuer, alice, now=now, **extra)
        write_pem(directory / f"{name}.crt", issued.cert)
        write_pem(directory / f"{name}.key", issued.key)
    (directory / "corp.mtls").write_text(
        'ca corp { bundle "root.pem" "issuing.pem" }\nidentity alice { subject "CN=alice,O=Corp" }\n'
        'server corp.example { certificate "s.crt" key "s.key" backend "http://127.0.0.1:1"\n'
        '  route /app/ { require corp allow alice forward subject fingerprint serial issuer not_after cert } }\n')
    fingerprint = x509.load_pem_x509_certificate((directory / "alice.crt").read_bytes()).fingerprint(hashes.SHA1()).hex()
    (directory / "corp.mtls-test.yaml").write_text(f"""\
cases:
  - name: alice's own certificate
    client: {{cert: alice.crt, key: alice.key}}
    request: /app/x
    expect: allow
    headers:
      X-Client-Subject: "CN=alice,O=Corp"
      X-Client-Issuer: "CN=corp intermediate 1,O=mtlsc lab"
      X-Client-Fingerprint: "{fingerprint}"
      X-Client-Not-After: "{_nginx_time(x509.load_pem_x509_certificate((directory / "alice.crt").read_bytes())
                                        .not_valid_after_utc)}"
      X-Client-Cert: true
  - name: an expired certificate
    client: {{cert: old.crt, key: old.key}}
    request: /app/x
    expect: 403
    reason: bad_cert
  - name: the same subject from another CA
    client: {{cert: evil.crt, key: evil.key}}
    request: /app/x
    expect: 403
    reason: bad_cert
""")


def test_certificate_files_are_read_like_nginx_reads_them(tmp_path):
    now = datetime.now(timezone.utc)
    write_file_pki(tmp_path, now)
    policy = _policy(tmp_path / "corp.mtls")
    cases, diags, source = load_tests(tmp_path / "corp.mtls-test.yaml", policy)
    assert not diags, render(diags, {source.path: source})
    files = [c.client.file for c in cases]
    assert [(f.issued_by, f.issuer_index, f.valid) for f in files] == [("corp", 1, True), ("corp", 1, False),
                                                                       (None, 0, True)]
    results = expect_with_model(policy, cases)
    assert counts(results) == (3, 0, 0), render_results(results, {source.path: source})


def test_a_key_that_does_not_match_the_certificate(tmp_path):
    write_file_pki(tmp_path, datetime.now(timezone.utc))
    text = "cases:\n  - client: {cert: alice.crt, key: evil.key}\n    request: /app/x\n    expect: allow\n"
    (tmp_path / "corp.mtls-test.yaml").write_text(text)
    _, diags, _ = load_tests(tmp_path / "corp.mtls-test.yaml", _policy(tmp_path / "corp.mtls"))
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("MTLS408", 2, 36)]
    assert "is not the key of" in diags[0].message


def test_every_test_file_code_is_catalogued_and_exercised():
    from mtlsc.policytest import schema
    from mtlsc.codes import rules

    codes = {v for k, v in vars(schema).items() if k.isupper() and isinstance(v, str) and v.startswith("MTLS4")}
    assert codes == {f"MTLS40{n}" for n in range(1, 10)}
    assert codes <= set(rules())
    exercised = {p[2] for p in SCHEMA_ERRORS} | {"MTLS401"}  # 401: test_unreadable_test_file_is_mtls401
    assert codes <= exercised


def test_a_certificate_file_pem_is_checked_for_presence_only(tmp_path):
    write_file_pki(tmp_path, datetime.now(timezone.utc))
    (tmp_path / "corp.mtls-test.yaml").write_text("cases:\n  - client: {cert: alice.crt, key: alice.key}\n"
                                                  "    request: /app/x\n    expect: allow\n"
                                                  "    headers: {X-Client-Cert: '-----BEGIN'}\n")
    _, diags, _ = load_tests(tmp_path / "corp.mtls-test.yaml", _policy(tmp_path / "corp.mtls"))
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("MTLS409", 5, 15)]
