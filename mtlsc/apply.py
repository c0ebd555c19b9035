"""`mtlsc apply` and `mtlsc rollback`: install a compiled policy into a running nginx without
locking anyone out.

    compile (refuse on errors) -> preflight (nginx -t passes on the current config, the master
    runs) -> lock -> snapshot the live files -> stage the new files beside their targets -> swap
    them in (rename) -> nginx -t -> reload (SIGHUP, wait for new workers) -> smoke checks ->
    done; on any failure after the swap: put the snapshot back, reload again, smoke the old version.

Layout (docs/apply.md): the compiled `nginx/*.conf` go into `--nginx-conf-dir DIR` (the directory
the user's nginx.conf includes, e.g. /etc/nginx/conf.d); each server's trust and CRL files
(`mtls/<server>.ca.pem`, `.crl.pem`, and the njs key check `.keys.js`) go into that server's `install` directory, where the
compiled config reads them. mtlsc only replaces or removes files it installed itself
(DIR/.mtlsc/installed.json) and refuses to overwrite anyone else's. State, lock and history
live in DIR/.mtlsc (see `mtlsc.apply_history`).

Every wait is bounded; processes are signalled only by the pid nginx wrote to its own pid file,
after checking that the process is an nginx master.
"""

from __future__ import annotations

import contextlib
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

from mtlsc import ir, pipeline
from mtlsc.apply_history import (APPLIED, INTERRUPTED, REFUSED, RESTORE_FAILED, ROLLED_BACK, Entry, LockHeld,
                                 State, StateError, fsync_dir, sha256_file, write_file_atomic)
from mtlsc.apply_history import STATE_DIR, format_history  # noqa: F401 (re-exported for the CLI)
from mtlsc.diagnostics import Diagnostic
from mtlsc.evaluate import evaluate, probe_path
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
class SmokeCheck:
    """One request of the smoke checks: what it expected and what came back."""

    server: str
    path: str
    client: str  # "no certificate" or the certificate file
    expect: str
    got: str
    ok: bool

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.server}{self.path} ({self.client}): expect {self.expect}; got {self.got}"


@dataclass
class ApplyResult:
    """What `apply` or `rollback` did. `exit_code` is the command's exit code; `report()` the text."""

    action: str  # apply | rollback | dry-run
    exit_code: int
    ok: bool
    stage: str  # where it ended: compile, preflight, lock, stage, nginx-t, reload, smoke, done
    message: str  # one line: what happened
    log: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    smoke: list[SmokeCheck] = field(default_factory=list)
    entry: int | None = None  # the history entry recorded
    rolled_back: bool = False  # an automatic rollback happened
    files: list[str] = field(default_factory=list)  # the live files of the new version

    def report(self) -> str:
        """For stderr: the diagnostics (text), the step log, failed smoke checks, the outcome."""
        from mtlsc.render import render

        parts = []
        if self.diagnostics:
            parts.append(render(self.diagnostics, self.sources, "text"))
        parts += [f"mtlsc {self.action}: {line}\n" for line in self.log]
        parts += [f"  {c}\n" for c in self.smoke if not c.ok]
        parts.append(f"mtlsc {self.action}: {self.message}\n")
        return "".join(parts)


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
        return dict(re.findall(r"--(prefix|conf-path|pid-path)=(\S+)", proc.stderr + proc.stdout))

    def prefix_dir(self) -> Path:
        return self.prefix or Path(self.build_info().get("prefix", "/usr/share/nginx"))

    def main_conf(self) -> Path:
        """The main config file: `-c`, else the built-in conf path (relative to the prefix)."""
        if self.conf is not None:
            return Path(self.conf).resolve()
        conf = Path(self.build_info().get("conf-path", "conf/nginx.conf"))
        return conf if conf.is_absolute() else (self.prefix_dir() / conf).resolve()

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

    def reload(self, pid: int, timeout: float, drain: float, log: Progress) -> None:
        """SIGHUP the master; return once a new worker generation runs. A master that cannot load the
        new config keeps its old workers and starts none: that is a failed reload (_Failed)."""
        from mtlsc.lab.nginx import children

        old = children(pid)
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
        # Old workers stop accepting at once and finish their requests: wait a little, never fail.
        deadline = time.monotonic() + drain
        while children(pid) & old and time.monotonic() < deadline:
            time.sleep(0.02)
        lingering = children(pid) & old
        if lingering:
            log(f"{len(lingering)} old worker(s) still finishing requests after {drain:g}s (they accept no new ones)")


