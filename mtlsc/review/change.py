"""What `mtlsc diff` reports: one `Change` in access and its kind. Shared by `diff` (which
renders them), `diff_access` and `diff_trust` (which find them); it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlsc import ir
from mtlsc.pki import Pki

WIDENING, NARROWING, NEUTRAL = "widening", "narrowing", "neutral"
KINDS = (WIDENING, NARROWING, NEUTRAL)  # also the order of the rendered sections
FAIL_ON = ("widening", "narrowing", "any")
JSON_FORMAT = "mtlsc-diff/1"

Side = tuple[ir.Policy, Pki | None]


@dataclass(frozen=True, slots=True)
class Change:
    """One change in access, classified.

    `server` is the server's first name (None for a change of a CA or identity, which affects
    every server using it); `route` is the route as written (`= /healthz`, `/partner/`) or None;
    `subject` names who or what changed (a client, `ca partners`, `identity globex`, a header);
    `old` / `new` are short values (`403 forbidden`, `2`, a fingerprint) when there are any."""

    kind: str
    server: str | None
    route: str | None
    subject: str
    message: str
    old: str | None = None
    new: str | None = None
