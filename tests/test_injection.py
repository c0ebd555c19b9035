"""No policy string can inject into the emitted nginx config or tests.sh.

Policies are generated with hostile text (quotes, braces, `;`, `$`, `#`, backslashes, raw
newlines, control characters, non-ASCII, shell syntax) in every string that reaches an output.
For each, either mtlsc refuses the policy with a located diagnostic, or:
- every emitted nginx file parses (crossplane) to exactly the directives of the same policy with
  harmless placeholders instead of the hostile strings: same directives, nesting and argument
  counts, every argument identical except the ones a user string became, and each of those reads
  (after nginx's own unescaping) as the user string in its emitted form;
- a sample passes the real `nginx -t`, with the certificate, key and install directory created at
  the hostile paths themselves;
- tests.sh passes `bash -n`, and a sample runs (against a closed port) without executing anything
  a policy string says: payloads `$(touch MARKER)`, backticks and quote breaks never create MARKER.

Counts (cases generated, refused vs emitted, nginx -t runs, tests.sh runs) are printed by the last
test (`pytest -s`). `MTLSC_FUZZ=1` runs 3,000 generated policies, `MTLSC_FUZZ=N` runs N.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import crossplane
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlsc import dn, pipeline
from mtlsc.diagnostics import Severity
from mtlsc.lab.nginx import free_port, test_config
from mtlsc.lab.pki import issue_server, make_root, write_pem
from support import REPO

_FUZZ = os.environ.get("MTLSC_FUZZ", "")
CASES = 3000 if _FUZZ == "1" else int(_FUZZ) if _FUZZ.isdigit() and int(_FUZZ) > 1 else 300
NGINX_T_SAMPLE = 25 if CASES <= 300 else 100  # how many emitted cases also run nginx -t
SCRIPT_SAMPLE = 6 if CASES <= 300 else 30  # how many emitted tests.sh also run (harmlessly)
COUNTS: Counter = Counter()
MARKER = Path(tempfile.gettempdir()) / f"mtlsc-injection-marker-{os.getpid()}"
CA = REPO / "policies" / "ca"

# Pieces of hostile text; MARKER-touching payloads included.
PIECES = ['"', "'", "{", "}", ";", "$", "#", "\\", "\n", "\r", "\t", "\x00", "\x01", "\x1b", "\x7f", "`", " ", "é",
          "中", "\u202e", "\U0001f600", "$(touch {m})", "`touch {m}`", "'; touch {m}; '", '"; touch {m}; "', "${IFS}",
          "\\\"", "\\\\", "\\n", "\\x41", "} server { listen 1; } #", "include /etc/passwd;", "$host", "default",
          "~", "hostnames", "%", "..", "/", ",", "+", "=", "<", ">", "(", ")", "|", "&", "*", "!", "@"]
hostile = st.lists(st.one_of(st.sampled_from(PIECES).map(lambda p: p.replace("{m}", str(MARKER))),
                             st.text(alphabet="abcXYZ019-_. ", min_size=1, max_size=3)),
                   min_size=1, max_size=5).map("".join)
PCHARS = "abc019._~!&'()*+,=:@-"  # what a route path may hold (values.route_path)
path_part = st.text(alphabet=PCHARS + "$`\"{};# \\%?", min_size=1, max_size=6)

BENIGN = {
    "subject": "CN=MTLSCSLOTSUBJ,O=Acme", "attr": "MTLSCSLOTATTR", "pattern": "^MTLSCSLOTPAT-[0-9]+$",
    "issuer": "CN=MTLSCSLOTISSUER", "cert": "/MTLSCSLOTDIR/MTLSCSLOTCERT.crt",
    "key": "/MTLSCSLOTDIR/MTLSCSLOTKEY.key", "install": "/MTLSCSLOTDIR/MTLSCSLOTINSTALL",
    "body1": "MTLSCSLOTBODY1", "body2": "MTLSCSLOTBODY2", "path": "/pMTLSCSLOTPATH/", "header": "X-Inj-MTLSCSLOTHDR",
}
REGEX_SLOTS = ("attr", "pattern")  # become one regex map key together (the identity's constraints)
DN_SLOTS = ("subject", "issuer")  # become map keys in nginx's DN form


def _q(s: str) -> str:
    """A policy string literal whose value is `s` (`\\"` and `\\\\` are the only escapes)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_policy(slots: dict[str, str], port: int) -> str:
    s = {k: _q(v) for k, v in slots.items()}
    return f"""nginx ">= 1.22"
ca partners {{
  bundle {_q(str(CA / "partners-root.pem"))} {_q(str(CA / "partners-issuing.pem"))}
  depth 1
  crl {_q(str(CA / "partners-root.crl"))} {_q(str(CA / "partners-issuing.crl"))}
}}
identity subj {{ subject {s['subject']} }}
identity attrs {{ o {s['attr']}  cn ~ {s['pattern']} }}
identity pinned {{ serial "0A01" issuer {s['issuer']} }}
server api.example.com {{
  listen 127.0.0.1:{port}
  certificate {s['cert']} key {s['key']}
  backend "http://127.0.0.1:9"
  install {s['install']}
  reject no_cert 401 {s['body1']}
  reject forbidden 403 {s['body2']}
  route = /healthz {{ public }}
  route {slots['path']} {{ require partners  allow subj attrs pinned  forward subject as {s['header']} verify }}
}}
"""


