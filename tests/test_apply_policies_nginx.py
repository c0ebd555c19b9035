"""Two teams' policies applied in turn into one running nginx (issue 12 §1): an apply keeps every
server it was not given, removes one only when `--remove` names it, names every server added,
changed, removed or kept in the dry run and the real run, smoke-checks every server on a port it
touched, and keeps what the servers share — the http-level file, nginx variable names — right for
all of them. Load with and without client certificates runs on every server during each change.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from apply_support import Load, Target, listen_port
from mtlsc.apply import EXIT_OK, EXIT_REVERTED, EXIT_USAGE, ClientCert, apply, history, installed_servers, rollback
from mtlsc.apply.history import State
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import running_nginx
from mtlsc.lab.pki import issue_client, issue_server, make_chain, make_crl, make_root, write_pem

pytestmark = pytest.mark.nginx

A, B, B2 = "api.team-a.test", "api.team-b.test", "b2.team-b.test"
LONG_CN = "partner-" + "x" * 90  # a DN key longer than a 64-byte map hash bucket holds

HEAD = """\
nginx ">= 1.22"
ca partners_{team} {{
  bundle "{ca}/root.pem" "{ca}/issuing.pem"
  depth 1
  crl "{ca}/root.crl" "{ca}/issuing.crl"
}}
"""
SERVER = """\
server {name} {{
  listen 127.0.0.1:{port}
  certificate "{cert}" key "{key}"
  backend "{backend}"
  install "{install}"
  route = /healthz {{ public }}
  route /{team}/ {{ require partners_{team}  allow {allow}  forward subject verify }}
}}
"""


@dataclass
class Teams:
    root: Path
    conf_dir: Path
    install: Path
    p1: int  # team A's server and team B's first server share this address
    p2: int  # team B's second server
    certs: dict[str, tuple[Path, Path]]
    backend: str
    options: dict = field(default_factory=dict)

    def policy(self, team: str, servers: dict[str, int], allow: str, ca: str = "ca") -> str:
        """`team`'s policy file (rewritten in place): one server per name (names: "a b") -> port."""
        identities = "".join(f'identity {who} {{ subject "CN={LONG_CN if who == "long" else who},O=Acme" }}\n'
                             for who in allow.split())
        text = HEAD.format(ca=self.root / ca, team=team) + identities + "".join(
            SERVER.format(name=name, port=port, cert=self.root / "server.crt", key=self.root / "server.key",
                          backend=self.backend, install=self.install, team=team, allow=allow)
            for name, port in servers.items())
        path = self.root / "teams" / team / f"{team}.mtls"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def a(self) -> str:
        return self.policy("a", {A: self.p1}, "alice")

    def b(self, *, with_b2: bool = True, allow: str = "bob long") -> str:
        return self.policy("b", {B: self.p1, **({B2: self.p2} if with_b2 else {})}, allow)

    def apply(self, *policies: str, **kw):
        return apply(list(policies), self.conf_dir, **{**self.options, **kw})

    def rollback(self, **kw):
        return rollback(self.conf_dir, **{**self.options, **kw})

    def get(self, name: str, port: int, path: str, who: str | None = None):
        cert = self.certs[who] if who else None
        return request("127.0.0.1", port, path, server_name=name, cert=cert[0] if cert else None,
                       key=cert[1] if cert else None, timeout=5)

    def targets(self, *servers: str) -> list[Target]:
        """Load on each server: its public route without a certificate, its gated route with the
        certificate it allows."""
        where = {A: (self.p1, "/a/load", "alice"), B: (self.p1, "/b/load", "bob"), B2: (self.p2, "/b/load", "bob")}
        out = []
        for name in servers:
            port, path, who = where[name]
            out += [Target(name, port, "/healthz"), Target(name, port, path, self.certs[who])]
        return out

    def shared(self) -> str:
        return (self.conf_dir / "00-mtlsc.conf").read_text()


