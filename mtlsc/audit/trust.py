"""The trust files a hand-written config names: `ssl_client_certificate`, `ssl_trusted_certificate`
and `ssl_crl`, read with mtlsc's own reader (mtlsc.pki) when they are present on this machine, and
checked as `mtlsc check` checks a policy's: public CAs, CRL coverage and dates, verify depth.
A file that is not here is said so (MTLS545); nothing about its contents is guessed."""

from __future__ import annotations

import os
from datetime import datetime

from mtlsc import ir
from mtlsc.audit.model import Config, Server, span_of, span_word
from mtlsc.audit.report import finding
from mtlsc.pki.chains import ca_certs, needed_depth
from mtlsc.checks.trust_files import in_system_trust_dir, public_match
from mtlsc.diagnostics import Diagnostic, Related
from mtlsc.nginx_conf import Directive
from mtlsc.pki import CertInfo, describe, load_pki


def conf_prefix(config: Config) -> str:
    """nginx resolves relative file names against the directory of its main config."""
    main = next(iter(config.loaded.texts), "")
    return os.path.dirname(main)


def resolve(config: Config, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(conf_prefix(config), path))


def _covered(cert: CertInfo, crls) -> bool:
    return any(crl.issuer.lower() == cert.subject.lower()
               and (crl.aki is None or cert.ski is None or crl.aki == cert.ski) for crl in crls)


def _read(config: Config, srv: Server, out: list[Diagnostic], cache: dict):
    """(certificates of the client CA files, CRLs) of a server, reporting what could not be read."""
    bundle_dirs = [d for d in (srv.setting("ssl_client_certificate"), srv.setting("ssl_trusted_certificate"))
                   if d is not None and d.args]
    crl_dir = srv.setting("ssl_crl")
    key = tuple(id(d) for d in bundle_dirs) + ((id(crl_dir),) if crl_dir else ())
    if key in cache:
        return cache[key]
    ca = ir.Ca("audit", tuple(resolve(config, d.args[0]) for d in bundle_dirs), 1,
               (resolve(config, crl_dir.args[0]),) if crl_dir is not None and crl_dir.args else (), None,
               span=span_of(srv.directive), bundle_spans=tuple(span_word(d, 1) for d in bundle_dirs),
               crl_spans=(span_word(crl_dir, 1),) if crl_dir is not None and crl_dir.args else ())
    pki, diags = load_pki(ir.Policy((1, 22, 1), (ca,), (), ()))
    for d in diags:
        if d.code == "MTLS901":
            out.append(finding("MTLS545", d.span, d.message.replace("the policy names", "named here") +
                               "; its contents were not checked (run the audit where nginx runs, or against "
                               "copies of the files)", "nothing to fix in the configuration for this note"))
        else:
            out.append(d)
    facts = pki.ca("audit")
    certs_by_file: dict[str, tuple[Directive, list[CertInfo]]] = {}
    for d in bundle_dirs:
        path = resolve(config, d.args[0])
        certs_by_file[path] = (d, [c for c in facts.certs if c.path == path])
    cache[key] = (certs_by_file, list(facts.crls), crl_dir)
    return cache[key]


