"""Properties over large input spaces: no traceback on any text, and every generated policy
compiles to a config the real nginx accepts (`nginx -t`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlsc import pipeline
from mtlsc.lab.nginx import test_config
from strategies import policies
from support import REPO

EXAMPLES = [p.read_text() for p in sorted((REPO / "policies").glob("*.mtls"))]


def _check_text(tmp_path, text: str):
    path = tmp_path / "p.mtls"
    path.write_text(text, encoding="utf-8")
    return pipeline.check([str(path)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_arbitrary_text_gives_diagnostics_not_tracebacks(tmp_path, text):
    result = _check_text(tmp_path, text)
    for d in result.diagnostics:
        assert d.code.startswith("MTLS") and d.span.line >= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_examples_give_diagnostics_not_tracebacks(tmp_path, data):
    """Token drops, swaps and duplications of real policies."""
    text = data.draw(st.sampled_from(EXAMPLES))
    tokens = text.split(" ")
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(tokens) - 1))
        op = data.draw(st.sampled_from(["drop", "dup", "swap"]))
        if op == "drop":
            tokens.pop(i)
        elif op == "dup":
            tokens.insert(i, tokens[i])
        else:
            j = data.draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
    result = _check_text(tmp_path, " ".join(tokens))
    assert all(d.code.startswith("MTLS") for d in result.diagnostics)


@pytest.mark.nginx
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=policies())
def test_generated_policies_compile_to_config_nginx_accepts(nginx_bin, text):
    # tmp_path is shared by every example hypothesis runs: give each its own directory.
    with tempfile.TemporaryDirectory() as tmp:
        _compile_and_nginx_t(Path(tmp), nginx_bin, text)


def _compile_and_nginx_t(tmp_path: Path, nginx_bin: str, text: str) -> None:
    path = tmp_path / "p.mtls"
    path.write_text(text, encoding="utf-8")
    result = pipeline.compile_policy([str(path)], analyse=False)
    assert not result.failed, [(d.code, d.message) for d in result.diagnostics]
    out = tmp_path / "out"
    for rel, body in result.outputs.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(body)
    # A real server certificate is needed for `nginx -t`: reuse one per run.
    cert, key = _server_cert(tmp_path)
    conf = "\n".join(f"include {p};" for p in sorted((out / "nginx").glob("*.conf")))
    for p in (out / "nginx").glob("*.conf"):
        p.write_text(p.read_text().replace('"/tmp/x.crt"', f'"{cert}"').replace('"/tmp/x.key"', f'"{key}"')
                     .replace('"/etc/nginx/mtls/', f'"{out}/mtls/'))
    ok, err = test_config(tmp_path / "prefix", conf, nginx_bin)
    assert ok, err + "\n" + text
    assert pipeline.compile_policy([str(path)], analyse=False).outputs == result.outputs


def _server_cert(tmp_path):
    from datetime import datetime, timezone

    from mtlsc.lab.pki import issue_server, make_root, write_pem

    now = datetime.now(timezone.utc)
    ca = make_root("prop server ca", now=now)
    srv = issue_server(ca, ["api.example.com"], now=now)
    cert, key = tmp_path / "srv.crt", tmp_path / "srv.key"
    write_pem(cert, srv.cert)
    write_pem(key, srv.key)
    return cert, key
