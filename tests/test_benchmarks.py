"""The benchmark machinery (`python -m benchmarks`) on tiny sizes: every stage runs and reports.

No timing assertions: the benchmark itself is the gate (docs/performance.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks` sits beside `tests`

from benchmarks import cli_bench, compile_bench, report, run, runtime, synth
from benchmarks.load import Target, one_request, run_load
from mtlsc import pipeline
from mtlsc.emit.testscript import read_table


def test_synthetic_policies_compile_without_errors(tmp_path):
    for shape in (synth.Shape(10, 10), synth.Shape(25, 40, cas=2), synth.Shape(3, 0, cas=1)):
        result = pipeline.compile_policy([str(synth.write_policy(tmp_path, shape))])
        assert not result.failed, [d.message for d in result.diagnostics]
        conf = result.outputs["nginx/api.bench.example_443.conf"]
        assert conf.count("location ") >= shape.routes
        if shape.identities:
            assert synth.subject(0) in conf and synth.fingerprint(9) in conf


def test_sampled_allow_lists_keep_tests_small(tmp_path):
    """A 300-identity allow list gets cast.IDENTITY_SAMPLE identity cases, not 300."""
    from mtlsc.model.cast import IDENTITY_SAMPLE

    result = pipeline.compile_policy([str(synth.write_policy(tmp_path, synth.Shape(3, 300, cas=1)))])
    cases = read_table(result.outputs["tests.sh"])
    partner = [c for c in cases if "/partner/" in getattr(c, "where", "") and c.label.startswith("identity id")]
    assert 0 < len(partner) <= IDENTITY_SAMPLE


def test_compile_and_peer_measurements(tmp_path):
    shape = compile_bench.measure_shape(tmp_path, synth.Shape(10, 10), repeats=1, timeout=120, peers=True,
                                        progress=lambda _: None)
    for op in ("check", "compile", "crossplane"):
        assert shape.runs[op].error is None and len(shape.runs[op].seconds) == 1, (op, shape.runs[op])
    gixy = shape.runs["gixy"]
    assert gixy.seconds or "gixy" in gixy.error  # measured, or why not is said
    assert "emit tests.sh" in shape.phases and shape.outputs["tests.sh"] > 0


def test_a_failing_process_is_reported_with_its_last_error_line(tmp_path):
    with pytest.raises(RuntimeError, match="error"):
        compile_bench.timed_process(compile_bench.command("mtlsc") + ["check", str(tmp_path / "missing.mtls")],
                                    compile_bench.OK_CODES["check"], timeout=60)
    with pytest.raises(RuntimeError, match="still running after 1 s"):
        compile_bench.timed_process([sys.executable, "-c", "import time; time.sleep(30)"], {0}, timeout=1)


def test_worker_reports_a_failure(tmp_path):
    with pytest.raises(RuntimeError):
        compile_bench.worker("phases", str(tmp_path / "missing.mtls"), timeout=60)


@pytest.mark.nginx
def test_load_client_presents_certificates(tmp_path, nginx_bin):
    pki = runtime.make_pki(tmp_path)
    port = runtime.free_port()
    conf = runtime.emitted_conf(tmp_path, pki, port, 10)
    with runtime.running_nginx(conf, tmp_path / "nginx", ports=[port], nginx_bin=nginx_bin):
        allowed = Target(port, synth.SERVER, runtime.PATH, str(pki.server_ca), *map(str, pki.allowed))
        stranger = Target(port, synth.SERVER, runtime.PATH, str(pki.server_ca), *map(str, pki.stranger))
        anonymous = Target(port, synth.SERVER, runtime.PATH, str(pki.server_ca))
        assert one_request(allowed) == 200
        assert one_request(stranger) == 403
        assert one_request(anonymous) == 403
        for keepalive in (True, False):
            result = run_load(allowed, requests=30, processes=2, keepalive=keepalive, max_seconds=30)
            assert (result.requests, result.errors) == (30, 0)
        assert run_load(stranger, requests=10, expect=200, max_seconds=30).errors == 10


@pytest.mark.nginx
def test_quick_machinery_end_to_end(tmp_path, nginx_bin):
    """Every section on the tiny plan, then the report with its target table."""
    plan = run.tiny()
    text = run.run(plan, tmp_path, sections={"compile", "runtime", "cli"}, progress=lambda _: None)
    for heading in ("## Targets", "## Compile cost", "### Growth per step", "## Against peers",
                    "## Runtime cost", "### `nginx -t` and reload", "## CLI latency"):
        assert heading in text
    assert "hand-written verify on" in text and runtime.NO_GATE in text
    assert "compile <= 2x crossplane parse" in text and "cold `mtlsc check` <= 120 ms median" in text


def test_main_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "QUICK", run.tiny())
    out = tmp_path / "performance.md"
    assert run.main(["--quick", "--only", "compile", "--out", str(out), "--workdir", str(tmp_path / "w")]) == 0
    text = out.read_text()
    assert text.startswith("# Performance") and "| machine |" in text and "## Compile cost" in text


@pytest.mark.nginx
def test_lab_timing_reports_each_policy(tmp_path, nginx_bin):
    labs = cli_bench.measure_lab(tmp_path, 1, ["partner-api"])
    assert labs[0].error is None and labs[0].passed > 0 and labs[0].failed == 0


def test_report_verdicts_without_measurements():
    assert report.verdicts(None, [], None, None, None) == []
    assert report.table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
