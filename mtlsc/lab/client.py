"""A small TLS HTTP/1.1 client for the lab: one request per connection, full control over SNI.

Unlike curl or `requests`, it can send no SNI at all, an SNI that differs from Host, raw duplicate
or oddly-named headers, a chosen TLS version and a previous session to resume. It never verifies
the server certificate (the lab tests the client side of mTLS) and never raises on TLS alerts or
network errors: those come back as `Response(status=0, error=...)`.
"""

from __future__ import annotations

import functools
import http.client
import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

_VERSIONS = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class Response:
    """What came back. `status` is 0 when no HTTP response was read; `error` then says why."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    session: ssl.SSLSession | None = None
    error: str = ""
    session_reused: bool = False
    protocol: str | None = None

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (lossy)."""
        return self.body.decode(errors="replace")


def _file_stamp(path: str | None) -> tuple | None:
    # Part of the context cache key, so a certificate rewritten at the same path is reloaded.
    if path is None:
        return None
    st = os.stat(path)
    return (path, st.st_mtime_ns, st.st_size)


def tls_context(
    cert: str | None = None,
    key: str | None = None,
    tls_version: str | ssl.TLSVersion | None = None,
    tickets: bool = True,
) -> ssl.SSLContext:
    """Return the (cached) client context for this certificate, TLS version and ticket choice.

    Cached because Python only resumes an `SSLSession` on the very `SSLContext` that created it:
    calls with the same arguments share one context and so can resume each other's sessions.
    """
    version = _VERSIONS.get(tls_version, tls_version) if isinstance(tls_version, str) else tls_version
    return _cached_context(_file_stamp(cert), _file_stamp(key), version, tickets)


@functools.lru_cache(maxsize=64)
def _cached_context(
    cert: tuple | None, key: tuple | None, version: ssl.TLSVersion | None, tickets: bool
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the lab's server certificates are throw-away
    if not tickets:
        # A TLS 1.2 client without ticket support resumes by session id from the server's cache.
        ctx.options |= ssl.OP_NO_TICKET
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(cert[0], key[0] if key else None)
    return ctx


def render_request(path: str, host: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """Return the raw request bytes: GET, Host first, the caller's headers verbatim, then close."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def request(
    host: str,
    port: int,
    path: str = "/",
    *,
    server_name: str | None = None,
    host_header: str | None = None,
    cert: str | os.PathLike | None = None,
    key: str | os.PathLike | None = None,
    headers: Sequence[tuple[str, str]] = (),
    timeout: float = 5,
    tls_version: str | ssl.TLSVersion | None = None,
    session: ssl.SSLSession | None = None,
    tickets: bool = True,
) -> Response:
    """Send one GET over a fresh TLS connection and return the response (never raises on TLS/IO).

    `server_name` is the SNI (None sends none); Host defaults to `server_name`, else `host`.
    To resume, pass a previous `Response.session` together with the same cert, key, tls_version
    and tickets as the request that produced it (see `tls_context`). `tickets=False` makes a
    TLS 1.2 client that can only resume by session id.
    """
    ctx = tls_context(
        os.fspath(cert) if cert else None, os.fspath(key) if key else None, tls_version, tickets
    )
    raw = render_request(path, host_header or server_name or host, headers)
    try:
        with socket.create_connection((host, port), timeout=timeout) as plain:
            with ctx.wrap_socket(plain, server_hostname=server_name, session=session) as tls:
                tls.sendall(raw)
                resp = http.client.HTTPResponse(tls)
                resp.begin()
                body = resp.read()
                # TLS 1.3 tickets arrive after the handshake, so read the session only now.
                return Response(
                    status=resp.status,
                    body=body,
                    headers=resp.getheaders(),
                    session=tls.session,
                    session_reused=tls.session_reused,
                    protocol=tls.version(),
                )
    except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
        return Response(status=0, error=f"{type(exc).__name__}: {exc}")


def plain_request(host: str, port: int, path: str = "/", *, timeout: float = 5) -> Response:
    """Send one plain-HTTP GET (no TLS), e.g. to probe a TLS port for a cleartext side door."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(render_request(path, host, ()))
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            return Response(status=resp.status, body=resp.read(), headers=resp.getheaders())
    except (OSError, http.client.HTTPException) as exc:
        return Response(status=0, error=f"{type(exc).__name__}: {exc}")
