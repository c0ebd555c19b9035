"""An HTTP/1.1 backend on loopback that echoes and records every request it receives.

nginx proxies to it in the lab, so tests can see exactly which headers reached the backend: all of
them, in order, duplicates kept (a spoofed identity header is invisible if duplicates are merged).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True, slots=True)
class EchoRequest:
    """One request as the backend received it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        """Return every value sent under `name` (compared case-insensitively)."""
        return [value for key, value in self.headers if key.lower() == name.lower()]


@dataclass
class EchoBackend:
    """A running echo backend: its port and the requests it has recorded so far."""

    port: int
    requests: list[EchoRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        """The base URL for `proxy_pass`."""
        return f"http://127.0.0.1:{self.port}"

    def record(self, request: EchoRequest) -> None:
        """Append `request` (called from the server's handler threads)."""
        with self._lock:
            self.requests.append(request)

    def snapshot(self) -> list[EchoRequest]:
        """Return a copy of the recorded requests, safe to iterate while requests arrive."""
        with self._lock:
            return list(self.requests)

    def clear(self) -> None:
        """Forget every recorded request (a shared backend between tests)."""
        with self._lock:
            self.requests.clear()


def _make_handler(backend: EchoBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _echo(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = tuple((k, v) for k, v in self.headers.items())
            backend.record(EchoRequest(self.command, self.path, headers, body))
            # One "Name: value" line per header, as the emitted tests.sh --echo expects.
            lines = [f"{self.command} {self.path}"] + [f"{k}: {v}" for k, v in headers]
            payload = ("\n".join(lines) + "\n").encode("utf-8", "replace")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _echo

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
            pass  # tests read `backend.requests`, not stderr noise

    return Handler


@contextmanager
def running_echo_backend() -> Iterator[EchoBackend]:
    """Serve the echo backend on 127.0.0.1 (a free port) in a thread; shut it down on exit."""
    backend = EchoBackend(port=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(backend))
    server.daemon_threads = True
    backend.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
