"""A load client that presents a client certificate (wrk cannot; h2load and httperf have no
option for one either): processes of blocking `ssl` sockets, HTTP/1.1, over keep-alive
connections or one new connection (full handshake) per request. Every run is bounded by a
request count and a deadline, and talks only to 127.0.0.1.
"""

from __future__ import annotations

import multiprocessing
import socket
import ssl
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    port: int
    server_name: str  # SNI and Host
    path: str
    server_ca: str  # PEM that verifies the server certificate
    cert: str | None = None  # client certificate and key (None: send none)
    key: str | None = None


@dataclass(frozen=True)
class LoadResult:
    requests: int  # answered with the expected status
    errors: int  # anything else: wrong status, reset, timeout
    seconds: float  # wall time of the whole run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def _context(target: Target) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=target.server_ca)
    ctx.check_hostname = False  # the lab server certificate names the host; SNI is what matters here
    if target.cert:
        ctx.load_cert_chain(target.cert, target.key)
    return ctx


def _read_response(sock: ssl.SSLSocket, buf: bytearray) -> tuple[int, bytearray, bool]:
    """Read one response (Content-Length bodies only, as nginx's `return` sends); return
    (status, what is left in the buffer after it, whether the server closes the connection)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status = int(head[9:12])
    length, closing = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            closing = value.strip().lower() == b"close"  # e.g. after nginx's keepalive_requests
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return status, body[length:], closing


def _worker(target: Target, count: int, keepalive: bool, expect: int, deadline: float, out) -> None:
    ctx = _context(target)
    close = b"" if keepalive else b"Connection: close\r\n"
    request = (f"GET {target.path} HTTP/1.1\r\nHost: {target.server_name}\r\n".encode() + close + b"\r\n")
    ok = errors = 0
    sock = None
    buf = bytearray()
    try:
        while ok + errors < count and time.monotonic() < deadline:
            try:
                if sock is None:
                    raw = socket.create_connection(("127.0.0.1", target.port), timeout=5)
                    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock = ctx.wrap_socket(raw, server_hostname=target.server_name)
                    buf = bytearray()
                sock.sendall(request)
                status, buf, closing = _read_response(sock, buf)
                if status == expect:
                    ok += 1
                else:
                    errors += 1
                if closing or not keepalive:
                    sock.close()
                    sock = None
            except (OSError, ValueError):
                errors += 1
                if sock is not None:
                    sock.close()
                sock = None
    finally:
        if sock is not None:
            sock.close()
        out.put((ok, errors))


def run_load(target: Target, *, requests: int, processes: int = 2, keepalive: bool = True,
             expect: int = 200, max_seconds: float = 60) -> LoadResult:
    """Send `requests` requests (split over `processes`), stopping at `max_seconds` at the latest."""
    mp = multiprocessing.get_context("fork")
    out = mp.Queue()
    per = [requests // processes + (1 if i < requests % processes else 0) for i in range(processes)]
    started = time.monotonic()
    deadline = started + max_seconds
    procs = [mp.Process(target=_worker, args=(target, n, keepalive, expect, deadline, out), daemon=True)
             for n in per if n]
    for p in procs:
        p.start()
    ok = errors = 0
    for _ in procs:
        a, b = out.get(timeout=max_seconds + 30)
        ok, errors = ok + a, errors + b
    seconds = time.monotonic() - started
    for p in procs:
        p.join(timeout=10)
    return LoadResult(ok, errors, seconds)


def one_request(target: Target) -> int:
    """The status of one GET over a new connection (a sanity check before timing)."""
    ctx = _context(target)
    with socket.create_connection(("127.0.0.1", target.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=target.server_name) as sock:
            sock.sendall(f"GET {target.path} HTTP/1.1\r\nHost: {target.server_name}\r\nConnection: close\r\n\r\n".encode())
            status, _, _ = _read_response(sock, bytearray())
            return status
