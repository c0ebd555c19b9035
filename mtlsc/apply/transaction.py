"""The transaction `apply` and `rollback` share once the new files are staged: swap, nginx -t,
reload, smoke checks, and on failure the revert to the snapshot; the history entry it ends in; and the
recovery of a run that died mid-change (pending.json)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtlsc.apply.files import _discard, _restore, _swap
from mtlsc.apply.history import APPLIED, INTERRUPTED, RESTORE_FAILED, ROLLED_BACK, Entry, Installed, State
from mtlsc.apply.nginx import NginxControl
from mtlsc.apply.plan import ADDED, CHANGED, KEPT, REMOVED, UNCHANGED, ServerChange, migrate_legacy
from mtlsc.apply.result import EXIT_BROKEN, EXIT_OK, EXIT_REVERTED, ApplyResult, Progress, _Failed, _quiet, _Refused
from mtlsc.apply.smoke import ClientCert, ErrorLogs, SmokeCheck, SmokePlan, matches_server, run_smoke


@dataclass
class _Run:
    """One apply or rollback: its options, its log, and how it ends."""

    action: str
    progress: Progress = _quiet
    ctl: "NginxControl | None" = None
    state: State | None = None
    smoke: bool = True
    smoke_host: str | None = None
    certs: tuple[ClientCert, ...] = ()
    reload_timeout: float = 10.0
    drain_timeout: float = 10.0
    diag: dict = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)
    reloads: list[dict] = field(default_factory=list)
    changes: list[ServerChange] = field(default_factory=list)

    def log(self, line: str) -> None:
        self.log_lines.append(line)
        self.progress(line)

    def done(self, code: int, stage: str, message: str, **kw) -> ApplyResult:
        kw = {"changes": self.changes, "reloads": self.reloads, **self.diag, **kw}
        return ApplyResult(self.action, code, code == EXIT_OK, stage, message, self.log_lines, **kw)

    def reload(self, pid: int) -> None:
        self.reloads.append(self.ctl.reload(pid, self.reload_timeout, self.drain_timeout, self.log))

    def smoke_checks(self, plans: Sequence[SmokePlan], certs: Sequence[ClientCert] | None = None) -> list[SmokeCheck]:
        logs = ErrorLogs(self.ctl.error_logs())
        return run_smoke(plans, host=self.smoke_host, certs=self.certs if certs is None else certs, logs=logs)


def _certs(client_cert, client_key, client_certs: Sequence[ClientCert]) -> tuple[ClientCert, ...]:
    first = [ClientCert(str(client_cert), str(client_key) if client_key else None)] if client_cert else []
    return tuple(first + list(client_certs))


def _check_cert_scopes(certs: Sequence[ClientCert], servers: dict) -> None:
    for cert in certs:
        if cert.server is not None and not any(matches_server(SmokePlan.from_json(r.smoke), cert.server)
                                               for r in servers.values() if r.smoke):
            raise _Refused(f"--client-cert {cert.server}={cert.cert}: no server is named {cert.server} "
                           f"(servers: {', '.join(sorted(r.label for r in servers.values())) or 'none'})")


def _counts(changes: list[ServerChange]) -> str:
    named = [f"{kind} {', '.join(c.label for c in changes if c.change == kind) or 'none'}"
             for kind in (ADDED, CHANGED, REMOVED)]
    return "; ".join(named + [f"{sum(c.change == k for c in changes)} {k}" for k in (UNCHANGED, KEPT)])


def _transaction(run: _Run, entry: Entry, pid: int, snapshot, staged: dict[str, Path], remove: list[str],
                 after: Installed, before: Installed, plans: list[SmokePlan], *, written: list[str],
                 removed: list[str]) -> ApplyResult:
    """Swap, test, reload, smoke; on failure restore the snapshot and reload again."""
    state, ctl = run.state, run.ctl
    reloaded = False
    checks: list[SmokeCheck] = []
    files = {"written": written, "removed": removed}
    state.set_pending(entry.id)
    try:
        _swap(staged, remove)
        run.log(f"swapped in {len(staged)} files, removed {len(remove)}")
        ok, out = ctl.test()
        if not ok:
            raise _Failed("nginx-t", f"nginx -t refuses the new configuration:\n{out}")
        run.log("nginx -t: ok")
        reloaded = True  # from here on the master may run the new config
        run.reload(pid)
        run.log(f"reloaded nginx (master {pid})")
        if run.smoke and plans:
            checks = run.smoke_checks(plans)
            failed = [c for c in checks if not c.ok]
            run.log(f"smoke checks: {len(checks) - len(failed)} of {len(checks)} passed on "
                    f"{', '.join(p.label for p in plans)}")
            if failed:
                more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
                raise _Failed("smoke", f"smoke check failed: {failed[0]}{more}")
        elif run.smoke:
            run.log("smoke checks: no server to check")
    except (Exception, KeyboardInterrupt) as exc:  # every failure after the swap reverts
        _discard(staged)
        stage = exc.stage if isinstance(exc, _Failed) else "swap"
        reason = str(exc) if isinstance(exc, _Failed) else f"{type(exc).__name__}: {exc}"
        run.log(f"failed at {stage}: {reason.splitlines()[0] if reason else ''}")
        previous = [SmokePlan.from_json(before.servers[p.slug].smoke) for p in plans
                    if before.servers and p.slug in before.servers and before.servers[p.slug].smoke]
        restored = _revert(run, pid, snapshot, before, reloaded, previous)
        state.set_pending(None)
        if isinstance(exc, KeyboardInterrupt):
            _finish(run, entry, EXIT_REVERTED, ROLLED_BACK if restored else RESTORE_FAILED, stage, "interrupted")
            raise
        if restored:
            return _finish(run, entry, EXIT_REVERTED, ROLLED_BACK, stage,
                           f"{reason}\nthe previous configuration was restored and nginx serves it",
                           smoke=checks, rolled_back=True, files=before.files, **files)
        return _finish(run, entry, EXIT_BROKEN, RESTORE_FAILED, stage,
                       f"{reason}\nRESTORING THE PREVIOUS CONFIGURATION FAILED: check nginx now (see the log above; "
                       f"the previous files are in {state.entry_dir(entry.id) / 'before'})", smoke=checks,
                       rolled_back=True, **files)
    state.set_installed(after)
    state.set_pending(None)
    state.prune()
    what = (f"rolled back #{entry.undoes} (entry #{entry.id})" if entry.action == "rollback"
            else f"apply #{entry.id} is live")
    smoked = f", smoke checks passed ({len(checks)} on {len(plans)} server(s))" if checks else ""
    return _finish(run, entry, EXIT_OK, APPLIED, "done", f"{what}: {_counts(run.changes)}; nginx reloaded{smoked}",
                   smoke=checks, files=after.files, **files)


def _revert(run: _Run, pid: int, snapshot, before: Installed, reloaded: bool, plans: list[SmokePlan]) -> bool:
    """Put the snapshot back; reload when nginx may have loaded the new config. True when nginx
    serves the previous configuration again."""
    state, ctl = run.state, run.ctl
    try:
        _restore(snapshot)
        state.set_installed(before)
        run.log(f"restored the previous {len(snapshot)} file(s)")
    except OSError as exc:
        run.log(f"cannot restore the previous files: {exc.strerror or exc}")
        return False
    if not reloaded:
        run.log("nginx was not reloaded: it still serves the previous configuration")
        return True
    ok, out = ctl.test()
    if not ok:
        run.log(f"nginx -t refuses the restored configuration:\n{out}")
        return False
    try:
        run.reload(pid)
    except _Failed as exc:
        run.log(f"reloading the restored configuration failed: {exc}")
        return False
    run.log("reloaded nginx with the previous configuration")
    if run.smoke and plans:
        checks = run.smoke_checks(plans, certs=())
        bad = [c for c in checks if not c.ok]
        run.log(f"smoke checks of the previous version: {len(checks) - len(bad)} of {len(checks)} passed"
                + (f"; e.g. {bad[0]}" if bad else ""))
    return True


def _finish(run: _Run, entry: Entry, code: int, result: str, stage: str, message: str, **kw) -> ApplyResult:
    from mtlsc.apply.history import now_iso

    entry.result, entry.reason, entry.finished = result, message.splitlines()[0] if message else "", now_iso()
    with contextlib.suppress(OSError):
        run.state.save(entry)
    return run.done(code, stage, message, entry=entry.id, **kw)


def _before(state: State, entry: Entry, conf_dir: Path) -> tuple[Installed, dict]:
    """What was installed before `entry`, and its snapshot; a snapshot of an older mtlsc, which
    kept only the list of files, gets server records (read from the files it holds)."""
    installed, snapshot = state.read_snapshot(entry.id)
    if installed.servers is None:
        installed.entry = entry.previous

        def read(path: str) -> bytes | None:
            if path in snapshot:
                return snapshot[path][0] if snapshot[path] is not None else None
            with contextlib.suppress(OSError):
                return Path(path).read_bytes()
            return None

        installed = migrate_legacy(state, installed, conf_dir, read)
    return installed, snapshot


def _recover(run: _Run) -> None:
    """A previous run died while live files were changing (pending.json survived it): put its
    snapshot back and reload, so this run starts from the version that was live before it."""
    state, ctl = run.state, run.ctl
    entry_id = state.pending()
    if entry_id is None:
        return
    entry = state.load(entry_id)
    run.log(f"history entry #{entry_id} was interrupted while changing live files: restoring the files before it")
    installed, snapshot = state.read_snapshot(entry_id)
    _restore(snapshot)
    if installed.servers is None:
        installed.entry = entry.previous if entry else None
    state.set_installed(installed)
    state.set_pending(None)
    if entry is not None:
        from mtlsc.apply.history import now_iso

        entry.result, entry.reason, entry.finished = INTERRUPTED, "mtlsc stopped mid-change; files restored", now_iso()
        state.save(entry)
    ok, out = ctl.test()
    if not ok:
        run.log(f"nginx -t refuses the restored configuration:\n{out}")
        return
    try:
        run.reload(ctl.master_pid())
        run.log("reloaded nginx with the restored files")
    except (_Failed, _Refused) as exc:
        run.log(f"could not reload after restoring: {exc}")
