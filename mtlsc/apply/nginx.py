"""The running nginx as `mtlsc apply` drives it: `nginx -t`, the master's pid (only from the pid file
nginx wrote, after checking it is an nginx master), reload by SIGHUP and waiting for new workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mtlsc.apply.smoke import error_log_paths
from mtlsc.apply.result import NGINX_T_TIMEOUT, Progress, _Failed, _Refused


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
        out = (proc.stderr + proc.stdout).strip()
        if 'unknown directive "js_' in out:
            from mtlsc.lab.nginx import NJS_HINT
            out += f"\n{NJS_HINT}; load it with `load_module modules/ngx_http_js_module.so;` in nginx.conf"
        return proc.returncode == 0, out

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


def _control(nginx_bin, nginx_conf, nginx_prefix, nginx_args, pid_file) -> NginxControl:
    from mtlsc.lab.nginx import NginxMissing, find_nginx

    try:
        binary = find_nginx(nginx_bin)
    except NginxMissing as exc:
        raise _Refused(str(exc)) from None
    return NginxControl(binary, Path(nginx_conf).resolve() if nginx_conf else None,
                        Path(nginx_prefix).resolve() if nginx_prefix else None, tuple(nginx_args),
                        Path(pid_file) if pid_file else None)
