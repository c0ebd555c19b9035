"""Diagnostics: a stable code, a severity, a span, a message and a fix.

Code families: 0xx syntax and names, 1xx lockout, 2xx over-trust, 3xx trust files,
9xx input/output. A released code never changes meaning.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mtlsc.source import Span


class Severity(enum.IntEnum):
    NOTE = 0
    WARNING = 1
    ERROR = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Related:
    """A second place that explains the first (e.g. the other side of a conflict)."""

    span: Span
    message: str


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    span: Span
    message: str
    help: str = ""
    label: str = ""
    related: tuple[Related, ...] = ()
    waived: str = ""  # the reason given by a `waive` statement, when one applies

    def sort_key(self):
        s = self.span
        return (s.path, s.line, s.col, self.code, self.message)


@dataclass(frozen=True, slots=True)
class Finding:
    """What a check returns; the registry adds code and severity."""

    span: Span
    message: str
    help: str = ""
    label: str = ""
    related: tuple[Related, ...] = field(default=())


def error(code: str, span: Span, message: str, help: str = "", label: str = "", related=()) -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, span, message, help, label, tuple(related))


def warning(code: str, span: Span, message: str, help: str = "", label: str = "", related=()) -> Diagnostic:
    return Diagnostic(code, Severity.WARNING, span, message, help, label, tuple(related))


def has_errors(diags) -> bool:
    return any(d.severity is Severity.ERROR and not d.waived for d in diags)


def sorted_diagnostics(diags) -> list[Diagnostic]:
    return sorted(diags, key=Diagnostic.sort_key)
