"""MTLS032: `forward ... as` and `clear_headers` refuse header names that break HTTP or that
mtlsc owns, with a located diagnostic naming why and a fix. The lists are data in
`mtlsc/nginx_facts.py`; these tests hold one trigger and one clean case per category."""

from __future__ import annotations

import pytest

from mtlsc import nginx_facts
from mtlsc.emit import quote
from mtlsc.lower import lower
from mtlsc.parse import parse
from mtlsc.source import Source
from support import REPO

CA = str(REPO / "policies" / "ca" / "partners-root.pem")


def policy(forward: str, top: str = "") -> str:
    return (f'{top}\nca partners {{ bundle "{CA}" }}\n'
            'server api.example.com {\n  certificate "/x.crt" key "/x.key"\n  backend "http://127.0.0.1:8080"\n'
            f'  route /p/ {{ require partners  allow any  forward {forward} }}\n}}\n')


def diagnostics(text: str):
    tree, diags = parse(Source("p.mtls", text))
    assert tree is not None, diags
    return lower([tree])


def codes(text: str) -> list[str]:
    return [d.code for d in diagnostics(text)[1]]


CATEGORIES = {
    "hop-by-hop": ("Transfer-Encoding", "hop-by-hop"),
    "framing": ("Content-Length", "frames the request body"),
    "routing": ("Host", "routes the request"),
    "credentials": ("Authorization", "carries credentials"),
}


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_mtls032_triggers_for_each_category(category):
    name, words = CATEGORIES[category]
    text = policy(f'subject as "{name}"')
    _, diags = diagnostics(text)
    assert [d.code for d in diags] == ["MTLS032"]
    d = diags[0]
    assert d.message.startswith(f"`{name}` ") and words in d.message
    assert "pick a name of your own, e.g. `X-Client-Subject`" in d.help
    line = text.splitlines()[d.span.line - 1]
    assert line[d.span.col - 1 : d.span.end_col - 1] == f'"{name}"', "the caret is on the header string"


def test_mtls032_triggers_on_the_message_the_issue_quotes():
    _, diags = diagnostics(policy('serial as "Content-Length"'))
    assert diags[0].message == "`Content-Length` frames the request body: a forged value smuggles requests toward the backend"
    assert diags[0].help == "pick a name of your own, e.g. `X-Client-Serial`"


@pytest.mark.parametrize("name", ["content-length", "HOST", "x-forwarded-for", "CoNNecTion", "cookie", "x-real-ip"])
def test_mtls032_triggers_case_insensitively(name):
    assert codes(policy(f'subject as "{name}"')) == ["MTLS032"]


@pytest.mark.parametrize("name", [n for g in nginx_facts.RESERVED_HEADERS for n in g.names])
def test_mtls032_triggers_on_every_listed_name(name):
    assert codes(policy(f'subject as "{name}"')) == ["MTLS032"]


def test_mtls032_triggers_on_another_fields_default_header():
    _, diags = diagnostics(policy('subject as "X-Client-Verify"'))
    assert [d.code for d in diags] == ["MTLS032"]
    assert "`forward verify`" in diags[0].message and "X-Client-Subject" in diags[0].help
    assert codes(policy('verify as "x-client-subject"')) == ["MTLS032"]


def test_mtls032_triggers_in_clear_headers():
    _, diags = diagnostics(policy("subject", top='clear_headers "X-Legacy" "Cookie"'))
    assert [d.code for d in diags] == ["MTLS032"]
    assert diags[0].message.startswith("`Cookie` carries credentials")
    assert diags[0].span.line == 1 and diags[0].span.col == len('clear_headers "X-Legacy" ') + 1


def test_mtls032_clean_own_default_and_custom_and_well_known_names():
    assert codes(policy('subject as "X-Client-Subject"  verify')) == []
    assert codes(policy('subject as "X-Remote-User"  verify as "ssl-client-verify"  cert as "X-Forwarded-Client-Cert"')) == []
    assert codes(policy('fingerprint as "X-Amzn-Mtls-Clientcert-Leaf"  serial as "X-Forwarded-Hostname"')) == []


def test_mtls032_clean_clear_headers_may_name_mtlsc_defaults_and_well_known_names():
    assert codes(policy("subject", top='clear_headers "X-Client-Verify" "X-SSL-Client-DN" "X-My-Id"')) == []


def test_an_unsafe_name_is_mtls020_not_mtls032():
    assert codes(policy('subject as "X_Client"')) == ["MTLS020"]
    assert codes(policy("subject", top='clear_headers "a b"')) == ["MTLS020"]


def test_reserved_and_well_known_lists_are_valid_distinct_header_names():
    reserved = [n.lower() for g in nginx_facts.RESERVED_HEADERS for n in g.names]
    well_known = [n.lower() for n in nginx_facts.WELL_KNOWN_IDENTITY_HEADERS]
    assert all(quote.header_problem(n) is None for n in reserved + well_known)
    assert len(well_known) == len(set(well_known)), "WELL_KNOWN_IDENTITY_HEADERS is deduplicated"
    assert not set(reserved) & set(well_known), "a well-known identity header is never reserved"
    defaults = {f.default_header.lower() for f in nginx_facts.FORWARD_FIELDS.values()}
    assert not set(reserved) & defaults
    for name in ("x-forwarded-client-cert", "client-cert", "ssl-client-verify", "x-ssl-client-s-dn",
                 "x-amzn-mtls-clientcert", "x-remote-user", "x-client-cert-spiffe", "x-arr-clientcert"):
        assert name in well_known
