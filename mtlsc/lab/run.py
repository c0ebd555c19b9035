"""A policy proven on a real nginx: rewrite it for loopback, mint a PKI shaped like it, compile,
start nginx and an echo backend, run the emitted tests.sh against them and audit what reached
the backend.

`mtlsc lab` and the test suite are built on this module.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mtlsc import dn, ir, pipeline
from mtlsc.diagnostics import Diagnostic
from mtlsc.lab.audit import audit
from mtlsc.lab.certs import new_client_key, spki_sha256
from mtlsc.lab.dns import DnsServer, running_dns_server
from mtlsc.lab.echo import EchoBackend, EchoRequest, running_echo_backend
from mtlsc.lab.nginx import (NJS_HINT, NginxProcess, NginxStartError, find_nginx, free_port, nginx_command,
                              njs_module, running_nginx)
from mtlsc.lab.ocsp import OcspResponder, running_ocsp_responder
from mtlsc.lab.pki import LabPki, UserCa, build_lab_pki
from mtlsc.lab.rewrite import CaFiles, rewrite_for_lab
from mtlsc.lab.userca import CaKey, UserCaError, load_user_ca
from mtlsc.output import write_atomic
from mtlsc.parse import parse
from mtlsc.source import read_source

_SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$", re.M)
# The OCSP URL of lab certificates names this host when the policy has a `resolver`, so the lab
# proves the resolver path too; the lab's DNS server answers it with 127.0.0.1 (RFC 6761 `.test`).
LAB_OCSP_HOST = "ocsp.mtlsc-lab.test"
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class LabError(RuntimeError):
    """The lab could not be built: the policy has errors, or nginx would not start."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None, sources=None):
        super().__init__(message)
        self.diagnostics = diagnostics or []
        self.sources = sources or {}


@dataclass
class Lab:
    """A running lab: nginx serving the compiled policy, an echo backend behind it."""

    policy: ir.Policy  # as rewritten for loopback
    pki: LabPki
    out_dir: Path
    ports: list[int]
    nginx: NginxProcess
    echo: EchoBackend
    ocsp: OcspResponder | None = None  # answers for every CA with `ocsp`
    dns: DnsServer | None = None  # the policy's `resolver`, rewritten to loopback


@dataclass
class LabRun:
    workdir: Path
    policy: ir.Policy
    out_dir: Path
    pki: LabPki
    ports: list[int]
    output: str  # what tests.sh printed
    returncode: int
    passed: int
    failed: int
    skipped: int
    requests: list[EchoRequest] = field(default_factory=list)  # what reached the backend
    audit: list[str] = field(default_factory=list)  # header audit problems

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and not self.audit


def user_cas(policy: ir.Policy, keys: Sequence[CaKey] = (), named: Iterable[str] = (),
             lab_ocsp: bool = False) -> dict[str, UserCa]:
    """The CAs the lab takes as the user's own files: those with a key (`--ca-key`), those whose
    certificates the policy tests name (`named`), and every CA naming a bundle file of one of
    these (the same CA twice). Raises UserCaError for a key that does not fit, or CA files that
    cannot be read."""
    known = {c.name for c in policy.cas}
    if unknown := sorted({k.ca for k in keys} - known):
        raise UserCaError(f"--ca-key {unknown[0]}=...: the policy has no ca `{unknown[0]}` "
                          f"(cas: {', '.join(sorted(known))})")
    wanted = {k.ca for k in keys} | set(named)
    files = {c.name: {os.path.abspath(p) for p in c.bundle} for c in policy.cas}
    for _ in policy.cas:  # bounded: each pass adds a CA or ends
        shared = {c for c in known - wanted if any(files[c] & files[w] for w in wanted)}
        if not shared:
            break
        wanted |= shared
    return {c.name: load_user_ca(c, list(keys), ocsp_in_lab=lab_ocsp and c.ocsp is not None)
            for c in policy.cas if c.name in wanted}


def lab_ca_files(policy: ir.Policy, ca_dir: Path, users: Mapping[str, UserCa]) -> dict[str, CaFiles]:
    """Where the lab's copy of the policy finds each CA's files: for a CA the lab mints, under
    `ca_dir`, one file per distinct file of the policy (CAs naming the same file share it); for
    a user's CA its own files, absolute, except the CRLs the lab signs again. The lab never
    writes to a path the policy names."""
    names: dict[str, str] = {}

    def lab_path(path: str) -> str:
        key = os.path.abspath(path)
        if key not in names:
            names[key] = str(ca_dir / f"{len(names):02d}-{Path(path).name}")
        return names[key]

    out = {}
    for ca in policy.cas:
        user = users.get(ca.name)
        if user is None:
            out[ca.name] = CaFiles(tuple(map(lab_path, ca.bundle)), tuple(map(lab_path, ca.crls)))
        else:
            out[ca.name] = CaFiles(tuple(map(os.path.abspath, ca.bundle)),
                                   tuple(lab_path(p) if i in user.resign else os.path.abspath(p)
                                         for i, p in enumerate(ca.crls)))
    return out


