"""An OCSP responder on 127.0.0.1 for the lab and the tests: it answers for the CAs it is given,
`good` unless told otherwise per certificate, and records every question it gets.

nginx asks with `GET <uri>/<base64 request>` over HTTP/1.0 and reads the answer until the
connection closes; other clients POST the DER request. Answers are signed by a delegated
responder certificate of the CA asked about (`issue_ocsp_signer`), as production responders
sign them, and carry a nextUpdate: nginx keeps an answer in its `ssl_ocsp_cache` until then
(docs/language.md "OCSP"). A certificate marked `unavailable` gets HTTP 503, what a load
balancer in front of a dead responder answers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from mtlsc.lab.pki import Issued, issue_ocsp_signer

GOOD, REVOKED, UNKNOWN, UNAVAILABLE = "good", "revoked", "unknown", "unavailable"
_CERT_STATUS = {GOOD: ocsp.OCSPCertStatus.GOOD, REVOKED: ocsp.OCSPCertStatus.REVOKED,
                UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN}
# A responder's clock may run a little ahead of nginx's: thisUpdate is set this far back.
CLOCK_SLACK = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class OcspQuery:
    """One question as the responder received it, and what it answered."""

    method: str
    serial: int | None  # None: the request could not be read
    answer: str  # good | revoked | unknown | unavailable | malformed | unauthorized


@dataclass
class _Authority:
    ca: Issued
    signer: Issued


def _key_hash(cert: x509.Certificate) -> bytes:
    # SHA-1 of the subjectPublicKey BIT STRING: what an OCSP CertID's issuerKeyHash holds.
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _name_hash(cert: x509.Certificate) -> bytes:
    return hashlib.sha1(cert.subject.public_bytes(serialization.Encoding.DER)).digest()


@dataclass
class OcspResponder:
    """A running responder: its port, the CAs it answers for, and the questions so far."""

    port: int
    next_update: timedelta | None = timedelta(hours=1)  # None: answers carry no nextUpdate
    _authorities: dict[tuple[bytes, bytes], _Authority] = field(default_factory=dict, repr=False)
    _status: dict[tuple[bytes, int], str] = field(default_factory=dict, repr=False)
    _queries: list[OcspQuery] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def answer_for(self, ca: Issued, *, now: datetime) -> None:
        """Answer questions about certificates `ca` issued, signed by a new delegated signer."""
        with self._lock:
            self._authorities[(_name_hash(ca.cert), _key_hash(ca.cert))] = _Authority(ca, issue_ocsp_signer(ca, now=now))

    def set_status(self, issuer: x509.Certificate, serial: int, status: str) -> None:
        """What to answer about certificate `serial` of `issuer`: good, revoked, unknown or unavailable."""
        if status not in (*_CERT_STATUS, UNAVAILABLE):
            raise ValueError(f"unknown OCSP status {status!r}")
        with self._lock:
            self._status[(_key_hash(issuer), serial)] = status

    def queries(self) -> list[OcspQuery]:
        with self._lock:
            return list(self._queries)

    def clear(self) -> None:
        with self._lock:
            self._queries.clear()

    def stop(self) -> None:
        """Take the responder down: from now on connections to its port are refused."""
        if self._stop is not None:
            self._stop()

    def respond(self, method: str, der: bytes | None) -> tuple[int, bytes]:
        """(HTTP status, body) for one DER request (None: unreadable)."""
        try:
            request = ocsp.load_der_ocsp_request(der) if der else None
        except ValueError:
            request = None
        if request is None:
            return self._record(method, None, "malformed", ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        serial = request.serial_number
        with self._lock:
            authority = self._authorities.get((request.issuer_name_hash, request.issuer_key_hash))
            status = self._status.get((request.issuer_key_hash, serial), GOOD)
        if authority is None or not isinstance(request.hash_algorithm, hashes.SHA1):
            return self._record(method, serial, "unauthorized", ocsp.OCSPResponseStatus.UNAUTHORIZED)
        if status == UNAVAILABLE:
            self._remember(OcspQuery(method, serial, UNAVAILABLE))
            return 503, b""
        now = datetime.now(timezone.utc)
        revoked = status == REVOKED
        builder = (ocsp.OCSPResponseBuilder()
                   .add_response_by_hash(request.issuer_name_hash, request.issuer_key_hash, serial, hashes.SHA1(),
                                         _CERT_STATUS[status], now - CLOCK_SLACK,
                                         now + self.next_update if self.next_update is not None else None,
                                         now - timedelta(hours=1) if revoked else None, None)
                   .responder_id(ocsp.OCSPResponderEncoding.HASH, authority.signer.cert)
                   .certificates([authority.signer.cert]))
        response = builder.sign(authority.signer.key, hashes.SHA256())
        self._remember(OcspQuery(method, serial, status))
        return 200, response.public_bytes(serialization.Encoding.DER)

    def _record(self, method, serial, answer, status) -> tuple[int, bytes]:
        self._remember(OcspQuery(method, serial, answer))
        return 200, ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)

    def _remember(self, query: OcspQuery) -> None:
        with self._lock:
            self._queries.append(query)


def request_from_path(path: str) -> bytes | None:
    """The DER request of a GET: the URL-encoded base64 after the responder's own path. Base64
    may hold `/`, escaped or not, so the longest tail that decodes wins."""
    parts = path.split("?", 1)[0].split("/")
    for i in range(1, len(parts)):
        text = unquote("/".join(parts[i:]))
        if not text:
            continue
        try:
            der = base64.b64decode(text, validate=True)
            ocsp.load_der_ocsp_request(der)
            return der
        except (binascii.Error, ValueError):
            continue
    return None


def _make_handler(responder: OcspResponder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one answer per connection, closed after it: nginx reads to EOF

        def _answer(self, der: bytes | None) -> None:
            status, body = responder.respond(self.command, der)
            self.send_response(status)
            if body:
                self.send_header("Content-Type", "application/ocsp-response")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (stdlib name)
            self._answer(request_from_path(self.path))

        def do_POST(self) -> None:  # noqa: N802
            length = min(int(self.headers.get("Content-Length") or 0), 65536)
            self._answer(self.rfile.read(length) if length else None)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # callers read `responder.queries()`

    return Handler


@contextmanager
def running_ocsp_responder(next_update: timedelta | None = timedelta(hours=1)) -> Iterator[OcspResponder]:
    """Serve an OCSP responder on 127.0.0.1 (a free port) in a thread; stop it on exit."""
    responder = OcspResponder(port=0, next_update=next_update)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(responder))
    server.daemon_threads = True
    responder.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    responder._stop = stop
    try:
        yield responder
    finally:
        stop()
