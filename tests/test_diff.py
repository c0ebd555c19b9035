"""`mtlsc diff`: crafted policy pairs (tests/cases/diff/<name>/old.mtls + new.mtls), each change
classified as expected; the text rendering is a golden (expected.txt); `--git REF` in a real repo;
CRL and root changes on CA files made at test time."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from cryptography.hazmat.primitives import hashes

from mtlsc.review.diff import FAIL_ON, JSON_FORMAT, KINDS, Change, diff_policies, fails, render_diff, run_diff
from mtlsc.review.diff_trust import identity_samples
from mtlsc.model.evaluate import identity_matches
from mtlsc.review.explain import explain, render_explanation
from mtlsc.gitrev import load_from_files, load_from_git
from mtlsc.lab.pki import make_chain, make_crl, make_root, write_pem
from strategies import policies
from support import HERE, REPO, assert_golden, run_cli

CASES = HERE / "cases" / "diff"
W, N, O = "widening", "narrowing", "neutral"

# Every change each pair must produce: (kind, a piece of its message). Nothing else may appear.
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "allow_added": [(W, "identity globex gains access to `/partner/` (was 403 forbidden)")],
    "allow_removed": [(N, "identity globex loses access to `/partner/` (now 403 forbidden)")],
    "allow_any": [(W, "any certificate of CA partners gains access to `/partner/`")],
    "route_added": [(N, "route `/partner/admin/` added (require partners, allow globex), taking requests from "
                        "`/partner/`: identity acme: now refused with 403 forbidden")],
    "route_removed": [(W, "route `/partner/admin/` removed, its requests now go to `/partner/`: identity acme: "
                          "now get through")],
    "became_public": [(W, "`= /metrics` became public (was require partners, allow acme): no certificate: now get "
                          "through (was 403 no_cert)")],
    "no_longer_public": [(N, "`= /metrics` is no longer public (now require partners, allow acme)")],
    "optional_to_require": [(N, "no certificate loses access to `/` (now 403 no_cert)")],
    "crl_removed": [(W, "CRL removed from CA `partners` (revoked certificates would now pass)")],
    "crl_added": [(N, "CRL checking turned on for CA `partners`")],
    "ocsp_added": [(N, "OCSP checking turned on for CA `partners`")],
    "ocsp_on_to_leaf": [(W, "OCSP of CA `partners` on -> leaf: intermediates are no longer checked")],
    "ocsp_cache_off": [(O, "OCSP answer cache of CA `partners`: 10m -> off")],
    "depth_decreased": [(N, "verify depth 2 -> 1 (ssl_verify_depth, CA partners): clients behind two "
                            "intermediates are locked out")],
    "depth_increased": [(W, "verify depth 1 -> 3")],
    "header_removed": [(N, "header `X-Client-Subject` no longer forwarded on `/partner/`")],
    "header_added": [(O, "header `X-Client-Issuer` now forwarded on `/partner/`")],
    "header_no_longer_cleared": [(W, "header `X-Partner-DN` is no longer cleared"),
                                 (N, "header `X-Partner-DN` no longer forwarded on `/partner/`"),
                                 (O, "header `X-Client-Subject` now forwarded on `/partner/`")],
    "server_added": [(W, "server `admin.example.com` (listen 443) added")],
    "server_removed": [(N, "server `admin.example.com` (listen 443) removed")],
    "listen_added": [(W, "listen `8443` added")],
    "name_added": [(W, "name `api-eu.example.com` added: the server's routes answer there too")],
    "new_root": [(W, "CA `partners` trusts a new root `CN=vendors root,O=mtlsc lab`")],
    "intermediate_removed": [(N, "CA `partners` no longer trusts intermediate `CN=partners intermediate 1")],
    "identity_subject_changed": [(N, "identity acme as defined before loses access to `/partner/`"),
                                 (W, "identity acme as now defined gains access to `/partner/`"),
                                 (W, "certificate `CN=acme-payments,O=Acme Corp,C=US` now matches it"),
                                 (N, "certificate `CN=acme-billing,O=Acme Corp,C=US` no longer matches it")],
    "identity_pattern_narrowed": [(N, "certificate `CN=globex-0,O=Globex Inc` loses access to `/partner/`"),
                                  (N, "identity `globex` changed from `cn ~ \"^globex-[a-z0-9-]+$\"")],
    "identity_pattern_widened": [(W, "certificate `CN=globex-0,O=Globex Inc` gains access to `/partner/`"),
                                 (W, "identity `globex` changed from `cn ~ \"^globex-[a-z]+$\"")],
    "identity_case_only": [(O, "only the case changed")],
    "reject_status": [(O, "rejection `no_cert` changed: 403 \"client certificate required\" -> 401")],
    "backend_changed": [(O, "`/` now proxies to `http://127.0.0.1:9090`")],
    "ca_renamed": [(O, "CA `partners` renamed to `partner_ca` (same certificates)")],
    "text_only": [],
    "handshake_require_added": [(N, "`handshake require` added")],
    "tls_weakened": [(W, "TLS profile `intermediate` -> `old`: now accepts TLSv1, TLSv1.1")],
    "tls_strengthened": [(N, "TLS profile `intermediate` -> `modern`")],
    "hsts_weakened": [(W, "HSTS `max-age=63072000; includeSubDomains` -> `max-age=31536000`")],
    "hsts_removed": [(W, "HSTS no longer sent")],
    "stapling_on": [(O, "OCSP stapling on")],
    "handshake_require_removed": [(W, "`handshake require` removed")],
    # The pull request of docs/review.md (test_review_doc_shows_real_output keeps the page true).
    "review_pr": [(N, "identity acme: now refused with 403 forbidden"),
                  (W, "identity initech gains access to `/partner/` (was 403 forbidden)"),
                  (W, "CRL removed from CA `partners`")],
}


def _load(path):
    policy, pki, diags = load_from_files([str(path)])
    assert policy is not None and not [d for d in diags if str(d.severity) == "error"], diags
    return policy, pki


def _case(name: str) -> list[Change]:
    return diff_policies(_load(CASES / name / "old.mtls"), _load(CASES / name / "new.mtls"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pair_is_classified(name):
    changes = _case(name)
    want = EXPECTED[name]
    assert sorted(c.kind for c in changes) == sorted(k for k, _ in want), render_diff(changes)
    for kind, text in want:
        assert any(c.kind == kind and text in c.message for c in changes), (kind, text, render_diff(changes))
    assert_golden(CASES / name / "expected.txt", render_diff(changes, "text"))


def test_every_case_directory_is_listed_and_every_kind_is_covered():
    assert {p.name for p in CASES.iterdir() if p.is_dir()} == set(EXPECTED)
    assert len(EXPECTED) >= 15
    assert {k for want in EXPECTED.values() for k, _ in want} == set(KINDS)


@pytest.mark.parametrize("policy", sorted((REPO / "policies").glob("*.mtls")), ids=lambda p: p.stem)
def test_a_policy_against_itself_has_no_change(policy):
    side = _load(policy)
    assert diff_policies(side, side) == []


def test_fail_on():
    wide, narrow, neutral = (Change(k, None, None, "x", "m") for k in KINDS)
    assert fails([wide, neutral], "widening") and not fails([narrow, neutral], "widening")
    assert fails([narrow], "narrowing") and not fails([wide], "narrowing")
    assert fails([neutral], "any") and not fails([], "any")
    assert set(FAIL_ON) == {"widening", "narrowing", "any"}
    with pytest.raises(ValueError):
        fails([], "everything")


def test_json_and_markdown():
    changes = _case("header_no_longer_cleared")
    doc = json.loads(render_diff(changes, "json"))
    assert doc["format"] == JSON_FORMAT and doc["summary"] == {"widening": 1, "narrowing": 1, "neutral": 1}
    assert all(set(c) == {"kind", "server", "route", "subject", "message", "old", "new"} for c in doc["changes"])
    assert doc["changes"][0]["server"] == "api.example.com"
    md = render_diff(changes, "md")
    assert md.startswith("## mtlsc diff: 1 widening, 1 narrowing, 1 neutral")
    assert "### ⚠️ Widening" in md and "- **api.example.com**: header `X-Partner-DN` is no longer cleared" in md
    assert render_diff([], "text") == "no change in access\n"


def test_identity_samples_match_their_identity():
    for policy in (REPO / "policies").glob("*.mtls"):
        for ident in _load(policy)[0].identities:
            samples = identity_samples(ident)
            assert samples and all(identity_matches(ident, c) for c in samples), ident.name


# ----- --git REF ------------------------------------------------------------------------------

def _git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"})


@pytest.fixture
def repo(tmp_path):
    """A git repo holding policies/partner-api.mtls and its CA files, committed."""
    (tmp_path / "policies").mkdir()
    shutil.copytree(REPO / "policies" / "ca", tmp_path / "policies" / "ca")
    shutil.copy(REPO / "policies" / "partner-api.mtls", tmp_path / "policies" / "partner-api.mtls")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "base")
    return tmp_path


def test_git_revision_against_the_work_tree(repo):
    policy = repo / "policies" / "partner-api.mtls"
    policy.write_text(policy.read_text().replace("allow acme globex", "allow acme"))
    # The work tree's root file now holds another root: only the git side still has the old one.
    shutil.copy(repo / "policies" / "ca" / "vendors-root.pem", repo / "policies" / "ca" / "partners-root.pem")
    old = load_from_git(str(policy), "HEAD")
    assert old[0] is not None and old[2] == [], old[2]
    changes = diff_policies(old[:2], _load(policy))
    assert sorted((c.kind, c.message.split(":")[0]) for c in changes) == [
        (N, "CA `partners` no longer trusts root `CN=partners root,O=mtlsc lab` (SHA-1 eafdfc43f344f13b)"),
        (N, "identity globex loses access to `/partner/` (now 403 forbidden)"),
        (W, "CA `partners` trusts a new root `CN=vendors root,O=mtlsc lab` (SHA-1 62c2b6f857342e3d)"),
    ]


def test_git_revision_reads_ca_files_of_that_revision(repo):
    policy = repo / "policies" / "partner-api.mtls"
    text = policy.read_text()
    policy.write_text(text.replace('"ca/partners-issuing.pem"', '"ca/partners-issuing.pem" "ca/vendors-root.pem"'))
    _git(repo, "commit", "-q", "-am", "trust vendors")
    changes = diff_policies(load_from_git(str(policy), "HEAD~1")[:2], load_from_git(str(policy), "HEAD")[:2])
    assert [c.kind for c in changes] == [W] and "new root `CN=vendors root" in changes[0].message


def test_git_errors_are_diagnostics(repo, tmp_path_factory):
    policy = repo / "policies" / "partner-api.mtls"
    policy_, pki, diags = load_from_git(str(policy), "no-such-ref")
    assert policy_ is None and diags[0].code == "MTLS900"
    assert diags[0].span.path == "no-such-ref:policies/partner-api.mtls"
    outside = tmp_path_factory.mktemp("nogit") / "p.mtls"
    assert load_from_git(str(outside), "HEAD")[2][0].code == "MTLS900"
    (repo / "policies" / "new.mtls").write_text(policy.read_text().replace("ca/partners-root.crl", "ca/gone.crl"))
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "x")
    _, _, diags = load_from_git(str(repo / "policies" / "new.mtls"), "HEAD")
    assert [(d.code, d.span.path) for d in diags] == [("MTLS901", "HEAD:policies/new.mtls")]
    assert "`HEAD:policies/ca/gone.crl`" in diags[0].message


# ----- CA files made here: revocations and re-keyed roots ---------------------------------------

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _policy(tmp_path, name: str, bundle: str, crl: str = "") -> str:
    path = tmp_path / name
    crl_line = f'crl "{crl}"' if crl else ""
    path.write_text(f"""
