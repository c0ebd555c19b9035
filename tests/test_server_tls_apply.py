"""`mtlsc apply` keeps what one compile keeps (issue 16): the shared file's default server of each
address carries the TLS profile of the servers installed there, an `old` server's DH file is
installed with its trust files, and separately applied policies with different profiles on one
address are refused (nginx takes the protocols from the address's default server: MTLS241)."""

from __future__ import annotations

from mtlsc.apply.history import ServerRecord
from mtlsc.apply.plan import conflicts, shared_file


def _rec(slug: str, listens: list[str], tls: str, names: list[str]) -> ServerRecord:
    return ServerRecord(slug=slug, label=f"{names[0]}:{listens[0]}", policy=f"/p/{slug}.mtls", entry=1, files=[],
                        names=names, listens=listens, tls=tls)


def test_shared_file_default_servers_carry_each_address_profile():
    text = shared_file({"a": _rec("a", ["8443"], "modern", ["a.example.com"]),
                        "b": _rec("b", ["9443"], "intermediate", ["b.example.com"])}).decode()
    modern = text[text.index("listen 8443 ssl default_server"):]
    assert modern.index("ssl_protocols TLSv1.3;") < modern.index("}")
    inter = text[text.index("listen 9443 ssl default_server"):]
    assert inter.index("ssl_protocols TLSv1.2 TLSv1.3;") < inter.index("}")


def test_records_from_before_keep_intermediate():
    assert ServerRecord.from_json({"slug": "a", "label": "a", "policy": "/p", "entry": 1, "files": []}).tls == "intermediate"


def test_conflicts_refuse_two_profiles_on_one_address():
    new = {"a": _rec("a", ["443"], "modern", ["a.example.com"])}
    kept = {"b": _rec("b", ["443"], "intermediate", ["b.example.com"])}
    assert any("MTLS241" in p for p in conflicts(new, kept))
    assert conflicts(new, {"b": _rec("b", ["443"], "modern", ["b.example.com"])}) == []