@st.composite
def hostile_slots(draw) -> dict[str, str]:
    """Hostile values for some slots (the others keep their placeholder), each in a form that gets
    past the parser often enough to reach lowering and the emitters."""
    slots = dict(BENIGN)
    chosen = draw(st.lists(st.sampled_from(sorted(BENIGN)), min_size=1, max_size=5, unique=True))
    for slot in chosen:
        h = draw(hostile)
        if slot in ("subject", "issuer"):
            value = dn.escape_value(h) if draw(st.integers(0, 4)) else h
            slots[slot] = f"CN={value},O=Acme"
        elif slot == "attr":
            slots[slot] = dn.escape_value(h) if draw(st.booleans()) else h
        elif slot == "pattern":
            slots[slot] = "^" + (dn.pcre_literal(dn.escape_value(h)) if draw(st.booleans()) else h) + "$"
        elif slot in ("cert", "key"):
            slots[slot] = f"/MTLSCSLOTDIR/{h}.{slot}"
        elif slot == "install":
            slots[slot] = f"/MTLSCSLOTDIR/{h}"
        elif slot == "path":
            slots[slot] = "/p" + draw(path_part) + "/"
        elif slot == "header":
            slots[slot] = "X-Inj-" + h
        else:
            slots[slot] = h
    return slots


# ----- reading nginx config as nginx does --------------------------------------------------------

def nginx_value(arg: str) -> str:
    """An argument as nginx uses it. crossplane returns the token with its quotes removed and `\\"`
    unescaped; nginx also unescapes `\\'` and `\\\\` and turns `\\t \\r \\n` into controls; any other
    backslash pair stays (ngx_conf_read_token)."""
    out, i = [], 0
    while i < len(arg):
        if arg[i] == "\\" and i + 1 < len(arg):
            c = arg[i + 1]
            out.append({"t": "\t", "r": "\r", "n": "\n"}.get(c, c) if c in "\"'\\trn" else "\\" + c)
            i += 2
        else:
            out.append(arg[i])
            i += 1
    return "".join(out)


def parse_conf(text: str, tmp: Path) -> list[dict]:
    path = tmp / "x.conf"
    path.write_text(text, encoding="utf-8")
    res = crossplane.parse(str(path), single=True, strict=False, check_ctx=False, check_args=False, comments=False)
    assert res["status"] == "ok", res["errors"]
    return res["config"][0]["parsed"]


def _regex_of(policy, name: str) -> str:
    ident = next(i for i in policy.identities if i.name == name)
    return "~" + dn.constraints_regex(tuple(dn.AttrConstraint(a.attr, a.op, a.value) for a in ident.attrs))