ca lab {{ bundle "{bundle}"  depth 0  {crl_line} }}
server a.example {{
  certificate "/c" key "/k"  backend "http://127.0.0.1:1"
  route / {{ require lab  allow any }}
}}
""")
    return str(path)


def test_crl_revocations(tmp_path):
    root = make_chain("lab", 0, now=NOW).root
    write_pem(tmp_path / "root.pem", root.cert)
    write_pem(tmp_path / "a.crl", make_crl(root, [0x1001], now=NOW))
    write_pem(tmp_path / "b.crl", make_crl(root, [0x1001, 0x1002], now=NOW))
    write_pem(tmp_path / "c.crl", make_crl(root, [0x1002], now=NOW))
    write_pem(tmp_path / "d.crl", make_crl(root, [0x1002], now=NOW + timedelta(days=1)))
    a, b, c, d = (_load(_policy(tmp_path, f"{x}.mtls", "root.pem", f"{x}.crl")) for x in "abcd")
    [more] = diff_policies(a, b)
    assert more.kind == N and "1 more certificate(s) of `CN=lab root,O=mtlsc lab` revoked (serial 1002)" in more.message
    kinds = sorted((ch.kind, ch.message.split(":")[1].strip()) for ch in diff_policies(b, c))
    assert kinds == [(W, "1 certificate(s) of `CN=lab root,O=mtlsc lab` no longer revoked (serial 1001)")]
    [reissued] = diff_policies(c, d)
    assert reissued.kind == O and "re-issued with the same revocations" in reissued.message


def _self_signed(key, subject: x509.Name, serial: int) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
         .serial_number(serial).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=400))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    return b.sign(key, hashes.SHA256())


def test_root_reissued_with_the_same_key_is_neutral_and_a_new_key_widens(tmp_path):
    root = make_root("lab root", now=NOW)
    write_pem(tmp_path / "r1.pem", root.cert)
    write_pem(tmp_path / "r2.pem", _self_signed(root.key, root.cert.subject, 77))
    write_pem(tmp_path / "r3.pem", make_root("lab root", now=NOW).cert)
    one, two, three = (_load(_policy(tmp_path, f"{x}.mtls", f"r{x}.pem")) for x in "123")
    [same_key] = diff_policies(one, two)
    assert same_key.kind == O and "re-issued with the same key" in same_key.message
    [new_key] = diff_policies(one, three)
    assert new_key.kind == W and "replaced by a certificate with another key" in new_key.message


# ----- generated pairs ------------------------------------------------------------------------

def _from_text(text: str, tmp) -> tuple:
    path = tmp / f"p{abs(hash(text))}.mtls"
    path.write_text(text)
    return _load(path)


def _verdicts(side) -> dict:
    """(server, route, client key) -> allowed?, from `mtlsc explain`'s matrix."""
    out = {}
    for view in explain(*side).servers:
        for route in view.routes:
            for client, cell in zip(view.clients, route.cells):
                out[(view.names, route.route, route.probe, client.key)] = cell.status == 200
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=policies(), new=policies())
def test_generated_pairs(old, new, tmp_path):
    """No traceback; a policy against itself is no change; a cell of the explain matrix that
    flips between the versions shows up as a change of that direction."""
    a, b = _from_text(old, tmp_path), _from_text(new, tmp_path)
    assert diff_policies(a, a) == []
    changes = diff_policies(a, b)
    for fmt in ("text", "md", "json"):
        render_diff(changes, fmt)
    before, after = _verdicts(a), _verdicts(b)
    kinds = {c.kind for c in changes if c.server}
    for key in before.keys() & after.keys():
        if before[key] != after[key]:
            assert (W if after[key] else N) in kinds, (key, render_diff(changes))


