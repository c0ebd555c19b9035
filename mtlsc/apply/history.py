"""The state of `mtlsc apply` beside the nginx conf dir: the lock, what is installed, the history.

    DIR/.mtlsc/lock             flock(2) lock: one apply or rollback at a time
    DIR/.mtlsc/installed.json   the servers mtlsc installed (one record each: policy file, files,
                                what other servers of the same nginx must not collide with), the
                                shared http-level file, and the entry whose version is live
    DIR/.mtlsc/pending.json     present only while live files are being changed (crash recovery)
    DIR/.mtlsc/history/NNNNNN/  one entry per apply or rollback:
        entry.json              what (policies and CA files, with SHA-256), when, who, the result
        before/                 the live files the change replaced (`manifest.json` + blobs)
        policy/                 the policy files of the version it made live (for smoke checks)
        compiled/               everything `mtlsc compile` produced for it

Nothing here knows nginx: `mtlsc.apply` drives the change; this module stores it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

STATE_DIR = ".mtlsc"
KEEP_ENTRIES = 100  # older history entries are deleted (their versions can no longer be rolled back to)

# Entry results
APPLIED = "applied"  # the change is live and passed its smoke checks
ROLLED_BACK = "rolled-back"  # it failed (nginx -t, reload or smoke) and the previous files are serving again
RESTORE_FAILED = "restore-failed"  # it failed, and restoring the previous version failed too: act by hand
REFUSED = "refused"  # it failed before any live file changed
INTERRUPTED = "interrupted"  # mtlsc died while it ran; the next run restored the previous files
RUNNING = "running"


class StateError(OSError):
    """The state directory cannot be used (unwritable, or the lock is held by another run)."""


class LockHeld(StateError):
    pass


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def write_file_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `path` whole or not at all: a sibling temp file, fsync, rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.mtlsc-tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class Entry:
    """One apply or rollback, as recorded in `history/NNNNNN/entry.json`."""

    id: int
    action: str  # apply | rollback
    started: str  # ISO 8601, UTC
    finished: str = ""
    result: str = RUNNING
    reason: str = ""  # why it failed, or what it did
    policies: list[dict] = field(default_factory=list)  # [{"path", "sha256"}]: the policy files
    inputs: list[dict] = field(default_factory=list)  # [{"path", "sha256"}]: CA bundles and CRLs read
    files: list[str] = field(default_factory=list)  # the live files this version consists of
    servers: dict[str, list[str]] = field(default_factory=dict)  # added / changed / ... -> server labels
    previous: int | None = None  # the entry whose version was live before (None: none by mtlsc)
    undoes: int | None = None  # rollback: the apply it undid
    user: str = ""
    host: str = ""

    @property
    def live_result(self) -> bool:
        return self.result == APPLIED


@dataclass
class ServerRecord:
    """One server mtlsc installed: where it came from, its files, and what an apply of another
    policy into the same nginx must know of it (docs/apply.md "Ownership")."""

    slug: str
    label: str  # NAME:PORT, as the user names it (`--remove`, `--take-over`, the reports)
    policy: str  # the policy file that defines it (absolute path): its owner
    entry: int  # the history entry that installed this version of it
    files: list[str]  # its live files: the server's .conf and its trust files
    names: list[str] = field(default_factory=list)
    listens: list[str] = field(default_factory=list)  # as in `listen`: "127.0.0.1:8443", "8443"
    prefix: str = ""  # its nginx variable prefix: no other server may use it
    hash_sizes: list[int] = field(default_factory=lambda: [64, 2048])  # map_hash sizes its maps need
    tickets: bool = True  # ssl_session_tickets on
    tls: str = "intermediate"  # its TLS profile: its address's default server carries the protocols
    client_auth: str = ""  # handshake mode and trust file digest: servers sharing an address compare it
    cve: bool = False  # its policy's nginx target includes builds with CVE-2025-23419
    smoke: dict = field(default_factory=dict)  # its smoke checks (mtlsc.apply.smoke.SmokePlan)

    @classmethod
    def from_json(cls, data: dict) -> "ServerRecord":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Installed:
    """What mtlsc installed in one conf dir. `servers` is None in a state written before mtlsc
    kept one record per server (`files` is all it knew then)."""

    entry: int | None = None  # the history entry whose version is live (None: nothing by mtlsc)
    servers: dict[str, ServerRecord] | None = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)  # the http-level file all servers share
    legacy_files: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        if self.servers is None:
            return sorted(self.legacy_files)
        return sorted({*self.shared, *(f for r in self.servers.values() for f in r.files)})

    def to_json(self) -> dict:
        return {"entry": self.entry, "files": self.files, "shared": sorted(self.shared),
                "servers": None if self.servers is None else {k: asdict(v) for k, v in sorted(self.servers.items())}}

    @classmethod
    def from_json(cls, data) -> "Installed":
        if isinstance(data, list):  # a snapshot manifest of the older layout: the files only
            return cls(None, None if data else {}, [], list(data))
        if not isinstance(data, dict):
            return cls()
        servers = data.get("servers")
        if servers is None and data.get("files"):
            return cls(data.get("entry"), None, [], list(data.get("files", [])))
        return cls(data.get("entry"), {k: ServerRecord.from_json(v) for k, v in (servers or {}).items()},
                   list(data.get("shared", [])))


class State:
    """The state directory of one nginx conf dir."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.history_dir = self.root / "history"
        self._lock_fd: int | None = None

    # ---- the lock ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, wait: float = 0.0, what: str = "apply") -> Iterator[None]:
        """Hold the lock for the `with` body; LockHeld (with the holder's pid) if another run has it.

        flock(2) is released by the kernel when the holder dies, so a killed apply never leaves a
        stale lock behind."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(f"cannot use the state directory {self.root}: {exc.strerror or exc}") from None
        try:
            deadline = time.monotonic() + max(wait, 0.0)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise StateError(f"cannot lock {self.root / 'lock'}: {exc.strerror}") from None
                    if time.monotonic() >= deadline:
                        holder = _read_holder(fd)
                        raise LockHeld(
                            f"another mtlsc apply or rollback is running on this conf dir ({holder}); "
                            f"lock file {self.root / 'lock'}. Wait for it to finish (or use --lock-wait)") from None
                    time.sleep(0.1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{what} pid {os.getpid()} on {socket.gethostname()} since {now_iso()}\n".encode(), 0)
            self._lock_fd = fd
            yield
        finally:
            self._lock_fd = None
            os.close(fd)  # closing the last descriptor releases the flock

    # ---- installed files ----------------------------------------------------------------------

    def installed(self) -> Installed:
        return Installed.from_json(self._read_json(self.root / "installed.json", {}))

    def set_installed(self, installed: Installed) -> None:
        self._write_json(self.root / "installed.json", installed.to_json())

    # ---- pending change (crash recovery) ----------------------------------------------------------

    def pending(self) -> int | None:
        data = self._read_json(self.root / "pending.json", None)
        return data.get("entry") if isinstance(data, dict) else None

    def set_pending(self, entry: int | None) -> None:
        path = self.root / "pending.json"
        if entry is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            fsync_dir(self.root)
        else:
            self._write_json(path, {"entry": entry, "pid": os.getpid(), "since": now_iso()})

    # ---- history ----------------------------------------------------------------------------------

    def entry_dir(self, entry_id: int) -> Path:
        return self.history_dir / f"{entry_id:06d}"

    def new_entry(self, action: str) -> Entry:
        self.history_dir.mkdir(parents=True, exist_ok=True)
        ids = self._ids()
        entry = Entry(id=(ids[-1] + 1) if ids else 1, action=action, started=now_iso(),
                      user=_user(), host=socket.gethostname())
        self.entry_dir(entry.id).mkdir(parents=True)
        self.save(entry)
        return entry

    def save(self, entry: Entry) -> None:
        self._write_json(self.entry_dir(entry.id) / "entry.json", asdict(entry))

    def load(self, entry_id: int) -> Entry | None:
        data = self._read_json(self.entry_dir(entry_id) / "entry.json", None)
        if not isinstance(data, dict):
            return None
        known = {k: v for k, v in data.items() if k in Entry.__dataclass_fields__}
        try:
            return Entry(**known)
        except TypeError:
            return None

    def entries(self) -> list[Entry]:
        """Every readable entry, oldest first."""
        return [e for e in (self.load(i) for i in self._ids()) if e is not None]

    def prune(self, keep: int = KEEP_ENTRIES) -> None:
        ids = self._ids()
        for entry_id in ids[:-keep] if len(ids) > keep else []:
            shutil.rmtree(self.entry_dir(entry_id), ignore_errors=True)

    def _ids(self) -> list[int]:
        if not self.history_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.history_dir.iterdir() if p.name.isdigit() and p.is_dir())

    # ---- snapshots --------------------------------------------------------------------------------

    def snapshot(self, entry_id: int, paths: list[str], installed: Installed) -> None:
        """Copy the current content of `paths` (absent ones recorded as absent) into before/."""
        base = self.entry_dir(entry_id) / "before"
        (base / "files").mkdir(parents=True, exist_ok=True)
        files: dict[str, dict | None] = {}
        for i, path in enumerate(sorted(set(paths))):
            p = Path(path)
            try:
                data = p.read_bytes()
                mode = p.stat().st_mode & 0o7777
            except FileNotFoundError:
                files[path] = None
                continue
            blob = f"{i:05d}"
            write_file_atomic(base / "files" / blob, data, 0o600)
            files[path] = {"blob": blob, "mode": mode}
        self._write_json(base / "manifest.json", {"installed": installed.to_json(), "files": files})

    def read_snapshot(self, entry_id: int) -> tuple[Installed, dict[str, tuple[bytes, int] | None]]:
        """(what mtlsc had installed, {path: (content, mode) or None when absent}) of before/."""
        base = self.entry_dir(entry_id) / "before"
        manifest = self._read_json(base / "manifest.json", None)
        if not isinstance(manifest, dict):
            raise StateError(f"history entry {entry_id} has no readable snapshot ({base / 'manifest.json'})")
        out: dict[str, tuple[bytes, int] | None] = {}
        for path, info in manifest.get("files", {}).items():
            if info is None:
                out[path] = None
            else:
                try:
                    out[path] = ((base / "files" / info["blob"]).read_bytes(), int(info.get("mode", 0o644)))
                except (OSError, KeyError, TypeError, ValueError) as exc:
                    raise StateError(f"history entry {entry_id}: snapshot of {path} is unreadable: {exc}") from None
        return Installed.from_json(manifest.get("installed", {})), out

    def store_policies(self, entry_id: int, sources: list[tuple[str, str]]) -> None:
        """Keep the policy texts of the version an entry made live: [(original path, text)]."""
        base = self.entry_dir(entry_id) / "policy"
        base.mkdir(parents=True, exist_ok=True)
        index = []
        for i, (path, text) in enumerate(sources):
            name = f"{i:02d}-{Path(path).name}"
            write_file_atomic(base / name, text.encode("utf-8"))
            index.append({"path": path, "file": name})
        self._write_json(base / "index.json", index)

    def copy_policies(self, from_id: int, to_id: int) -> None:
        src, dst = self.entry_dir(from_id) / "policy", self.entry_dir(to_id) / "policy"
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)

    def policy_files(self, entry_id: int) -> list[str]:
        """The stored policy files of an entry (paths inside the history), or [] when none."""
        base = self.entry_dir(entry_id) / "policy"
        index = self._read_json(base / "index.json", [])
        return [str(base / item["file"]) for item in index if isinstance(item, dict) and "file" in item]

    def store_compiled(self, entry_id: int, outputs: dict[str, str]) -> None:
        base = self.entry_dir(entry_id) / "compiled"
        for rel, text in outputs.items():
            write_file_atomic(base / rel, text.encode("utf-8"), 0o755 if rel == "tests.sh" else 0o644)

    # ---- json -------------------------------------------------------------------------------------

    @staticmethod
    def _read_json(path: Path, default):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return default

    @staticmethod
    def _write_json(path: Path, data) -> None:
        write_file_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry, no $USER: the history still works
        return str(os.getuid())


def format_history(entries: list[Entry], live: int | None = None) -> str:
    """A table of entries, newest first, for `mtlsc rollback --list` (or a `history` command)."""
    if not entries:
        return "no apply recorded yet\n"
    lines = []
    for e in reversed(entries):
        mark = "*" if e.id == live else " "
        what = ", ".join(Path(p["path"]).name for p in e.policies) or "-"
        extra = f" (undoes #{e.undoes})" if e.undoes else ""
        reason = f": {e.reason}" if e.reason and e.result != APPLIED else ""
        servers = " ".join(f"{sign}{label}" for kind, sign in (("added", "+"), ("changed", "~"), ("removed", "-"))
                           for label in e.servers.get(kind, []))
        servers = f" [{servers}]" if servers else ""
        lines.append(f"{mark}#{e.id:<4} {e.started}  {e.action:<8} {e.result:<14} {what}{extra}{servers}{reason}")
    return "\n".join(lines) + "\n(* = live; [+added ~changed -removed servers])\n"
