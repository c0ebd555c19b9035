"""Attribute identities compile to regexes a reviewer cannot read, so each map entry of the emitted
config carries the rule in words: the constraints per attribute, and that each named attribute must
occur once (the rule of mtlsc/dn/match.py, documented in docs/language.md under `identity`)."""

from __future__ import annotations

import re

import crossplane

from mtlsc import pipeline
from support import REPO

CA_DIR = REPO / "policies" / "ca"
POLICY = f"""
ca partners {{
  bundle "{CA_DIR}/partners-root.pem" "{CA_DIR}/partners-issuing.pem"  depth 1
}}
identity eng  {{ ou ~ "^eng-[a-z]+$"  ou ~ "^[a-z]+-core$" }}
identity odd  {{ o "Say \\"hi\\", Inc"  cn ~ "^a$" }}
identity whole {{ subject "CN=x,O=Acme" }}
server api.example.com {{
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9"
  route = /healthz {{ public }}
  route /p/ {{ require partners  allow eng odd whole }}
}}
"""


def test_each_attribute_identity_gate_states_its_rule(tmp_path):
    path = tmp_path / "p.mtls"
    path.write_text(POLICY)
    result = pipeline.compile_policy([str(path)])
    assert not result.failed, result.diagnostics
    conf = result.outputs["nginx/api.example.com_443.conf"]
    notes = dict(re.findall(r"1;  # identity (\w+)(.*)$", conf, re.M))
    assert notes == {
        "eng": ": OU matches ^eng-[a-z]+$ and matches ^[a-z]+-core$, present once",
        "odd": ': O = "Say \\"hi\\", Inc" and CN matches ^a$, each present once',
        "whole": "",
    }
    conf_file = tmp_path / "server.conf"
    conf_file.write_text(conf)
    payload = crossplane.parse(str(conf_file), single=True, check_ctx=False, comments=True)
    assert payload["status"] == "ok", payload["errors"]
    comments = [d["comment"] for d in _walk(payload["config"][0]["parsed"]) if d["directive"] == "#"]
    assert ' identity odd: O = "Say \\"hi\\", Inc" and CN matches ^a$, each present once' in comments


def _walk(directives):
    for d in directives:
        yield d
        yield from _walk(d.get("block", []))