# ----- the command functions the CLI calls ----------------------------------------------------

def test_run_diff_exit_codes(repo, tmp_path):
    old, new = str(CASES / "allow_added" / "old.mtls"), str(CASES / "allow_added" / "new.mtls")
    assert run_diff(old, new)[0] == 0
    code, out, err = run_diff(old, new, fail_on="widening")
    assert code == 1 and out.startswith("widening ") and err == ""
    assert run_diff(old, new, fail_on="narrowing")[0] == 0
    assert run_diff(old, old, fail_on="any") == (0, "no change in access\n", "")
    code, out, err = run_diff(str(tmp_path / "missing.mtls"), new)
    assert code == 2 and out == "" and "MTLS900" in err
    policy = repo / "policies" / "partner-api.mtls"
    policy.write_text(policy.read_text().replace("route = /healthz { public }", ""))
    code, out, _ = run_diff(None, str(policy), git_ref="HEAD", fmt="json", fail_on="any")
    # `/` is optional: a public path falling to it loses no one, and the backend learns more.
    [change] = json.loads(out)["changes"]
    assert code == 1 and change["kind"] == O and change["message"].startswith("route `= /healthz` removed")
    assert run_diff(None, str(policy), git_ref="HEAD", fail_on="widening")[0] == 0


def test_review_doc_shows_real_output(monkeypatch):
    """docs/review.md pastes `mtlsc diff` and `mtlsc explain` output: it must be what they print."""
    doc = (REPO / "docs" / "review.md").read_text()
    text = render_diff(_case("review_pr"), "text")
    assert f"```\n{text}```" in doc
    for line in render_diff(_case("review_pr"), "md").splitlines()[:10]:
        assert f"> {line}".rstrip() in doc
    monkeypatch.chdir(CASES / "review_pr")
    md = render_explanation(explain(*_load("new.mtls")), "md")
    table = md.split("### `api.example.com`")[1].split("<sub>")[0].strip()
    assert "\n".join(f"> {line}".rstrip() for line in table.splitlines()) in doc


