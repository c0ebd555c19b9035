"""`mtlsc audit` and `mtlsc import` on the command line: exit 0 clean, 1 error-level findings, 2
nothing could be read (as `mtlsc check`)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from mtlsc.render import render

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def _stdin(paths: list[str]) -> str | None:
    return sys.stdin.read() if "-" in paths else None


def audit_command(paths: list[str], fmt: str = "text", strict: bool = False, now: datetime | None = None) -> int:
    from mtlsc.audit import audit

    result = audit(paths, _stdin(paths), now=now, strict=strict)
    report = render(result.diagnostics, result.sources, fmt)
    if report:
        (sys.stderr if fmt == "text" else sys.stdout).write(report)
    elif fmt == "text":
        sys.stderr.write("no findings\n")
    if result.io_error:
        return EXIT_USAGE
    return EXIT_FINDINGS if result.failed else EXIT_OK


def import_command(paths: list[str], output: Path, prove: bool = False, nginx: str | None = None) -> int:
    from mtlsc.audit import audit
    from mtlsc.audit.importer import import_configs, render as render_policy

    result = audit(paths, _stdin(paths))
    if result.io_error or not result.configs:
        sys.stderr.write(render(result.diagnostics, result.sources, "text"))
        return EXIT_USAGE
    policy = import_configs(result.configs)
    try:
        output.write_text(render_policy(policy), encoding="utf-8")
    except OSError as exc:
        sys.stderr.write(f"error[MTLS902]: cannot write {output}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    sys.stderr.write(f"wrote {output}: {policy.summary()}\n")
    if not prove:
        return EXIT_OK
    from mtlsc.audit.prove import ProveError, prove_import

    try:
        table = prove_import(result.configs[0], policy, output, nginx_bin=nginx)
    except ProveError as exc:
        sys.stderr.write(f"mtlsc import --prove: {exc}\n")
        return EXIT_USAGE
    sys.stdout.write(table.render())
    return EXIT_OK
