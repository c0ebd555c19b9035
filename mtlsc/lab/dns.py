"""A DNS server on 127.0.0.1 for the lab and the tests: it answers A questions for the names it is
given and records every question, so nginx's `resolver` can be proven without the network.

Only what nginx's resolver asks is answered: A (the names' IPv4 addresses), AAAA (no data:
the lab is IPv4), anything else or an unknown name NXDOMAIN. One UDP datagram per question.
"""

from __future__ import annotations

import ipaddress
import socketserver
import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
NXDOMAIN = 3


@dataclass(frozen=True, slots=True)
class DnsQuery:
    name: str  # lower case, without the final dot
    qtype: int


@dataclass
class DnsServer:
    """A running DNS server: its port, the names it knows and the questions so far."""

    port: int
    names: dict[str, str] = field(default_factory=dict)  # lower-case name -> IPv4 address
    ttl: int = 60
    _queries: list[DnsQuery] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def address(self) -> str:
        """The address as nginx's `resolver` takes it."""
        return f"127.0.0.1:{self.port}"

    def queries(self) -> list[DnsQuery]:
        with self._lock:
            return list(self._queries)

    def answer(self, packet: bytes) -> bytes | None:
        """The reply to one query datagram, or None when it is not a query this server reads."""
        parsed = _question(packet)
        if parsed is None:
            return None
        ident, flags, name, qtype, question = parsed
        with self._lock:
            self._queries.append(DnsQuery(name, qtype))
            address = self.names.get(name)
        records = b""
        rcode = 0
        if address is None:
            rcode = NXDOMAIN
        elif qtype == TYPE_A:
            # A pointer to the name in the question (offset 12), then type, class, TTL and the address.
            records = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, self.ttl, 4) + ipaddress.IPv4Address(address).packed
        count = 1 if records else 0
        reply_flags = 0x8000 | (flags & 0x0100) | 0x0080 | rcode  # QR, RD copied, RA
        return struct.pack("!HHHHHH", ident, reply_flags, 1, count, 0, 0) + question + records


def _question(packet: bytes) -> tuple[int, int, str, int, bytes] | None:
    """(id, flags, name, type, the question section as sent) of a one-question query."""
    if len(packet) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, at = [], 12
    for _ in range(128):  # a name has at most 127 labels
        if at >= len(packet):
            return None
        size = packet[at]
        if size == 0 or size > 63:
            break
        labels.append(packet[at + 1: at + 1 + size].decode("ascii", "replace").lower())
        at += 1 + size
    if at + 5 > len(packet) or packet[at] != 0:
        return None
    qtype, qclass = struct.unpack("!HH", packet[at + 1: at + 5])
    if qclass != CLASS_IN:
        return None
    return ident, flags, ".".join(labels), qtype, packet[12: at + 5]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.dns.answer(data)
        if reply is not None:
            sock.sendto(reply, self.client_address)


@contextmanager
def running_dns_server(names: Mapping[str, str]) -> Iterator[DnsServer]:
    """Serve `names` (name -> IPv4 address) on 127.0.0.1 (a free UDP port) in a thread."""
    server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    dns = DnsServer(port=server.server_address[1], names={k.lower().rstrip("."): v for k, v in names.items()})
    server.dns = dns
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield dns
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
