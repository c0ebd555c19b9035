"""`mtlsc mint-cast` and tests.sh with the user's own PKI, made with plain `openssl` (tests/openssl_pki.py):
the cast minted from the user's CA keys makes the emitted tests.sh pass on the user's nginx with nothing
skipped; without it every case needing a certificate is skipped and the run fails unless --allow-skips; the
user's own certificates get on their nginx the answer `mtlsc test` gives them."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from mtlsc import pipeline
from mtlsc.lab.client import request
from mtlsc.lab.echo import running_echo_backend
from mtlsc.lab.nginx import free_port, nginx_command, running_nginx
from mtlsc.output import write_atomic
from mtlsc.policytest import find_server, load_tests
from mtlsc.policytest.run import nginx_reasons, observe_model
from openssl_pki import make_user_pki
from support import run_cli

pytestmark = pytest.mark.nginx


def _tests_sh(out: Path, certs: Path, server_ca: Path, nginx, *extra: str) -> subprocess.CompletedProcess:
    nginx_test = shlex.join([*nginx_command(nginx.nginx_bin, nginx.prefix), "-t"])
    return subprocess.run(["bash", str(out / "tests.sh"), "--certs", str(certs), "--server-ca", str(server_ca),
                           "--echo", "--nginx-test", nginx_test, *extra], capture_output=True, text=True, timeout=300)


def test_cast_minted_from_the_users_ca_keys_runs_tests_sh_with_nothing_skipped(tmp_path, nginx_bin):
    port, out, cast = free_port(), tmp_path / "out", tmp_path / "cast"
    with running_echo_backend() as echo:
        user = make_user_pki(tmp_path / "user", listen=f"127.0.0.1:{port}", backend=echo.url, install=str(out / "mtls"))
        code, _, err = run_cli("mint-cast", str(user.policy), "--ca-key", f"corp={user.corp_issuing.key}",
                               "--ca-key", f"partners={user.partners.key}", "--out", str(cast))
        assert code == 0, err
        assert "wrote 18 of 18 client certificates" in err and "not minted" not in err
        # What mint-cast asks of the user: put `<ca>/revoked` on the CRL, with their own tools.
        for ca, name in ((user.corp_issuing, "corp"), (user.partners, "partners")):
            assert f"revoke {cast / name / 'revoked.crt'}" in err
            ca.revoke(cast / name / "revoked.crt")
        user.write_crls()
        result = pipeline.compile_policy([str(user.policy)])
        assert not result.failed, [(d.code, d.message) for d in result.diagnostics]
        write_atomic(out, result.outputs)
        server_ca = user.dir / "server-ca" / "ca.pem"
        with running_nginx(f"include {out}/nginx/*.conf;", tmp_path / "nginx", ports=[port], nginx_bin=nginx_bin) as nginx:
            run = _tests_sh(out, cast, server_ca, nginx)
            assert run.returncode == 0, run.stdout + run.stderr
            assert run.stdout.rstrip().endswith(" passed, 0 failed"), run.stdout  # no "skipped"
            assert "PASS  api.example.com/corp/ (require corp): revoked certificate of ca corp -> 403 bad_cert" in run.stdout
            assert "look-alike: a sub-CA signed by ca partners" in run.stdout
            # `forward cert not_before not_after days_remaining` are checked against the files' own values
            assert "PASS  api.example.com/corp/ (require corp): identity alice -> 200" in run.stdout

            # Without the cast every case needing a certificate is skipped: the run fails unless allowed.
            empty = tmp_path / "empty"
            empty.mkdir()
            bare = _tests_sh(out, empty, server_ca, nginx)
            assert bare.returncode == 1, bare.stdout
            assert "skipped" in bare.stdout.splitlines()[-1] and " 0 failed" in bare.stdout.splitlines()[-1]
            assert "mtlsc mint-cast" in bare.stderr
            allowed = _tests_sh(out, empty, server_ca, nginx, "--allow-skips")
            assert allowed.returncode == 0, allowed.stdout + allowed.stderr

            # The user's own certificates get on their nginx what `mtlsc test` says.
            cases, diags, _ = load_tests(user.tests, result.policy)
            assert not diags
            server = find_server(result.policy, "api.example.com")
            files = [c for c in cases if c.client.file is not None]
            assert len(files) == 8
            for case in files:
                got = request("127.0.0.1", port, case.path, server_name=case.server,
                              cert=case.client.file.cert, key=case.client.file.key)
                model = observe_model(case, result.policy)
                assert (got.status, model.reasons[0] in nginx_reasons(server, got)) == (model.status, True), case.name
