"""The command line: exit codes, output files, formats; never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

from support import REPO, run_cli

EXAMPLE = "policies/partner-api.mtls"


def test_check_clean_example_exits_0():
    code, out, err = run_cli("check", EXAMPLE, cwd=REPO)
    assert code == 0, err
    assert "error[" not in err


def test_compile_writes_every_output(tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli("compile", EXAMPLE, "-o", str(out), cwd=REPO)
    assert code == 0, err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [".mtlsc-output", "mtls/api.example.com_443.ca.pem", "mtls/api.example.com_443.crl.pem",
                       "nginx/00-mtlsc.conf", "nginx/api.example.com_443.conf", "tests.sh", "variables.md"]
    assert (out / "tests.sh").stat().st_mode & 0o111


def test_compile_replaces_its_own_output_but_refuses_a_foreign_directory(tmp_path):
    out = tmp_path / "out"
    assert run_cli("compile", EXAMPLE, "-o", str(out), cwd=REPO)[0] == 0
    (out / "stale.conf").write_text("old")
    assert run_cli("compile", EXAMPLE, "-o", str(out), cwd=REPO)[0] == 0
    assert not (out / "stale.conf").exists()
    foreign = tmp_path / "conf.d"
    foreign.mkdir()
    (foreign / "site.conf").write_text("keep me")
    code, _, err = run_cli("compile", EXAMPLE, "-o", str(foreign), cwd=REPO)
    assert code == 2 and "not written by mtlsc" in err
    assert (foreign / "site.conf").read_text() == "keep me"


def test_errors_exit_1_and_write_nothing(tmp_path):
    bad = tmp_path / "bad.mtls"
    bad.write_text('server a.example { route /x/ { require nope } }\n')
    out = tmp_path / "out"
    code, _, err = run_cli("compile", str(bad), "-o", str(out))
    assert code == 1
    assert f"{bad}:1:40" in err and "MTLS018" in err
    assert not out.exists()


def test_missing_policy_file_exits_2(tmp_path):
    code, _, err = run_cli("check", str(tmp_path / "nope.mtls"))
    assert code == 2 and "MTLS900" in err


def test_usage_error_exits_2():
    assert run_cli("compile", EXAMPLE)[0] == 2  # no -o
    assert run_cli("frobnicate")[0] == 2


def test_json_format_is_machine_readable(tmp_path):
    bad = tmp_path / "bad.mtls"
    bad.write_text('identity x { subject "/CN=x" }\n')
    code, out, _ = run_cli("check", "--format", "json", str(bad))
    assert code == 1
    diag = json.loads(out)["diagnostics"][0]
    assert (diag["code"], diag["line"], diag["column"], diag["severity"]) == ("MTLS014", 1, 23, "error")


def test_binary_and_non_utf8_input_is_an_io_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bin.mtls"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = run_cli("check", str(bad))
    assert code == 2 and "Traceback" not in err


def test_help_everywhere():
    for args in ([], ["check"], ["compile"], ["demo-pki"]):
        proc = subprocess.run([sys.executable, "-m", "mtlsc", *args, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_version():
    proc = subprocess.run([sys.executable, "-m", "mtlsc", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("mtlsc ")


def test_pre_commit_hooks_name_real_commands():
    import yaml

    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"mtlsc-fmt", "mtlsc-check"}
    for hook in hooks:
        prog, *args = hook["entry"].split()
        assert prog == "mtlsc"
        proc = subprocess.run([sys.executable, "-m", "mtlsc", *args, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, hook


def test_ci_workflow_example_uses_real_commands():
    import yaml

    workflow = yaml.safe_load((REPO / "docs" / "examples" / "github-actions.yml").read_text())
    runs = " ".join(step.get("run", "") for step in workflow["jobs"]["mtlsc"]["steps"])
    for command in ("mtlsc fmt --check", "mtlsc check --format sarif", "mtlsc diff --git", "mtlsc explain --format md",
                    "--fail-on widening"):
        assert command in runs


def test_lab_without_nginx_says_how_to_install(tmp_path):
    code, out, err = run_cli("lab", "--nginx", str(tmp_path / "no-nginx"), str(REPO / "policies" / "partner-api.mtls"))
    assert code == 2 and "apt-get install nginx" in err
