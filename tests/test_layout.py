"""The tree shows the architecture (issue 13): no module over the house limit, no import cycle
among mtlsc's modules, and every package says what it is for."""

from __future__ import annotations

import ast
from pathlib import Path

from support import REPO

PACKAGE = REPO / "mtlsc"
MAX_LINES = 400


def _sources() -> list[Path]:
    # mtlsc/grammar is a symlink to ../grammar in worktrees: it holds no Python.
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts and "grammar" not in p.parts)


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """mtlsc modules `path` imports, at module level or inside a function. `from P import name`
    counts as an import of P.name where that is a module, otherwise of P; an import of a module
    also imports the packages above it that `path` is not inside."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    # Importing mtlsc.a.b runs mtlsc/a/__init__.py first, unless the importer is inside mtlsc.a.
    mine = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    above = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)} - mine
    return {m for m in found | above if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = _sources()
    modules = {_module(p) for p in paths}
    return {_module(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_is_over_the_line_limit():
    long = {str(p.relative_to(REPO)): n for p in _sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_a_cycle_through_a_function_level_import():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_package_has_an_init_that_says_what_it_is_for():
    for directory in sorted({p.parent for p in _sources()}):
        init = directory / "__init__.py"
        assert init.is_file(), f"{directory.relative_to(REPO)} has no __init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and doc.strip(), f"{init.relative_to(REPO)} has no docstring"
