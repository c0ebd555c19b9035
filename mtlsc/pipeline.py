"""The driver: every stage of mtlsc, in order, in one place.

    read -> parse -> lower -> load_pki -> run_checks -> emit_all
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from mtlsc import ir
from mtlsc.checks import CheckContext, run_checks
from mtlsc.diagnostics import Diagnostic, Severity, error, has_errors
from mtlsc.emit import emit_all
from mtlsc.lower import lower
from mtlsc.parse import parse
from mtlsc.pki import Pki, load_pki
from mtlsc.source import Source, point, read_source


@dataclass
class Result:
    sources: dict[str, Source] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    policy: ir.Policy | None = None
    pki: Pki | None = None
    outputs: dict[str, str] | None = None
    io_error: bool = False  # a policy file could not be read: exit 2, not 1

    @property
    def failed(self) -> bool:
        return self.io_error or has_errors(self.diagnostics)


@contextmanager
def _few_gc_passes():
    """Collect garbage less often while a policy is processed: it allocates millions of objects
    that all stay alive, and the collector's passes over them made a 10,000-route compile take
    twice as long as the work itself (benchmarks/). The thresholds are restored afterwards."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 50_000), max(old[1], 50), max(old[2], 1000))
    try:
        yield
    finally:
        gc.set_threshold(*old)


def read_and_lower(paths: list[str]) -> Result:
    """The front end: read, parse and lower the policy files (no certificate file is read)."""
    result = Result()
    files = []
    for path in paths:
        try:
            source = read_source(path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            result.diagnostics.append(error("MTLS900", point(path), f"cannot read the policy file: {reason}",
                                            "check the path; policy files are UTF-8 text"))
            result.io_error = True
            continue
        result.sources[path] = source
        tree, diags = parse(source)
        result.diagnostics += diags
        if tree is not None:
            files.append(tree)
    if result.failed:
        return result
    result.policy, diags = lower(files)
    result.diagnostics += diags
    return result


def check(paths: list[str], now: datetime | None = None, strict: bool = False,
          expiry_window: timedelta = timedelta(days=14), analyse: bool = True, host=None) -> Result:
    """Everything short of emitting: diagnostics for the policy files at `paths`.

    `analyse=False` skips the checks: only tests use it, to show on real nginx what a config the
    checks would have refused does to clients. `host`: the user's nginx config the output will join
    (`mtlsc.coexist.Host`), or a `coexist.HostError` from reading it."""
    with _few_gc_passes():
        return _check(paths, now, strict, expiry_window, analyse, host)


def _check(paths, now, strict, expiry_window, analyse, host=None) -> Result:
    result = read_and_lower(paths)
    if result.policy is None:
        return result
    result.pki, diags = load_pki(result.policy)
    result.diagnostics += diags
    if has_errors(diags):
        return result
    if analyse:
        ctx = CheckContext(result.policy, result.pki, now or datetime.now(timezone.utc), expiry_window)
        result.diagnostics += run_checks(ctx)
    if host is not None:
        _against_host(result, host)
    if strict:
        result.diagnostics = [replace(d, severity=Severity.ERROR) if d.severity is Severity.WARNING and not d.waived else d
                              for d in result.diagnostics]
    return result


def _against_host(result: Result, host) -> None:
    """Fit the policy to the user's own nginx config, and report what cannot fit (mtlsc.coexist)."""
    from mtlsc import coexist
    from mtlsc.emit.nginx import server_views

    if isinstance(host, coexist.HostError):
        result.diagnostics.append(host.diagnostic)
        result.sources.update(host.sources)
        return
    result.policy = replace(result.policy, host=host.to_ir())
    found = coexist.check_host(result.policy, server_views(result.policy, result.pki), host)
    result.diagnostics += found
    for d in found:
        for span in (d.span, *(r.span for r in d.related)):
            if span.path in host.loaded.texts:
                result.sources.setdefault(span.path, Source(span.path, host.loaded.texts[span.path]))


def compile_policy(paths: list[str], now: datetime | None = None, strict: bool = False,
                   expiry_window: timedelta = timedelta(days=14), analyse: bool = True, host=None) -> Result:
    """Check, then emit every output file (in memory) when no error was found. `host`: see `check`."""
    with _few_gc_passes():
        result = _check(paths, now, strict, expiry_window, analyse, host)
        if not result.failed:
            result.outputs = emit_all(result.policy, result.pki)
    return result