def compare(benign: list[dict], hostile_: list[dict], subst: list[tuple[str, str]], regex: tuple[str, str],
            where: str = "") -> int:
    """Assert `hostile_` has exactly `benign`'s directives, and that each argument is the benign one
    with every placeholder replaced by the user's string in its emitted form. Returns the number
    of arguments that held a user string."""
    def key(d):  # proxy_set_header lines are sorted by header name, which the user string moves
        return d["directive"] == "proxy_set_header"

    in_map = where.endswith("/map")  # a map's entries parse as directives named by their keys
    b_rest, h_rest = [d for d in benign if not key(d)], [d for d in hostile_ if not key(d)]
    assert len(b_rest) == len(h_rest), f"directive count differs in {where}"
    if not in_map:
        assert [d["directive"] for d in b_rest] == [d["directive"] for d in h_rest], f"directives differ in {where}"
    user_args = 0
    for b, h in zip(b_rest, h_rest):
        here = f"{where}/{b['directive']}"
        if in_map:
            user_args += check_arg("map key", nginx_value(b["directive"]), nginx_value(h["directive"]), subst, regex, here)
        assert len(b["args"]) == len(h["args"]), f"argument count differs at {here}: {b['args']} / {h['args']}"
        for ba, ha in zip(b["args"], h["args"]):
            user_args += check_arg(b["directive"], nginx_value(ba), nginx_value(ha), subst, regex, here)
        assert ("block" in b) == ("block" in h), f"block differs at {here}"
        if "block" in b:
            user_args += compare(b["block"], h["block"], subst, regex, here)
    b_psh = sorted(_expected(nginx_value(a), subst) for d in benign if key(d) for a in d["args"][:1])
    h_psh = sorted(nginx_value(a) for d in hostile_ if key(d) for a in d["args"][:1])
    assert b_psh == h_psh, f"proxy_set_header names differ in {where}"
    assert sorted(len(d["args"]) for d in benign if key(d)) == sorted(len(d["args"]) for d in hostile_ if key(d))
    return user_args + sum(1 for d in benign if key(d) and _expected(nginx_value(d["args"][0]), subst) != nginx_value(d["args"][0]))


# The map key of mtlsc's path-alias gate (mtlsc/model/locations.py `alias_regex`).
CASE_GATE = "~^(?:(?!"


def _expected(benign_value: str, subst: list[tuple[str, str]]) -> str:
    out = benign_value
    for placeholder, value in subst:
        out = out.replace(placeholder, value)
    return out


def check_arg(directive: str, b: str, h: str, subst, regex, where: str) -> int:
    if directive in ("map_hash_bucket_size", "map_hash_max_size"):
        return 0  # sized for the longest key, which a user string lengthens
    if b == regex[0]:
        assert h == regex[1], f"regex changed at {where}: {h!r} != {regex[1]!r}"
        return 1
    if b.startswith(CASE_GATE):  # route paths as PCRE literals inside the path-alias gate
        want = _expected(b, [(dn.pcre_literal(p), dn.pcre_literal(v)) for p, v in subst])
        assert h == want, f"case-variant gate changed at {where}: {h!r} != {want!r}"
        return int(want != b)
    want = _expected(b, subst)
    if want == b:
        assert h == b, f"argument changed at {where}: {b!r} became {h!r}"
        return 0
    if want.startswith("CN=") or want.startswith("0A01:"):  # an exact map key: nginx drops one leading `\`
        h = h[1:] if h.startswith("\\") else h
    assert h == want, f"user string changed at {where}: {h!r} != {want!r}"
    return 1


# ----- the property ----------------------------------------------------------------------------------

def _substitutions(slots: dict[str, str]) -> list[tuple[str, str]]:
    out = []
    for slot, placeholder in BENIGN.items():
        if slot in REGEX_SLOTS:
            continue
        value = slots[slot]
        if slot in DN_SLOTS:
            placeholder, value = dn.format_dn(dn.parse_dn(placeholder)), dn.format_dn(dn.parse_dn(value))
        elif slot == "install":
            value = value.rstrip("/")  # the emitter joins `<install>/<file>` without doubling the slash
        out.append((placeholder, value))
    return sorted(out, key=lambda p: -len(p[0]))


