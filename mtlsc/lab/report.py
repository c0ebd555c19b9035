"""The lab's report: tests.sh results grouped by route, the header audit, one closing count."""

from __future__ import annotations

import re

from mtlsc.lab.run import LabRun

_LINE = re.compile(r"^(PASS|FAIL|SKIP)  (.*)$")


def _split(title: str) -> tuple[str, str]:
    """`api.example.com/partner/ (require partners): no certificate -> 403` -> (group, case)."""
    group, sep, case = title.partition(": ")
    return (group, case) if sep else ("nginx", title)


def report(run: LabRun, wall: float, policy_tests: tuple[str, int, int, int] | None = None) -> str:
    """The lab's report; `policy_tests` is (rendered results, passed, failed, skipped) of the
    policy's YAML expectations run on the same nginx."""
    groups: dict[str, list[str]] = {}
    passed = failed = skipped = 0
    for line in run.output.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        verdict, title = m[1], m[2]
        group, case = _split(title)
        groups.setdefault(group, []).append(f"  {verdict}  {case}")
        passed += verdict == "PASS"
        failed += verdict == "FAIL"
        skipped += verdict == "SKIP"
    out = []
    for group, lines in groups.items():
        out.append(group)
        out.extend(lines)
    out.append("header audit")
    if run.audit:
        out.extend(f"  FAIL  {p}" for p in run.audit)
        failed += len(run.audit)
    else:
        out.append(f"  PASS  {len(run.requests)} requests reached the backend, each with exactly the promised "
                   "identity headers and no spoofed one")
        passed += 1
    if not groups:
        out.append("tests.sh printed no result:")
        out.append(run.output)
        failed += 1
    if policy_tests is not None:
        text, p, f, s = policy_tests
        out.append("policy tests (*.mtls-test.yaml) on nginx")
        out.extend("  " + line for line in text.splitlines() if not line.endswith(" failed") or "passed" not in line)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    closing = f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")
    return "\n".join(out) + f"\n{closing}  ({wall:.1f} s)\n"
