"""Load for the `mtlsc apply` tests: clients with and without certificates on every server of
the nginx, timed, so a test can show that requests were in flight across each reload."""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mtlsc.lab.client import request

REQUEST_COUNTS: dict[str, tuple[int, int]] = {}  # scenario -> (requests sent, failed)


def listen_port() -> int:
    """A free loopback port below the ephemeral range, for a server first bound while load runs:
    the load's own connections take ephemeral local ports, and one of them holding the port makes
    nginx's reload fail to bind it (as a port in use should)."""
    from mtlsc.lab.nginx import free_port

    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(low, 10001))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


@dataclass(frozen=True)
class Target:
    """One kind of request of the load: a route of a server, with or without a certificate."""

    server: str  # SNI and Host
    port: int
    path: str
    cert: tuple[Path, Path] | None = None

    def __str__(self) -> str:
        return f"{self.server}:{self.port}{self.path} ({self.cert[0].name if self.cert else 'no certificate'})"


class Load:
    """GET the targets in turn from `workers` background threads (bounded: `limit` requests in
    all, `seconds`); a request fails unless the backend answers it (200, echoing the request).
    Each request's start and end (time.monotonic) are kept to compare with apply's reloads."""

    def __init__(self, targets: list[Target], workers: int = 4, limit: int = 20000, seconds: float = 120):
        self.targets, self.limit, self.seconds = targets, limit, seconds
        self.sent = self.failed = 0
        self.per_target = {t: 0 for t in targets}
        self.failures: list[str] = []
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)]

    def _run(self, offset: int) -> None:
        deadline = time.monotonic() + self.seconds
        i = offset
        while not self._stop.is_set() and time.monotonic() < deadline:
            target = self.targets[i % len(self.targets)]
            i += 1
            with self._lock:
                if self.sent >= self.limit:
                    return
                self.sent += 1
            start = time.monotonic()
            resp = request("127.0.0.1", target.port, target.path, server_name=target.server,
                           cert=target.cert[0] if target.cert else None, key=target.cert[1] if target.cert else None,
                           timeout=5)
            end = time.monotonic()
            ok = resp.status == 200 and f"GET {target.path}" in resp.text
            with self._lock:
                self.spans.append((start, end))
                self.per_target[target] += 1
                if not ok:
                    self.failed += 1
                    self.failures.append(f"{target}: {resp.status} {resp.error or resp.text[:80]}")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + 10
        while self.sent < max(10, 2 * len(self.targets)) and time.monotonic() < deadline:
            time.sleep(0.01)  # the load runs on every target before the change starts
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)  # requests after the change, too
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def overlaps(self, reload: dict) -> bool:
        """Requests were in flight while nginx went from the old workers to new ones."""
        until = reload["new_workers"] or reload["signalled"]
        return any(start <= until and end >= reload["signalled"] for start, end in self.spans)

    def record(self, scenario: str, reloads: list[dict] = ()) -> None:
        """No request failed, every target was loaded, and the load spanned every reload."""
        REQUEST_COUNTS[scenario] = (self.sent, self.failed)
        print(f"\n[{scenario}] requests during the change: {self.sent} on {len(self.targets)} targets, "
              f"failed: {self.failed}, reloads: {len(reloads)}")
        assert self.sent >= 10 and self.failed == 0, self.failures[:5]
        assert all(self.per_target.values()), {str(t): n for t, n in self.per_target.items()}
        assert all(self.overlaps(r) for r in reloads), (reloads, self.spans[:3], self.spans[-3:])
        if reloads:
            first, last = min(r["signalled"] for r in reloads), max(r["new_workers"] or 0 for r in reloads)
            assert any(end < first for _, end in self.spans) and any(start > last for start, _ in self.spans)