@pytest.fixture
def teams(tmp_path, nginx_bin, now) -> Iterator[Teams]:
    root = tmp_path
    prefix, conf_dir, install = root / "nginx", root / "nginx" / "conf.d", root / "nginx" / "mtls"
    for d in (conf_dir, install):
        d.mkdir(parents=True)
    for ca in ("ca", "ca2"):  # ca2: another CA, for a server that checks clients differently
        chain = make_chain(f"partners {ca}", 1, now=now)
        write_pem(root / ca / "root.pem", chain.root.cert)
        write_pem(root / ca / "issuing.pem", chain.issuing.cert)
        write_pem(root / ca / "root.crl", make_crl(chain.root, [], now=now))
        write_pem(root / ca / "issuing.crl", make_crl(chain.issuing, [], now=now))
        if ca == "ca":
            first = chain
    chain = first
    certs = {}
    for who in ("alice", "bob"):
        issued = issue_client(chain.issuing, x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
                                                        x509.NameAttribute(NameOID.COMMON_NAME, who)]), now=now)
        certs[who] = (write_pem(root / f"{who}.crt", issued.cert), write_pem(root / f"{who}.key", issued.key))
    server_ca = make_root("apply test server CA", now=now)
    srv = issue_server(server_ca, [A, B, B2, "127.0.0.1"], now=now)
    write_pem(root / "server.crt", srv.cert)
    write_pem(root / "server.key", srv.key)
    http = f'include "{conf_dir}/*.conf";'
    with running_echo_backend() as echo, running_nginx(http, prefix, ports=[], nginx_bin=nginx_bin):
        p1 = listen_port()
        p2 = next(p for p in (listen_port() for _ in range(10)) if p != p1)
        t = Teams(root, conf_dir, install, p1, p2, certs, echo.url)
        t.options = {"nginx_bin": nginx_bin, "nginx_conf": prefix / "nginx.conf", "nginx_prefix": prefix,
                     "nginx_args": ("-e", str(prefix / "error.log")), "reload_timeout": 5, "drain_timeout": 5}
        yield t