def compile_text(tmp: Path, text: str):
    path = tmp / "inj.mtls"
    path.write_text(text, encoding="utf-8")
    return pipeline.compile_policy([str(path)])


@pytest.fixture(scope="module")
def benign_outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("benign")
    port = free_port()
    result = compile_text(tmp, render_policy(BENIGN, port))
    assert not result.failed, [(d.code, d.message) for d in result.diagnostics]
    return port, result


@pytest.fixture(scope="module")
def server_pem():
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    srv = issue_server(make_root("injection server ca", now=now), ["api.example.com"], now=now)
    return srv.cert, srv.key


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(slots=hostile_slots())
def test_hostile_strings_are_refused_or_emitted_verbatim(benign_outputs, server_pem, nginx_bin, slots):
    port, benign = benign_outputs
    COUNTS["generated"] += 1
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        result = compile_text(tmp, render_policy(slots, port))
        if result.failed:
            COUNTS["refused"] += 1
            errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
            assert errors and all(d.code.startswith("MTLS") and d.span.line >= 1 for d in errors)
            for d in errors:
                COUNTS[f"refused {d.code}"] += 1
            return
        COUNTS["emitted"] += 1
        subst = _substitutions(slots)
        regex = (_regex_of(benign.policy, "attrs"), _regex_of(result.policy, "attrs"))
        assert sorted(result.outputs) == sorted(benign.outputs)
        user_args = 0
        for rel, text in benign.outputs.items():
            if rel.startswith("nginx/"):
                user_args += compare(parse_conf(text, tmp), parse_conf(result.outputs[rel], tmp), subst, regex, rel)
        COUNTS["user arguments compared"] += user_args
        script = tmp / "tests.sh"
        script.write_text(result.outputs["tests.sh"])
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert syntax.returncode == 0, syntax.stderr
        COUNTS["tests.sh bash -n"] += 1
        if COUNTS["nginx -t runs"] < NGINX_T_SAMPLE:
            _nginx_t_at_hostile_paths(tmp, result, server_pem, nginx_bin)
        if COUNTS["tests.sh runs"] < SCRIPT_SAMPLE:
            _run_script_harmlessly(tmp, script)


def _inside(root: Path, path: str) -> Path | None:
    """`path` (absolute, under /MTLSCSLOTDIR) moved under `root`, or None when it would leave it."""
    rel = path.removeprefix("/MTLSCSLOTDIR/")
    if rel == path or "\x00" in rel or any(part in ("..", ".") for part in rel.split("/")) or rel.startswith("/"):
        return None
    target = Path(os.path.normpath(root / rel))
    return target if target.is_relative_to(root) and target != root else None


def _nginx_t_at_hostile_paths(tmp: Path, result, server_pem, nginx_bin) -> None:
    """nginx -t on the emitted config with its certificate, key and install directory created at the
    (hostile) paths the policy names, moved under a temp dir: nginx must open exactly those files."""
    root = tmp / "files"
    server = result.policy.servers[0]
    cert, key, install = (_inside(root, p) for p in (server.certificate, server.key, server.install_dir))
    if cert is None or key is None or install is None or len({cert, key, install}) < 3:
        return
    try:
        write_pem(cert, server_pem[0])
        write_pem(key, server_pem[1])
        install.mkdir(parents=True, exist_ok=True)
    except OSError:  # a name the filesystem refuses (too long, a file where a directory must be)
        return
    for rel, text in result.outputs.items():
        if rel.startswith("mtls/"):
            (install / rel.removeprefix("mtls/")).write_text(text)
    confs = []
    for rel, text in result.outputs.items():
        if rel.startswith("nginx/"):
            conf = tmp / "conf" / rel.removeprefix("nginx/")
            conf.parent.mkdir(parents=True, exist_ok=True)
            # Only the /MTLSCSLOTDIR prefix moves: the hostile rest of each path stays as emitted.
            conf.write_text(text.replace("/MTLSCSLOTDIR/", f"{root}/"), encoding="utf-8")
            confs.append(conf)
    include = "\n".join(f'include "{c}";' for c in sorted(confs))
    ok, err = test_config(tmp / "prefix", include, nginx_bin)
    COUNTS["nginx -t runs"] += 1
    assert ok, err


