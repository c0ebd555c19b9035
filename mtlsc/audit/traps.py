"""The traps of docs/nginx-facts.md, found in a hand-written nginx configuration: who gets past
which location, with which identity headers, on which listener. Trust files are in `trust.py`, DN
regexes in `dn_tests.py`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from mtlsc.audit import dn_tests
from mtlsc.audit.flow import Client, outcomes, reaches, strip_parens
from mtlsc.audit.model import (ARRAY_HEADERS, Config, Location, Server, address_groups, default_of, own, span_of, span_word)
from mtlsc.audit.report import finding
from mtlsc.audit.sample import example
from mtlsc.diagnostics import Diagnostic, Related
from mtlsc.nginx_conf import Directive

NO_CERT = Client("a client without a certificate", "NONE")
PLAIN = Client("a plain-HTTP client", "")
ANY_CERT = Client("a client whose verified certificate no gate names", "SUCCESS", "CN=mtlsc-nobody,O=Nowhere",
                  "CN=Some CA")
PROBE = re.compile(r"^/(?:[^/]+/)?(?:healthz?|livez?|readyz?|ready|ping|status|heartbeat|alive|robots\.txt)/?$"
                   r"|^/\.well-known(?:/|$)")
_PASS_FOR = {"proxy_set_header": ("proxy_pass",), "fastcgi_param": ("fastcgi_pass",), "uwsgi_param": ("uwsgi_pass",),
             "scgi_param": ("scgi_pass",), "grpc_set_header": ("grpc_pass",)}


def unverified(s_dn: str = "CN=admin,O=Example") -> Client:
    return Client("a certificate from an unknown CA", "FAILED:unable to verify the first certificate", s_dn,
                  "CN=Evil CA")


def proxied(loc: Location) -> list[Directive]:
    return [] if loc.named else loc.passes()


def is_probe(loc: Location) -> bool:
    return not loc.is_regex and not loc.named and bool(PROBE.match(loc.path))


def refuses(config: Config, srv: Server, loc: Location, client: Client) -> bool:
    """Every way through the rewrite phase refuses this client."""
    return all(o.status is not None for o in outcomes(config, srv, loc, client))


# ---- §5: the default server answers clients without SNI ----------------------------------------

def _trust(srv: Server) -> dict[str, str]:
    return {"verification": srv.verify if srv.verifies else "off",
            "CA file": srv.value("ssl_client_certificate"),
            "trusted CA file": srv.value("ssl_trusted_certificate"),
            "CRL": srv.value("ssl_crl"),
            "verify depth": srv.value("ssl_verify_depth", "1")}


def default_server_hole(config: Config) -> list[Diagnostic]:
    out = []
    for key, group in sorted(address_groups(config).items()):
        if len(group) < 2:
            continue
        default, listen = default_of(group)
        if default.value("ssl_reject_handshake", "off").lower() == "on":
            continue
        theirs = _trust(default)
        seen = set()
        for srv, _ in group:
            if srv is default or not srv.verifies or id(srv) in seen:
                continue
            seen.add(id(srv))
            ours = _trust(srv)
            differ = [k for k in ours if ours[k] != theirs[k] and not (k == "verification" and theirs[k] != "off")]
            if not differ:
                continue
            what = ", ".join(f"{k} `{theirs[k] or 'none'}` instead of `{ours[k] or 'none'}`" for k in differ)
            if theirs["verification"] == "off":
                effect = (f"such a client is asked for no certificate, then served by {srv.label} by its Host: its "
                          "certificate is never checked (docs/nginx-facts.md §5, lockout trap 8)")
            else:
                effect = (f"such a client is verified with the default server's settings, then served by {srv.label} by "
                          "its Host: certificates the default server accepts pass there with `SUCCESS` "
                          "(docs/nginx-facts.md §5, over-trust trap 3)")
            verify_at = srv.setting("ssl_verify_client")
            out.append(finding(
                "MTLS510", span_of(listen.directive),
                f"{default.label} is the default server of {key[0]}:{key[1]}, with {what}: a client that sends no SNI "
                f"or an unknown name gets its handshake; {effect}",
                "add a default server for this address that refuses such handshakes "
                "(`listen ... ssl default_server; ssl_reject_handshake on;`, nginx >= 1.19.4), or give every "
                "server of the address the same client verification",
                "writes that rejecting default server for every address", label="default server of this address",
                related=(Related(span_of(verify_at) if verify_at else span_of(srv.directive),
                                 f"{srv.label} verifies clients here"),)))
    return out


# ---- §1, lockout trap 7: `on` covers every path ----------------------------------------------

def verify_on_lockout(config: Config) -> list[Diagnostic]:
    out = []
    for srv in config.servers:
        if srv.verify != "on":
            continue
        at = srv.setting("ssl_verify_client")
        for loc in srv.locations:
            if is_probe(loc):
                out.append(finding(
                    "MTLS511", span_of(loc.directive),
                    f"`{loc.describe()}` looks like a probe or public path, but {srv.label} has `ssl_verify_client on`: "
                    "every request without a certificate gets `400 No required SSL certificate was sent` before any "
                    "location runs, health checks and ACME included (docs/nginx-facts.md §1, lockout trap 7)",
                    "use `ssl_verify_client optional;` and refuse in each private location "
                    "(`if ($ssl_client_verify != SUCCESS) { return 403; }`), or serve probes on another server",
                    "makes the listener `optional`, this route `public` and every other route `require`",
                    label="no certificate, no answer",
                    related=(Related(span_of(at), "the whole server needs a certificate"),) if at else ()))
    return out


# ---- §9 and §1: optional modes ---------------------------------------------------------------

def _forwards(loc: Location) -> set[str]:
    names = set()
    for kind in ARRAY_HEADERS:
        for h in loc.headers(kind)[0]:
            names |= set(h.client_vars)
    return names


def optional_traps(config: Config) -> list[Diagnostic]:
    out = []
    dn_samples = sorted({t.pattern if not t.regex else (example(t.pattern, t.icase) or "")
                         for t in dn_tests.collect(config)} | {"CN=admin,O=Example", ""})
    for srv in config.servers:
        if srv.verify not in ("optional", "optional_no_ca"):
            continue
        at = srv.setting("ssl_verify_client")
        for loc in srv.locations:
            passes = proxied(loc)
            if not passes:
                continue
            if srv.verify == "optional_no_ca":
                got_in = next((dn for dn in dn_samples if reaches(config, srv, loc, unverified(dn))), None)
                if got_in is None:
                    continue
                shown = f" with the subject `{got_in}`" if got_in else ""
                out.append(finding(
                    "MTLS512", span_of(loc.directive),
                    f"under `ssl_verify_client optional_no_ca`, a certificate from any CA reaches `{loc.describe()}`"
                    f"{shown}: `$ssl_client_verify` is `FAILED:...` and the subject is whatever the certificate claims "
                    "(docs/nginx-facts.md §9, over-trust trap 5)",
                    "use `optional` (or `on`), and refuse unless `$ssl_client_verify = SUCCESS` in this location",
                    "never uses `optional_no_ca`: this route becomes `require` (or `optional` with `forward verify`)",
                    label="an unverified certificate gets through",
                    related=(Related(span_of(at), "unverified certificates are let through here"),) if at else ()))
            elif not is_probe(loc) and reaches(config, srv, loc, NO_CERT) and "ssl_client_verify" not in _forwards(loc):
                out.append(finding(
                    "MTLS513", span_of(loc.directive),
                    f"{srv.label} asks for certificates (`optional`), but `{loc.describe()}` proxies every client, "
                    "without a certificate too, and tells the backend nothing about verification "
                    "(docs/nginx-facts.md §1, §9)",
                    "refuse in the location (`if ($ssl_client_verify != SUCCESS) { return 403; }`), or forward "
                    "`$ssl_client_verify` for the backend to decide",
                    "marks it `public`, or `optional CA` with `forward verify` when it forwards certificate fields",
                    label="no check of $ssl_client_verify",
                    related=(Related(span_of(at), "certificates are optional here"),) if at else ()))
    return out


# ---- §6, §F3: identity headers --------------------------------------------------------------

def _backend(d: Directive) -> str:
    if not d.args:
        return ""
    parts = urlsplit(d.args[0]) if "://" in d.args[0] else None
    return f"{parts.scheme}://{parts.netloc}".lower() if parts else d.args[0]


def identity_headers(config: Config) -> list[Diagnostic]:
    out = []
    for kind in ARRAY_HEADERS:
        # names a server forwards a certificate field under, with one place that sets them
        by_server: dict[int, dict[str, Directive]] = {}
        backends: dict[str, dict[str, Directive]] = {}
        for srv in config.servers:
            names: dict[str, Directive] = {}
            for block in [*srv.chain, *(loc.body for loc in srv.locations)]:
                for d in own(block, kind):
                    if len(d.args) >= 2 and "$ssl_client_" in d.args[1]:
                        names.setdefault(d.args[0].lower(), d)
            by_server[id(srv)] = names
            for loc in srv.locations:
                for p in proxied(loc):
                    if p.name in _PASS_FOR[kind]:
                        backends.setdefault(_backend(p), {}).update(names)
        for srv in config.servers:
            for loc in srv.locations:
                passes = [p for p in proxied(loc) if p.name in _PASS_FOR[kind]]
                if not passes:
                    continue
                have, level = loc.headers(kind)
                set_here = {h.name.lower() for h in have}
                wanted = dict(by_server[id(srv)])
                for p in passes:
                    for name, d in backends.get(_backend(p), {}).items():
                        wanted.setdefault(name, d)
                for name in sorted(wanted):
                    if name in set_here:
                        continue
                    setter = wanted[name]
                    out.append(_dropped(kind, srv, loc, level, have, setter, name))
    return out


def _dropped(kind: str, srv: Server, loc: Location, level: int, have, setter: Directive, name: str) -> Diagnostic:
    header = setter.args[0]
    above = next((i for i, block in enumerate(loc.chain) if any(setter is d for d in own(block, kind))), None)
    own_line = have[0].directive if level == 0 and have and above is not None else None
    spoof = kind not in ("fastcgi_param", "uwsgi_param", "scgi_param") or name.startswith("http_")
    effect = (f"a client's own `{header}` header reaches the backend unchanged" if spoof
              else f"the backend gets no `{header}` here")
    if own_line is not None:
        why = (f"this location's own `{kind}` lines replace every `{kind}` of the levels above, so `{header}` "
               f"set there is not sent here")
    elif above is not None:
        why = f"`{header}` is set at an outer level, but a level between replaces it"
    else:
        why = (f"`{header}` carries a certificate field in another location for this backend, and nothing here "
               "sets or clears it")
    return finding(
        "MTLS514", span_of(own_line) if own_line is not None else span_of(loc.directive),
        f"`{loc.describe()}` of {srv.label}: {why}; {effect} (docs/nginx-facts.md §6, §F3, over-trust trap 1)",
        f"repeat `{kind} {header} ...;` in this location (or `{kind} {header} \"\";` to clear it)",
        "sets or clears every identity header in every proxied location",
        label="drops the inherited identity headers" if own_line is not None else "identity header not set here",
        related=(Related(span_of(setter), f"`{header}` is set from a certificate field here"),))


def underscores(config: Config) -> list[Diagnostic]:
    out = []
    forwarding = any("$ssl_client_" in (d.args[1] if len(d.args) > 1 else "")
                     for srv in config.servers for block in [*srv.chain, *(loc.body for loc in srv.locations)]
                     for kind in ARRAY_HEADERS for d in own(block, kind))
    if not forwarding:
        return out
    seen = set()
    for srv in config.servers:
        d = srv.setting("underscores_in_headers")
        if d is not None and d.args and d.args[0].lower() == "on" and id(d) not in seen:
            seen.add(id(d))
            out.append(finding(
                "MTLS515", span_of(d),
                "`underscores_in_headers on`: a client's `X-Client_Verify: SUCCESS` passes beside the real "
                "`X-Client-Verify`, and many backends read both as one name (docs/nginx-facts.md §6, over-trust trap 2)",
                "remove it (the default is off)", "writes `underscores_in_headers off` in every server"))
    return out


# ---- `if` misuse ----------------------------------------------------------------------------

_IF_SAFE = {"return", "rewrite", "set", "break"}


def dead_verify_test(d: Directive) -> bool:
    """An `if` comparing `$ssl_client_verify` with a value nginx never sets (`= FAILED`): never
    true (or, with `!=`, always)."""
    parts = strip_parens(d.args)
    return (len(parts) == 3 and parts[0] in ("$ssl_client_verify", "${ssl_client_verify}")
            and parts[1] in ("=", "!=") and parts[2] not in ("SUCCESS", "NONE")
            and not parts[2].startswith("FAILED:") and "$" not in parts[2])


def if_misuse(config: Config) -> list[Diagnostic]:
    out = []
    for srv in config.servers:
        blocks = [(srv.directive.block, None)] + [(loc.body, loc) for loc in srv.locations]
        for block, loc in blocks:
            for d in own(block, "if"):
                parts = strip_parens(d.args)
                if dead_verify_test(d):
                    out.append(finding(
                        "MTLS523", span_word(d, 3),
                        f"`$ssl_client_verify` is never `{parts[2]}`: nginx sets `SUCCESS`, `NONE` or "
                        f"`FAILED:<reason>` (docs/nginx-facts.md §1), so this condition is "
                        f"{'never' if parts[1] == '=' else 'always'} true",
                        "compare with `SUCCESS`: `if ($ssl_client_verify != SUCCESS) { return 403; }`",
                        "writes the gate from the policy", label="a value nginx never sets"))
                    continue
                if loc is None:
                    continue
                unsafe = [x for x in d.block or () if isinstance(x, Directive) and x.name not in _IF_SAFE]
                if unsafe and any(v in " ".join(d.args) for v in ("$ssl_client_", "$http_")):
                    x = unsafe[0]
                    out.append(finding(
                        "MTLS523", span_of(x),
                        f"`{x.name}` inside an `if` of `{loc.describe()}`: nginx makes the `if` block a location of "
                        "its own, which replaces the location's configuration for matching requests instead of "
                        "adding to it; only `return` and `rewrite` are reliable there",
                        "make the `if` only refuse (`return 403;`) and put the rest in the location, or use a `map`",
                        "writes gates that only refuse", label="not reliable inside `if`"))
    return out
