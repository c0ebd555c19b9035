"""`mtlsc diff`: the change in access between two versions of a policy, not the change in text.

Each `Change` is classified for review:
- widening: someone gains access, or a check is weakened (a CRL removed, a new root trusted, a
  header no longer cleared);
- narrowing: someone loses access, or a check is added (clients may be locked out);
- neutral: visible but neither (a rejection status, a backend URL, a re-issued CA certificate).

Who gets through is never re-derived here: `mtlsc.review.diff_access` asks `mtlsc.model.evaluate` about both
versions over the same request space (probe paths x client certificates). What the evaluator does
not model (CA files, CRLs, OCSP, verify depth, headers) is compared by `mtlsc.review.diff_trust` and the
server comparison in `mtlsc.review.diff_access`.

JSON output (`render_diff(changes, "json")`, sorted keys, documented in docs/review.md):
`{"format": "mtlsc-diff/1", "summary": {"widening": N, "narrowing": N, "neutral": N},
"changes": [{"kind", "server", "route", "subject", "message", "old", "new"}]}`.
"""

from __future__ import annotations

import json

from mtlsc.diagnostics import has_errors
from mtlsc.review import diff_access, diff_trust
from mtlsc.review.change import FAIL_ON, JSON_FORMAT, KINDS, NARROWING, NEUTRAL, WIDENING, Change, Side

__all__ = ["FAIL_ON", "JSON_FORMAT", "KINDS", "NARROWING", "NEUTRAL", "WIDENING", "Change", "Side", "diff_policies",
           "counts", "fails", "render_diff", "run_diff", "strongest"]

def diff_policies(old: Side, new: Side) -> list[Change]:
    """Every change in access from `old` to `new`, each a (policy, pki) pair.

    Order: per server (as the new policy lists them, removed servers last), then CA trust, then
    identity definitions. The pki may be None (CA file facts unknown): bundle and CRL contents are
    then not compared."""
    renames = diff_trust.ca_renames(old, new)
    identities = diff_trust.identity_changes(old[0], new[0])
    changes = diff_access.server_changes(old[0], new[0], renames, identities)
    changes += diff_trust.ca_changes(old, new, renames)
    changes += [c for i in identities for c in i.changes]
    return changes


def strongest(kinds) -> str:
    """widening beats narrowing beats neutral: the class a group of changes is reviewed as."""
    kinds = set(kinds)
    return next((k for k in KINDS if k in kinds), NEUTRAL)


def fails(changes: list[Change], fail_on: str) -> bool:
    """True when `--fail-on fail_on` must fail: a change of that class exists (`any`: any change)."""
    if fail_on not in FAIL_ON:
        raise ValueError(f"unknown --fail-on class {fail_on!r}")
    return any(fail_on == "any" or c.kind == fail_on for c in changes)


def counts(changes: list[Change]) -> dict[str, int]:
    return {k: sum(c.kind == k for c in changes) for k in KINDS}


def _summary(changes: list[Change]) -> str:
    n = counts(changes)
    return ", ".join(f"{n[k]} {k}" for k in KINDS)


def _where(c: Change) -> str:
    return f"{c.server}: " if c.server else ""


def render_diff(changes: list[Change], fmt: str = "text") -> str:
    """`text` (one line per change), `md` (a PR comment) or `json` (stable, documented)."""
    if fmt == "json":
        doc = {"format": JSON_FORMAT, "summary": counts(changes),
               "changes": [{"kind": c.kind, "server": c.server, "route": c.route, "subject": c.subject,
                            "message": c.message, "old": c.old, "new": c.new} for c in changes]}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if fmt == "text":
        if not changes:
            return "no change in access\n"
        lines = [f"{c.kind:<9}  {_where(c)}{c.message}" for c in changes]
        return "\n".join(lines) + f"\n{_summary(changes)}\n"
    if fmt == "md":
        return _markdown(changes)
    raise ValueError(f"unknown format {fmt!r}")


_TITLES = {
    WIDENING: "⚠️ Widening: someone gains access or a check is weakened",
    NARROWING: "🔒 Narrowing: someone loses access or a check is added",
    NEUTRAL: "ℹ️ Neutral",
}


def _markdown(changes: list[Change]) -> str:
    out = [f"## mtlsc diff: {_summary(changes)}", ""]
    if not changes:
        return "\n".join(out + ["No change in access.", ""])
    for kind in KINDS:
        group = [c for c in changes if c.kind == kind]
        if group:
            out += [f"### {_TITLES[kind]} ({len(group)})", ""]
            out += [f"- {'**' + c.server + '**: ' if c.server else ''}{c.message}" for c in group]
            out.append("")
    out += ["<sub>Computed by mtlsc's evaluator on both versions over the same requests (every route path "
            "and a path under it x no certificate, a certificate from another CA, any certificate of each "
            "CA, each identity); CA files, CRLs, OCSP, verify depth and headers are compared directly.</sub>",
            ""]
    return "\n".join(out)


# ----- the command, for mtlsc.cli -------------------------------------------------------------

def run_diff(old_path: str | None, new_path: str, git_ref: str | None = None, fmt: str = "text",
             fail_on: str | None = None) -> tuple[int, str, str]:
    """`mtlsc diff OLD NEW` / `mtlsc diff POLICY --git REF` -> (exit code, stdout, stderr).

    Exit 0: compared, and no change of the `fail_on` class (or no `--fail-on`); 1: a change of
    that class exists; 2: a side cannot be compared (unreadable policy, syntax or name errors, a
    CA or CRL file that cannot be read or holds nothing nginx loads, git error). Diagnostics of
    either side go to stderr."""
    from mtlsc.gitrev import load_from_files, load_from_git
    from mtlsc.render import render

    old = load_from_git(new_path, git_ref) if git_ref else load_from_files([old_path])
    new = load_from_files([new_path])
    diags = old[2] + new[2]
    err = render(diags, {}) if diags else ""
    if old[0] is None or new[0] is None:
        return 2, "", err
    if has_errors(diags):
        # Only the CA and CRL files can still be in error here. Compared as empty, such a file
        # would read as trust or revocation removed (narrowing) and hide what really changed,
        # and a side nginx cannot load is no configuration to compare with.
        names = ((f"{new_path} at {git_ref}" if git_ref else old_path, old), (new_path, new))
        sides = " and of ".join(f"`{name}`" for name, side in names if has_errors(side[2]))
        return 2, "", err + f"mtlsc diff: cannot compare: a CA or CRL file of {sides} cannot be used (see above)\n"
    changes = diff_policies(old[:2], new[:2])
    code = 1 if fail_on and fails(changes, fail_on) else 0
    return code, render_diff(changes, fmt), err
