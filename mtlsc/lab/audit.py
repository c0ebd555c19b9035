"""The header audit: what reached the backend must be exactly what the policy promises.

For every request the echo backend recorded: no header with `_` in its name, no forged value
(the test script sends `mtlsc-spoofed`), at most one copy of each identity header, only the
identity headers the route forwards, none on public routes (docs/nginx-facts.md §6).
"""

from __future__ import annotations

from mtlsc import ir
from mtlsc.emit.testscript import SPOOF_MARK
from mtlsc.model.evaluate import find_route, identity_headers
from mtlsc.lab.echo import EchoRequest


def _server_for(policy: ir.Policy, host: str) -> ir.Server | None:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    return next((s for s in policy.servers if name in s.names), None)


def audit(policy: ir.Policy, requests: list[EchoRequest]) -> list[str]:
    """Problems found, one line each; empty when every request carried exactly what was promised."""
    problems = []
    for req in requests:
        headers = [(k.lower(), v) for k, v in req.headers]
        host = next((v for k, v in headers if k == "host"), "")
        server = _server_for(policy, host)
        route = find_route(server, req.path.split("?", 1)[0]) if server else None
        where = f"{host}{req.path}"
        if route is None:
            problems.append(f"{where}: reached the backend but matches no route")
            continue
        if any("_" in k for k, _ in headers):
            problems.append(f"{where}: a header with `_` reached the backend")
        if any(SPOOF_MARK in v for _, v in headers):
            problems.append(f"{where}: a spoofed identity header reached the backend")
        identity = {h.lower() for h in identity_headers(server)}
        received = [k for k, _ in headers if k in identity]
        promised = {f.header.lower() for f in route.forward}
        if extra := sorted(set(received) - promised):
            problems.append(f"{where}: got {', '.join(extra)}, which route {route.path} does not forward")
        if dupes := sorted({k for k in received if received.count(k) > 1}):
            problems.append(f"{where}: {', '.join(dupes)} arrived more than once")
        verify = {f.header.lower() for f in route.forward if f.field == "verify"}
        if missing := sorted(verify - set(received)):
            problems.append(f"{where}: {', '.join(missing)} missing though the route forwards verify")
    return problems
