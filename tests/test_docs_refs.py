"""References in the product resolve: a reader who follows one finds what it names.

- a citation of the facts file (`docs/nginx-facts.md §N`, also `lockout trap N` and
  `over-trust trap N`) names a section heading of docs/nginx-facts.md, wherever it appears: product
  code, docs, emitted config (tests/golden), diagnostics (tests/cases), tests;
- the product cites the facts file by its path, `docs/nginx-facts.md`, and never the team's
  research notes (`shared/design`);
- every `docs/NAME.md` the product mentions exists, and `docs/NAME.md "Heading"` names a heading
  of that file;
- every fact section of docs/nginx-facts.md names the tests that prove it, and they exist.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import HERE, REPO

FACTS = REPO / "docs" / "nginx-facts.md"
PRODUCT = [REPO / "mtlsc", REPO / "docs", REPO / "tests" / "golden", REPO / "tests" / "cases", REPO / "README.md"]
EVERYWHERE = PRODUCT + [HERE]
_SECTION = r"§[A-Z]?\d*"
_CITE = re.compile(
    r"nginx-facts(?:\.md)?((?:[ ,;]+(?:" + _SECTION + r"(?:-§?[A-Z]?\d+)?|lockout trap \d+|over-trust trap \d+))+)")
_TRAP = re.compile(r"\b(lockout|over-trust) trap (\d+)", re.I)
_DOC = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)\b(?:,? \"([^\"\n]+)\")?")


def _texts(roots: list[Path]) -> Iterator[tuple[Path, str]]:
    """(path, text with line breaks and comment or docstring indentation folded to one space)."""
    for root in roots:
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path in (FACTS, Path(__file__)):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            yield path.relative_to(REPO), re.sub(r"[ \t]*\n[ \t]*(?:#+[ \t]*)?", " ", text)


def _headings(path: Path) -> list[str]:
    return [m[1].replace("`", "").strip() for m in re.finditer(r"(?m)^#{1,6} (.+)$", path.read_text(encoding="utf-8"))]


FACT_HEADINGS = _headings(FACTS)
SECTIONS = {h.split()[0] for h in FACT_HEADINGS if h.startswith("§")}
TRAPS = {h.split(":")[0].lower() for h in FACT_HEADINGS if re.match(r"(Lockout|Over-trust) trap \d+:", h)}


def _cited(tail: str) -> Iterator[str]:
    """Section ids and traps in the tail of one citation: `§1, §E1`, `§1-§2`, `§F1-F2`, `lockout trap 7`."""
    for token in re.split(r"[ ,;]+(?=§|lockout|over-trust)", tail.strip(" ,;")):
        if "trap" in token:
            yield token.lower()
            continue
        first, _, last = token.partition("-")
        yield first
        if last:
            yield last if last.startswith("§") else "§" + last


def test_the_facts_file_has_the_sections_the_code_cites():
    # Spot check of the parser on the headings themselves; the real work is in the next test.
    assert {"§1", "§13", "§E1", "§E2", "§F", "§F1", "§F10"} <= SECTIONS
    assert {"lockout trap 1", "lockout trap 12", "over-trust trap 1", "over-trust trap 13"} <= TRAPS


def test_every_facts_citation_names_a_section():
    bad, count = [], 0
    for path, text in _texts(EVERYWHERE):
        for m in _CITE.finditer(text):
            for ref in _cited(m[1]):
                count += 1
                if ref not in SECTIONS | TRAPS:
                    bad.append(f"{path}: {m[0]!r} cites {ref}")
        for m in _TRAP.finditer(text):
            count += 1
            if f"{m[1].lower()} trap {m[2]}" not in TRAPS:
                bad.append(f"{path}: {m[0]!r}")
    assert count > 100, "the citation parser found almost nothing: is it still reading the files?"
    assert not bad, "\n".join(bad)


def test_the_product_cites_the_facts_file_by_its_path():
    bad = []
    for path, text in _texts(PRODUCT):
        bad += [f"{path}: cites the research notes" for _ in re.finditer(r"shared/design|\.\./shared/", text)]
        bad += [f"{path}: {text[max(m.start() - 20, 0):m.end() + 10]!r}"
                for m in re.finditer(r"nginx-facts", text) if text[m.start() - 5:m.end() + 3] != "docs/nginx-facts.md"]
    assert not bad, "write `docs/nginx-facts.md §N`:\n" + "\n".join(bad)


def test_docs_files_and_headings_the_product_names_exist():
    bad, count = [], 0
    for path, text in _texts(PRODUCT + [REPO / "tests"]):
        for m in _DOC.finditer(text):
            count += 1
            target = REPO / "docs" / m[1]
            if not target.is_file():
                bad.append(f"{path}: {m[0]} does not exist")
            elif m[2] and not any(h == m[2] or h.startswith((m[2] + " ", m[2] + ":")) for h in _headings(target)):
                bad.append(f"{path}: {m[0]} names no heading of {m[1]}")
    assert count > 50
    assert not bad, "\n".join(bad)


def _fact_sections() -> list[tuple[str, str]]:
    parts = re.split(r"(?m)^#{2,3} ", FACTS.read_text(encoding="utf-8"))
    return [(p.split("\n", 1)[0], p) for p in parts[1:] if p.startswith("§") and "**Behaviour.**" in p]


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


@pytest.mark.parametrize(("heading", "body"), _fact_sections(), ids=lambda v: v.split()[0] if v.startswith("§") else "")
def test_every_fact_names_real_nginx_tests_that_exist(heading, body):
    assert "**What mtlsc does.**" in body and "**Proven by.**" in body, heading
    proof = body.split("**Proven by.**", 1)[1]
    files = sorted(set(re.findall(r"tests/(test_\w+\.py)", proof)))
    assert files, f"{heading}: no test file named"
    defined = set()
    for name in files:
        path = HERE / name
        assert path.is_file(), f"{heading}: tests/{name} does not exist"
        defined |= _test_functions(path)
    missing = sorted(set(re.findall(r"\b(test_\w+)\b(?!\.py)", proof)) - defined)
    assert not missing, f"{heading}: {missing} are not tests of {files}"
    assert any(re.search(r"pytest\.mark\.nginx|nginx_bin", (HERE / n).read_text()) for n in files), \
        f"{heading}: none of {files} runs the real nginx"
