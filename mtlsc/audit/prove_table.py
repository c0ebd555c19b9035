"""What `mtlsc import --prove` asks and hears: one request (`Ask`), each side's `Answer`, and the
`Table` of rows where the original configuration and the imported policy answer differently."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Ask:
    server: str  # SNI and Host
    sni: bool
    path: str
    label: str  # which route (location) it is meant for


@dataclass(frozen=True)
class Answer:
    reached: bool
    status: int
    forged: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        """The backend got the request, or nginx answered it itself with a success."""
        return self.reached or 0 < self.status < 400

    def __str__(self) -> str:
        if not self.reached:
            return ("no answer" if not self.status else
                    f"nginx answers {self.status}" if self.allowed else f"refused {self.status}")
        return "backend" + (f" (forged {', '.join(self.forged)})" if self.forged else "")

    @property
    def outcome(self) -> tuple:
        return (self.allowed, self.forged)


@dataclass
class Row:
    ask: Ask
    client: str
    original: Answer
    policy: Answer


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    asked: int = 0

    @property
    def differences(self) -> list[Row]:
        return [r for r in self.rows if r.original.outcome != r.policy.outcome]

    def render(self) -> str:
        diff = self.differences
        out = [f"{self.asked} requests to each side; {len(diff)} answer differently "
               "(the original's holes this policy closes, or changes to review):"]
        if not diff:
            return out[0] + " none\n"
        head = ("server", "route", "request", "client", "original", "policy")
        table = [head] + [(r.ask.server + ("" if r.ask.sni else " (no SNI)"), r.ask.label, r.ask.path, r.client,
                           str(r.original), str(r.policy)) for r in diff]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        for row in table:
            out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        return "\n".join(out) + "\n"
