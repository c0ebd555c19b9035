"""The command line. Exit codes: 0 ok, 1 policy findings at error level, 2 usage or I/O error."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mtlsc import __version__

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {text}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _days(text: str) -> timedelta:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text}") from None
    if days < 0:
        raise argparse.ArgumentTypeError("the window cannot be negative")
    return timedelta(days=days)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtlsc", description="Compile mutual-TLS policies (.mtls) to nginx config, "
                                "a variable table and a test script, after checking them for lockout and over-trust.")
    p.add_argument("--version", action="version", version=f"mtlsc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(cmd):
        cmd.add_argument("policies", nargs="+", metavar="POLICY", help=".mtls files compiled together")
        cmd.add_argument("--format", choices=("text", "json", "sarif"), default="text",
                         help="diagnostics format: text for people, json or sarif (GitHub code scanning) on stdout")
        cmd.add_argument("--strict", action="store_true", help="treat warnings as errors")
        cmd.add_argument("--now", type=_when, help="check certificate and CRL dates as of this time (ISO 8601)")
        cmd.add_argument("--expiry-window", type=_days, default=timedelta(days=14), metavar="DAYS",
                         help="report CA certificates and CRLs that expire within DAYS (default 14)")
        cmd.add_argument("--nginx-conf", metavar="FILE",
                         help="the nginx config the output will join (e.g. /etc/nginx/nginx.conf, with what it "
                         "includes): leave out what it already sets, and check its default servers "
                         "(`mtlsc apply` does this by itself, with nginx -T)")

    c = sub.add_parser("check", help="report diagnostics; write nothing",
                       description="Parse, lower and analyse the policies; print diagnostics.")
    common(c)
    c = sub.add_parser("compile", help="check, then write nginx config, variables.md and tests.sh",
                       description="Check the policies and, when there is no error, write DIR/nginx/*.conf, "
                       "DIR/mtls/*.pem (trust files), DIR/variables.md and DIR/tests.sh, all at once.")
    common(c)
    c.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="output directory (replaced whole)")
    d = sub.add_parser("demo-pki", help="make a throwaway PKI shaped like a policy (demo and test use only)",
                       description="Write the CA bundles and CRLs a policy names, with fresh keys that are thrown "
                       "away, plus client certificates for its tests. Never for production.")
    d.add_argument("policies", nargs="+", metavar="POLICY")
    d.add_argument("--clients", type=Path, metavar="DIR", help="where client certificates go (default: none written)")
    d.add_argument("--force", action="store_true", help="overwrite CA and CRL files that exist")
    f = sub.add_parser("fmt", help="rewrite policy files in the canonical layout",
                       description="Format .mtls files (directories: every *.mtls under them) in place, "
                       "atomically; comments and order are kept. Exit 1 with --check/--diff when a file would change.")
    f.add_argument("paths", nargs="+", metavar="PATH")
    f.add_argument("--check", action="store_true", help="write nothing; list files that would change (exit 1)")
    f.add_argument("--diff", action="store_true", help="write nothing; print a unified diff (exit 1 if any)")
    e = sub.add_parser("explain", help="print the access matrix: who reaches which route",
                       description="Per server, each route x each identity (and no certificate, another CA, any "
                       "certificate of each CA) -> allow / deny (status) / public, with CA, revocation, depth and "
                       "the headers the backend gets. Markdown is ready to paste as a PR comment.")
    e.add_argument("policies", nargs="+", metavar="POLICY")
    e.add_argument("--format", choices=("text", "md", "json"), default="text")
    df = sub.add_parser("diff", help="the semantic change in access between two versions of a policy",
                        description="Compare OLD and NEW (or POLICY with its version at git REF): who gains or "
                        "loses access to what, each change classified widening / narrowing / neutral.")
    df.add_argument("paths", nargs="+", metavar="PATH", help="OLD NEW, or one POLICY with --git REF")
    df.add_argument("--git", metavar="REF", help="compare POLICY with its version (and CA files) at this git revision")
    df.add_argument("--format", choices=("text", "md", "json"), default="text")
    df.add_argument("--fail-on", choices=("widening", "narrowing", "any"),
                    help="exit 1 when a change of this class exists (e.g. to require approval of widened access)")
    t = sub.add_parser("test", help="check the policy's *.mtls-test.yaml expectations with mtlsc's model (no nginx)",
                       description="Evaluate every case of the policy's tests file (x.mtls -> x.mtls-test.yaml "
                       "beside it) with mtlsc's model of the compiled config. `mtlsc lab` runs them on real nginx.")
    t.add_argument("policies", nargs="+", metavar="POLICY")
    t.add_argument("--tests", action="append", metavar="FILE", help="a tests file (repeatable; default: beside each policy)")
    def nginx_options(cmd):
        cmd.add_argument("--nginx-conf-dir", required=True, type=Path, metavar="DIR",
                         help="the directory your nginx.conf includes (e.g. /etc/nginx/conf.d)")
        cmd.add_argument("--nginx", metavar="BIN", help="the nginx binary (default: PATH, /usr/sbin/nginx)")
        cmd.add_argument("--nginx-conf", metavar="FILE", help="nginx's main config, for `nginx -t -c FILE`")
        cmd.add_argument("--nginx-prefix", metavar="DIR", help="nginx's prefix (`-p DIR`)")
        cmd.add_argument("--nginx-arg", action="append", default=[], metavar="ARG", help="another nginx argument")
        cmd.add_argument("--pid-file", metavar="FILE", help="nginx's pid file (default: the main config's `pid`)")
        cmd.add_argument("--state-dir", metavar="DIR", help="lock and history (default: DIR/.mtlsc)")
        cmd.add_argument("--no-smoke", action="store_true", help="skip the smoke checks after reloading")
        cmd.add_argument("--smoke-host", metavar="ADDR", help="connect smoke checks here instead of the listen address")
        cmd.add_argument("--client-cert", action="append", default=[], metavar="[SERVER=]CRT",
                         help="a certificate that must pass a `require` route (repeatable); SERVER=CRT: of that "
                         "server (NAME:PORT), whenever it is smoke-checked")
        cmd.add_argument("--client-key", action="append", default=[], metavar="KEY",
                         help="the key of each --client-cert, in order (default: the certificate file holds it)")
        cmd.add_argument("--lock-wait", type=float, default=0.0, metavar="S", help="wait this long for the lock")
        cmd.add_argument("--reload-timeout", type=float, default=10.0, metavar="S")
        cmd.add_argument("--format", choices=("text", "json"), default="text",
                         help="json: a summary on stdout (servers added/changed/removed/kept, smoke checks)")

    ap = sub.add_parser("apply", help="install the compiled policy into a running nginx; roll back on any failure",
                        description="Compile, stage, swap in, nginx -t, reload, smoke-check; on any failure put the "
                        "previous files back and reload again. Installs or updates the servers of POLICY; servers "
                        "other policies installed are kept (--remove takes one out). Exit 0 applied, 1 policy errors, 2 nothing changed "
                        "(usage, lock, nginx), 3 failed and reverted, 4 failed and the revert failed (docs/apply.md).")
    ap.add_argument("policies", nargs="*", metavar="POLICY")
    nginx_options(ap)
    ap.add_argument("--dry-run", action="store_true", help="compile, stage and nginx -t a copy; change nothing")
    ap.add_argument("--remove", action="append", default=[], metavar="NAME:PORT",
                    help="remove this installed server (repeatable); without it no server is ever removed")
    ap.add_argument("--take-over", action="append", default=[], metavar="NAME:PORT",
                    help="replace this server although another policy file installed it (repeatable)")
    ap.add_argument("--strict", action="store_true", help="treat warnings as errors")
    rb = sub.add_parser("rollback", help="restore the version before the last apply (and reload, and smoke-check)",
                        description="Undo the newest live apply; repeated rollbacks walk back one apply each.")
    nginx_options(rb)
    rb.add_argument("--list", action="store_true", help="print the apply history and change nothing")
    lab = sub.add_parser("lab", help="prove the policy on a real nginx on loopback, with a throwaway PKI",
                         description="Mint a PKI shaped like the policy, compile it for 127.0.0.1, start nginx "
                         "(temp prefix) and an echo backend, run the emitted tests.sh and the policy tests, and "
                         "audit the headers the backend received. A CA given with --ca-key, or whose certificates "
                         "the policy tests name, is used as its files are (never written to). Exit 0 when every "
                         "case passes and none is skipped (--allow-skips).")
    lab.add_argument("policies", nargs="+", metavar="POLICY")
    lab.add_argument("--keep", action="store_true",
                     help="keep the lab running (until Ctrl-C) and its files, and print curl commands to try")
    lab.add_argument("--workdir", type=Path, metavar="DIR", help="build the lab here (default: a temp dir)")
    lab.add_argument("--tests", action="append", metavar="FILE",
                     help="also run these *.mtls-test.yaml expectations (default: the ones beside each policy)")
    lab.add_argument("--nginx", metavar="BIN", help="the nginx binary (default: $MTLSC_NGINX, PATH, /usr/sbin/nginx)")
    lab.add_argument("--ca-key", action="append", default=[], type=_ca_key, metavar="CA=KEY[:CERT]",
                     help="use ca CA's own files as they are and mint its test clients with this key (repeatable; "
                     "CERT: the key's certificate when it is not in the bundle)")
    lab.add_argument("--allow-skips", action="store_true",
                     help="cases skipped for want of a certificate (a CA without --ca-key) do not fail the lab")
    au = sub.add_parser("audit", help="find the traps of docs/nginx-facts.md in a hand-written nginx config",
                        description="Read nginx configuration (includes followed; `-` reads `nginx -T` output from "
                        "stdin) and report each trap mtlsc closes by construction at its nginx file:line "
                        "(docs/audit.md). Exit codes as for `check`.")
    au.add_argument("configs", nargs="+", metavar="CONFIG", help="nginx.conf (or a file of server blocks), or - for stdin")
    au.add_argument("--format", choices=("text", "json", "sarif"), default="text")
    au.add_argument("--strict", action="store_true", help="treat warnings as errors")
    au.add_argument("--now", type=_when, help="check CRL dates as of this time (ISO 8601)")
    im = sub.add_parser("import", help="write the .mtls policy equivalent to a hand-written nginx config",
                        description="Translate what is expressible (CAs, servers, routes, verify modes, identity "
                        "gates, forwarded headers) into a policy, with a comment at every construct left out and "
                        "why. --prove runs both on real nginx and prints where they answer differently.")
    im.add_argument("configs", nargs="+", metavar="CONFIG", help="nginx.conf (or a file of server blocks), or - for stdin")
    im.add_argument("-o", "--output", required=True, type=Path, metavar="POLICY", help="the .mtls file to write")
    im.add_argument("--prove", action="store_true",
                    help="run the original config and the compiled policy on real nginx (loopback, throwaway PKI) "
                    "with the same clients and print the answers that differ")
    im.add_argument("--nginx", metavar="BIN", help="the nginx binary for --prove")
    mc = sub.add_parser("mint-cast", help="mint the client certificates tests.sh expects from your own CA's key",
                        description="Issue, with your CA's key, every client certificate the emitted tests.sh uses "
                        "(identities, near misses, a stranger, an expired one, one to revoke, look-alikes), into "
                        "DIR/<ca>/<name>.crt|.key; say what cannot be minted and what to do (revoke a serial). "
                        "Exit 1 when some certificate tests.sh needs could not be minted.")
    mc.add_argument("policies", nargs="+", metavar="POLICY")
    mc.add_argument("--ca-key", action="append", default=[], type=_ca_key, metavar="CA=KEY[:CERT]", required=True,
                    help="the key of a certificate of ca CA (repeatable; CERT: the key's certificate when it is "
                    "not in the bundle)")
    mc.add_argument("--out", required=True, type=Path, metavar="DIR", help="where the certificates go (tests.sh --certs DIR)")
    mc.add_argument("--days", type=int, default=7, metavar="N", help="validity of the certificates (default 7)")
    mc.add_argument("--ocsp-url", action="append", default=[], type=_ca_url, metavar="CA=URL",
                    help="the OCSP URL for the certificates of a ca with `ocsp` and no `responder`")
    mc.add_argument("--force", action="store_true", help="write into DIR even if it is not empty")
    return p


def _ca_key(text: str):
    from mtlsc.lab.userca import UserCaError, parse_ca_key
    try:
        return parse_ca_key(text)
    except UserCaError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ca_url(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith("http://"):
        raise argparse.ArgumentTypeError(f"`{text}` is not CA=http://HOST[:PORT]/PATH")
    return name, url


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # cryptography warns about certificates nginx loads (a public root's non-positive serial):
    # what matters to users is reported as findings, so its deprecation notes stay off stderr.
    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    try:
        if args.command == "demo-pki":
            from mtlsc.lab.demo import demo_pki
            return demo_pki(args.policies, args.clients, args.force)
        if args.command == "fmt":
            from mtlsc.review.fmt import format_paths
            code, out, err = format_paths(args.paths, check=args.check, diff=args.diff)
            sys.stdout.write(out)
            sys.stderr.write(err)
            return code
        if args.command == "test":
            from mtlsc.policytest.command import test_command
            return test_command(args.policies, args.tests)
        if args.command == "explain":
            from mtlsc.review.explain import run_explain
            return _print(run_explain(args.policies, fmt=args.format))
        if args.command == "diff":
            from mtlsc.review.diff import run_diff
            if len(args.paths) != (1 if args.git else 2):
                sys.stderr.write("mtlsc diff: give OLD NEW, or one POLICY with --git REF\n")
                return EXIT_USAGE
            new = args.paths[-1]
            old = None if args.git else args.paths[0]
            return _print(run_diff(old, new, git_ref=args.git, fmt=args.format, fail_on=args.fail_on))
        if args.command in ("apply", "rollback"):
            return _apply(args)
        if args.command == "lab":
            from mtlsc.lab.command import lab_command
            return lab_command(args.policies, keep=args.keep, workdir=args.workdir, nginx=args.nginx, tests=args.tests,
                               ca_keys=args.ca_key, allow_skips=args.allow_skips)
        if args.command in ("audit", "import"):
            from mtlsc.audit.command import audit_command, import_command
            if args.command == "audit":
                return audit_command(args.configs, fmt=args.format, strict=args.strict, now=args.now)
            return import_command(args.configs, args.output, prove=args.prove, nginx=args.nginx)
        if args.command == "mint-cast":
            from mtlsc.lab.mintcast import mint_cast_command
            if args.days < 1:
                sys.stderr.write("mtlsc mint-cast: --days must be at least 1\n")
                return EXIT_USAGE
            return mint_cast_command(args.policies, args.ca_key, args.out, days=args.days, force=args.force,
                                     ocsp_urls=dict(args.ocsp_url))
        return _check_or_compile(args)
    except KeyboardInterrupt:
        return EXIT_USAGE


def _apply(args) -> int:
    from mtlsc import apply as deploy

    certs, err = _client_certs(args.client_cert, args.client_key)
    if err:
        sys.stderr.write(f"mtlsc {args.command}: {err}\n")
        return EXIT_USAGE
    if args.command == "rollback" and args.list:
        entries = deploy.history(args.nginx_conf_dir, args.state_dir)
        live = deploy.live_entry(args.nginx_conf_dir, args.state_dir)
        if args.format == "json":
            from dataclasses import asdict
            sys.stdout.write(json.dumps({"live": live, "servers": deploy.installed_servers(args.nginx_conf_dir,
                                                                                          args.state_dir),
                                         "entries": [asdict(e) for e in entries]}, indent=2) + "\n")
        else:
            sys.stdout.write(deploy.format_history(entries, live))
        return EXIT_OK
    # Progress goes to stderr as it happens; the report after it adds only what was not shown.
    common = dict(nginx_bin=args.nginx, nginx_conf=args.nginx_conf, nginx_prefix=args.nginx_prefix,
                  nginx_args=tuple(args.nginx_arg), pid_file=args.pid_file, state_dir=args.state_dir,
                  smoke=not args.no_smoke, smoke_host=args.smoke_host, client_certs=certs,
                  lock_wait=args.lock_wait, reload_timeout=args.reload_timeout,
                  progress=lambda line: sys.stderr.write(f"mtlsc {args.command}: {line}\n"))
    if args.command == "apply":
        result = deploy.apply(args.policies, args.nginx_conf_dir, dry_run=args.dry_run, strict=args.strict,
                              remove=args.remove, take_over=args.take_over, **common)
    else:
        result = deploy.rollback(args.nginx_conf_dir, **common)
    if args.format == "json":
        sys.stdout.write(result.to_json())
        sys.stderr.write(f"mtlsc {result.action}: {result.message}\n")
    else:
        sys.stderr.write(result.report(log=False))
    return result.exit_code


def _client_certs(certs: list[str], keys: list[str]):
    """--client-cert [SERVER=]CRT and --client-key KEY, paired in order."""
    from mtlsc.apply.smoke import ClientCert

    if keys and len(keys) != len(certs):
        return (), f"give one --client-key per --client-cert ({len(certs)} certificates, {len(keys)} keys)"
    out = []
    for i, value in enumerate(certs):
        server, sep, path = value.partition("=")
        if not sep or "/" in server or not server:  # a path holding `=`: write it as ./NAME
            server, path = None, value
        out.append(ClientCert(path, keys[i] if keys else None, server))
    return tuple(out), ""


def _print(result: tuple[int, str, str]) -> int:
    code, out, err = result
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


def _check_or_compile(args) -> int:
    from mtlsc import pipeline
    from mtlsc.render import render

    run = pipeline.compile_policy if args.command == "compile" else pipeline.check
    host = None
    if args.nginx_conf:
        from mtlsc import coexist
        try:
            host = coexist.host_from_path(args.nginx_conf)
        except coexist.HostError as exc:
            host = exc
    result = run(args.policies, now=args.now, strict=args.strict, expiry_window=args.expiry_window, host=host)
    report = render(result.diagnostics, result.sources, args.format)
    if report:
        (sys.stderr if args.format == "text" else sys.stdout).write(report)
    if result.io_error:
        return EXIT_USAGE
    if result.failed:
        return EXIT_FINDINGS
    if args.command == "compile":
        from mtlsc.output import OutputError, write_atomic
        try:
            write_atomic(args.output, result.outputs)
        except OSError as exc:
            sys.stderr.write(f"error[MTLS902]: cannot write {args.output}: {exc.strerror or exc}\n")
            return EXIT_USAGE
        if args.format == "text":
            sys.stderr.write(f"wrote {len(result.outputs)} files to {args.output}\n")
    return EXIT_OK
