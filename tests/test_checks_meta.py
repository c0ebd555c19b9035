"""The registry keeps its promises: every check in CHECKS has a unique code, a documented
docstring (What / Why / Example / Fix), a `## MTLSnnn` section in docs/checks.md, and tests
named `test_mtlsNNN_triggers*` and `test_mtlsNNN_clean*` somewhere under tests/."""

from __future__ import annotations

import ast
import re

import pytest

from mtlsc.checks import CHECKS
from mtlsc.diagnostics import Severity
from support import HERE, REPO

CODES = [c.code for c in CHECKS]
SECTIONS = ("What", "Why", "Example", "Fix")  # each opens a paragraph: `What it catches (a note): ...`


def _test_names() -> set[str]:
    names = set()
    for path in HERE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                names.add(node.name)
    return names


TEST_NAMES = _test_names()
DOC_HEADINGS = re.findall(r"^## (MTLS\d{3}) [a-z0-9-]+$", (REPO / "docs" / "checks.md").read_text(), re.M)


def test_codes_are_unique_and_well_formed():
    assert len(CODES) == len(set(CODES)), [c for c in CODES if CODES.count(c) > 1]
    assert all(re.fullmatch(r"MTLS\d{3}", c) for c in CODES), CODES
    assert all(c.code[4] in "123" for c in CHECKS), "checks are 1xx lockout, 2xx over-trust, 3xx files"
    assert all(isinstance(c.severity, Severity) for c in CHECKS)


def test_registry_is_sorted_by_code():
    assert CODES == sorted(CODES)


def test_every_check_function_is_registered_once():
    finds = [c.find for c in CHECKS]
    assert len(finds) == len(set(finds))


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.code)
def test_docstring_has_what_why_example_fix(check):
    doc = check.find.__doc__ or ""
    found = [re.search(rf"(?m)^\s*{s}\b[^:\n]*:", doc) for s in SECTIONS]
    positions = [m.start() if m else -1 for m in found]
    assert all(p >= 0 for p in positions), f"{check.code} {check.find.__name__}: missing {[s for s, p in zip(SECTIONS, positions) if p < 0]}"
    assert positions == sorted(positions), f"{check.code}: sections out of order"
    assert "nginx-facts" in doc or check.code == "MTLS149", f"{check.code}: the Why should cite docs/nginx-facts.md"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.code)
def test_documented_in_checks_md(check):
    assert check.code in DOC_HEADINGS, f"docs/checks.md has no `## {check.code} slug` section"


def test_docs_sections_are_in_code_order():
    # Codes reported outside CHECKS (MTLS30x, from reading the files) are documented there too.
    assert DOC_HEADINGS == sorted(DOC_HEADINGS)
    assert len(DOC_HEADINGS) == len(set(DOC_HEADINGS))


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.code)
def test_has_triggering_and_clean_tests(check):
    stem = f"test_{check.code.lower()}_"
    for kind in ("triggers", "clean"):
        assert any(n.startswith(stem + kind) for n in TEST_NAMES), f"no test named {stem}{kind}* under tests/"
