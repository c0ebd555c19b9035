"""`mtlsc rollback`: undo the newest apply that is live and not undone yet; and what the history
says (entries, the live entry, the installed servers)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mtlsc.apply.files import _stage
from mtlsc.apply.history import APPLIED, REFUSED, STATE_DIR, Entry, Installed, LockHeld, State, StateError
from mtlsc.apply.nginx import _control
from mtlsc.apply.plan import KINDS, PlanRefused, migrate_legacy, server_changes, smoke_selection
from mtlsc.apply.result import EXIT_USAGE, ApplyResult, Progress, _quiet, _Refused
from mtlsc.apply.smoke import ClientCert
from mtlsc.apply.transaction import _Run, _before, _certs, _check_cert_scopes, _finish, _recover, _transaction


def rollback(nginx_conf_dir: str | Path, *, nginx_bin: str | None = None, nginx_conf: str | Path | None = None,
             nginx_prefix: str | Path | None = None, nginx_args: Sequence[str] = (),
             pid_file: str | Path | None = None, state_dir: str | Path | None = None, smoke: bool = True,
             smoke_host: str | None = None, client_cert: str | Path | None = None,
             client_key: str | Path | None = None, client_certs: Sequence[ClientCert] = (),
             lock_wait: float = 0.0, reload_timeout: float = 10.0, drain_timeout: float = 10.0,
             progress: Progress = _quiet) -> ApplyResult:
    """Undo the newest apply that is live and not undone yet: restore the files it replaced, test,
    reload and smoke-check the servers that change back (and kept ones on their ports). Repeated
    rollbacks walk back one apply each. A failure puts the files back as they were before the
    rollback."""
    run = _Run("rollback", progress, smoke=smoke, smoke_host=smoke_host,
               certs=_certs(client_cert, client_key, client_certs), reload_timeout=reload_timeout,
               drain_timeout=drain_timeout)
    conf_dir = Path(nginx_conf_dir).resolve()
    if not conf_dir.is_dir():
        return run.done(EXIT_USAGE, "preflight", f"--nginx-conf-dir {nginx_conf_dir} is not a directory")
    run.state = state = State(Path(state_dir) if state_dir else conf_dir / STATE_DIR)
    try:
        run.ctl = ctl = _control(nginx_bin, nginx_conf, nginx_prefix, nginx_args, pid_file)
        with state.locked(lock_wait, "rollback"):
            _recover(run)
            target = rollback_target(state.entries())
            if target is None:
                return run.done(EXIT_USAGE, "preflight", "nothing to roll back: no applied version in the history "
                                f"of {conf_dir}")
            current = migrate_legacy(state, state.installed(), conf_dir)
            restored, snapshot_before = _before(state, target, conf_dir)
            _check_cert_scopes(run.certs, {**(current.servers or {}), **(restored.servers or {})})
            ok, out = ctl.test()
            if not ok:
                raise _Refused(f"nginx -t fails on the current configuration, before any change:\n{out}")
            pid = ctl.master_pid()
            wanted = {p: v[0] for p, v in snapshot_before.items() if v is not None}
            modes = {p: v[1] for p, v in snapshot_before.items() if v is not None}
            absent = sorted({p for p, v in snapshot_before.items() if v is None}
                            | (set(current.files) - set(restored.files) - set(wanted)))

            def content(path: str) -> bytes | None:
                if path in wanted:
                    return wanted[path]
                return None if path in absent else _read(path)

            run.changes = server_changes(current.servers or {}, restored.servers or {}, set(), content, _read)
            plans = smoke_selection(run.changes, current.servers or {}, restored.servers or {})
            entry = state.new_entry("rollback")
            entry.undoes, entry.previous = target.id, current.entry
            prev_entry = state.load(target.previous) if target.previous else None
            entry.policies = prev_entry.policies if prev_entry else []
            entry.inputs = prev_entry.inputs if prev_entry else []
            after = Installed(entry.id if restored.servers else None, restored.servers or {}, restored.shared)
            entry.files, entry.servers = after.files, {k: [c.label for c in run.changes if c.change == k] for k in KINDS}
            state.save(entry)
            if target.previous:
                state.copy_policies(target.previous, entry.id)
            # The files the rollback changes: the target's snapshot paths plus what it removes.
            state.snapshot(entry.id, [*snapshot_before, *absent], current)
            _, snapshot_now = state.read_snapshot(entry.id)
            run.log(f"rolling back #{target.id} (to the version of "
                    f"{'#' + str(target.previous) if target.previous else 'before mtlsc apply'}); history entry #{entry.id}")
            for change in run.changes:
                run.log(change.line())
            try:
                staged = _stage(wanted)
                for p, m in modes.items():
                    os.chmod(staged[p], m)
            except OSError as exc:
                return _finish(run, entry, EXIT_USAGE, REFUSED, "stage",
                               f"cannot write the files: {exc.strerror or exc} (nothing was changed)")
            return _transaction(run, entry, pid, snapshot_now, staged, absent, after, current, plans,
                                written=sorted(wanted), removed=absent)
    except (_Refused, PlanRefused) as exc:
        return run.done(EXIT_USAGE, "preflight", str(exc))
    except (LockHeld, StateError) as exc:
        return run.done(EXIT_USAGE, "lock", str(exc))


def _read(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def rollback_target(entries: list[Entry]) -> Entry | None:
    """The newest successful apply not undone by a successful rollback."""
    undone = {e.undoes for e in entries if e.action == "rollback" and e.result == APPLIED}
    return next((e for e in reversed(entries) if e.action == "apply" and e.result == APPLIED and e.id not in undone),
                None)


def history(nginx_conf_dir: str | Path, state_dir: str | Path | None = None) -> list[Entry]:
    """Every recorded apply and rollback of this conf dir, oldest first."""
    conf_dir = Path(nginx_conf_dir).resolve()
    return State(Path(state_dir) if state_dir else conf_dir / STATE_DIR).entries()


def live_entry(nginx_conf_dir: str | Path, state_dir: str | Path | None = None) -> int | None:
    """The history entry whose version is installed now (None: nothing installed by mtlsc)."""
    conf_dir = Path(nginx_conf_dir).resolve()
    return State(Path(state_dir) if state_dir else conf_dir / STATE_DIR).installed().entry


def installed_servers(nginx_conf_dir: str | Path, state_dir: str | Path | None = None) -> dict[str, str]:
    """Installed servers, NAME:PORT -> the policy file that owns it."""
    conf_dir = Path(nginx_conf_dir).resolve()
    servers = State(Path(state_dir) if state_dir else conf_dir / STATE_DIR).installed().servers or {}
    return {r.label: r.policy for r in sorted(servers.values(), key=lambda r: r.label)}
