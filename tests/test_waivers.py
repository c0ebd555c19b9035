"""`waive CODE "reason"` and `--strict`, through the command line: a waived finding is printed with
its reason and does not count; `--strict` fails on unwaived warnings only; errors cannot be
waived; a waiver that silences nothing is reported (MTLS149)."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timezone

from mtlsc import pipeline
from mtlsc.checks import Check, CheckContext, run_checks
from mtlsc.diagnostics import Finding, Severity
from support import REPO, run_cli

ROOT = REPO / "policies" / "ca" / "internal-root.pem"


def policy(tmp_path, body: str, top: str = "", name: str = "p.mtls") -> str:
    """A server whose route `/partner/` requires `internal` with no allow list (MTLS207, a warning)."""
    text = textwrap.dedent(f"""\
        {top}
        ca internal {{ bundle "{ROOT}"  depth 0 }}
        server api.example.com {{
          certificate "/etc/nginx/tls/a.crt" key "/etc/nginx/tls/a.key"  backend "http://127.0.0.1:8080"
          route = /healthz {{ public }}
        """) + textwrap.indent(textwrap.dedent(body), "  ") + "}\n"
    path = tmp_path / name
    path.write_text(text)
    return str(path)


UNWAIVED = """\
route /partner/ { require internal }
"""
IN_ROUTE = """\
route /partner/ {
  require internal
  waive MTLS207 "the internal CA issues only to this API"
}
"""


def test_waived_warning_is_printed_with_its_reason_and_does_not_fail(tmp_path):
    code, _, err = run_cli("check", policy(tmp_path, IN_ROUTE))
    assert code == 0, err
    assert "warning[MTLS207]: route `/partner/` requires a certificate of `internal` but allows no identities: " \
           "every certificate that CA issued passes (waived: the internal CA issues only to this API)" in err
    assert "0 errors, 0 warnings, 1 waived" in err
    assert "MTLS149" not in err


def test_strict_turns_unwaived_warnings_into_errors(tmp_path):
    path = policy(tmp_path, UNWAIVED)
    assert run_cli("check", path)[0] == 0
    code, _, err = run_cli("check", "--strict", path)
    assert code == 1 and "error[MTLS207]" in err
    code, _, err = run_cli("compile", "--strict", path, "-o", str(tmp_path / "out"))
    assert code == 1 and not (tmp_path / "out").exists()


def test_strict_passes_when_every_warning_is_waived(tmp_path):
    code, _, err = run_cli("check", "--strict", policy(tmp_path, IN_ROUTE))
    assert code == 0, err
    assert "(waived: the internal CA issues only to this API)" in err


def test_strict_leaves_notes_alone(tmp_path):
    # MTLS105 (a note) fires for every server with public routes and client verification.
    code, _, err = run_cli("check", "--strict", policy(tmp_path, 'route /p/ { require internal  allow any }\n'))
    assert code == 0, err
    assert "note[MTLS105]" in err


def test_waiver_in_the_server_block_covers_its_routes(tmp_path):
    code, _, err = run_cli("check", "--strict", policy(tmp_path, UNWAIVED + 'waive MTLS207 "dedicated CA"\n'))
    assert code == 0, err
    assert "(waived: dedicated CA)" in err


def test_top_level_waiver_covers_its_file_only(tmp_path):
    waived = policy(tmp_path, UNWAIVED, top='waive MTLS207 "dedicated CA"', name="a.mtls")
    other = tmp_path / "b.mtls"
    other.write_text(textwrap.dedent("""\
        server b.example.com {
          certificate "/etc/nginx/tls/b.crt" key "/etc/nginx/tls/b.key"  backend "http://127.0.0.1:8080"
          route /b/ { require internal }
        }
        """))
    code, out, _ = run_cli("check", "--strict", "--format", "json", waived, str(other))
    assert code == 1
    found = {(d["file"].rsplit("/", 1)[-1], d["line"]): d["waived"] for d in json.loads(out)["diagnostics"]
             if d["code"] == "MTLS207"}
    assert found == {("a.mtls", 6): "dedicated CA", ("b.mtls", 3): None}


def test_waiver_in_an_identity_block(tmp_path):
    path = tmp_path / "p.mtls"
    path.write_text(textwrap.dedent(f"""\
        ca internal {{ bundle "{ROOT}"  depth 0 }}
        identity legacy {{ serial "0A"  issuer "CN=Retired CA,O=Acme"  waive MTLS106 "pinned until the old CA is gone" }}
        server api.example.com {{
          certificate "/etc/nginx/tls/a.crt" key "/etc/nginx/tls/a.key"  backend "http://127.0.0.1:8080"
          route = /healthz {{ public }}
          route /api/ {{ require internal  allow legacy }}
        }}
        """))
    code, _, err = run_cli("check", "--strict", str(path))
    assert code == 0, err
    assert "[MTLS106]" in err and "(waived: pinned until the old CA is gone)" in err


def test_waiver_in_a_ca_block_covers_findings_pointing_into_it(tmp_path):
    # No IR check of this family points into a `ca` block, so a stand-in check does.
    path = policy(tmp_path, 'route /p/ { require internal  allow any }\n')
    text = open(path).read().replace('depth 0 }', 'depth 0  waive MTLS299 "known" }')
    open(path, "w").write(text)
    result = pipeline.check([path])
    ca_span = result.policy.cas[0].span

    def at_ca(ctx):
        yield Finding(ca_span, "stand-in finding")

    def elsewhere(ctx):
        yield Finding(result.policy.servers[0].span, "stand-in finding")

    ctx = CheckContext(result.policy, result.pki, datetime.now(timezone.utc))
    [inside] = run_checks(ctx, (Check("MTLS299", Severity.WARNING, at_ca),))
    [outside] = run_checks(ctx, (Check("MTLS299", Severity.WARNING, elsewhere),))
    [error] = run_checks(ctx, (Check("MTLS299", Severity.ERROR, at_ca),))
    assert inside.waived == "known" and not outside.waived and not error.waived


def test_errors_cannot_be_waived(tmp_path):
    body = """\
    handshake require
    route /p/ { require internal  allow any }
    waive MTLS101 "we know"
    """
    path = policy(tmp_path, body)  # /healthz is public behind `handshake require`: MTLS101
    code, _, err = run_cli("check", path)
    assert code == 1
    assert "error[MTLS101]" in err and "(waived" not in err
    assert "warning[MTLS149]: `MTLS101` is an error: a waiver cannot silence it" in err


def test_stale_waiver_is_reported_and_fails_strict(tmp_path):
    path = policy(tmp_path, 'route /p/ { require internal  allow any  waive MTLS207 "old reason" }\n')
    code, _, err = run_cli("check", path)
    assert code == 0 and "warning[MTLS149]: nothing in this block reports `MTLS207`: the waiver is unused" in err
    assert run_cli("check", "--strict", path)[0] == 1


def test_json_output_carries_the_reason(tmp_path):
    code, out, _ = run_cli("check", "--format", "json", policy(tmp_path, IN_ROUTE))
    assert code == 0
    [d] = [d for d in json.loads(out)["diagnostics"] if d["code"] == "MTLS207"]
    assert d["waived"] == "the internal CA issues only to this API" and d["severity"] == "warning"