def prepare(policy_paths: list[str], workdir: Path, backend: str, now: datetime,
            progress: Progress = _quiet, ocsp: OcspResponder | None = None,
            dns: DnsServer | None = None, ca_keys: Sequence[CaKey] = (),
            keep_cas: Iterable[str] = ()) -> tuple[pipeline.Result, LabPki, list[int]]:
    """Rewrite, mint and compile into `workdir`; returns the compile result, the PKI and the ports.
    With `ocsp`, OCSP responders of the policy become that responder, and it learns the lab's
    CAs and revocations; with `dns`, the policy's `resolver` becomes that server. CAs with a key
    in `ca_keys` or named in `keep_cas` are the user's own files (`user_cas`; UserCaError when
    they cannot be used)."""
    original = pipeline.read_and_lower(policy_paths)
    if original.policy is None:
        raise LabError("the policy has errors", original.diagnostics, original.sources)
    users = user_cas(original.policy, ca_keys, keep_cas, lab_ocsp=ocsp is not None)
    files = lab_ca_files(original.policy, workdir / "lab" / "ca", users)
    add_responder = any(c.ocsp is not None and c.name in users for c in original.policy.cas)
    for name, user in users.items():
        signer = user.chain.signer
        progress(f"ca {name}: your own CA files, as they are; "
                 + (f"test clients issued by {dn.nginx_dn_of(signer.cert.subject)}" if signer
                    else "no key, so no test client of it can be minted (--ca-key)"))
    holder_keys = {i.name: new_client_key() for i in original.policy.identities if i.kind is ir.IdentityKind.SPKI}
    key_pins = {name: spki_sha256(key.public_key()) for name, key in holder_keys.items()}
    for name in sorted(key_pins):
        progress(f"identity {name}: pins a key the lab holds, in the lab's copy of the policy (only the holder of "
                 "your key can make a certificate that matches yours)")
    ports: dict[tuple[str, str], int] = {}

    def port_for(name: str, listen: str) -> int:
        return ports.setdefault((name, listen), free_port())

    lab_paths = []
    for i, path in enumerate(policy_paths):
        source = read_source(path)
        tree, diags = parse(source)
        if tree is None:
            raise LabError(f"{path} does not parse", diags, {path: source})
        target = workdir / "policy" / f"{i:02d}-{Path(path).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rewrite_for_lab(source, tree, port_for=port_for, cert_dir=str(workdir / "lab" / "server"),
                                          backend=backend, install_dir=str(workdir / "out" / "mtls"),
                                          ocsp_responder=ocsp.url if ocsp else None,
                                          resolver=dns.address if dns else None, ca_files=files,
                                          add_responder=add_responder, key_pins=key_pins))
        lab_paths.append(str(target))
    front = pipeline.read_and_lower(lab_paths)
    if front.policy is None:
        raise LabError("the policy has errors", front.diagnostics, front.sources)
    started = time.monotonic()
    ocsp_url = None
    if ocsp is not None:
        ocsp_url = f"http://{LAB_OCSP_HOST}:{ocsp.port}/" if front.policy.resolver and dns else ocsp.url
    pki = build_lab_pki(front.policy, workdir / "lab", now=now, ocsp_url=ocsp_url, user_cas=users,
                        holder_keys=holder_keys)
    clients = sum(1 for _ in pki.clients_dir.rglob("*.crt"))
    progress(f"pki: {len(pki.chains)} CA(s), {clients} client certificates ({time.monotonic() - started:.1f} s)"
             + (f"; {len(pki.not_minted)} not minted" if pki.not_minted else ""))
    if ocsp is not None and (pki.ocsp_urls or any(s.tls.stapling for s in front.policy.servers)):
        _teach_responder(ocsp, pki, now)
        progress(f"ocsp: responder {ocsp.url} for ca {', '.join(sorted(pki.ocsp_urls))}; certificates name "
                 f"{ocsp_url}; {sum(s == 'revoked' for _, _, s in pki.ocsp_status)} revoked, "
                 f"{sum(s == 'unavailable' for _, _, s in pki.ocsp_status)} with a dead responder")
    result = pipeline.compile_policy(lab_paths, now=now)
    if result.failed:
        raise LabError("the lab policy does not compile", result.diagnostics, result.sources)
    write_atomic(workdir / "out", result.outputs)
    progress(f"compiled: {len(result.outputs)} files in {workdir / 'out'}")
    return result, pki, sorted(set(ports.values()))


