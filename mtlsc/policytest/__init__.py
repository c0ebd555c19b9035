"""Policy tests: expectations about a policy in the users' own terms, in `x.mtls-test.yaml` beside
`x.mtls` (docs/language.md, "Policy tests").

`load_tests` reads a test file against a lowered policy and returns `Expectation`s plus MTLS4xx
diagnostics that point at the YAML line and column (never a traceback). `mtlsc.policytest.run`
checks the expectations with mtlsc's model or against a lab nginx and renders the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from mtlsc import ir
from mtlsc.diagnostics import Diagnostic, error
from mtlsc.model.evaluate import find_route
from mtlsc.policytest.schema import (
    CANNOT_READ, CERT_SPECIFIC, INVALID, METHODS, MISSING_KEY, NO_CLIENT, REASONS, SYNTAX, UNKNOWN_SERVER,
    UNTRUSTED, VARYING_FIELDS, CertFile, ClientSpec, Ctx, client_spec, did_you_mean, find_server, is_bool,
    mapping, text, TOKEN,
)
from mtlsc.source import Source, Span, point, read_source, span_field
from mtlsc.model.uri import normalise_path

__all__ = ["CertFile", "ClientSpec", "Expectation", "NO_CLIENT", "UNTRUSTED", "find_server", "load_tests",
           "normalise_path", "policy_test_path", "route_label"]


@dataclass(frozen=True, slots=True)
class Expectation:
    """One case of a test file."""

    name: str
    server: str  # the name sent as SNI and Host
    method: str
    path: str  # the request target exactly as sent
    client: ClientSpec
    expect: str | int  # "allow" (2xx), "deny" (anything else) or an exact status
    reason: str | None
    headers: tuple[tuple[str, str | bool | None], ...]  # value: exact text, True present, None absent
    spoof: tuple[tuple[str, str], ...]  # forged headers the client sends
    received: str | None  # the request target the backend must receive (None: not checked)
    route: str  # the route the normalised path reaches, for grouping reports
    span: Span = span_field()


def policy_test_path(policy_path: str | Path) -> Path:
    """Where the tests of a policy live: `x.mtls` -> `x.mtls-test.yaml` in the same directory."""
    p = Path(policy_path)
    return p.with_name((p.stem if p.suffix == ".mtls" else p.name) + ".mtls-test.yaml")


# ---- request paths, as nginx reads them (docs/nginx-facts.md §2) -------------------------------------

def route_label(server_name: str, route: ir.Route | None) -> str:
    """How reports name a route: `api.example.com route /partner/ (require partners)`."""
    if route is None:
        return f"{server_name} (no route)"
    eq = "= " if route.match is ir.PathMatch.EXACT else ""
    ca = f" {route.ca.name}" if route.ca else ""
    return f"{server_name} route {eq}{route.path} ({route.mode.value}{ca})"


def _server(ctx: Ctx, node: yaml.Node) -> tuple[str, ir.Server] | None:
    name = text(ctx, node, "`server`")
    server = find_server(ctx.policy, name) if name is not None else None
    if name is not None and server is None:
        known = [n for s in ctx.policy.servers for n in s.names]
        ctx.error(UNKNOWN_SERVER, node, f"the policy has no server `{name}`",
                  did_you_mean(name, known) or f"servers: {', '.join(known)}")
    return (name, server) if server else None


def _default_server(ctx: Ctx, top: dict[str, yaml.Node]) -> tuple[str, ir.Server] | None:
    """The file's `server`, else the policy's only server (a wildcard name gets a label in front)."""
    if "server" in top:
        return _server(ctx, top["server"])
    only = ctx.policy.servers
    return (only[0].names[0].replace("*", "mtlsc-wildcard"), only[0]) if len(only) == 1 else None


def _request(ctx: Ctx, node: yaml.Node) -> tuple[str, str] | None:
    value = text(ctx, node, "`request`")
    if value is None:
        return None
    parts = value.split()
    method, path = (parts if len(parts) == 2 else ["GET", *parts]) if 0 < len(parts) <= 2 else ("", "")
    if method not in METHODS:
        ctx.error(INVALID, node, f"`{value}` is not `METHOD /path` or `/path`",
                  did_you_mean(method.upper(), METHODS) or f"methods: {', '.join(METHODS)}")
        return None
    if not path.startswith("/") or not all(" " < c < "\x7f" for c in path):
        ctx.error(INVALID, node, f"`{path}` cannot be sent as a request path",
                  "start with `/` and percent-encode spaces and non-ASCII characters (`%C3%BC`)")
        return None
    return method, path


def _expect(ctx: Ctx, node: yaml.Node) -> str | int | None:
    value = text(ctx, node, "`expect`")
    if value is None:
        return None
    if value in ("allow", "deny"):
        return value
    if value.isdigit() and 100 <= int(value) <= 599:
        return int(value)
    ctx.error(INVALID, node, f"`expect: {value}` is neither allow, deny nor an HTTP status (100-599)",
              did_you_mean(value, ("allow", "deny")) or "write allow, deny or a status such as 403")
    return None


def _reason(ctx: Ctx, node: yaml.Node, expect: str | int | None) -> str | None:
    value = text(ctx, node, "`reason`")
    if value is None:
        return None
    if value not in REASONS:
        ctx.error(INVALID, node, f"unknown reason `{value}`", did_you_mean(value, REASONS)
                  or f"reasons: {', '.join(REASONS)}")
        return None
    allows = expect == "allow" or (isinstance(expect, int) and 200 <= expect < 300)
    if expect is not None and allows != (value == "ok"):
        ctx.error(INVALID, node, f"`reason: {value}` contradicts `expect: {expect}`",
                  "`ok` goes with allow and 2xx, every other reason with a refusal")
    return value


def _header_map(ctx: Ctx, node: yaml.Node, what: str, presence: bool) -> tuple[tuple[str, object], ...]:
    if not isinstance(node, yaml.MappingNode):
        ctx.error(INVALID, node, f"{what} must map header names to values")
        return ()
    out = []
    for k, v in node.value:
        name = k.value if isinstance(k, yaml.ScalarNode) else ""
        if not TOKEN.fullmatch(name):
            ctx.error(INVALID, k, f"`{name}` is not an HTTP header name")
            continue
        if presence and is_bool(v, True):
            out.append((name, True))
        elif presence and isinstance(v, yaml.ScalarNode) and v.tag == "tag:yaml.org,2002:null":
            out.append((name, None))
        elif isinstance(v, yaml.ScalarNode) and v.tag != "tag:yaml.org,2002:bool" and "\n" not in v.value:
            out.append((name, v.value))
        else:
            hint = "a quoted value, `true` (present) or `null` (absent)" if presence else "a quoted value"
            ctx.error(INVALID, v, f"the value of `{name}` must be {hint}")
    return tuple(out)


def _check_varying(ctx: Ctx, node: yaml.Node, headers, route: ir.Route | None, client: ClientSpec) -> None:
    """MTLS409: exact values for fields that belong to one certificate, when mtlsc mints it (and
    for the URL-encoded PEM always: mtlsc does not reproduce nginx's encoding of it)."""
    if route is None or client.kind == "none":
        return
    fields = {f.header.lower(): f.field for f in route.forward}
    pinned = any(i.name == client.identity and i.kind is ir.IdentityKind.SERIAL for i in ctx.policy.identities)
    varying = {"cert"} if client.kind == "file" else VARYING_FIELDS - ({"serial", "issuer"} if pinned else set())
    for name, want in headers:
        field = fields.get(name.lower())
        if isinstance(want, str) and field in varying:
            where = next(k for k, _ in node.value if k.value == name)
            fix = "name a real certificate with `client: {cert: ..., key: ...}`" if field != "cert" else "check it"
            ctx.error(CERT_SPECIFIC, where, f"`{name}` carries the certificate's {field}, which mtlsc cannot know "
                      "in advance for this client", f"expect `true` (present), or {fix}")


def _case(ctx: Ctx, node: yaml.Node, default: tuple[str, ir.Server] | None, top_server: bool) -> Expectation | None:
    """One case; `default` is the server of the file (`top_server`: one was written, maybe a bad one)."""
    keys = ("name", "server", "client", "request", "expect", "reason", "headers", "spoof", "received")
    found = mapping(ctx, node, "a case", keys, required=("client", "request", "expect"))
    if found is None:
        return None
    server = _server(ctx, found["server"]) if "server" in found else default
    if server is None and "server" not in found and not top_server:
        names = ", ".join(s.names[0] for s in ctx.policy.servers)
        ctx.error(MISSING_KEY, node, f"which server does this case call? the policy has several: {names}",
                  "add `server:` to the case or at the top of the file")
    request = _request(ctx, found["request"]) if "request" in found else None
    expect = _expect(ctx, found["expect"]) if "expect" in found else None
    reason = _reason(ctx, found["reason"], expect) if "reason" in found else None
    headers = _header_map(ctx, found["headers"], "`headers`", True) if "headers" in found else ()
    spoof = _header_map(ctx, found["spoof"], "`spoof`", False) if "spoof" in found else ()
    received = text(ctx, found["received"], "`received`") if "received" in found else None
    for key in ("headers", "received"):
        if key in found and expect is not None and not (expect == "allow" or (isinstance(expect, int) and 200 <= expect < 300)):
            ctx.error(INVALID, found[key], f"`{key}` is what the backend receives, and a refused request never "
                      "reaches it", f"check `{key}` on cases that expect allow or a 2xx status")
    if server is None or request is None:
        return None
    try:
        route = find_route(server[1], normalise_path(request[1]))
        label = route_label(server[0], route)
    except ValueError:
        route, label = None, f"{server[0]} (request refused before routing)"  # nginx answers 400
    client = client_spec(ctx, found["client"], server[1], route) if "client" in found else None
    if client is None or expect is None:
        return None
    _check_varying(ctx, found.get("headers"), headers, route, client)
    name = text(ctx, found["name"], "`name`") if "name" in found else None
    shown = request[1] if request[0] == "GET" else " ".join(request)
    return Expectation(name or f"{client.label} on {shown}", server[0], request[0], request[1], client, expect,
                       reason, headers, spoof, received, label, span=ctx.span(node))


def _compose(source: Source) -> tuple[yaml.Node | None, list[Diagnostic]]:
    try:
        root = yaml.compose(source.text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        span = Span(source.path, m.line + 1, m.column + 1, m.line + 1, m.column + 2) if m else point(source.path)
        return None, [error(SYNTAX, span, f"YAML syntax: {exc.problem or exc.context}", "fix the YAML here")]
    except yaml.YAMLError as exc:
        return None, [error(SYNTAX, point(source.path), f"YAML syntax: {exc}", "fix the YAML")]
    if root is None:
        return None, [error(MISSING_KEY, point(source.path), "the test file is empty", "add `cases:`")]
    return root, []


def load_tests(path: str | Path, policy: ir.Policy, now: datetime | None = None
               ) -> tuple[list[Expectation], list[Diagnostic], Source | None]:
    """Read and check the test file at `path` against `policy` (a lowered policy).

    Returns the valid cases, MTLS4xx diagnostics for the rest, and the Source (None when the file
    could not be read: MTLS401). `now` dates certificate files (`cert:`), default the current time.
    """
    try:
        source = read_source(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [], [error(CANNOT_READ, point(str(path)), f"cannot read the test file: {reason}",
                          "check the path; test files are UTF-8 YAML")], None
    root, diags = _compose(source)
    if root is None:
        return [], diags, source
    ctx = Ctx(source, policy, now or datetime.now(timezone.utc), [], {})
    top = mapping(ctx, root, "the test file", ("server", "cases"), required=("cases",)) or {}
    cases = top.get("cases")
    if cases is not None and not isinstance(cases, yaml.SequenceNode):
        ctx.error(INVALID, cases, "`cases` must be a list (`- client: ...` items)")
        cases = None
    default = _default_server(ctx, top)
    found = [_case(ctx, c, default, "server" in top) for c in (cases.value if cases else [])]
    return [e for e in found if e is not None], ctx.out, source


