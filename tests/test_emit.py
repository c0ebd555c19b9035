"""The emitted files: golden copies for every example policy, byte-identical on a second run, and
the nginx config's structure read back with crossplane (what nginx will really parse)."""

from __future__ import annotations

import crossplane
import pytest

from mtlsc import ir, pipeline
from mtlsc.emit import quote
from mtlsc.model.evaluate import identity_headers
from support import HERE, REPO, assert_golden

POLICIES = sorted(p.relative_to(REPO) for p in (REPO / "policies").glob("*.mtls"))


def _compile(policy, monkeypatch):
    monkeypatch.chdir(REPO)
    result = pipeline.compile_policy([str(policy)])
    assert not result.failed, result.diagnostics
    return result


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.stem)
def test_outputs_match_goldens(policy, monkeypatch):
    result = _compile(policy, monkeypatch)
    golden_dir = HERE / "golden" / policy.stem
    for rel, text in result.outputs.items():
        if rel.endswith(".pem"):
            continue  # re-encoded copies of the committed CA files
        assert_golden(golden_dir / rel, text)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.stem)
def test_output_is_deterministic(policy, monkeypatch):
    assert _compile(policy, monkeypatch).outputs == _compile(policy, monkeypatch).outputs


def _parse_conf(tmp_path, text):
    path = tmp_path / "server.conf"
    path.write_text(text)
    payload = crossplane.parse(str(path), single=True, check_ctx=False, comments=False)
    assert payload["status"] == "ok", payload["errors"]
    return payload["config"][0]["parsed"]


def _walk(directives, parent=None):
    for d in directives:
        yield d, parent
        yield from _walk(d.get("block", []), d)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.stem)
def test_config_structure(policy, monkeypatch, tmp_path):
    """Gates are `if ($var) { return ...; }` only; locations are `=` / `^~` / named; every
    proxied location sets or clears every identity header of its server."""
    result = _compile(policy, monkeypatch)
    for server in result.policy.servers:
        parsed = _parse_conf(tmp_path, result.outputs[f"nginx/{server.slug}.conf"])
        for d, parent in _walk(parsed):
            if d["directive"] == "if":
                assert len(d["args"]) == 1 and d["args"][0].startswith("$"), d
                assert [c["directive"] for c in d["block"]] == ["return"], d
            if d["directive"] == "location":
                assert d["args"][0] in ("=", "^~") or d["args"][0].startswith("@"), d
        locations = [d for d, _ in _walk(parsed) if d["directive"] == "location"]
        wanted = {h.lower() for h in identity_headers(server)}
        for loc in locations:
            block = loc["block"]
            if not any(c["directive"] == "proxy_pass" for c in block):
                continue
            set_here = {c["args"][0].lower() for c in block if c["directive"] == "proxy_set_header"}
            assert wanted <= set_here, (loc["args"], wanted - set_here)
        routes = {r.path for r in server.routes}
        gated_paths = {loc["args"][1] for loc in locations if len(loc["args"]) == 2}
        assert routes <= gated_paths


def test_quote_refuses_plain_strings_in_templates():
    from mtlsc.emit import UnquotedString, environment

    template = environment().from_string("{{ x }}")
    with pytest.raises(UnquotedString):
        template.render(x="user string")
    assert template.render(x=quote.nginx_text("a b")) == '"a b"'
