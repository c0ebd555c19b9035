"""`mtlsc audit` on the project's fixture configs (tests/fixtures/audit/): each trap -> its code ->
the nginx line. A fixture marks every line that must be reported with `# expect: CODE...` (one code
per finding); every warning or error found must be marked. Notes are checked where marked."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mtlsc.audit import audit
from mtlsc.codes import rules
from mtlsc.diagnostics import Severity
from mtlsc.lab.pki import make_chain, make_crl, write_pem
from support import HERE, REPO, run_cli

FIXTURES = HERE / "fixtures" / "audit"
NOW = datetime.now(timezone.utc)
MAIN = sorted(p.name for p in FIXTURES.glob("*.conf"))
_EXPECT = re.compile(r"# expect: ((?:MTLS\d{3} ?)+)")


def expected(paths) -> Counter:
    out = Counter()
    for path in paths:
        for n, line in enumerate(path.read_text().split("\n"), 1):
            m = _EXPECT.search(line)
            if m:
                for code in m[1].split():
                    out[(str(path), n, code)] += 1
    return out


def found(result, marked: Counter) -> Counter:
    out = Counter()
    for d in result.diagnostics:
        key = (d.span.path, d.span.line, d.code)
        if d.severity is not Severity.NOTE or key in marked:
            out[key] += 1
    return out


def _trust_files(dirpath: Path) -> None:
    chain = make_chain("bank", 2, now=NOW)
    write_pem(dirpath / "ca" / "chain.pem", *(m.cert for m in chain.members))
    write_pem(dirpath / "ca" / "root.crl", make_crl(chain.root, [], now=NOW, next_update=-timedelta(days=2)))
    public = (Path("/etc/ssl/certs/ca-certificates.crt").read_text().split("-----END CERTIFICATE-----")[0]
              + "-----END CERTIFICATE-----\n")
    (dirpath / "ca" / "public.pem").write_text(public)


@pytest.mark.parametrize("name", MAIN)
def test_fixture_reports_each_marked_trap_at_its_line(name, tmp_path):
    if name == "trust_files.conf":
        shutil.copy(FIXTURES / name, tmp_path / name)
        _trust_files(tmp_path)
        path = tmp_path / name
        files = [path]
    else:
        path = FIXTURES / name
        files = [path] + (sorted((FIXTURES / "conf.d").glob("*.conf")) if name == "with_includes.conf" else [])
    result = audit([str(path)], now=NOW)
    marked = expected(files)
    assert found(result, marked) == marked


def test_every_audit_code_has_a_fixture():
    codes = {code for (_, _, code) in expected(FIXTURES.rglob("*.conf"))}
    audit_codes = {c for c in rules() if c.startswith("MTLS5")}
    assert audit_codes - codes == {"MTLS545"}  # a note, shown below


def test_mtls545_a_trust_file_that_is_not_here_is_said_so():
    result = audit([str(FIXTURES / "blog_optional.conf")], now=NOW)
    notes = [d for d in result.diagnostics if d.code == "MTLS545"]
    assert [(d.span.line, "clients.pem" in d.message or "clients.crl" in d.message) for d in notes] == [(9, True), (10, True)]
    assert all("not checked" in d.message for d in notes)


def test_clean_config_has_no_warning_or_error():
    result = audit([str(FIXTURES / "clean.conf")], now=NOW)
    assert [d.code for d in result.diagnostics if d.severity is not Severity.NOTE] == []
    assert not result.failed


def test_every_finding_says_the_fix_and_what_import_does():
    for name in MAIN:
        for d in audit([str(FIXTURES / name)], now=NOW).diagnostics:
            if d.code.startswith("MTLS5") and d.code not in ("MTLS500", "MTLS501", "MTLS545"):
                assert d.help and "`mtlsc import`" in d.help, (d.code, d.help)


def test_nginx_t_dump_on_stdin_is_split_back_into_files(tmp_path):
    main = FIXTURES / "with_includes.conf"
    parts = [main, *sorted((FIXTURES / "conf.d").glob("*.conf"))]
    dump = "nginx: the configuration file ... syntax is ok\n" + "".join(
        f"# configuration file {p}:\n{p.read_text()}\n" for p in parts if "broken" not in p.name)
    result = audit(["-"], stdin_text=dump, now=NOW)
    codes = {(Path(d.span.path).name, d.span.line, d.code) for d in result.diagnostics}
    assert ("api.conf", 12, "MTLS514") in codes and ("api.conf", 11, "MTLS513") in codes


def test_cli_exit_codes_and_formats(tmp_path):
    code, out, err = run_cli("audit", str(FIXTURES / "header_spoof.conf"))
    assert code == 1 and "error[MTLS514]" in err and "header_spoof.conf:21:13" in err
    assert "= help: repeat `proxy_set_header" in err
    code, out, _ = run_cli("audit", "--format", "json", str(FIXTURES / "header_spoof.conf"))
    doc = json.loads(out)
    assert code == 1 and {d["code"] for d in doc["diagnostics"]} >= {"MTLS514", "MTLS513"}
    code, out, _ = run_cli("audit", "--format", "sarif", str(FIXTURES / "header_spoof.conf"))
    sarif = json.loads(out)
    assert {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]} >= {"MTLS514"}
    assert run_cli("audit", str(FIXTURES / "clean.conf"))[0] == 0
    assert run_cli("audit", "--strict", str(FIXTURES / "blog_optional.conf"))[0] == 1
    assert run_cli("audit", str(tmp_path / "missing.conf"))[0] == 2


@pytest.mark.parametrize("text", [
    "http { server { listen 443 ssl; location / { proxy_pass http://x; } }",  # unclosed
    "http {{ .Values }}",
    "server { listen ${PORT}; include /nonexistent/*.conf; }",
    "events {} http { map $ssl_client_s_dn $x { ~([ 1; } server { if ($x) { return 403; } } }",
    "http { server { location ~ ( { } location / { if ( { return 403; } } } }",
    "\x00\x01 garbage ;;; }}}",
    "http { server { ssl_verify_client optional_no_ca; location / { if ($ssl_client_verify) {} proxy_pass http://a; } } }",
])
def test_configs_it_does_not_understand_give_located_diagnostics_never_a_traceback(tmp_path, text):
    path = tmp_path / "odd.conf"
    path.write_text(text)
    code, out, err = run_cli("audit", str(path))
    assert code in (0, 1, 2) and "Traceback" not in err
    for line in err.splitlines():
        if line.startswith(("error[", "warning[")):
            assert "-->" in err


@pytest.mark.parametrize("policy", ["partner-api.mtls", "multi-ca.mtls", "revocation.mtls", "service-mesh.mtls"])
def test_mtlscs_own_compiled_output_passes_the_audit(policy, tmp_path):
    from mtlsc import pipeline
    from mtlsc.output import write_atomic

    result = pipeline.compile_policy([str(REPO / "policies" / policy)], now=NOW)
    assert not result.failed
    write_atomic(tmp_path / "out", result.outputs)
    (tmp_path / "nginx.conf").write_text("http {\n    include out/nginx/*.conf;\n}\n")
    found = audit([str(tmp_path / "nginx.conf")], now=NOW).diagnostics
    no_crl = "crl" not in (REPO / "policies" / policy).read_text()
    assert {d.code for d in found if d.severity is not Severity.NOTE} == ({"MTLS546"} if no_crl else set())