# ----- a side whose CA or CRL files cannot be used is not compared --------------------------------

def _with_files(tmp_path, name: str, text: str) -> str:
    """A case policy moved into tmp_path: its relative CA paths made absolute, so they still resolve."""
    path = tmp_path / name
    path.write_text(text.replace('"../../../../policies/', f'"{REPO}/policies/'))
    return str(path)


@pytest.mark.parametrize("broken, code", [
    ("partners-issuing.pem", "MTLS901"),  # a bundle file that is not there
    ("partners-root.crl", "MTLS901"),  # a CRL file that is not there
])
def test_unreadable_file_on_the_new_side_exits_2_even_with_fail_on(tmp_path, broken, code):
    """Compared as empty, the unreadable file read as `no longer trusts root` (narrowing), so
    `--fail-on widening` exited 0 and hid the new identity's access (docs/review.md: exit 2)."""
    old = _with_files(tmp_path, "old.mtls", (CASES / "allow_added" / "old.mtls").read_text())
    new = _with_files(tmp_path, "new.mtls", (CASES / "allow_added" / "new.mtls").read_text()
                      .replace(f"ca/{broken}", f"ca/gone-{broken}"))
    for fail_on in ("widening", "narrowing", "any", None):
        exit_code, out, err = run_diff(old, new, fail_on=fail_on)
        assert (exit_code, out) == (2, ""), (fail_on, out, err)
        assert f"error[{code}]: cannot read" in err and f"gone-{broken}" in err
        assert err.endswith(f"mtlsc diff: cannot compare: a CA or CRL file of `{new}` cannot be used (see above)\n")
    # the CLI says the same
    assert run_cli("diff", old, new, "--fail-on", "widening")[0] == 2


