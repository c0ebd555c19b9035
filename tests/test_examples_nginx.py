"""Every example policy, proven on the real nginx: the emitted tests.sh passes against it, and the
backend received exactly the promised identity headers and never a spoofed one."""

from __future__ import annotations

import pytest

from mtlsc import ir
from mtlsc.evaluate import find_route, identity_headers
from mtlsc.lab.run import run_lab
from support import REPO

POLICIES = sorted((REPO / "policies").glob("*.mtls"))


def _server_for(policy: ir.Policy, host: str) -> ir.Server:
    name = host.split(":")[0]
    return next(s for s in policy.servers if name in s.names)


@pytest.mark.nginx
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.stem)
def test_example_policy_on_real_nginx(policy, nginx_bin, tmp_path):
    run = run_lab([str(policy)], tmp_path, nginx_bin=nginx_bin)
    assert run.returncode == 0 and run.failed == 0, run.output
    assert run.skipped == 0, run.output
    gated = [r for s in run.policy.servers for r in s.routes if r.mode is not ir.Mode.PUBLIC]
    assert run.passed >= 6 * len(gated) + 1, run.output
    assert run.requests, "no request reached the backend"
    for req in run.requests:
        server = _server_for(run.policy, dict((k.lower(), v) for k, v in req.headers)["host"])
        route = find_route(server, req.path)
        assert route is not None, req.path
        names = [k for k, _ in req.headers]
        assert not any("_" in k for k in names), req.headers
        assert not any("mtlsc-spoofed" in v for _, v in req.headers), f"spoofed header reached the backend: {req}"
        identity = {h.lower() for h in identity_headers(server)}
        received = {k.lower() for k in names if k.lower() in identity}
        promised = {f.header.lower() for f in route.forward}
        assert received <= promised, f"{req.path}: got {received}, route forwards only {promised}"
        if route.mode is ir.Mode.PUBLIC:
            assert not received
        if any(f.field == "verify" for f in route.forward):
            assert "x-client-verify" in received or any(f.header.lower() in received for f in route.forward if f.field == "verify")
        assert sum(k.lower() == "x-client-verify" for k in names) <= 1, req.headers