def _run_script_harmlessly(tmp: Path, script: Path) -> str:
    """Run tests.sh against a closed port with no certificates: every case fails fast, nothing runs."""
    closed = free_port()
    certs = tmp / "no-certs"
    certs.mkdir(exist_ok=True)
    proc = subprocess.run(["bash", str(script), "--host", "127.0.0.1", "--port", str(closed), "--certs", str(certs),
                           "--no-nginx-test"], capture_output=True, text=True, timeout=300, cwd=tmp)
    COUNTS["tests.sh runs"] += 1
    assert re.search(r"^\d+ passed, \d+ failed", proc.stdout, re.M), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not MARKER.exists(), "a policy string ran a command in tests.sh"
    return proc.stdout


# ----- tests.sh: payloads aimed at the shell --------------------------------------------------------

SHELL_PAYLOADS = [f"$(touch {MARKER})", f"`touch {MARKER}`", f"'; touch {MARKER}; '", f'"; touch {MARKER}; "',
                  f"\\'$(touch {MARKER})\\'", f"a' \"$(touch {MARKER})\" 'b", f"$(touch${{IFS}}{MARKER})"]


@pytest.mark.parametrize("payload", SHELL_PAYLOADS)
def test_shell_payloads_never_run_in_tests_sh(tmp_path, payload):
    """The payload goes where the grammar lets it: DN subjects and issuers (which may hold `$`),
    reject bodies and paths (which may not: refused, then tried without `$`)."""
    if MARKER.exists():
        MARKER.unlink()
    no_dollar = payload.replace("$", "")
    slots = dict(BENIGN, subject=f"CN={dn.escape_value(payload)},O=Acme", issuer=f"CN={dn.escape_value(payload)}",
                 attr=dn.escape_value(payload), body1=no_dollar, body2=no_dollar,
                 path="/p" + re.sub(r"[^" + re.escape(PCHARS.replace("'", "")) + "]", "", payload) + "/")
    result = compile_text(tmp_path, render_policy(slots, free_port()))
    assert not result.failed, [(d.code, d.message) for d in result.diagnostics]
    script = tmp_path / "tests.sh"
    script.write_text(result.outputs["tests.sh"])
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    output = _run_script_harmlessly(tmp_path, script)
    assert str(MARKER) in output  # the payload reached the running script, as data
    COUNTS["shell payloads run"] += 1
    # and `$` in a body, a path or a header name is refused with MTLS020/MTLS021
    refused = compile_text(tmp_path, render_policy(dict(BENIGN, body1=payload), free_port()))
    if "$" in payload:
        assert refused.failed and {d.code for d in refused.diagnostics} >= {"MTLS020"}


def test_policy_file_name_cannot_inject(tmp_path):
    """The policy's own path is quoted in a comment of 00-mtlsc.conf: a newline in it must not end
    the comment."""
    name = tmp_path / "evil\nserver { listen 1; }\n#.mtls"
    name.write_text(render_policy(BENIGN, free_port()))
    result = pipeline.compile_policy([str(name)])
    assert not result.failed
    parsed = parse_conf(result.outputs["nginx/00-mtlsc.conf"], tmp_path)
    assert [d["directive"] for d in parsed] == ["map_hash_bucket_size", "map_hash_max_size", "variables_hash_bucket_size",
                                               "variables_hash_max_size", "server"]


def test_zz_injection_counts():
    """Runs last in this file: the counts for the report."""
    print("\ninjection counts: " + ", ".join(f"{k}: {v}" for k, v in sorted(COUNTS.items())))
    if COUNTS["generated"]:
        assert COUNTS["refused"] + COUNTS["emitted"] == COUNTS["generated"]
        assert COUNTS["emitted"] > 0 and COUNTS["refused"] > 0
    assert not MARKER.exists()
