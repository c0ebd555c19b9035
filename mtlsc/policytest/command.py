"""`mtlsc test`: the policy's `*.mtls-test.yaml` expectations checked with mtlsc's model."""

from __future__ import annotations

import sys
from pathlib import Path

from mtlsc import ir, pipeline
from mtlsc.diagnostics import has_errors
from mtlsc.render import render


def find_test_files(policies: list[str], explicit: list[str] | None) -> list[str]:
    """`--tests FILE` when given, else each policy's `x.mtls-test.yaml` that exists."""
    from mtlsc.policytest import policy_test_path

    if explicit:
        return explicit
    return [str(t) for t in (policy_test_path(p) for p in policies) if t.exists()]


def load_all(files: list[str], policy: ir.Policy):
    """(expectations, diagnostics, sources) of every test file."""
    from mtlsc.policytest import load_tests

    cases, diags, sources = [], [], {}
    for f in files:
        found, d, source = load_tests(f, policy)
        cases += found
        diags += d
        if source is not None:
            sources[f] = source
    return cases, diags, sources


def test_command(policies: list[str], tests: list[str] | None) -> int:
    from mtlsc.policytest.run import counts, expect_with_model, render_results

    front = pipeline.read_and_lower(policies)
    if front.policy is None:
        sys.stderr.write(render(front.diagnostics, front.sources))
        return 2 if front.io_error else 1
    files = find_test_files(policies, tests)
    if not files:
        sys.stderr.write(f"mtlsc test: no tests: write {Path(policies[0]).name}-test.yaml beside the policy "
                         "(see docs/language.md, Policy tests) or pass --tests FILE\n")
        return 2
    cases, diags, sources = load_all(files, front.policy)
    if diags:
        sys.stderr.write(render(diags, {**front.sources, **sources}))
    if has_errors(diags):
        return 2 if any(d.code == "MTLS401" for d in diags) else 1
    results = expect_with_model(front.policy, cases)
    sys.stdout.write(render_results(results, sources))
    return 1 if counts(results)[1] else 0


test_command.__test__ = False  # not a pytest test
