"""Diagnostics -> text for people (rustc/ruff style) or JSON for tools."""

from __future__ import annotations

import json

from mtlsc.diagnostics import Diagnostic, Severity, sorted_diagnostics
from mtlsc.source import Source, Span


def render(diags: list[Diagnostic], sources: dict[str, Source], fmt: str = "text") -> str:
    diags = sorted_diagnostics(diags)
    if fmt == "json":
        return render_json(diags)
    blocks = [render_one(d, sources) for d in diags]
    return "\n".join(blocks) + (summary(diags) if diags else "")


def summary(diags: list[Diagnostic]) -> str:
    counted = [d for d in diags if not d.waived]
    errors = sum(d.severity is Severity.ERROR for d in counted)
    warnings = sum(d.severity is Severity.WARNING for d in counted)
    waived = len(diags) - len(counted)
    parts = [f"{errors} error{'s' * (errors != 1)}", f"{warnings} warning{'s' * (warnings != 1)}"]
    if waived:
        parts.append(f"{waived} waived")
    return ", ".join(parts) + "\n"


def _snippet(span: Span, sources: dict[str, Source], label: str, gutter: int) -> list[str]:
    src = sources.get(span.path)
    pad = " " * gutter
    if src is None or span.line < 1:
        return []
    text = src.line_text(span.line).expandtabs(1)
    end = span.end_col if span.end_line == span.line else len(text) + 1
    width = max(1, end - span.col)
    caret = " " * (span.col - 1) + "^" * width
    return [f"{pad} |", f"{str(span.line).rjust(gutter)} | {text}", f"{pad} | {caret}{' ' + label if label else ''}"]


def render_one(d: Diagnostic, sources: dict[str, Source]) -> str:
    head = f"{d.severity}[{d.code}]: {d.message}"
    if d.waived:
        head = f"{head} (waived: {d.waived})"
    gutter = len(str(max([d.span.line] + [r.span.line for r in d.related])))
    lines = [head, f"{' ' * gutter}--> {d.span}"]
    lines += _snippet(d.span, sources, d.label, gutter)
    for r in d.related:
        lines.append(f"{' ' * gutter}::: {r.span}")
        lines += _snippet(r.span, sources, r.message, gutter)
    if d.help:
        lines.append(f"{' ' * gutter} = help: {d.help}")
    return "\n".join(lines) + "\n"


def to_dict(d: Diagnostic) -> dict:
    s = d.span
    return {
        "code": d.code,
        "severity": str(d.severity),
        "message": d.message,
        "help": d.help,
        "file": s.path,
        "line": s.line,
        "column": s.col,
        "end_line": s.end_line,
        "end_column": s.end_col,
        "related": [{"file": r.span.path, "line": r.span.line, "column": r.span.col, "message": r.message}
                    for r in d.related],
        "waived": d.waived or None,
    }


def render_json(diags: list[Diagnostic]) -> str:
    return json.dumps({"diagnostics": [to_dict(d) for d in diags]}, indent=2, sort_keys=True) + "\n"
