"""Building audit diagnostics: every finding is located at the nginx line, says how to fix it by
hand and what `mtlsc import` does about it."""

from __future__ import annotations

from mtlsc.codes import severity_of
from mtlsc.diagnostics import Diagnostic, Related
from mtlsc.source import Span


def finding(code: str, span: Span, message: str, fix: str, imported: str = "", label: str = "",
            related: tuple[Related, ...] = ()) -> Diagnostic:
    help_text = fix + (f". `mtlsc import` {imported}" if imported else "")
    return Diagnostic(code, severity_of(code), span, message, help_text, label, tuple(related))
