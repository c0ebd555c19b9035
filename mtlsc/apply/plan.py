"""What an apply changes, server by server (docs/apply.md "Ownership").

mtlsc owns servers one by one, not the conf dir: every server it installed has a record in
DIR/.mtlsc/installed.json naming the policy file that defines it. An apply installs or updates
the servers of the policies it is given and keeps every other server as it is, byte for byte; a
server goes away only when `--remove NAME:PORT` names it. A server another policy file installed
is replaced only when `--take-over NAME:PORT` names it (or that file is gone: moved or renamed).

What servers of separately compiled policies share is settled here, over every server installed:
the http-level file (a default server per listen address, map hash sizes) is rendered for all of
them, nginx variable prefixes never repeat, names never clash on an address, and servers that
check clients differently never share an address with session tickets on where the nginx
targets include CVE-2025-23419.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mtlsc import ir, pipeline
from mtlsc.apply.history import Installed, ServerRecord, State
from mtlsc.apply.smoke import SmokePlan, matches_server, smoke_plan
from mtlsc.emit import emit_all
from mtlsc.emit import nginx as emit_nginx
from mtlsc.nginx_facts import resumption_cve_possible

ADDED, CHANGED, UNCHANGED, REMOVED, KEPT = "added", "changed", "unchanged", "removed", "kept"
KINDS = (ADDED, CHANGED, UNCHANGED, REMOVED, KEPT)
SHARED_NAME = Path(emit_nginx.HTTP_CONF).name


class PlanRefused(Exception):
    """The change would break or take over a server nobody named: nothing is changed (exit 2)."""


@dataclass
class ServerChange:
    label: str
    slug: str
    change: str  # added | changed | unchanged | removed | kept
    policy: str
    smoke: bool = False  # smoke-checked after the reload
    note: str = ""

    def line(self) -> str:
        extra = "; smoke-checked" if self.smoke and self.change == KEPT else ""
        return f"{self.change:<9} {self.label} ({Path(self.policy).name}{extra}){': ' + self.note if self.note else ''}"


@dataclass
class Plan:
    servers: dict[str, ServerRecord]  # what is installed after the change
    shared: list[str]  # the shared file(s), when any server is installed
    write: dict[str, bytes]  # live path -> new content: only files that change
    remove: list[str]
    changes: list[ServerChange]
    smoke: list[SmokePlan]
    outputs: dict[str, str] = field(default_factory=dict)  # the whole compiled output

    def installed(self, entry: int | None) -> Installed:
        return Installed(entry if self.servers else None, dict(self.servers), list(self.shared))

    def summary(self) -> dict[str, list[str]]:
        return {kind: [c.label for c in self.changes if c.change == kind] for kind in KINDS}


# ----- the servers a compile makes ------------------------------------------------------------------

def _install_dir(server: ir.Server, conf_prefix: Callable[[], Path]) -> Path:
    d = Path(server.install_dir)
    return d if d.is_absolute() else conf_prefix() / d  # nginx reads relative paths from its conf dir


def _new_servers(result: pipeline.Result, conf_dir: Path, conf_prefix: Callable[[], Path],
                 taken: frozenset[str]) -> tuple[dict[str, ServerRecord], dict[str, bytes], dict[str, str]]:
    """Records and live files of every server the compiled policies define (emitted so their
    variable prefixes avoid `taken`), and the whole compiled output."""
    outputs = emit_all(result.policy, result.pki, taken_prefixes=taken)
    http = emit_nginx.server_http(result.policy, result.pki, taken)
    cve = resumption_cve_possible(result.policy.nginx_version)
    records: dict[str, ServerRecord] = {}
    files: dict[str, bytes] = {}
    for server in result.policy.servers:
        slug = server.slug
        mine = {str(conf_dir / f"{slug}.conf"): outputs[f"nginx/{slug}.conf"].encode()}
        for suffix in (".ca.pem", ".crl.pem", ".keys.js", ".dh.pem"):
            if f"mtls/{slug}{suffix}" in outputs:
                mine[str(_install_dir(server, conf_prefix) / f"{slug}{suffix}")] = outputs[f"mtls/{slug}{suffix}"].encode()
        files.update(mine)
        h = http[slug]
        plan = smoke_plan(server)
        records[slug] = ServerRecord(
            slug=slug, label=plan.label, policy=str(Path(server.span.path).resolve()), entry=0, files=sorted(mine),
            names=list(server.names), listens=list(h.listens), prefix=h.prefix, hash_sizes=list(h.hash_sizes),
            tickets=h.tickets, tls=server.tls.profile, client_auth=_client_auth(server.handshake_require, outputs.get(f"mtls/{slug}.ca.pem")),
            cve=cve, smoke=plan.to_json())
    return records, files, outputs


def _client_auth(handshake_require: bool, trust: str | bytes | None) -> str:
    """What a server checks of clients, comparable between separately compiled policies (CA names
    are a policy's own; the trust file's bytes are not)."""
    if trust is None:
        return "none"
    data = trust.encode() if isinstance(trust, str) else trust
    return f"{'require' if handshake_require else 'optional'} {hashlib.sha256(data).hexdigest()[:16]}"


# ----- names the user gives -----------------------------------------------------------------------------

def resolve(names: Iterable[str], servers: dict[str, ServerRecord], flag: str) -> set[str]:
    """The slugs `names` (NAME:PORT, NAME, or the slug) name among installed servers."""
    out: set[str] = set()
    for name in names:
        hits = [slug for slug, rec in servers.items() if matches_server(_plan_of(rec), name)]
        if not hits:
            known = ", ".join(sorted(r.label for r in servers.values())) or "none"
            raise PlanRefused(f"{flag} {name}: no installed server is named so (installed: {known})")
        if len(hits) > 1:
            raise PlanRefused(f"{flag} {name} names {len(hits)} servers: "
                              f"{', '.join(sorted(servers[s].label for s in hits))}; give NAME:PORT")
        out.add(hits[0])
    return out


def _plan_of(rec: ServerRecord) -> SmokePlan:
    return SmokePlan.from_json(rec.smoke) if rec.smoke else SmokePlan(rec.label, rec.slug, "", 0, "")


# ----- what separately compiled servers must not do to each other ------------------------------------------

def conflicts(new: dict[str, ServerRecord], kept: dict[str, ServerRecord]) -> list[str]:
    """Why `new` servers cannot join the `kept` ones in one nginx, or []."""
    problems = []
    for n in sorted(new.values(), key=lambda r: r.slug):
        for k in sorted(kept.values(), key=lambda r: r.slug):
            shared = sorted(set(n.listens) & set(k.listens))
            if not shared:
                continue
            names = sorted({x.lower() for x in n.names} & {x.lower() for x in k.names})
            if names:
                problems.append(
                    f"{n.label} ({Path(n.policy).name}) and {k.label} (installed from {k.policy}) both serve "
                    f"{names[0]} on {shared[0]}: nginx would answer it with one of them and only warn. Rename one, "
                    f"or remove the installed one in the same apply (--remove {k.label})")
            elif n.tls != k.tls:
                problems.append(
                    f"{n.label} ({Path(n.policy).name}, tls {n.tls}) and {k.label} (installed from {k.policy}, tls {k.tls}) "
                    f"share {shared[0]}: nginx gives every server of an address the protocols of its default server "
                    "(docs/checks.md MTLS241). Give them one `tls` profile, or different addresses")
            elif n.client_auth != k.client_auth and (n.tickets or k.tickets) and (n.cve or k.cve):
                problems.append(
                    f"{n.label} ({Path(n.policy).name}) and {k.label} (installed from {k.policy}) share {shared[0]} "
                    "and check client certificates differently, with session tickets on: an nginx the policies "
                    "target (below 1.26.3) lets a session of one be resumed on the other without its check "
                    "(CVE-2025-23419, docs/checks.md MTLS238). Apply both policies together (one `mtlsc apply` "
                    "turns tickets off on both), give them different addresses, or target nginx \">= 1.26.3\" in both")
    return problems


# ----- the shared http-level file ----------------------------------------------------------------------------

def shared_file(servers: dict[str, ServerRecord], host: ir.HostNginx | None = None) -> bytes | None:
    """HTTP_CONF for every installed server: a default server per listen address of any of them,
    map hash sizes for the largest needs of any (None when no server is installed). `host`: the
    running nginx config (mtlsc.coexist), whose own default servers and hash settings stay its own."""
    if not servers:
        return None
    recs = servers.values()
    sizes = (max(r.hash_sizes[0] for r in recs), max(r.hash_sizes[1] for r in recs))
    text = emit_nginx.http_conf([r.policy for r in recs], [t for r in recs for t in r.listens], sizes, host,
                                {t: r.tls for r in recs for t in r.listens})
    return text.encode()


# ----- server by server ----------------------------------------------------------------------------------------

def server_changes(before: dict[str, ServerRecord], after: dict[str, ServerRecord], named: set[str],
                   content: Callable[[str], bytes | None], live: Callable[[str], bytes | None]) -> list[ServerChange]:
    """Each server before or after the change: added, changed (a file of it differs), unchanged
    (named, identical), removed, or kept (not named, untouched). `content(path)` is a file's
    content after the change, `live(path)` now."""
    out = []
    for slug in sorted(set(before) | set(after)):
        old, new = before.get(slug), after.get(slug)
        if new is None:
            out.append(ServerChange(old.label, slug, REMOVED, old.policy))
            continue
        if old is None:
            out.append(ServerChange(new.label, slug, ADDED, new.policy))
            continue
        differs = set(old.files) != set(new.files) or any(content(p) != live(p) for p in new.files)
        kind = CHANGED if differs else UNCHANGED if slug in named else KEPT
        note = f"was installed from {old.policy}" if new.policy != old.policy else ""
        out.append(ServerChange(new.label, slug, kind, new.policy, note=note))
    return out


def smoke_selection(changes: list[ServerChange], before: dict[str, ServerRecord],
                    after: dict[str, ServerRecord]) -> list[SmokePlan]:
    """Every server added, changed or named, and every kept server on a port one of those, or a
    removed server, listens on: a reload touches them all, and the shared file serves their port."""
    touched = {c.slug for c in changes if c.change in (ADDED, CHANGED, REMOVED)}
    ports = {_port(t) for s in touched for rec in (before.get(s), after.get(s)) if rec for t in rec.listens}
    plans = []
    for c in changes:
        rec = after.get(c.slug)
        if rec is None or not rec.smoke:
            continue
        if c.change != KEPT or {_port(t) for t in rec.listens} & ports:
            c.smoke = True
            plans.append(SmokePlan.from_json(rec.smoke))
    return plans


def _port(listen: str) -> str:
    return listen.rsplit(":", 1)[-1]


def plan_apply(result: pipeline.Result | None, installed: Installed, conf_dir: Path,
               conf_prefix: Callable[[], Path], remove: Iterable[str] = (), take_over: Iterable[str] = ()) -> Plan:
    """The change an apply of `result` (None: no policy, only `remove`) makes to `installed`."""
    before = installed.servers or {}
    removed = resolve(remove, before, "--remove")
    adopted = resolve(take_over, before, "--take-over")
    slugs = [s.slug for s in result.policy.servers] if result else []
    if removed & set(slugs):
        raise PlanRefused(f"--remove {before[min(removed & set(slugs))].label}: the policies applied define it; "
                          "a server is removed by not applying it and naming it")
    for slug in slugs:
        rec = before.get(slug)
        if rec is None or slug in adopted:
            continue
        owner = str(Path(next(s for s in result.policy.servers if s.slug == slug).span.path).resolve())
        # A policy file that was moved or renamed leaves no file behind: its servers follow it.
        if rec.policy != owner and Path(rec.policy).exists():
            raise PlanRefused(f"{rec.label} is installed from {rec.policy}, not {owner}: another policy owns it. "
                              f"If {Path(owner).name} owns it now, say so with --take-over {rec.label}")
    kept = {s: r for s, r in before.items() if s not in removed and s not in slugs}
    new, files, outputs = (_new_servers(result, conf_dir, conf_prefix, frozenset(r.prefix for r in kept.values()))
                           if result else ({}, {}, {}))
    problems = conflicts(new, kept)
    if problems:
        raise PlanRefused(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    after = {**kept, **new}
    shared_path = str(conf_dir / SHARED_NAME)
    shared = shared_file(after, result.policy.host if result else None)
    wanted = {**files, **({shared_path: shared} if shared is not None else {})}
    write = {p: data for p, data in wanted.items() if _read(p) != data}
    remove_files = sorted({f for s in removed for f in before[s].files}
                          | {f for s in new if s in before for f in before[s].files if f not in files}
                          | ({shared_path} if shared is None and shared_path in installed.files else set()))
    gone = set(remove_files)
    changes = server_changes(before, after, set(slugs),
                             lambda p: wanted[p] if p in wanted else None if p in gone else _read(p), _read)
    for c in changes:
        if c.change == KEPT and c.slug in before and before[c.slug].policy in {r.policy for r in new.values()}:
            c.note = f"{Path(c.policy).name} no longer defines it; --remove {c.label} removes it"
    return Plan(after, [shared_path] if shared is not None else [], write, remove_files, changes,
                smoke_selection(changes, before, after), outputs)


def _read(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


# ----- state written before mtlsc kept one record per server --------------------------------------------------

def migrate_legacy(state: State, installed: Installed, conf_dir: Path,
                   read: Callable[[str], bytes | None] | None = None) -> Installed:
    """Records for an installed version whose state lists only its files: the servers of the
    policies stored with its history entry, facts read from their live files."""
    if installed.servers is not None:
        return installed
    read = read or _read
    stored = state.policy_files(installed.entry) if installed.entry else []
    front = pipeline.read_and_lower(stored) if stored else None
    if front is None or front.policy is None:
        raise PlanRefused(f"{state.root / 'installed.json'} was written by an older mtlsc and its policies cannot "
                          "be read back from the history: roll back to before mtlsc (mtlsc rollback) and apply again")
    index = {str(Path(state.entry_dir(installed.entry) / "policy" / i["file"])): i["path"]
             for i in State._read_json(state.entry_dir(installed.entry) / "policy" / "index.json", [])}
    legacy = set(installed.legacy_files)
    shared_path = str(conf_dir / SHARED_NAME)
    sizes = [int(x) for x in re.findall(r"map_hash_(?:bucket|max)_size (\d+);", (read(shared_path) or b"").decode())]
    servers = {}
    for server in front.policy.servers:
        slug = server.slug
        mine = sorted(f for f in legacy if Path(f).name.startswith(f"{slug}."))
        conf = (read(str(conf_dir / f"{slug}.conf")) or b"").decode(errors="replace")
        prefix = re.search(r"\$(mtls_\w+?_)bad_target\b", conf)
        trust = next((read(f) for f in mine if f.endswith(".ca.pem")), None)
        plan = smoke_plan(server)
        servers[slug] = ServerRecord(
            slug=slug, label=plan.label, policy=str(Path(index.get(server.span.path, server.span.path)).resolve()),
            entry=installed.entry, files=mine, names=list(server.names),
            listens=[f"{l.address}:{l.port}" if l.address else str(l.port) for l in server.listens], prefix=prefix[1] if prefix else "",
            hash_sizes=sizes if len(sizes) == 2 else [64, 2048], tickets="ssl_session_tickets off;" not in conf,
            client_auth=_client_auth("ssl_verify_client on;" in conf, trust),
            cve=resumption_cve_possible(front.policy.nginx_version), smoke=plan.to_json())
    return Installed(installed.entry, servers, [shared_path] if shared_path in legacy else [])
