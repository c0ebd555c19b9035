"""The analysis pass: every check, registered in one list.

A check is a pure function `(ctx) -> Iterable[Finding]`. Its code and severity live here, in
CHECKS, and nowhere else; its docstring (What / Why / Example / Fix) is its documentation and
matches its entry in docs/checks.md. Codes: 1xx lockout, 2xx over-trust, 3xx trust files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Callable, Iterable

from mtlsc import ir
from mtlsc.diagnostics import Diagnostic, Finding, Severity
from mtlsc.checks import lockout, overtrust
from mtlsc.pki import Pki

ERROR, WARNING = Severity.ERROR, Severity.WARNING


@dataclass(frozen=True, slots=True)
class CheckContext:
    policy: ir.Policy
    pki: Pki
    now: datetime
    # Certificates and CRLs that expire within this window are reported before they lock anyone out.
    expiry_window: timedelta = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class Check:
    code: str
    severity: Severity
    find: Callable[[CheckContext], Iterable[Finding]]


CHECKS: tuple[Check, ...] = (
    Check("MTLS101", ERROR, lockout.public_route_behind_required_listener),
    Check("MTLS102", ERROR, lockout.crl_missing_for_some_ca),
    Check("MTLS201", ERROR, overtrust.issuer_dn_shared_between_cas),
)


def run_checks(ctx: CheckContext, checks: tuple[Check, ...] = CHECKS) -> list[Diagnostic]:
    """Run every check; apply `waive` statements (the finding stays visible, marked waived)."""
    out = []
    for check in checks:
        for f in check.find(ctx):
            d = Diagnostic(check.code, check.severity, f.span, f.message, f.help, f.label, f.related)
            out.append(_apply_waivers(d, ctx.policy.waivers))
    return out


def _within(span, scope) -> bool:
    return span.path == scope.path and (scope.line, scope.col) <= (span.line, span.col) <= (scope.end_line, scope.end_col)


def _apply_waivers(d: Diagnostic, waivers) -> Diagnostic:
    for w in waivers:
        if w.code == d.code and _within(d.span, w.scope):
            return replace(d, waived=w.reason)
    return d
