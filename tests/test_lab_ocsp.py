"""The lab's OCSP responder and DNS server on their own: `openssl ocsp`, an independent client,
reads the responder's answers as good and revoked and verifies their signature; the DNS server
answers A questions for its names and NXDOMAIN for the rest."""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from mtlsc import dn
from mtlsc.lab.dns import TYPE_A, TYPE_AAAA, running_dns_server
from mtlsc.lab.ocsp import REVOKED, UNAVAILABLE, request_from_path, running_ocsp_responder
from mtlsc.lab.pki import issue_client, make_chain, write_pem

NOW = datetime.now(timezone.utc)


def _openssl_status(tmp_path, chain, leaf, url: str) -> str:
    write_pem(tmp_path / "issuer.pem", chain.issuing.cert)
    write_pem(tmp_path / "leaf.pem", leaf.cert)
    write_pem(tmp_path / "trust.pem", *(m.cert for m in chain.members))
    proc = subprocess.run(["openssl", "ocsp", "-issuer", str(tmp_path / "issuer.pem"), "-cert", str(tmp_path / "leaf.pem"),
                           "-url", url, "-CAfile", str(tmp_path / "trust.pem"), "-no_nonce", "-timeout", "10"],
                          capture_output=True, text=True, timeout=30)
    return proc.stdout + proc.stderr


def test_openssl_reads_good_and_revoked_answers_signed_by_the_delegated_responder(tmp_path):
    chain = make_chain("t", 1, now=NOW)
    subject = dn.x509_name(dn.parse_dn("CN=a,O=t"))
    good, bad = (issue_client(chain.issuing, subject, now=NOW) for _ in range(2))
    with running_ocsp_responder(next_update=timedelta(minutes=5)) as responder:
        responder.answer_for(chain.issuing, now=NOW)
        responder.set_status(chain.issuing.cert, bad.cert.serial_number, REVOKED)
        out = _openssl_status(tmp_path, chain, good, responder.url)
        assert "Response verify OK" in out and "leaf.pem: good" in out and "Next Update:" in out
        out = _openssl_status(tmp_path, chain, bad, responder.url)
        assert "Response verify OK" in out and "leaf.pem: revoked" in out
        assert [q.answer for q in responder.queries()] == ["good", "revoked"]
        assert {q.method for q in responder.queries()} == {"POST"}


def test_get_requests_decode_with_and_without_escaped_slashes_and_unavailable_is_503():
    chain = make_chain("t", 0, now=NOW)
    leaf = issue_client(chain.issuing, dn.x509_name(dn.parse_dn("CN=a")), now=NOW)
    der = ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, chain.issuing.cert, hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER)
    b64 = base64.b64encode(der).decode()
    assert request_from_path("/ocsp/" + quote(b64, safe="")) == der
    assert request_from_path("/" + b64) == der
    assert request_from_path("/not-a-request") is None
    with running_ocsp_responder() as responder:
        assert responder.respond("GET", der)[0] == 200  # unknown issuer: an OCSP `unauthorized`, HTTP 200
        assert responder.queries()[-1].answer == "unauthorized"
        responder.answer_for(chain.issuing, now=NOW)
        responder.set_status(chain.issuing.cert, leaf.cert.serial_number, UNAVAILABLE)
        assert responder.respond("GET", der) == (503, b"")


def _query(name: str, qtype: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def test_dns_server_answers_its_names_and_nxdomain_for_the_rest():
    with running_dns_server({"ocsp.lab.test": "127.0.0.1"}) as dns:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(_query("OCSP.lab.test", TYPE_A), ("127.0.0.1", dns.port))
            reply = s.recv(512)
            ident, flags, _, answers = struct.unpack("!HHHH", reply[:8])
            assert ident == 0x1234 and flags & 0x8000 and flags & 0xF == 0 and answers == 1
            assert reply.endswith(bytes([127, 0, 0, 1]))
            s.sendto(_query("ocsp.lab.test", TYPE_AAAA), ("127.0.0.1", dns.port))
            assert struct.unpack("!HHHH", s.recv(512)[:8])[3] == 0  # no IPv6 data, not an error
            s.sendto(_query("other.test", TYPE_A), ("127.0.0.1", dns.port))
            assert struct.unpack("!HH", s.recv(512)[:4])[1] & 0xF == 3  # NXDOMAIN
        assert [q.name for q in dns.queries()] == ["ocsp.lab.test", "ocsp.lab.test", "other.test"]