def _refused_port(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


# ----- the acceptance scenario ----------------------------------------------------------------------

def test_two_policies_applied_in_turn_both_keep_serving(teams):
    t = teams
    a = t.a()
    result = t.apply(a, client_certs=[ClientCert(str(t.certs["alice"][0]), str(t.certs["alice"][1]))])
    assert result.exit_code == EXIT_OK, result.report()
    assert result.servers("added") == [f"{A}:{t.p1}"]

    # Team B applies its policy alone, under load on team A's server.
    b = t.b()
    dry = t.apply(b, dry_run=True)
    assert dry.exit_code == EXIT_OK, dry.report()
    assert sorted(dry.servers("added")) == [f"{B}:{t.p1}", f"{B2}:{t.p2}"] and dry.servers("kept") == [f"{A}:{t.p1}"]
    assert any(line.startswith("kept") and f"{A}:{t.p1}" in line for line in dry.log)
    bob = ClientCert(str(t.certs["bob"][0]), str(t.certs["bob"][1]), server=f"{B}:{t.p1}")
    with Load(t.targets(A)) as load:
        result = t.apply(b, client_certs=[bob])
    load.record("second policy applied beside the first", result.reloads)
    assert result.exit_code == EXIT_OK, result.report()
    assert result.servers("removed") == [] and result.servers("kept") == [f"{A}:{t.p1}"]
    assert "removed none" in result.message and f"added {B}:{t.p1}, {B2}:{t.p2}" in result.message
    # Team A's server shares B's address: smoke-checked; its files untouched.
    assert {c.server for c in result.smoke} == {f"{A}:{t.p1}", f"{B}:{t.p1}", f"{B2}:{t.p2}"}
    assert not any(p.endswith(f"{A}_{t.p1}.conf") for p in result.written)
    assert t.get(A, t.p1, "/a/x", "alice").status == 200 and t.get(B, t.p1, "/b/x", "bob").status == 200
    assert t.get(B2, t.p2, "/b/x", "bob").status == 200
    assert installed_servers(t.conf_dir) == {f"{A}:{t.p1}": a, f"{B}:{t.p1}": b, f"{B2}:{t.p2}": b}

    # Team A applies again: B's servers stay, under load on all three.
    with Load(t.targets(A, B, B2)) as load:
        result = t.apply(a)
    load.record("first policy applied again", result.reloads)
    assert result.exit_code == EXIT_OK and result.servers("kept") == [f"{B}:{t.p1}", f"{B2}:{t.p2}"], result.report()
    assert result.servers("unchanged") == [f"{A}:{t.p1}"]
    # Nothing of A changed: A is smoke-checked (named), B's servers are not (no port was touched).
    assert {c.server for c in result.smoke} == {f"{A}:{t.p1}"}


def test_a_server_goes_away_only_when_named(teams):
    t = teams
    assert t.apply(t.a()).exit_code == EXIT_OK
    assert t.apply(t.b()).exit_code == EXIT_OK
    b_without_b2 = t.b(with_b2=False)
    # B's policy no longer defines b2: it stays, and apply says how to remove it.
    result = t.apply(b_without_b2)
    assert result.exit_code == EXIT_OK, result.report()
    assert result.servers("kept") == [f"{A}:{t.p1}", f"{B2}:{t.p2}"]
    assert any(f"kept      {B2}:{t.p2}" in line and f"--remove {B2}:{t.p2} removes it" in line for line in result.log)
    assert t.get(B2, t.p2, "/b/x", "bob").status == 200
    # The dry run names the server the flag removes, and changes nothing.
    dry = t.apply(b_without_b2, remove=[f"{B2}:{t.p2}"], dry_run=True)
    assert dry.exit_code == EXIT_OK and dry.servers("removed") == [f"{B2}:{t.p2}"], dry.report()
    assert any(line.startswith(f"removed   {B2}:{t.p2}") for line in dry.log) and f"removed {B2}:{t.p2}" in dry.message
    assert t.get(B2, t.p2, "/b/x", "bob").status == 200
    with Load(t.targets(A, B)) as load:
        result = t.apply(b_without_b2, remove=[f"{B2}:{t.p2}"])
    load.record("a server removed by name", result.reloads)
    assert result.exit_code == EXIT_OK and result.servers("removed") == [f"{B2}:{t.p2}"], result.report()
    assert f"removed {B2}:{t.p2}" in result.message
    assert _refused_port(t.p2)  # its address had no other server: the default server went too
    assert f"listen 127.0.0.1:{t.p2} ssl default_server" not in t.shared()
    assert t.get(A, t.p1, "/a/x", "alice").status == 200 and t.get(B, t.p1, "/b/x", "bob").status == 200
    # A removal without any policy: only the flag.
    result = t.apply(remove=[f"{B}:{t.p1}"])
    assert result.exit_code == EXIT_OK and result.servers("removed") == [f"{B}:{t.p1}"], result.report()
    assert t.get(A, t.p1, "/a/x", "alice").status == 200
    assert "UNRECOGNIZED_NAME" in t.get(B, t.p1, "/b/x", "bob").error  # the default server refuses its name
    assert t.apply(remove=["nosuch.test:1"]).exit_code == EXIT_USAGE


def test_rollback_undoes_one_policy_and_keeps_the_other(teams):
    t = teams
    assert t.apply(t.a()).exit_code == EXIT_OK
    a_files = {p: p.read_bytes() for p in sorted(t.conf_dir.glob(f"{A}_*"))}
    assert t.apply(t.b()).exit_code == EXIT_OK
    with Load(t.targets(A, B, B2)[:2]) as load:
        result = t.rollback()
    load.record("rollback of the second policy", result.reloads)
    assert result.exit_code == EXIT_OK, result.report()
    assert sorted(result.servers("removed")) == [f"{B}:{t.p1}", f"{B2}:{t.p2}"]
    assert result.servers("kept") == [f"{A}:{t.p1}"]
    assert {p: p.read_bytes() for p in sorted(t.conf_dir.glob(f"{A}_*"))} == a_files
    assert t.get(A, t.p1, "/a/x", "alice").status == 200 and _refused_port(t.p2)
    assert installed_servers(t.conf_dir) == {f"{A}:{t.p1}": str(Path(t.a()).resolve())}


# ----- what separately compiled servers share ------------------------------------------------------------------

def test_shared_http_file_covers_every_installed_server(teams, tmp_path):
    """One default server per address and hash sizes for the largest needs of all installed
    servers, whichever policy was applied last: the same file `mtlsc compile` makes of both."""
    from support import run_cli

    t = teams
    a, b = t.a(), t.b()
    assert t.apply(a).exit_code == EXIT_OK
    assert "map_hash_bucket_size 64;" in t.shared()
    assert t.apply(b).exit_code == EXIT_OK
    shared = t.shared()
    assert "map_hash_bucket_size 128;" in shared  # B's long DN
    for port in (t.p1, t.p2):
        assert shared.count(f"listen 127.0.0.1:{port} ssl default_server;") == 1
    assert t.apply(a).exit_code == EXIT_OK  # A alone again: the file still serves B's maps
    assert t.shared() == shared
    code, _, err = run_cli("compile", a, b, "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert (tmp_path / "out" / "nginx" / "00-mtlsc.conf").read_text() == shared
    # Without B's long DN no installed server needs the larger bucket: it shrinks back.
    assert t.apply(t.b(allow="bob")).exit_code == EXIT_OK
    assert "map_hash_bucket_size 64;" in t.shared()


def test_variable_prefixes_never_collide_across_policies(teams):
    """`api.team-a.test` and `api.team-b.test` on one port would both get `$mtls_api_<port>_*`, and
    nginx lets a second `map` of a variable replace the first: team A's allow list would become
    team B's. The second apply takes another prefix; on nginx each server keeps its own list."""
    t = teams
    assert t.apply(t.a()).exit_code == EXIT_OK
    assert t.apply(t.b(with_b2=False)).exit_code == EXIT_OK
    a_conf = (t.conf_dir / f"{A}_{t.p1}.conf").read_text()
    b_conf = (t.conf_dir / f"{B}_{t.p1}.conf").read_text()
    assert f"$mtls_api_{t.p1}_deny1" in a_conf and f"$mtls_api_{t.p1}2_deny1" in b_conf
    assert t.get(A, t.p1, "/a/x", "alice").status == 200 and t.get(A, t.p1, "/a/x", "bob").status == 403
    assert t.get(B, t.p1, "/b/x", "bob").status == 200 and t.get(B, t.p1, "/b/x", "alice").status == 403
    # Re-applying A keeps its prefix (B holds the other one).
    assert t.apply(t.a()).servers("unchanged") == [f"{A}:{t.p1}"]


# ----- refusals: nothing changes ----------------------------------------------------------------------------

def test_refusals_for_servers_of_another_policy(teams):
    t = teams
    assert t.apply(t.a()).exit_code == EXIT_OK
    before = {p: p.read_bytes() for p in sorted(t.conf_dir.iterdir()) if p.is_file()}
    # Team B defines team A's server: it belongs to a.mtls, which still exists.
    grab = t.policy("b", {A: t.p1}, "bob")
    result = t.apply(grab)
    assert result.exit_code == EXIT_USAGE and f"--take-over {A}:{t.p1}" in result.message, result.report()
    # Another server answering team A's name on its address: nginx would only warn.
    result = t.apply(t.policy("b", {f"{B} {A}": t.p1}, "bob"))
    assert result.exit_code == EXIT_USAGE and f"both serve {A} on 127.0.0.1:{t.p1}" in result.message, result.report()
    # Another CA on the same address, with tickets on, where the target includes CVE-2025-23419.
    result = t.apply(t.policy("b", {B: t.p1}, "bob", ca="ca2"))
    assert result.exit_code == EXIT_USAGE and "CVE-2025-23419" in result.message, result.report()
    assert {p: p.read_bytes() for p in sorted(t.conf_dir.iterdir()) if p.is_file()} == before
    assert len(history(t.conf_dir)) == 1
    # Taking a server over is said by name.
    grab = t.policy("b", {A: t.p1}, "bob")
    result = t.apply(grab, take_over=[f"{A}:{t.p1}"])
    assert result.exit_code == EXIT_OK and result.servers("changed") == [f"{A}:{t.p1}"], result.report()
    assert t.get(A, t.p1, "/b/x", "bob").status == 200


def test_state_of_an_older_mtlsc_is_read_server_by_server(teams):
    """installed.json that lists only files (mtlsc before per-server records): its servers are
    read back from the history entry's policies and kept by the next apply of another policy."""
    t = teams
    assert t.apply(t.a()).exit_code == EXIT_OK
    state = State(t.conf_dir / ".mtlsc")
    old = state.installed()
    (state.root / "installed.json").write_text(json.dumps({"entry": old.entry, "files": old.files}))
    assert state.installed().servers is None
    result = t.apply(t.b(with_b2=False))
    assert result.exit_code == EXIT_OK and result.servers("kept") == [f"{A}:{t.p1}"], result.report()
    assert f"$mtls_api_{t.p1}2_" in (t.conf_dir / f"{B}_{t.p1}.conf").read_text()  # A's prefix was read back
    assert t.get(A, t.p1, "/a/x", "alice").status == 200 and t.get(B, t.p1, "/b/x", "bob").status == 200


def test_rollback_into_a_version_an_older_mtlsc_recorded(teams):
    """The snapshot of an apply by an older mtlsc lists only files: rollback reads the servers of
    the version it restores from the policies and files the history kept."""
    t = teams
    assert t.apply(t.a()).exit_code == EXIT_OK
    assert t.apply(t.policy("a", {A: t.p1}, "alice bob")).exit_code == EXIT_OK
    assert t.get(A, t.p1, "/a/x", "bob").status == 200
    state = State(t.conf_dir / ".mtlsc")
    live = state.installed()
    (state.root / "installed.json").write_text(json.dumps({"entry": live.entry, "files": live.files}))
    manifest = state.entry_dir(2) / "before" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["installed"] = data["installed"]["files"]
    manifest.write_text(json.dumps(data))
    result = t.rollback()
    assert result.exit_code == EXIT_OK and result.servers("changed") == [f"{A}:{t.p1}"], result.report()
    assert t.get(A, t.p1, "/a/x", "bob").status == 403 and t.get(A, t.p1, "/a/x", "alice").status == 200
    assert installed_servers(t.conf_dir) == {f"{A}:{t.p1}": str(Path(t.a()).resolve())}


# ----- smoke checks: several certificates, nginx's reason ------------------------------------------------------

def test_several_client_certificates_one_per_server(teams):
    t = teams
    alice = ClientCert(str(t.certs["alice"][0]), str(t.certs["alice"][1]), server=f"{A}:{t.p1}")
    bob = ClientCert(str(t.certs["bob"][0]), str(t.certs["bob"][1]), server=B)
    assert t.apply(t.a(), client_certs=[alice]).exit_code == EXIT_OK
    result = t.apply(t.b(with_b2=False), client_certs=[alice, bob])
    assert result.exit_code == EXIT_OK, result.report()
    passed = {(c.server, c.client) for c in result.smoke if c.client != "no certificate" and c.ok}
    assert passed == {(f"{A}:{t.p1}", "alice.crt"), (f"{B}:{t.p1}", "bob.crt")}
    # B drops bob from its allow list: the certificate scoped to B catches it; B's old version returns.
    with Load(t.targets(A) + [Target(B, t.p1, "/healthz")]) as load:
        result = t.apply(t.b(with_b2=False, allow="long"), client_certs=[alice, bob])
    load.record("smoke failure of a scoped certificate", result.reloads)
    assert result.exit_code == EXIT_REVERTED and result.stage == "smoke", result.report()
    failed = [c for c in result.smoke if not c.ok]
    assert [(c.server, c.client) for c in failed] == [(f"{B}:{t.p1}", "bob.crt")]
    assert "identity" in failed[0].got or "403" in failed[0].got
    assert t.get(B, t.p1, "/b/x", "bob").status == 200
    result = t.apply(t.a(), client_certs=[ClientCert(str(t.certs["bob"][0]), server="nosuch.test")])
    assert result.exit_code == EXIT_USAGE and "no server is named nosuch.test" in result.message


def test_cli_names_servers_prints_progress_once_and_writes_json(teams):
    from support import run_cli

    t = teams
    o = t.options
    nginx = ["--nginx-conf-dir", str(t.conf_dir), "--nginx", o["nginx_bin"], "--nginx-conf", str(o["nginx_conf"]),
             "--nginx-prefix", str(o["nginx_prefix"]), "--nginx-arg=-e", f"--nginx-arg={o['nginx_args'][1]}"]
    code, _, err = run_cli("apply", t.a(), *nginx, "--client-cert", f"{A}:{t.p1}={t.certs['alice'][0]}",
                           "--client-key", str(t.certs["alice"][1]))
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("mtlsc apply: ")]
    assert len(lines) == len(set(lines)), err  # every progress line once
    assert f"mtlsc apply: added     {A}:{t.p1} (a.mtls)" in lines
    code, out, err = run_cli("apply", t.b(), *nginx, "--format", "json",
                             "--client-cert", f"{A}:{t.p1}={t.certs['alice'][0]}",
                             "--client-cert", f"{B}:{t.p1}={t.certs['bob'][0]}",
                             "--client-key", str(t.certs["alice"][1]), "--client-key", str(t.certs["bob"][1]))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["ok"] and summary["servers"]["kept"] == [f"{A}:{t.p1}"]
    assert sorted(summary["servers"]["added"]) == [f"{B}:{t.p1}", f"{B2}:{t.p2}"]
    assert summary["servers"]["removed"] == [] and summary["servers"]["changed"] == []
    assert {(s["server"], s["client"]) for s in summary["smoke"] if s["client"] != "no certificate"} == {
        (f"{A}:{t.p1}", "alice.crt"), (f"{B}:{t.p1}", "bob.crt")}
    assert all(s["ok"] for s in summary["smoke"])
    code, out, _ = run_cli("apply", t.b(with_b2=False), *nginx, "--remove", f"{B2}:{t.p2}", "--dry-run",
                           "--format", "json")
    assert code == 0 and json.loads(out)["servers"]["removed"] == [f"{B2}:{t.p2}"]
    code, _, err = run_cli("apply", *nginx)
    assert code == EXIT_USAGE and "nothing to apply" in err
    code, _, err = run_cli("apply", t.a(), *nginx, "--client-cert", "x.crt", "--client-cert", "y.crt",
                           "--client-key", "x.key")
    assert code == EXIT_USAGE and "one --client-key per --client-cert" in err
    code, out, _ = run_cli("rollback", *nginx, "--list", "--format", "json")
    assert code == 0 and set(json.loads(out)["servers"]) == {f"{A}:{t.p1}", f"{B}:{t.p1}", f"{B2}:{t.p2}"}
