"""Every example policy, proven on the real nginx: the emitted tests.sh passes against it, and the
backend received exactly the promised identity headers and never a spoofed one."""

from __future__ import annotations

import pytest

from mtlsc import ir
from mtlsc.lab.audit import audit
from mtlsc.lab.run import run_lab
from support import REPO

POLICIES = sorted((REPO / "policies").glob("*.mtls"))


@pytest.mark.nginx
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.stem)
def test_example_policy_on_real_nginx(policy, nginx_bin, tmp_path):
    run = run_lab([str(policy)], tmp_path, nginx_bin=nginx_bin)
    assert run.returncode == 0 and run.failed == 0, run.output
    assert run.skipped == 0, run.output
    gated = [r for s in run.policy.servers for r in s.routes if r.mode is not ir.Mode.PUBLIC]
    assert run.passed >= 6 * len(gated) + 1, run.output
    assert run.requests, "no request reached the backend"
    assert audit(run.policy, run.requests) == []
