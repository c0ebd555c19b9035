"""`mtlsc audit`: the traps of docs/nginx-facts.md found in a hand-written nginx configuration, each
reported at its nginx file and line with mtlsc's codes (MTLS5xx, docs/audit.md), renderer and exit
codes; `mtlsc import` (mtlsc.audit.importer) writes the policy that closes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from mtlsc.audit.dn_tests import dn_findings
from mtlsc.audit.load import read_inputs
from mtlsc.audit.model import Config, build
from mtlsc.audit.traps import (default_server_hole, identity_headers, if_misuse, optional_traps, underscores,
                               verify_on_lockout)
from mtlsc.audit.traps_paths import raw_target, regex_takeover
from mtlsc.audit.traps_tls import tls_settings
from mtlsc.audit.trust import trust_findings
from mtlsc.audit.unknown import not_understood
from mtlsc.diagnostics import Diagnostic, Severity, has_errors, sorted_diagnostics
from mtlsc.source import Source


@dataclass
class AuditResult:
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    configs: list[Config] = field(default_factory=list)
    io_error: bool = False

    @property
    def failed(self) -> bool:
        return self.io_error or has_errors(self.diagnostics)


# Every trap, in report order: one function per trap family, as mtlsc.checks registers its checks.
ALL = (default_server_hole, verify_on_lockout, optional_traps, identity_headers, underscores, if_misuse,
       regex_takeover, raw_target, tls_settings)


def audit_config(config: Config, now: datetime) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    for trap in ALL:
        diags += trap(config)
    diags += dn_findings(config)
    diags += trust_findings(config, now)
    diags += not_understood(config)
    return diags


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in sorted_diagnostics(diags):
        key = (d.code, d.span, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def audit(paths: list[str], stdin_text: str | None = None, now: datetime | None = None,
          strict: bool = False) -> AuditResult:
    now = now or datetime.now(timezone.utc)
    inputs = read_inputs(paths, stdin_text)
    result = AuditResult(list(inputs.diagnostics), dict(inputs.sources), io_error=inputs.io_error)
    for loaded in inputs.loaded:
        config = build(loaded)
        result.configs.append(config)
        result.diagnostics += audit_config(config, now)
    result.diagnostics = _dedupe(result.diagnostics)
    if strict:
        result.diagnostics = [Diagnostic(d.code, Severity.ERROR, d.span, d.message, d.help, d.label, d.related)
                              if d.severity is Severity.WARNING else d for d in result.diagnostics]
    return result
