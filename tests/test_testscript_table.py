"""tests.sh's case table: a fixed bash body reads one record per case, and whatever a policy string
holds reaches the checks as the same bytes, never as code; the script grows with the cases only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mtlsc import pipeline
from mtlsc.emit import quote, render
from mtlsc.emit.quote import Safe
from mtlsc.emit.testscript import TABLE_END, Case, TlsCase, _Table, read_table, table_field

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks` sits beside `tests`

from benchmarks import synth  # noqa: E402

MARKER = "/tmp/mtlsc-table-pwned"
HOSTILE = ["", "-", "=", "%", "%41", "%%", "\\", "\\x41", "\\c", "a\\nb", "$(touch " + MARKER + ")",
           "`touch " + MARKER + "`", "'; touch " + MARKER + "; '", "\"$HOME\"", "${IFS}", "a\tb", "a\nb",
           "\nMTLSC_CASES\n", TABLE_END, " lead", "trail ", "  ", "a\rb", "é€ ✓", "*", "?[a]", "!!", "&", "~"]

# Replaces check and check_tls: print what the table handed them, one field per NUL-ended string.
_RECORDER = r"""
check() { printf 'case\0'; printf '%s\0' "$@"; }
check_tls() { printf 'tls\0'; printf '%s\0' "$@"; }
"""


def _script(table: _Table) -> str:
    text = render("tests.sh.j2", table=Safe(table.out.getvalue()), table_end=Safe(TABLE_END),
                  spoof_mark=Safe("mtlsc-spoofed"), spoof_headers=Safe("-"), files=[], unmintable=[])
    at = text.index("table_field() {")
    return text[:at] + _RECORDER + text[at:]


def _run(script: str, tmp_path: Path) -> list[tuple[str, ...]]:
    path = tmp_path / "tests.sh"
    path.write_text(script, encoding="utf-8", errors="surrogateescape")
    proc = subprocess.run(["bash", str(path), "--no-nginx-test"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    words = proc.stdout.split(b"\0")
    assert words[0].startswith(b"SKIP  nginx -t")
    words[0] = words[0].split(b"\n", 1)[1]
    out, i = [], 0
    while i < len(words) - 1:
        n = 5 if words[i] == b"tls" else 10
        out.append(tuple(w.decode("utf-8", "surrogateescape") for w in words[i: i + 1 + n]))
        i += 1 + n
    return out


def _expected(case: Case | TlsCase) -> tuple[str, ...]:
    if isinstance(case, TlsCase):
        return ("tls", case.title, case.host, str(case.port), case.mode, case.expect)
    return ("case", case.title, case.host, str(case.port), case.path, case.cert, str(case.status), case.body,
            case.fields, "all" if case.spoof else "", case.target)


def _hostile_cases() -> list[Case | TlsCase]:
    cases: list[Case | TlsCase] = []
    for i, s in enumerate(HOSTILE):
        other = HOSTILE[-1 - i]
        cases.append(TlsCase(s, other, 443, s, other))
        cases.append(Case(s, other, 8443, "/p" + s, s, other, i % 2 == 0, 403, s, other, s, other))
        cases.append(Case(other, s, 443, "/q" + other, other, s, True, 200, "", "", other, "/q" + other,
                          shows_path=True))
        cases.append(Case(other, s, 443, "/q" + other, s, "", False, 200, "", "", "", "/q" + other))  # target `=`
    return cases


def test_every_field_reaches_the_checks_as_written(tmp_path):
    table, cases = _Table(), _hostile_cases()
    for c in cases:
        (table.tls if isinstance(c, TlsCase) else table.case)(c)
    script = _script(table)
    assert _run(script, tmp_path) == [_expected(c) for c in cases]
    assert not Path(MARKER).exists()
    assert list(read_table(script)) == cases


def test_records_are_one_line_each_and_never_the_delimiter():
    for s in HOSTILE:
        field = table_field(s)
        assert field and not set(field) & {"\t", "\n", "\r", "\\"}
        assert field not in ("-", "=") or s == "" and field == "-"
    table = _Table()
    for c in _hostile_cases():
        (table.tls if isinstance(c, TlsCase) else table.case)(c)
    for line in table.out.getvalue().splitlines():
        assert line[0] in "tkarc" and line[1] == "\t"  # so no record is the heredoc's delimiter
    with pytest.raises(quote.UnsafeString):
        table_field("a\0b")


def test_a_table_that_is_not_the_emitters_fails_the_run(tmp_path):
    table = _Table()
    table.out.write("c\t0\t0\nk\t$(touch " + MARKER + ")\tx\t-\t-\nz\tx\n")
    script = render("tests.sh.j2", table=Safe(table.out.getvalue()), table_end=Safe(TABLE_END),
                    spoof_mark=Safe("mtlsc-spoofed"), spoof_headers=Safe("-"), files=[], unmintable=[])
    path = tmp_path / "tests.sh"
    path.write_text(script)
    proc = subprocess.run(["bash", str(path), "--no-nginx-test"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout.count("FAIL  case table record") == 3 and "0 passed, 3 failed, 1 skipped" in proc.stdout
    assert not Path(MARKER).exists()


def test_tests_sh_grows_with_the_cases_not_the_bash(tmp_path):
    """A case costs a record of a few numbers: the script is its fixed body plus a few bytes a case."""
    sizes = {}
    for routes in (20, 60):
        result = pipeline.compile_policy([str(synth.write_policy(tmp_path, synth.Shape(routes, 20)))])
        assert not result.failed
        script = result.outputs["tests.sh"]
        sizes[routes] = (len(script.encode()), sum(1 for c in read_table(script) if isinstance(c, Case)))
    (small, small_cases), (large, large_cases) = sizes[20], sizes[60]
    assert large_cases > 2 * small_cases
    assert (large - small) / (large_cases - small_cases) < 20  # bytes per added case