# ----- the plan: compiled files -> live paths -------------------------------------------------------

@dataclass
class _Plan:
    result: pipeline.Result
    files: dict[str, bytes]  # absolute live path -> content
    policies: list[dict]
    inputs: list[dict]


def _install_dir(server: ir.Server, conf_prefix: Callable[[], Path]) -> Path:
    d = Path(server.install_dir)
    return d if d.is_absolute() else conf_prefix() / d  # nginx reads relative paths from its conf dir


def _plan(policy_paths: Sequence[str], conf_dir: Path, conf_prefix: Callable[[], Path], *, now, strict,
          expiry_window) -> _Plan:
    result = pipeline.compile_policy(list(policy_paths), now=now, strict=strict, expiry_window=expiry_window)
    plan = _Plan(result, {}, [], [])
    if result.failed:
        return plan
    outputs = result.outputs or {}
    for rel, text in outputs.items():
        if rel.startswith("nginx/"):
            plan.files[str(conf_dir / rel.removeprefix("nginx/"))] = text.encode("utf-8")
    for server in result.policy.servers:
        for suffix in (".ca.pem", ".crl.pem", ".keys.js"):
            rel = f"mtls/{server.slug}{suffix}"
            if rel in outputs:
                plan.files[str(_install_dir(server, conf_prefix) / f"{server.slug}{suffix}")] = outputs[rel].encode()
    plan.policies = [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in policy_paths]
    read = sorted({f for ca in result.policy.cas for f in (*ca.bundle, *ca.crls)})
    plan.inputs = [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in read]
    return plan


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


# ----- smoke checks ---------------------------------------------------------------------------------

