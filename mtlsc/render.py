"""Diagnostics -> text for people (rustc/ruff style) or JSON for tools."""

from __future__ import annotations

import hashlib
import json
import os

from mtlsc.diagnostics import Diagnostic, Severity, sorted_diagnostics
from mtlsc.source import Source, Span


def render(diags: list[Diagnostic], sources: dict[str, Source], fmt: str = "text") -> str:
    diags = sorted_diagnostics(diags)
    if fmt == "json":
        return render_json(diags)
    if fmt == "sarif":
        return render_sarif(diags)
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


_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "note"}


def _security_severity(code: str, severity: Severity) -> str:
    """GitHub buckets this number: over-trust errors high, lockout errors a little lower."""
    if severity is Severity.ERROR:
        return "8.0" if code.startswith("MTLS2") else "7.0"
    return "5.0" if severity is Severity.WARNING else "2.0"


def _uri(path: str) -> str:
    """Repository-relative when the path is under the working directory, so alerts stay stable."""
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return (path if rel.startswith("..") else rel).replace(os.sep, "/")


def _location(span: Span) -> dict:
    return {"physicalLocation": {
        "artifactLocation": {"uri": _uri(span.path)},
        "region": {"startLine": span.line, "startColumn": span.col,
                   "endLine": span.end_line, "endColumn": max(span.end_col, span.col + 1) if span.end_line == span.line else span.end_col},
    }}


def render_sarif(diags: list[Diagnostic]) -> str:
    """SARIF 2.1.0 as GitHub code scanning reads it: one rule per code used, locations in the policy."""
    from mtlsc import __version__
    from mtlsc.codes import rules

    catalogue = rules()
    used = sorted({d.code for d in diags})
    index = {code: i for i, code in enumerate(used)}
    sarif_rules = []
    for code in used:
        rule = catalogue.get(code)
        summary = rule.summary if rule else code
        sarif_rules.append({
            "id": code,
            "name": (rule.slug if rule else code).title().replace("-", ""),
            "shortDescription": {"text": summary},
            "fullDescription": {"text": rule.help if rule else summary},
            "help": {"text": f"{rule.help if rule else summary}\n\nSee {rule.docs if rule else 'docs'} ({code}).",
                     "markdown": f"**{code} {rule.slug if rule else ''}**\n\n{rule.help if rule else summary}\n\n"
                                 f"See `{rule.docs if rule else 'docs'}`."},
            "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity if rule else Severity.ERROR]},
            "properties": {"tags": ["security", "mtls", "nginx"],
                           "security-severity": _security_severity(code, rule.severity if rule else Severity.ERROR)},
        })
    results = []
    for d in diags:
        text = d.message + (f" (help: {d.help})" if d.help else "")
        result = {
            "ruleId": d.code,
            "ruleIndex": index[d.code],
            "level": _SARIF_LEVEL[d.severity],
            "message": {"text": text},
            "locations": [_location(d.span)],
            "partialFingerprints": {
                "mtlscFinding/v1": hashlib.sha256(f"{d.code}|{_uri(d.span.path)}|{d.message}".encode()).hexdigest(),
            },
        }
        if d.related:
            result["relatedLocations"] = [dict(_location(r.span), id=i, message={"text": r.message})
                                          for i, r in enumerate(d.related)]
        if d.waived:
            result["suppressions"] = [{"kind": "inSource", "justification": d.waived}]
        results.append(result)
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "mtlsc", "version": __version__, "semanticVersion": __version__,
                                "rules": sarif_rules}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
