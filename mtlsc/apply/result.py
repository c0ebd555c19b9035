"""What `mtlsc apply` and `mtlsc rollback` return: exit codes (docs/apply.md), the result and its
report, and the two ways a run stops early (refused before any change, failed after)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from mtlsc.apply.plan import KINDS, ServerChange
from mtlsc.apply.smoke import SmokeCheck
from mtlsc.diagnostics import Diagnostic
from mtlsc.source import Source


# Exit codes (docs/apply.md)
EXIT_OK = 0  # applied / rolled back / dry run passed
EXIT_FINDINGS = 1  # the policy has errors: nothing was changed
EXIT_USAGE = 2  # usage, I/O, lock held, nginx missing, not running or already failing: nothing was changed
EXIT_REVERTED = 3  # nginx -t, the reload or a smoke check failed: the previous files are back and serving
EXIT_BROKEN = 4  # it failed and restoring the previous version failed too: look at nginx now

Progress = Callable[[str], None]
NGINX_T_TIMEOUT = 60.0


def _quiet(_: str) -> None:
    pass


class _Refused(Exception):
    """A failure before any live file changed (exit 2)."""


class _Failed(Exception):
    """A failure after the swap: `stage` is nginx-t, reload or smoke."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


# ----- results ------------------------------------------------------------------------------------

@dataclass
class ApplyResult:
    """What `apply` or `rollback` did. `exit_code` is the command's exit code; `report()` the text,
    `to_json()` the summary of `--format json`."""

    action: str  # apply | rollback | dry-run
    exit_code: int
    ok: bool
    stage: str  # where it ended: compile, preflight, lock, stage, nginx-t, reload, smoke, done
    message: str  # what happened (first line: the outcome)
    log: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    smoke: list[SmokeCheck] = field(default_factory=list)
    entry: int | None = None  # the history entry recorded
    rolled_back: bool = False  # an automatic rollback happened
    files: list[str] = field(default_factory=list)  # the live files mtlsc installed, after it
    changes: list[ServerChange] = field(default_factory=list)  # server by server
    written: list[str] = field(default_factory=list)  # files written (or, in a dry run, that would be)
    removed: list[str] = field(default_factory=list)
    reloads: list[dict] = field(default_factory=list)  # monotonic times: signalled, new_workers, old_workers_gone

    def servers(self, kind: str) -> list[str]:
        return [c.label for c in self.changes if c.change == kind]

    def report(self, log: bool = True) -> str:
        """For stderr: the diagnostics (text), the step log (unless it was shown as it happened),
        failed smoke checks with nginx's reason, the outcome."""
        from mtlsc.render import render

        parts = []
        if self.diagnostics:
            parts.append(render(self.diagnostics, self.sources, "text"))
        if log:
            parts += [f"mtlsc {self.action}: {line}\n" for line in self.log]
        parts += [f"  {c}\n" for c in self.smoke if not c.ok]
        parts.append(f"mtlsc {self.action}: {self.message}\n")
        return "".join(parts)

    def to_json(self) -> str:
        from mtlsc.render import to_dict

        data = {
            "action": self.action, "ok": self.ok, "exit_code": self.exit_code, "stage": self.stage,
            "message": self.message, "entry": self.entry, "rolled_back": self.rolled_back,
            "servers": {kind: self.servers(kind) for kind in KINDS},
            "server_details": [{"server": c.label, "change": c.change, "policy": c.policy, "smoke_checked": c.smoke,
                                "note": c.note} for c in self.changes],
            "smoke": [{"server": c.server, "path": c.path, "client": c.client, "expect": c.expect, "got": c.got,
                       "ok": c.ok, "nginx": c.nginx} for c in self.smoke],
            "files": {"written": self.written, "removed": self.removed, "installed": self.files},
            "diagnostics": [to_dict(d) for d in self.diagnostics],
            "log": self.log,
        }
        return json.dumps(data, indent=2) + "\n"
