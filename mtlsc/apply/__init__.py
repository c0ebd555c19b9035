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

Every wait is bounded; processes are signalled only by the pid nginx wrote to its own pid file,
after checking that the process is an nginx master.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from mtlsc import pipeline
from mtlsc.apply.history import (APPLIED, INTERRUPTED, REFUSED, RESTORE_FAILED, ROLLED_BACK, Entry, Installed,
                                 LockHeld, State, StateError, fsync_dir, sha256_file, write_file_atomic)
from mtlsc.apply.history import STATE_DIR, format_history  # noqa: F401 (re-exported for the CLI)
from mtlsc.apply.plan import (ADDED, CHANGED, KEPT, KINDS, REMOVED, UNCHANGED, Plan, PlanRefused, ServerChange,
                              migrate_legacy, plan_apply, server_changes, smoke_selection)
from mtlsc.apply.smoke import ClientCert, ErrorLogs, SmokeCheck, SmokePlan, error_log_paths, matches_server, run_smoke
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


# ----- nginx ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NginxControl:
    """How to run the user's nginx: `BIN [-p PREFIX] [-c CONF] [ARGS...]`, plus its pid file."""

    binary: str
    conf: Path | None = None
    prefix: Path | None = None
    args: tuple[str, ...] = ()
    pid_file: Path | None = None

    def command(self, conf: Path | None = None) -> list[str]:
        cmd = [self.binary]
        if self.prefix is not None:
            cmd += ["-p", f"{str(self.prefix).rstrip('/')}/"]
        if conf or self.conf:
            cmd += ["-c", str(conf or self.conf)]
        return cmd + list(self.args)

    def test(self, conf: Path | None = None) -> tuple[bool, str]:
        """`nginx -t` (on `conf` instead of the main config when given): (ok, nginx's output)."""
        try:
            proc = subprocess.run([*self.command(conf), "-t"], capture_output=True, text=True,
                                  timeout=NGINX_T_TIMEOUT)
        except subprocess.TimeoutExpired:
            return False, f"nginx -t did not finish within {NGINX_T_TIMEOUT:.0f}s"
        except OSError as exc:
            return False, f"cannot run {self.binary}: {exc.strerror or exc}"
        return proc.returncode == 0, (proc.stderr + proc.stdout).strip()

    def build_info(self) -> dict[str, str]:
        """The `--prefix=`, `--conf-path=` and `--pid-path=` nginx was built with (`nginx -V`)."""
        try:
            proc = subprocess.run([self.binary, "-V"], capture_output=True, text=True, timeout=NGINX_T_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        return dict(re.findall(r"--(prefix|conf-path|pid-path|error-log-path)=(\S+)", proc.stderr + proc.stdout))

    def prefix_dir(self) -> Path:
        return self.prefix or Path(self.build_info().get("prefix", "/usr/share/nginx"))

    def main_conf(self) -> Path:
        """The main config file: `-c`, else the built-in conf path (relative to the prefix)."""
        if self.conf is not None:
            return Path(self.conf).resolve()
        conf = Path(self.build_info().get("conf-path", "conf/nginx.conf"))
        return conf if conf.is_absolute() else (self.prefix_dir() / conf).resolve()

    def error_logs(self) -> list[Path]:
        """The error log files nginx writes (best effort: `-e`, the main config's `error_log`)."""
        try:
            text = self.main_conf().read_text(errors="replace")
        except OSError:
            text = ""
        info = {} if "-e" in self.args or "error_log" in text else self.build_info()
        return error_log_paths(text, self.prefix_dir(), self.args, info.get("error-log-path"))

    def find_pid_file(self) -> Path:
        """The pid file: given, else the `pid` directive of the main config, else nginx's built-in one."""
        if self.pid_file is not None:
            return Path(self.pid_file)
        try:
            text = self.main_conf().read_text(errors="replace")
        except OSError:
            text = ""
        text = re.sub(r"#[^\n]*", "", text)
        m = re.search(r"(?:^|[;}{\s])pid\s+(?:\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|([^\s;]+))\s*;", text)
        if m:
            path = Path((m[1] or m[2] or m[3] or "").replace('\\"', '"'))
        else:
            path = Path(self.build_info().get("pid-path", "logs/nginx.pid"))
        return path if path.is_absolute() else self.prefix_dir() / path

    def master_pid(self) -> int:
        """The running master's pid, or _Refused with the reason."""
        pid_file = self.find_pid_file()
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            raise _Refused(f"nginx is not running: no pid in {pid_file} (start nginx, or give --pid-file)") from None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            raise _Refused(f"nginx is not running: pid {pid} from {pid_file} does not exist") from None
        if "nginx" not in cmdline or state in ("Z", "X"):
            raise _Refused(f"pid {pid} from {pid_file} is not a running nginx master ({cmdline.strip()[:80]!r})")
        return pid

    def reload(self, pid: int, timeout: float, drain: float, log: Progress) -> dict:
        """SIGHUP the master; return once a new worker generation runs. A master that cannot load the
        new config keeps its old workers and starts none: that is a failed reload (_Failed).
        Returns when (time.monotonic()) it signalled, saw new workers, and saw the old ones gone."""
        from mtlsc.lab.nginx import children

        old = children(pid)
        times = {"signalled": time.monotonic(), "new_workers": None, "old_workers_gone": None}
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            raise _Failed("reload", f"cannot signal nginx master {pid}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + timeout
        while not (children(pid) - old):
            if time.monotonic() >= deadline:
                raise _Failed("reload", f"nginx started no new workers within {timeout:g}s of the reload signal: "
                              "the master refused the new config (see its error log, e.g. a port already in use)")
            time.sleep(0.02)
        times["new_workers"] = time.monotonic()
        # Old workers stop accepting at once and finish their requests: wait a little, never fail.
        deadline = time.monotonic() + drain
        while children(pid) & old and time.monotonic() < deadline:
            time.sleep(0.02)
        lingering = children(pid) & old
        if lingering:
            log(f"{len(lingering)} old worker(s) still finishing requests after {drain:g}s (they accept no new ones)")
        else:
            times["old_workers_gone"] = time.monotonic()
        return times


# ----- the plan: compiled files -> live paths -------------------------------------------------------

# ----- live files --------------------------------------------------------------------------------------

def _stage(files: dict[str, bytes]) -> dict[str, Path]:
    """Write every new file beside its target (hidden name, fsynced); nothing live changes yet."""
    staged: dict[str, Path] = {}
    try:
        for dest, data in sorted(files.items()):
            target = Path(dest)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}.mtlsc-new"
            mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            staged[dest] = tmp
    except BaseException:
        _discard(staged)
        raise
    return staged


def _discard(staged: dict[str, Path]) -> None:
    for tmp in staged.values():
        with contextlib.suppress(OSError):
            tmp.unlink()


def _swap(staged: dict[str, Path], remove: list[str]) -> None:
    """Rename each staged file over its target (atomic per file), then drop files no longer wanted."""
    for dest, tmp in sorted(staged.items()):
        os.replace(tmp, dest)
    for path in remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    for d in {Path(p).parent for p in [*staged, *remove]}:
        fsync_dir(d)


def _restore(snapshot: dict[str, tuple[bytes, int] | None]) -> None:
    """Put every snapshotted path back as it was: content and mode, or absent."""
    for path, saved in sorted(snapshot.items()):
        if saved is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            fsync_dir(Path(path).parent)
        else:
            write_file_atomic(Path(path), saved[0], saved[1])



# ----- dry run: nginx -t on a mirror of the conf tree ---------------------------------------------------

def _mirror(src: Path, dst: Path, keep_real: set[Path]) -> None:
    """Make `dst` look like `src`: symlinks to every entry, except directories on the way to a
    path in `keep_real`, which become real directories (mirrored the same way)."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        entries = list(src.iterdir())
    except OSError:
        return
    for entry in entries:
        if any(entry == k or k.is_relative_to(entry) for k in keep_real) and entry.is_dir() and not entry.is_symlink():
            _mirror(entry, dst / entry.name, keep_real)
        elif entry not in keep_real:
            (dst / entry.name).symlink_to(entry)


def _dry_run(ctl: NginxControl, files: dict[str, bytes], remove: list[str], log: Progress) -> tuple[bool, str]:
    """Run `nginx -t` on a temporary copy of the configuration with the new files in place: the
    main config's directory is mirrored by symlinks, the directories that change (the conf dir, the
    install dirs) are real copies, and the main config and new files point into the mirror."""
    main = ctl.main_conf()
    conf_dir = main.parent
    with tempfile.TemporaryDirectory(prefix="mtlsc-dry-run-") as tmp:
        root = Path(tmp)
        changed_dirs = {Path(p).parent for p in [*files, *remove]}
        inside = {d for d in changed_dirs if d.is_relative_to(conf_dir)}
        outside = sorted(changed_dirs - inside)
        mapping = {conf_dir: root / "conf"}
        _mirror(conf_dir, root / "conf", inside | {main})
        for i, d in enumerate(outside):
            mapping[d] = root / "ext" / str(i)
            _mirror(d, mapping[d], set())
        for d in inside:  # the directories that change: copies of the files, not links
            for entry in d.iterdir() if d.is_dir() else []:
                link = root / "conf" / entry.relative_to(conf_dir)
                if link.is_symlink() and entry.is_file():
                    link.unlink()
                    link.write_bytes(entry.read_bytes())

        def where(path: str) -> Path:
            p = Path(path)
            for base in sorted(mapping, key=lambda b: len(str(b)), reverse=True):
                if p.is_relative_to(base):
                    return mapping[base] / p.relative_to(base)
            return p

        pattern = re.compile("|".join(re.escape(str(b).rstrip("/") + "/")
                                      for b in sorted(mapping, key=lambda b: len(str(b)), reverse=True)))

        def rewrite(text: str) -> str:
            return pattern.sub(lambda m: str(where(m.group(0))) + "/", text)

        for path in remove:
            with contextlib.suppress(FileNotFoundError):
                where(path).unlink()
        for path, data in files.items():
            target = where(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            target.write_bytes(rewrite(data.decode("utf-8")).encode("utf-8") if path.endswith(".conf") else data)
        mirror_main = where(str(main))
        mirror_main.write_text(rewrite(main.read_text(errors="replace")))
        log(f"dry run: nginx -t on a copy of {conf_dir} in {root}")
        return ctl.test(mirror_main)




# ----- apply -----------------------------------------------------------------------------------------

def _control(nginx_bin, nginx_conf, nginx_prefix, nginx_args, pid_file) -> NginxControl:
    from mtlsc.lab.nginx import NginxMissing, find_nginx

    try:
        binary = find_nginx(nginx_bin)
    except NginxMissing as exc:
        raise _Refused(str(exc)) from None
    return NginxControl(binary, Path(nginx_conf).resolve() if nginx_conf else None,
                        Path(nginx_prefix).resolve() if nginx_prefix else None, tuple(nginx_args),
                        Path(pid_file) if pid_file else None)


def _certs(client_cert, client_key, client_certs: Sequence[ClientCert]) -> tuple[ClientCert, ...]:
    first = [ClientCert(str(client_cert), str(client_key) if client_key else None)] if client_cert else []
    return tuple(first + list(client_certs))


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


# ----- rollback --------------------------------------------------------------------------------------

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


__all__ = ["apply", "rollback", "history", "live_entry", "installed_servers", "format_history", "ApplyResult",
           "SmokeCheck", "ClientCert", "Entry", "EXIT_OK", "EXIT_FINDINGS", "EXIT_USAGE", "EXIT_REVERTED",
           "EXIT_BROKEN"]
