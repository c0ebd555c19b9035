"""`mtlsc apply` and `mtlsc rollback`: install compiled policies into a running nginx without
locking anyone out, and without touching a server nobody named.

    compile (refuse on errors) -> lock -> plan server by server (mtlsc.apply.plan: added,
    changed, unchanged, removed only when named, kept) -> preflight (no foreign file in the way,
    nginx -t passes on the current config, the master runs) -> snapshot the live files -> stage
    the new files beside their targets -> swap them in (rename) -> nginx -t -> reload (SIGHUP,
    wait for new workers) -> smoke checks of every server changed or on a touched port -> done;
    on any failure after the swap: put the snapshot back, reload again, smoke the old version.

Layout (docs/apply.md): the compiled `nginx/*.conf` go into `--nginx-conf-dir DIR` (the directory
the user's nginx.conf includes, e.g. /etc/nginx/conf.d); each server's trust and CRL files
(`mtls/<server>.ca.pem`, `.crl.pem`, and the njs key check `.keys.js`) go into that server's
`install` directory, where the compiled config reads them. `DIR/00-mtlsc.conf` is shared by every
server installed and rendered for all of them. mtlsc only replaces or removes files it installed
itself (DIR/.mtlsc/installed.json) and refuses to overwrite anyone else's. State, lock and history
live in DIR/.mtlsc (see `mtlsc.apply.history`).

Modules: `result` (exit codes, ApplyResult), `nginx` (NginxControl), `files` (stage, swap, restore,
dry run), `transaction` (what apply and rollback share after staging, and recovery), `rollback`
(rollback and the history queries), `history` (state, lock, history entries), `plan` (server by
server), `smoke` (smoke checks). This module is `apply()` itself and re-exports the API.

Every wait is bounded; processes are signalled only by the pid nginx wrote to its own pid file,
after checking that the process is an nginx master.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from mtlsc import pipeline
from mtlsc.apply.files import _dry_run, _stage
from mtlsc.apply.history import REFUSED, Entry, Installed, LockHeld, State, StateError, sha256_file
from mtlsc.apply.history import STATE_DIR, format_history  # noqa: F401 (re-exported for the CLI)
from mtlsc.apply.nginx import _control
from mtlsc.apply.plan import ADDED, CHANGED, UNCHANGED, Plan, PlanRefused, migrate_legacy, plan_apply
from mtlsc.apply.result import (EXIT_BROKEN, EXIT_FINDINGS, EXIT_OK, EXIT_REVERTED, EXIT_USAGE, ApplyResult, Progress,
                                _quiet, _Refused)
from mtlsc.apply.rollback import (  # noqa: F401 (re-exported: the package is the API)
    history, installed_servers, live_entry, rollback, rollback_target,
)
from mtlsc.apply.smoke import ClientCert, SmokeCheck
# _recover is looked up here at call time: tests slow it down by patching mtlsc.apply._recover.
from mtlsc.apply.transaction import _Run, _certs, _check_cert_scopes, _counts, _finish, _recover, _transaction


# ----- apply -----------------------------------------------------------------------------------------

def apply(policy_paths: Sequence[str], nginx_conf_dir: str | Path, *, nginx_bin: str | None = None,
          nginx_conf: str | Path | None = None, nginx_prefix: str | Path | None = None,
          nginx_args: Sequence[str] = (), pid_file: str | Path | None = None, state_dir: str | Path | None = None,
          dry_run: bool = False, smoke: bool = True, smoke_host: str | None = None,
          client_cert: str | Path | None = None, client_key: str | Path | None = None,
          client_certs: Sequence[ClientCert] = (), remove: Sequence[str] = (), take_over: Sequence[str] = (),
          lock_wait: float = 0.0, reload_timeout: float = 10.0, drain_timeout: float = 10.0,
          now: datetime | None = None, strict: bool = False, expiry_window: timedelta = timedelta(days=14),
          progress: Progress = _quiet) -> ApplyResult:
    """Compile `policy_paths` and install their servers into the running nginx, or change nothing.

    Servers other policies installed are kept as they are; `remove` names installed servers
    (NAME:PORT) to take out, `take_over` servers another policy file installed that these policies
    now define. `nginx_conf_dir` receives the compiled nginx/*.conf; trust files go to each
    server's `install` directory. nginx is run as `nginx_bin [-p nginx_prefix] [-c nginx_conf]
    [nginx_args...]` and reloaded through the master pid in `pid_file` (default: the main config's
    `pid`). Smoke checks connect to each server's listen address (or `smoke_host`); `client_cert`
    (with `client_key`) and `client_certs` name certificates that must pass `require` routes.
    Never raises for expected failures: the result carries the exit code (EXIT_*), a log, the
    server changes and the history entry.
    """
    run = _Run("dry-run" if dry_run else "apply", progress, smoke=smoke, smoke_host=smoke_host,
               certs=_certs(client_cert, client_key, client_certs), reload_timeout=reload_timeout,
               drain_timeout=drain_timeout)
    conf_dir = Path(nginx_conf_dir).resolve()
    if not conf_dir.is_dir():
        return run.done(EXIT_USAGE, "preflight", f"--nginx-conf-dir {nginx_conf_dir} is not a directory")
    if not policy_paths and not remove:
        return run.done(EXIT_USAGE, "preflight", "nothing to apply: give policy files, or --remove NAME:PORT")
    try:
        run.ctl = _control(nginx_bin, nginx_conf, nginx_prefix, nginx_args, pid_file)
    except _Refused as exc:
        return run.done(EXIT_USAGE, "preflight", str(exc))
    front = None
    if policy_paths:
        from mtlsc.coexist import running_host

        # checked and compiled to fit the running configuration (default servers, hash sizes)
        front = pipeline.check(list(policy_paths), now=now, strict=strict, expiry_window=expiry_window,
                               host=running_host(run.ctl.command()))
        run.diag = {"diagnostics": front.diagnostics, "sources": front.sources}
        if front.failed:
            code = EXIT_USAGE if front.io_error else EXIT_FINDINGS
            return run.done(code, "compile", "the policy has errors: nothing was changed")
    run.state = State(Path(state_dir) if state_dir else conf_dir / STATE_DIR)
    try:
        with run.state.locked(lock_wait, run.action):
            _recover(run)
            return _apply_locked(run, front, conf_dir, list(policy_paths), remove, take_over, dry_run)
    except (LockHeld, StateError) as exc:
        return run.done(EXIT_USAGE, "lock", str(exc))


def _owned_check(plan: Plan, installed: Installed) -> None:
    """No file of a server this apply installs may be one mtlsc did not install itself."""
    mine = set(installed.files)
    ours = {*plan.write, *plan.shared, *(f for r in plan.servers.values() for f in r.files)}
    foreign = sorted(p for p in ours if p not in mine and os.path.lexists(p))
    if foreign:
        raise _Refused(f"{foreign[0]} exists and was not installed by mtlsc apply: move it away (nginx would see "
                       f"two configs), or remove it{' and ' + str(len(foreign) - 1) + ' more' if len(foreign) > 1 else ''}")


def _apply_locked(run: _Run, front: pipeline.Result | None, conf_dir: Path, policy_paths: list[str],
                  remove: Sequence[str], take_over: Sequence[str], dry_run: bool) -> ApplyResult:
    state, ctl = run.state, run.ctl
    try:
        installed = migrate_legacy(state, state.installed(), conf_dir)
        plan = plan_apply(front, installed, conf_dir, lambda: ctl.main_conf().parent, remove, take_over)
        _check_cert_scopes(run.certs, plan.servers)
        _owned_check(plan, installed)
    except (PlanRefused, _Refused) as exc:
        return run.done(EXIT_USAGE, "preflight", f"{exc} (nothing was changed)")
    run.changes = plan.changes
    if front is not None:
        run.log(f"compiled {len(front.policy.servers)} server(s) from {len(policy_paths)} policy file(s)")
    for change in plan.changes:
        run.log(change.line())
    run.log(f"{len(plan.write)} file(s) to write, {len(plan.remove)} to remove")
    files = {"written": sorted(plan.write), "removed": plan.remove}
    try:
        ok, out = ctl.test()
        if not ok:
            raise _Refused(f"nginx -t fails on the current configuration, before any change: fix that first\n{out}")
        pid = None if dry_run else ctl.master_pid()
    except _Refused as exc:
        return run.done(EXIT_USAGE, "preflight", str(exc))
    if dry_run:
        ok, out = _dry_run(ctl, plan.write, plan.remove, run.log)
        if not ok:
            return run.done(EXIT_REVERTED, "nginx-t", f"nginx -t refuses the new configuration (nothing was changed):\n{out}",
                            **files)
        return run.done(EXIT_OK, "done", f"nginx -t accepts the new configuration: {_counts(plan.changes)} "
                        "(nothing was changed)", files=plan.installed(None).files, **files)

    entry = state.new_entry("apply")
    for change in plan.changes:
        if change.change in (ADDED, CHANGED, UNCHANGED):
            plan.servers[change.slug].entry = entry.id
    after = plan.installed(entry.id)
    entry.policies = [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in policy_paths]
    read = sorted({f for ca in front.policy.cas for f in (*ca.bundle, *ca.crls)}) if front else []
    entry.inputs = [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in read]
    entry.files, entry.previous, entry.servers = after.files, installed.entry, plan.summary()
    state.save(entry)
    if front is not None:
        state.store_policies(entry.id, [(p, s.text) for p, s in front.sources.items()])
        state.store_compiled(entry.id, plan.outputs)
    state.snapshot(entry.id, [*plan.write, *plan.remove], installed)
    _, snapshot = state.read_snapshot(entry.id)
    run.log(f"history entry #{entry.id}: previous files saved ({sum(v is not None for v in snapshot.values())} existed)")
    try:
        staged = _stage(plan.write)
    except OSError as exc:
        return _finish(run, entry, EXIT_USAGE, REFUSED, "stage",
                       f"cannot write the new files: {exc.strerror or exc} (nothing was changed)")
    return _transaction(run, entry, pid, snapshot, staged, plan.remove, after, installed, plan.smoke, **files)


__all__ = ["apply", "rollback", "history", "live_entry", "installed_servers", "format_history", "ApplyResult",
           "SmokeCheck", "ClientCert", "Entry", "EXIT_OK", "EXIT_FINDINGS", "EXIT_USAGE", "EXIT_REVERTED",
           "EXIT_BROKEN"]
