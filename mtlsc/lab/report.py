"""The lab's report: tests.sh results grouped by route, the test clients the lab could not mint,
the header audit, the policy tests, one closing count."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mtlsc.lab.run import LabRun

_LINE = re.compile(r"^(PASS|FAIL|SKIP)  (.*)$")
_COUNT = re.compile(r"^\d+ passed, \d+ failed(, \d+ skipped)?$")


@dataclass(frozen=True, slots=True)
class PolicyTests:
    """The policy's YAML expectations run on the same nginx."""

    text: str  # rendered results
    passed: int
    failed: int
    skipped: int
    required: int  # skips that fail the lab unless skips are allowed


def _split(title: str) -> tuple[str, str]:
    """`api.example.com/partner/ (require partners): no certificate -> 403` -> (group, case)."""
    group, sep, case = title.partition(": ")
    return (group, case) if sep else ("nginx", title)


def _not_minted(run: LabRun) -> list[str]:
    """One line per reason the lab could not mint test clients, with the clients it concerns."""
    by_reason: dict[str, list[str]] = {}
    for member, reason in sorted(run.pki.not_minted.items()):
        by_reason.setdefault(reason, []).append(member)
    lines = []
    for reason, members in by_reason.items():
        shown = ", ".join(members[:4]) + (f" and {len(members) - 4} more" if len(members) > 4 else "")
        lines.append(f"  {shown}: {reason}")
    return lines


def report(run: LabRun, wall: float, policy_tests: PolicyTests | None = None, allow_skips: bool = False) -> str:
    """The lab's report. A skipped case fails the lab unless `allow_skips`, except a fingerprint
    pin's (only the pinned certificate satisfies it)."""
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
    if run.pki.not_minted:
        out.append("test clients the lab could not mint (their cases are skipped)")
        out.extend(_not_minted(run))
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
    blocking = run.returncode != 0 and run.failed == 0 and groups and skipped
    if policy_tests is not None:
        out.append("policy tests (*.mtls-test.yaml) on nginx")
        out.extend("  " + line for line in policy_tests.text.splitlines() if not _COUNT.match(line))
        passed, failed, skipped = passed + policy_tests.passed, failed + policy_tests.failed, skipped + policy_tests.skipped
        blocking = blocking or (policy_tests.required and not allow_skips)
    if blocking:
        out.append("skipped cases fail the lab: give the keys named above (--ca-key CA=KEY.pem), "
                   "or pass --allow-skips to accept what they leave unproven")
    closing = f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")
    return "\n".join(out) + f"\n{closing}  ({wall:.1f} s)\n"