def _teach_responder(ocsp: OcspResponder, pki: LabPki, now: datetime) -> None:
    """The responder answers for every certificate of each OCSP CA's chain (intermediates too,
    for `ocsp on`), `good` unless the cast says revoked or unanswered."""
    for name in pki.ocsp_urls:
        chain = pki.chains[name]
        for member in (m for m in (*chain.members, *chain.below) if m.key is not None):
            ocsp.answer_for(member, now=now)
    for issuer, serial, status in pki.ocsp_status:
        ocsp.set_status(issuer, serial, status)
    for issuing in pki.server_issuers.values():  # `stapling on`: nginx asks about its own certificate
        ocsp.answer_for(issuing, now=now)


@contextmanager
def running_lab(policy_paths: list[str], workdir: Path, *, nginx_bin: str | None = None,
                now: datetime | None = None, progress: Progress = _quiet,
                tamper: Callable[[Path], None] | None = None,
                ocsp_next_update: timedelta | None = timedelta(hours=1),
                ca_keys: Sequence[CaKey] = (), keep_cas: Iterable[str] = ()) -> Iterator[Lab]:
    """Build the lab in `workdir` and keep nginx and the backend running for the `with` body.

    `tamper(out_dir)` runs after compiling and before nginx starts: tests use it to show that a
    hand-edited config is caught. `ocsp_next_update`: how long the lab responder's answers say
    they are current (nginx keeps them that long). `ca_keys`, `keep_cas`: see `prepare`."""
    now = now or datetime.now(timezone.utc)
    workdir = Path(workdir).absolute()  # nginx runs with its own prefix: every path it reads is absolute
    binary = find_nginx(nginx_bin)
    with (running_echo_backend() as echo, running_ocsp_responder(ocsp_next_update) as ocsp,
          running_dns_server({LAB_OCSP_HOST: "127.0.0.1"}) as dns):
        result, pki, ports = prepare(policy_paths, workdir, echo.url, now, progress, ocsp, dns, ca_keys, keep_cas)
        out = workdir / "out"
        if tamper is not None:
            tamper(out)
        if njs_module() is None and any(name.endswith(".js") for name in result.outputs):
            raise NginxStartError(f"nginx cannot run the compiled config on this machine: {NJS_HINT}")
        with running_nginx(f"include {out}/nginx/*.conf;", workdir / "nginx", ports=ports, nginx_bin=binary) as nginx:
            progress(f"nginx: pid {nginx.pid} on 127.0.0.1:{','.join(map(str, ports))}; backend {echo.url}")
            yield Lab(result.policy, pki, out, ports, nginx, echo, ocsp, dns)


def run_tests_script(lab: Lab, timeout: float = 300, allow_skips: bool = False) -> subprocess.CompletedProcess:
    """The emitted tests.sh against the lab, with the backend's echo checks on."""
    nginx_test = shlex.join([*nginx_command(lab.nginx.nginx_bin, lab.nginx.prefix), "-t"])
    return subprocess.run(
        ["bash", str(lab.out_dir / "tests.sh"), "--certs", str(lab.pki.clients_dir),
         "--server-ca", str(lab.pki.server_ca), "--echo", "--nginx-test", nginx_test,
         *(["--allow-skips"] if allow_skips else [])],
        capture_output=True, text=True, timeout=timeout,
    )


def test_lab(lab: Lab, workdir: Path, timeout: float = 300, allow_skips: bool = False) -> LabRun:
    """Run tests.sh and the header audit against a running lab. A case skipped for want of a
    certificate fails the run unless `allow_skips`."""
    proc = run_tests_script(lab, timeout, allow_skips)
    requests = lab.echo.snapshot()
    found = _SUMMARY.search(proc.stdout)
    passed, failed, skipped = (int(found[1]), int(found[2]), int(found[3] or 0)) if found else (0, 0, 0)
    return LabRun(workdir, lab.policy, lab.out_dir, lab.pki, lab.ports, proc.stdout + proc.stderr,
                  proc.returncode, passed, failed, skipped, requests, audit(lab.policy, requests))


test_lab.__test__ = False  # a library function, not a pytest test


def run_lab(policy_paths: list[str], workdir: Path, *, nginx_bin: str | None = None,
            now: datetime | None = None, timeout: float = 300, progress: Progress = _quiet,
            tamper: Callable[[Path], None] | None = None, ca_keys: Sequence[CaKey] = (),
            keep_cas: Iterable[str] = (), allow_skips: bool = False) -> LabRun:
    """Build the lab in `workdir`, run tests.sh and the header audit, stop everything."""
    with running_lab(policy_paths, workdir, nginx_bin=nginx_bin, now=now, progress=progress, tamper=tamper,
                     ca_keys=ca_keys, keep_cas=keep_cas) as lab:
        progress("running tests.sh")
        return test_lab(lab, workdir, timeout, allow_skips)