def trust_findings(config: Config, now: datetime) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    cache: dict = {}
    reported: set[tuple] = set()

    def once(key: tuple, diag: Diagnostic) -> None:
        if key not in reported:
            reported.add(key)
            out.append(diag)

    for srv in config.servers:
        if not srv.verifies:
            continue
        before = len(out)
        files, crls, crl_dir = _read(config, srv, out, cache)
        if len(out) > before:  # the reader's own findings, once per set of files
            fresh = out[before:]
            del out[before:]
            for d in fresh:
                once(("read", d.code, d.span, d.message), d)
        all_certs = [c for _, certs in files.values() for c in certs]
        for path, (d, certs) in files.items():
            trust_dir = in_system_trust_dir(path)
            publics = [(c, m) for c in certs if (m := public_match(c))]
            if trust_dir or publics:
                detail = (f"`{path}` lies in the system trust store `{trust_dir}`" if trust_dir else
                          f"{describe(publics[0][0])} {publics[0][1]}")
                more = f" ({len(publics)} public CA certificates)" if len(publics) > 1 else ""
                once(("540", path), finding(
                    "MTLS540", span_word(d, 1),
                    f"`{d.name}`: {detail}{more}: every certificate such a CA issues, to anyone, verifies as "
                    "`SUCCESS` (docs/nginx-facts.md §8, over-trust trap 10)",
                    "name a file holding only your own client CA (root and intermediates)",
                    "refuses public and system-store CAs in a `ca` bundle (MTLS230, MTLS231)",
                    label="public CAs verify clients"))
            if d.name == "ssl_trusted_certificate":
                once(("541", id(d)), finding(
                    "MTLS541", span_of(d),
                    f"{srv.label} verifies client certificates, and the CAs of `ssl_trusted_certificate` verify them "
                    "too, without being advertised to clients (docs/nginx-facts.md §8, over-trust trap 4)",
                    "keep `ssl_trusted_certificate` out of servers that verify clients (OCSP stapling works "
                    "without it when the server certificate file holds its chain)",
                    "never emits `ssl_trusted_certificate`", label="widens client trust"))
        if crl_dir is not None and crl_dir.args and all_certs:
            for cert in ca_certs(all_certs):
                if not _covered(cert, crls):
                    once(("542", id(crl_dir), cert.fingerprint), finding(
                        "MTLS542", span_word(crl_dir, 1),
                        f"`ssl_crl` holds no CRL for {describe(cert)}: nginx wants one for every CA certificate of the "
                        "chain once `ssl_crl` is set, so its clients get `unable to get certificate CRL` "
                        "(docs/nginx-facts.md §4, lockout trap 1)",
                        f"add the current CRL of `{cert.subject}` to this file",
                        "asks for one `crl` per CA certificate (MTLS102)", label="a CA certificate without CRL",
                        related=(Related(span_word(files[cert.path][0], 1), "the certificate is in this file"),)
                        if cert.path in files else ()))
        for crl in crls:
            late = crl.next_update is not None and crl.next_update < now
            early = crl.last_update > now
            if (late or early) and crl_dir is not None:
                when = (f"expired {crl.next_update:%Y-%m-%d %H:%M} UTC" if late
                        else f"is valid only from {crl.last_update:%Y-%m-%d %H:%M} UTC")
                once(("543", crl.path, crl.index), finding(
                    "MTLS543", span_word(crl_dir, 1),
                    f"the CRL of `{crl.issuer}` in `{crl.path}` {when}: every client of that CA gets "
                    f"`{'CRL has expired' if late else 'CRL is not yet valid'}` (docs/nginx-facts.md §4, "
                    "lockout trap 2)",
                    "publish a fresh CRL and reload nginx (automate it: nginx reads the file only at load)",
                    "checks CRL dates at every `mtlsc check` (MTLS306-MTLS308)", label="out of date"))
        if all_certs:
            found = needed_depth(all_certs)
            depth_dir = srv.setting("ssl_verify_depth")
            depth = int(depth_dir.args[0]) if depth_dir is not None and depth_dir.args and depth_dir.args[0].isdigit() else 1
            if found and found[0] > depth:
                need, deepest = found
                anchor = depth_dir or srv.setting("ssl_client_certificate")
                once(("544", id(anchor), need), finding(
                    "MTLS544", span_of(anchor),
                    f"verify depth {depth}{'' if depth_dir else ' (nginx default)'}, but clients of {describe(deepest)} "
                    f"sit {need} intermediates below the root: they get `unable to get issuer certificate` "
                    "(docs/nginx-facts.md §3, lockout trap 4)",
                    f"`ssl_verify_depth {need};`", "writes the depth each CA's chain needs (MTLS110)",
                    label="too small for the chain"))
    return out