def _connect_host(listen: ir.Listen, override: str | None) -> str:
    if override:
        return override
    address = (listen.address or "").strip("[]")
    if address in ("", "*", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "::1"
    return address


def _refusals(server: ir.Server) -> set[tuple[int, str]]:
    r = server.rejections
    return {(x.status, x.body) for x in (r.no_cert, r.bad_cert, r.forbidden)}


def _answer(resp) -> str:
    if resp.status == 0:
        return f"no HTTP answer ({resp.error})"
    return f"{resp.status} {resp.text.strip()[:60]!r}"


def _passed_gates(server: ir.Server, resp) -> bool:
    """The request got past mtlsc's gates: an HTTP answer that is no refusal of the server, no 421
    from the default server, no 495/496 and not the catch-all 404 (the backend's status is its own)."""
    if resp.status in (0, 421, 495, 496):
        return False
    if (resp.status, resp.text.strip()) in _refusals(server) | {(404, "no route")}:
        return False
    return True


def smoke_checks(policy: ir.Policy, *, host: str | None = None, client_cert: str | None = None,
                 client_key: str | None = None, timeout: float = 5.0) -> list[SmokeCheck]:
    """Requests from the client side against the live nginx, per server and route:
    - every route's probe path without a certificate answers what the policy says (public and
      optional routes reach the backend; `require` routes refuse with the server's `no_cert`);
    - with `client_cert`, at least one `require` route lets that certificate through.
    """
    from mtlsc.lab.client import request

    checks: list[SmokeCheck] = []
    cert_tried: list[str] = []
    cert_passed = False

    def send(server, path, cert=None):
        listen = server.listens[0]
        name = server.names[0].replace("*", "mtlsc-smoke")
        target = _connect_host(listen, host)
        resp = request(target, listen.port, path, server_name=name, cert=cert, key=client_key if cert else None,
                       timeout=timeout)
        if resp.status == 0:  # one retry for a connection-level hiccup
            time.sleep(0.2)
            resp = request(target, listen.port, path, server_name=name, cert=cert,
                           key=client_key if cert else None, timeout=timeout)
        return resp

    for server in policy.servers:
        label = f"{server.names[0]}:{server.listens[0].port}"
        for route in server.routes:
            path = probe_path(server, route)
            if path is None:
                continue
            want = evaluate(server, path, None)
            resp = send(server, path)
            if want.reason == "ok":
                expect, ok = "an answer past the gates (no certificate needed)", _passed_gates(server, resp)
            elif want.reason == "redirect":
                expect, ok = "301", resp.status == 301
            else:
                expect = f"{want.status} {want.body!r} ({want.reason})"
                ok = resp.status == want.status and want.body in resp.text
            checks.append(SmokeCheck(label, path, "no certificate", expect, _answer(resp), ok))
            if client_cert and route.mode is ir.Mode.REQUIRE and not cert_passed:
                resp = send(server, path, client_cert)
                cert_tried.append(f"{label}{path}: {_answer(resp)}")
                cert_passed = _passed_gates(server, resp)
                if cert_passed:
                    checks.append(SmokeCheck(label, path, Path(client_cert).name,
                                             "an answer past the gates", _answer(resp), True))
    if client_cert and not cert_passed:
        checks.append(SmokeCheck("every `require` route", "", Path(client_cert).name,
                                 "the certificate to pass the gates of at least one",
                                 "; ".join(cert_tried) or "the policy has no `require` route", False))
    return checks


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


def _dry_run(ctl: NginxControl, plan: _Plan, remove: list[str], log: Progress) -> tuple[bool, str]:
    """Run `nginx -t` on a temporary copy of the configuration with the new files in place: the
    main config's directory is mirrored by symlinks, the directories that change (the conf dir, the
    install dirs) are real copies, and the main config and new files point into the mirror."""
    main = ctl.main_conf()
    conf_dir = main.parent
    with tempfile.TemporaryDirectory(prefix="mtlsc-dry-run-") as tmp:
        root = Path(tmp)
        changed_dirs = {Path(p).parent for p in [*plan.files, *remove]}
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
        for path, data in plan.files.items():
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


def apply(policy_paths: Sequence[str], nginx_conf_dir: str | Path, *, nginx_bin: str | None = None,
          nginx_conf: str | Path | None = None, nginx_prefix: str | Path | None = None,
          nginx_args: Sequence[str] = (), pid_file: str | Path | None = None, state_dir: str | Path | None = None,
          dry_run: bool = False, smoke: bool = True, smoke_host: str | None = None,
          client_cert: str | Path | None = None, client_key: str | Path | None = None,
          lock_wait: float = 0.0, reload_timeout: float = 10.0, drain_timeout: float = 10.0,
          now: datetime | None = None, strict: bool = False, expiry_window: timedelta = timedelta(days=14),
          progress: Progress = _quiet) -> ApplyResult:
    """Compile `policy_paths` and install them into the running nginx, or change nothing.

    `nginx_conf_dir` receives the compiled nginx/*.conf; trust files go to each server's `install`
    directory. nginx is run as `nginx_bin [-p nginx_prefix] [-c nginx_conf] [nginx_args...]` and
    reloaded through the master pid in `pid_file` (default: the main config's `pid`). Smoke checks
    connect to each server's listen address (or `smoke_host`); `client_cert`/`client_key` name a
    certificate that must pass at least one `require` route. Never raises for expected failures:
    the result carries the exit code (EXIT_*), a log and the history entry.
    """
    action = "dry-run" if dry_run else "apply"
    log_lines: list[str] = []

    def log(line: str) -> None:
        log_lines.append(line)
        progress(line)

    def done(code: int, stage: str, message: str, **kw) -> ApplyResult:
        return ApplyResult(action, code, code == EXIT_OK, stage, message, log_lines, **kw)

    conf_dir = Path(nginx_conf_dir).resolve()
    if not conf_dir.is_dir():
        return done(EXIT_USAGE, "preflight", f"--nginx-conf-dir {nginx_conf_dir} is not a directory")
    if client_cert and not client_key:
        client_key = client_cert  # a PEM holding both
    try:
        ctl = _control(nginx_bin, nginx_conf, nginx_prefix, nginx_args, pid_file)
    except _Refused as exc:
        return done(EXIT_USAGE, "preflight", str(exc))
    plan = _plan(policy_paths, conf_dir, lambda: ctl.main_conf().parent, now=now, strict=strict,
                 expiry_window=expiry_window)
    diag = {"diagnostics": plan.result.diagnostics, "sources": plan.result.sources}
    if plan.result.failed:
        code = EXIT_USAGE if plan.result.io_error else EXIT_FINDINGS
        return done(code, "compile", "the policy has errors: nothing was changed", **diag)
    log(f"compiled {len(plan.result.outputs)} files: {len(plan.files)} to install")
    state = State(Path(state_dir) if state_dir else conf_dir / STATE_DIR)
    try:
        with state.locked(lock_wait, action):
            _recover(state, ctl, reload_timeout, drain_timeout, log)
            return _apply_locked(state, ctl, plan, conf_dir, dry_run, smoke, smoke_host, client_cert, client_key,
                                 reload_timeout, drain_timeout, log, done, diag)
    except LockHeld as exc:
        return done(EXIT_USAGE, "lock", str(exc), **diag)
    except StateError as exc:
        return done(EXIT_USAGE, "lock", str(exc), **diag)


def _owned_check(plan: _Plan, installed: list[str]) -> None:
    mine = set(installed)
    foreign = [p for p in plan.files if p not in mine and os.path.lexists(p)]
    if foreign:
        raise _Refused(f"{foreign[0]} exists and was not installed by mtlsc apply: move it away (nginx would see "
                       f"two configs), or remove it{' and ' + str(len(foreign) - 1) + ' more' if len(foreign) > 1 else ''}")


def _apply_locked(state: State, ctl: NginxControl, plan: _Plan, conf_dir: Path, dry_run, smoke, smoke_host,
                  client_cert, client_key, reload_timeout, drain_timeout, log, done, diag) -> ApplyResult:
    live_entry, installed = state.installed()
    remove = sorted(set(installed) - set(plan.files))
    try:
        _owned_check(plan, installed)
        ok, out = ctl.test()
        if not ok:
            raise _Refused(f"nginx -t fails on the current configuration, before any change: fix that first\n{out}")
        pid = None if dry_run else ctl.master_pid()
    except _Refused as exc:
        return done(EXIT_USAGE, "preflight", str(exc), **diag)
    if dry_run:
        ok, out = _dry_run(ctl, plan, remove, log)
        if not ok:
            return done(EXIT_REVERTED, "nginx-t", f"nginx -t refuses the new configuration (nothing was changed):\n{out}",
                        **diag)
        return done(EXIT_OK, "done", f"nginx -t accepts the new configuration; {len(plan.files)} files would be "
                    f"installed, {len(remove)} removed (nothing was changed)", files=sorted(plan.files), **diag)

    entry = state.new_entry("apply")
    entry.policies, entry.inputs, entry.files, entry.previous = plan.policies, plan.inputs, sorted(plan.files), live_entry
    state.save(entry)
    state.store_policies(entry.id, [(p, s.text) for p, s in plan.result.sources.items()])
    state.store_compiled(entry.id, plan.result.outputs)
    state.snapshot(entry.id, [*plan.files, *installed], installed)
    _, snapshot = state.read_snapshot(entry.id)
    log(f"history entry #{entry.id}: previous files saved ({sum(v is not None for v in snapshot.values())} existed)")
    try:
        staged = _stage(plan.files)
    except OSError as exc:
        return _finish(state, entry, done, EXIT_USAGE, REFUSED, "stage",
                       f"cannot write the new files: {exc.strerror or exc} (nothing was changed)", diag)
    return _transaction(state, ctl, entry, pid, snapshot, staged, remove, sorted(plan.files), installed,
                        plan.result.policy, previous_policy=live_entry, smoke=smoke, smoke_host=smoke_host,
                        client_cert=client_cert, client_key=client_key, reload_timeout=reload_timeout,
                        drain_timeout=drain_timeout, log=log, done=done, diag=diag)


def _transaction(state: State, ctl: NginxControl, entry: Entry, pid: int, snapshot, staged: dict[str, Path],
                 remove: list[str], new_files: list[str], old_installed: list[str], policy: ir.Policy | None,
                 *, previous_policy: int | None, smoke, smoke_host, client_cert, client_key, reload_timeout,
                 drain_timeout, log, done, diag) -> ApplyResult:
    """Swap, test, reload, smoke; on failure restore the snapshot and reload again."""
    reloaded = False
    checks: list[SmokeCheck] = []
    state.set_pending(entry.id)
    try:
        _swap(staged, remove)
        log(f"swapped in {len(staged)} files, removed {len(remove)}")
        ok, out = ctl.test()
        if not ok:
            raise _Failed("nginx-t", f"nginx -t refuses the new configuration:\n{out}")
        log("nginx -t: ok")
        reloaded = True  # from here on the master may run the new config
        ctl.reload(pid, reload_timeout, drain_timeout, log)
        log(f"reloaded nginx (master {pid})")
        if smoke and policy is not None:
            checks = smoke_checks(policy, host=smoke_host, client_cert=str(client_cert) if client_cert else None,
                                  client_key=str(client_key) if client_key else None)
            failed = [c for c in checks if not c.ok]
            log(f"smoke checks: {len(checks) - len(failed)} of {len(checks)} passed")
            if failed:
                more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
                raise _Failed("smoke", f"smoke check failed: {failed[0]}{more}")
        elif smoke:
            log("smoke checks skipped: no policy is known for this version")
    except (Exception, KeyboardInterrupt) as exc:  # every failure after the swap reverts
        _discard(staged)
        stage = exc.stage if isinstance(exc, _Failed) else "swap"
        reason = str(exc) if isinstance(exc, _Failed) else f"{type(exc).__name__}: {exc}"
        log(f"failed at {stage}: {reason.splitlines()[0] if reason else ''}")
        restored = _revert(state, ctl, pid, snapshot, old_installed, previous_policy, reloaded, smoke_host,
                           reload_timeout, drain_timeout, log)
        state.set_pending(None)
        if isinstance(exc, KeyboardInterrupt):
            _finish(state, entry, done, EXIT_REVERTED, ROLLED_BACK if restored else RESTORE_FAILED, stage,
                    "interrupted", diag)
            raise
        if restored:
            return _finish(state, entry, done, EXIT_REVERTED, ROLLED_BACK, stage,
                           f"{reason}\nthe previous configuration was restored and nginx serves it", diag,
                           smoke=checks, rolled_back=True)
        return _finish(state, entry, done, EXIT_BROKEN, RESTORE_FAILED, stage,
                       f"{reason}\nRESTORING THE PREVIOUS CONFIGURATION FAILED: check nginx now (see the log above; "
                       f"the previous files are in {state.entry_dir(entry.id) / 'before'})", diag, smoke=checks,
                       rolled_back=True)
    state.set_installed(entry.id, new_files)
    state.set_pending(None)
    state.prune()
    what = (f"rolled back #{entry.undoes} (entry #{entry.id})" if entry.action == "rollback"
            else f"apply #{entry.id} is live")
    return _finish(state, entry, done, EXIT_OK, APPLIED, "done",
                   f"{what}: {len(new_files)} files installed, {len(remove)} removed, nginx reloaded"
                   + (", smoke checks passed" if checks else ""), diag, smoke=checks, files=new_files)


def _revert(state: State, ctl: NginxControl, pid: int, snapshot, old_installed: list[str],
            previous_policy: int | None, reloaded: bool, smoke_host, reload_timeout, drain_timeout,
            log) -> bool:
    """Put the snapshot back; reload when nginx may have loaded the new config. True when nginx
    serves the previous configuration again."""
    try:
        _restore(snapshot)
        state.set_installed(previous_policy, old_installed)
        log(f"restored the previous {len(snapshot)} file(s)")
    except OSError as exc:
        log(f"cannot restore the previous files: {exc.strerror or exc}")
        return False
    if not reloaded:
        log("nginx was not reloaded: it still serves the previous configuration")
        return True
    ok, out = ctl.test()
    if not ok:
        log(f"nginx -t refuses the restored configuration:\n{out}")
        return False
    try:
        ctl.reload(pid, reload_timeout, drain_timeout, log)
    except _Failed as exc:
        log(f"reloading the restored configuration failed: {exc}")
        return False
    log("reloaded nginx with the previous configuration")
    files = state.policy_files(previous_policy) if previous_policy else []
    if files:
        front = pipeline.read_and_lower(files)
        if front.policy is not None:
            checks = smoke_checks(front.policy, host=smoke_host)
            bad = [c for c in checks if not c.ok]
            log(f"smoke checks of the previous version: {len(checks) - len(bad)} of {len(checks)} passed"
                + (f"; e.g. {bad[0]}" if bad else ""))
    return True


def _finish(state: State, entry: Entry, done, code: int, result: str, stage: str, message: str, diag,
            **kw) -> ApplyResult:
    from mtlsc.apply_history import now_iso

    entry.result, entry.reason, entry.finished = result, message.splitlines()[0] if message else "", now_iso()
    with contextlib.suppress(OSError):
        state.save(entry)
    return done(code, stage, message, entry=entry.id, **diag, **kw)


def _recover(state: State, ctl: NginxControl, reload_timeout: float, drain_timeout: float, log: Progress) -> None:
    """A previous run died while live files were changing (pending.json survived it): put its
    snapshot back and reload, so this run starts from the version that was live before it."""
    entry_id = state.pending()
    if entry_id is None:
        return
    entry = state.load(entry_id)
    log(f"history entry #{entry_id} was interrupted while changing live files: restoring the files before it")
    installed, snapshot = state.read_snapshot(entry_id)
    _restore(snapshot)
    state.set_installed(entry.previous if entry else None, installed)
    state.set_pending(None)
    if entry is not None:
        from mtlsc.apply_history import now_iso

        entry.result, entry.reason, entry.finished = INTERRUPTED, "mtlsc stopped mid-change; files restored", now_iso()
        state.save(entry)
    ok, out = ctl.test()
    if not ok:
        log(f"nginx -t refuses the restored configuration:\n{out}")
        return
    try:
        ctl.reload(ctl.master_pid(), reload_timeout, drain_timeout, log)
        log("reloaded nginx with the restored files")
    except (_Failed, _Refused) as exc:
        log(f"could not reload after restoring: {exc}")


# ----- rollback --------------------------------------------------------------------------------------

def rollback(nginx_conf_dir: str | Path, *, nginx_bin: str | None = None, nginx_conf: str | Path | None = None,
             nginx_prefix: str | Path | None = None, nginx_args: Sequence[str] = (),
             pid_file: str | Path | None = None, state_dir: str | Path | None = None, smoke: bool = True,
             smoke_host: str | None = None, client_cert: str | Path | None = None,
             client_key: str | Path | None = None, lock_wait: float = 0.0, reload_timeout: float = 10.0,
             drain_timeout: float = 10.0, progress: Progress = _quiet) -> ApplyResult:
    """Undo the newest apply that is live and not undone yet: restore the files it replaced, test,
    reload and smoke-check (with the policy of the version restored). Repeated rollbacks walk back
    one apply each. A failure puts the files back as they were before the rollback."""
    log_lines: list[str] = []

    def log(line: str) -> None:
        log_lines.append(line)
        progress(line)

    def done(code: int, stage: str, message: str, **kw) -> ApplyResult:
        return ApplyResult("rollback", code, code == EXIT_OK, stage, message, log_lines, **kw)

    conf_dir = Path(nginx_conf_dir).resolve()
    if not conf_dir.is_dir():
        return done(EXIT_USAGE, "preflight", f"--nginx-conf-dir {nginx_conf_dir} is not a directory")
    if client_cert and not client_key:
        client_key = client_cert
    state = State(Path(state_dir) if state_dir else conf_dir / STATE_DIR)
    try:
        ctl = _control(nginx_bin, nginx_conf, nginx_prefix, nginx_args, pid_file)
        with state.locked(lock_wait, "rollback"):
            _recover(state, ctl, reload_timeout, drain_timeout, log)
            target = rollback_target(state.entries())
            if target is None:
                return done(EXIT_USAGE, "preflight", "nothing to roll back: no applied version in the history of "
                            f"{conf_dir}")
            live_entry, installed = state.installed()
            old_installed, snapshot_before = state.read_snapshot(target.id)
            ok, out = ctl.test()
            if not ok:
                raise _Refused(f"nginx -t fails on the current configuration, before any change:\n{out}")
            pid = ctl.master_pid()
            entry = state.new_entry("rollback")
            entry.undoes, entry.previous = target.id, live_entry
            previous = target.previous
            entry.files = sorted(p for p, v in snapshot_before.items() if v is not None and p in set(old_installed))
            prev_entry = state.load(previous) if previous else None
            entry.policies = prev_entry.policies if prev_entry else []
            entry.inputs = prev_entry.inputs if prev_entry else []
            state.save(entry)
            if previous:
                state.copy_policies(previous, entry.id)
            # The files the rollback changes: the target's snapshot paths plus what is installed now.
            state.snapshot(entry.id, [*snapshot_before, *installed], installed)
            _, snapshot_now = state.read_snapshot(entry.id)
            log(f"rolling back #{target.id} (to the version of "
                f"{'#' + str(previous) if previous else 'before mtlsc apply'}); history entry #{entry.id}")
            wanted = {p: v[0] for p, v in snapshot_before.items() if v is not None}
            modes = {p: v[1] for p, v in snapshot_before.items() if v is not None}
            absent = sorted(p for p in {*snapshot_before, *installed} if p not in wanted)
            try:
                staged = _stage(wanted)
                for p, m in modes.items():
                    os.chmod(staged[p], m)
            except OSError as exc:
                return _finish(state, entry, done, EXIT_USAGE, REFUSED, "stage",
                               f"cannot write the files: {exc.strerror or exc} (nothing was changed)", {})
            policy = None
            files = state.policy_files(entry.id)
            if files:
                front = pipeline.read_and_lower(files)
                policy = front.policy
            result = _transaction(state, ctl, entry, pid, snapshot_now, staged, absent, sorted(old_installed),
                                  installed, policy, previous_policy=live_entry, smoke=smoke, smoke_host=smoke_host,
                                  client_cert=client_cert, client_key=client_key, reload_timeout=reload_timeout,
                                  drain_timeout=drain_timeout, log=log, done=done, diag={})
            if result.ok:
                state.set_installed(entry.id if previous else None, sorted(old_installed))
            return result
    except _Refused as exc:
        return done(EXIT_USAGE, "preflight", str(exc))
    except (LockHeld, StateError) as exc:
        return done(EXIT_USAGE, "lock", str(exc))


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
    return State(Path(state_dir) if state_dir else conf_dir / STATE_DIR).installed()[0]


__all__ = ["apply", "rollback", "history", "live_entry", "format_history", "smoke_checks", "ApplyResult",
           "SmokeCheck", "Entry", "EXIT_OK", "EXIT_FINDINGS", "EXIT_USAGE", "EXIT_REVERTED", "EXIT_BROKEN"]