def test_file_that_gives_nginx_no_certificate_exits_2(tmp_path):
    (tmp_path / "empty.pem").write_text("")
    old = _with_files(tmp_path, "old.mtls", (CASES / "allow_added" / "old.mtls").read_text())
    new = _with_files(tmp_path, "new.mtls", (CASES / "allow_added" / "new.mtls").read_text()
                      .replace('"../../../../policies/ca/partners-issuing.pem"', f'"{tmp_path}/empty.pem"'))
    exit_code, out, err = run_diff(old, new, fail_on="widening")
    assert (exit_code, out) == (2, "") and "error[MTLS301]" in err and "cannot compare" in err


def test_file_missing_at_the_git_revision_exits_2(repo):
    """The old side read at REF: a CA file the policy named there but that was never committed
    there stops the diff too, instead of reading as `trusts a new root` (widening) on every PR."""
    policy = repo / "policies" / "partner-api.mtls"
    policy.write_text(policy.read_text().replace("ca/partners-root.crl", "ca/later.crl"))
    _git(repo, "commit", "-q", "-am", "name a CRL file that is not committed")
    shutil.copy(repo / "policies" / "ca" / "partners-root.crl", repo / "policies" / "ca" / "later.crl")
    exit_code, out, err = run_diff(None, str(policy), git_ref="HEAD", fail_on="widening")
    assert (exit_code, out) == (2, ""), err
    assert "`HEAD:policies/ca/later.crl`" in err and f"a CA or CRL file of `{policy} at HEAD`" in err


def test_warnings_about_ca_files_do_not_stop_the_diff(tmp_path):
    root = make_chain("lab", 0, now=NOW).root
    write_pem(tmp_path / "root.pem", root.cert)
    write_pem(tmp_path / "root-and-key.pem", root.cert, root.key)  # MTLS303, a warning
    old, new = _policy(tmp_path, "a.mtls", "root.pem"), _policy(tmp_path, "b.mtls", "root-and-key.pem")
    exit_code, out, err = run_diff(old, new, fail_on="any")
    assert exit_code == 0 and out == "no change in access\n" and "warning[MTLS303]" in err
