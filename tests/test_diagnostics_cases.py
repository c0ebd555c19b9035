"""Syntax and semantic errors: each case file's rendered diagnostics are a golden file.

Adding a case = adding `cases/syntax/NAME.mtls` (or a directory of files compiled together)
and running `MTLSC_UPDATE_GOLDENS=1 pytest` once, then reviewing `NAME.expected`.
"""

from __future__ import annotations

import pytest

from support import HERE, assert_golden, run_cli

CASES = sorted(p for kind in ("syntax", "semantic") for p in (HERE / "cases" / kind).iterdir()
               if p.suffix == ".mtls" or p.is_dir())


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_case_diagnostics(case):
    files = sorted(str(p.relative_to(HERE)) for p in case.glob("*.mtls")) if case.is_dir() else [str(case.relative_to(HERE))]
    code, out, err = run_cli("check", *files, cwd=HERE)
    assert code == 1, err
    assert "Traceback" not in err
    assert "error[MTLS" in err
    golden = case / "expected" if case.is_dir() else case.with_suffix(".expected")
    assert_golden(golden, err)
