"""Syntax and semantic errors: each case file's rendered diagnostics are a golden file.

Adding a case = adding `cases/syntax/NAME.mtls` (or a directory of files compiled together)
and running `MTLSC_UPDATE_GOLDENS=1 pytest` once, then reviewing `NAME.expected`.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mtlsc import dn, pipeline
from mtlsc.diagnostics import Severity
from mtlsc.review.fmt import _tokens, quote
from mtlsc.lab.pki import issue_client, write_pem
from mtlsc.parse import _keywords, closest_keyword, keywords_after
from support import HERE, REPO, assert_golden, run_cli
from test_checks_ir_nginx import CA_AND_SERVER, served

CASES = sorted(p for kind in ("syntax", "semantic") for p in (HERE / "cases" / kind).iterdir()
               if p.suffix == ".mtls" or p.is_dir())


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_case_diagnostics(case):
    files = sorted(str(p.relative_to(HERE)) for p in case.glob("*.mtls")) if case.is_dir() else [str(case.relative_to(HERE))]
    code, out, err = run_cli("check", *files, cwd=HERE)
    assert code == 1, err
    assert "Traceback" not in err
    assert "error[MTLS" in err
    golden = case / "expected" if case.is_dir() else case.with_suffix(".expected")
    assert_golden(golden, err)


# ----- keywords: "did you mean" comes from the grammar ------------------------------------------

# Every statement the examples leave out, so that the corpus holds every keyword of the grammar.
ALL_STATEMENTS = """\
nginx ">= 1.22" with njs
clear_headers "X-Custom"
resolver "127.0.0.53" timeout 5s
waive MTLS149 "corpus"
ca partners {
  bundle "ca/partners-root.pem" "ca/partners-issuing.pem"
  depth 1
  crl "ca/partners-root.crl" "ca/partners-issuing.crl"
  ocsp leaf responder "http://127.0.0.1:9/" cache 10m
}
ca laptops { leaf "ca/alice.pem" }
identity old { serial "0A"  issuer "CN=partners issuing,O=mtlsc lab" }
server api.example.com {
  listen 443
  certificate "/x.crt" key "/x.key"
  backend "https://127.0.0.1:8443"
  backend_paths case_sensitive
  backend_ca "ca/partners-root.pem"
  backend_name "backend.internal"
  backend_client_certificate "/c.crt" key "/c.key"
  backend_verify off
  tls intermediate
  hsts 2y include_subdomains preload
  stapling off
  install "/etc/nginx/mtls"
  reject forbidden 403 "no"
  route /a/ { forward serial issuer as "X-Client-Issuer"  require partners  allow old }
}
server legacy.example.com {
  certificate "/x.crt" key "/x.key"
  route / { passthrough  forward cert verify }
}
"""
CORPUS = {**{p.name: p.read_text(encoding="utf-8") for p in sorted((REPO / "policies").glob("*.mtls"))},
          "all-statements.mtls": ALL_STATEMENTS}
# (policy name, token) for each keyword of four letters or more; shorter ones (`ca`, `as`, `key`)
# leave short ones (`ca`, `as`, `key`) too little of themselves when misspelt to be recognised;
# a keyword's word used as a value (`ocsp leaf`) is a name there
KEYWORD_TOKENS = [(name, tok) for name, text in CORPUS.items() for tok in _tokens(text)
                  if tok.value in set(_keywords().values()) and len(tok.value) >= 4 and tok.type != "NAME"]


@pytest.fixture(scope="module")
def policies_copy(tmp_path_factory):
    """policies/ with its CA files: a misspelt copy of a policy still finds them."""
    d = tmp_path_factory.mktemp("typos") / "policies"
    shutil.copytree(REPO / "policies", d)
    return d


def test_the_corpus_holds_every_keyword_of_the_grammar():
    # A keyword added to the grammar must be added to ALL_STATEMENTS: then its typo is tested below.
    expected = {k for k in _keywords().values() if len(k) >= 4}
    assert expected - {tok.value for _, tok in KEYWORD_TOKENS} == set()


@pytest.mark.parametrize("name, tok", KEYWORD_TOKENS, ids=[f"{n}:{t.line}:{t.value}" for n, t in KEYWORD_TOKENS])
def test_misspelt_keyword_gets_did_you_mean(name, tok, policies_copy):
    """Drop the keyword's second-to-last letter (`require` -> `requie`): the diagnostic at that
    word suggests the keyword, whichever stage finds it (parser, identity, allow list, forward)."""
    text = CORPUS[name]
    path = policies_copy / f"typo-{name}"
    path.write_text(text[:tok.start_pos] + tok.value[:-2] + tok.value[-1] + text[tok.end_pos:], encoding="utf-8")
    result = pipeline.read_and_lower([str(path)])
    here = [d for d in result.diagnostics if (d.span.line, d.span.col) == (tok.line, tok.column)]
    shown = [(d.code, d.span.line, d.span.col, d.message, d.help) for d in result.diagnostics]
    if tok.value == "require" and text[:tok.start_pos].rstrip().endswith("handshake"):
        # `handshake NAME`: the mode is a value, not a keyword; its help names the only mode
        assert any("write `handshake require`" in d.help for d in here), shown
    else:
        assert any(f"did you mean `{tok.value}`?" in d.help for d in here), shown


def test_suggestions_follow_the_grammar():
    # What the parser accepts after a prefix, not a list kept by hand.
    assert keywords_after("identity x {") == ("fingerprint", "issuer", "san", "serial", "subject", "waive")
    assert "bundle" in keywords_after("ca x {") and "route" in keywords_after("server a.test {")
    assert closest_keyword("requir", {"REQUIRE", "ALLOW", "RBRACE"}) == "require"
    assert closest_keyword("zzz", {"REQUIRE", "ALLOW"}) is None


# ----- DNs copied from openssl: the form nginx prints is suggested ---------------------------------

# `openssl req -subj` lists RDNs in the certificate's order; the last two are named "in reverse"
# (most specific RDN first in the DER), which nginx then prints root-first.
OPENSSL_SUBJECTS = [
    "/C=US/O=Acme/CN=alice",
    "/C=US/O=Acme, Inc./OU=Eng+CN=x y/emailAddress=a@example.com",
    "/C=DE/O=Ümlaut \"q\" \\\\ ;<>#/CN= lead",
    "/DC=com/DC=example/CN=svc+UID=42",
    "/O=a\\+b=c/CN=#hash",
    "/CN=alice/O=Acme/C=US",
    "/CN=bob/OU=Ops/O=Acme, Inc./C=GB",
]


def _openssl(*args: str, cwd) -> str:
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("subj", OPENSSL_SUBJECTS)
def test_dn_as_openssl_prints_it_gets_the_form_nginx_prints(subj, tmp_path):
    """Whatever `openssl x509 -subject` prints by default (with or without its `subject=` label) is
    recognised, and the suggested DN is what `-nameopt RFC2253` prints: nginx's own call
    (X509_NAME_print_ex with XN_FLAG_RFC2253; tests/test_dn_nginx.py pins the two together)."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "k.pem",
             "-out", "c.pem", "-days", "1", "-utf8", "-subj", subj, cwd=tmp_path)
    printed = _openssl("x509", "-in", "c.pem", "-noout", "-subject", cwd=tmp_path)
    nginx = _openssl("x509", "-in", "c.pem", "-noout", "-subject", "-nameopt", "RFC2253", cwd=tmp_path)
    assert printed.startswith("subject=") and nginx.startswith("subject=")
    nginx = nginx.removeprefix("subject=")
    for copied in (printed, printed.removeprefix("subject=")):
        form, suggested = dn.copied_form(copied)
        assert suggested == nginx, (copied, form)
        # through the CLI: the help is the policy string to write, and it is accepted
        policy = tmp_path / "p.mtls"
        policy.write_text(f"identity x {{ subject {quote(copied)} }}\n", encoding="utf-8")
        err = run_cli("check", str(policy))[2]
        assert f"= help: write it as nginx prints it: {quote(nginx)}\n" in err, err
        policy.write_text(f"identity x {{ subject {quote(nginx)} }}\n", encoding="utf-8")
        assert "MTLS014" not in run_cli("check", str(policy))[2]


# ----- MTLS108 is a warning: a root-first DN does match certificates named in reverse --------------

ROOT_FIRST = CA_AND_SERVER + """\
  route = /healthz { public }
  route /api/ { require internal  allow alice  forward subject }
}
identity alice { subject "C=US,O=Acme,CN=alice" }
"""


@pytest.mark.nginx
def test_root_first_subject_matches_a_certificate_named_in_reverse_on_nginx(tmp_path, nginx_bin, now, echo_backend):
    """Why MTLS108 stays a warning: nginx prints a subject in reverse of its order in the
    certificate, so a certificate whose subject lists CN first (as `openssl req -subj
    "/CN=alice/O=Acme/C=US"` makes it) is printed `C=US,O=Acme,CN=alice` and the identity
    written that way lets it in, while a certificate named the usual way is refused."""
    with served(tmp_path, ROOT_FIRST, nginx_bin, now, echo_backend.url) as s:
        [warning] = [d for d in s.result.diagnostics if d.code == "MTLS108"]
        assert warning.severity is Severity.WARNING
        assert "matches only certificates whose subject is encoded in reverse" in warning.message
        reversed_cert, _ = s.pki.client("internal/id-alice")  # the lab mints the identity's DN as written
        reversed_name = x509.load_pem_x509_certificate(reversed_cert.read_bytes()).subject
        assert reversed_name.rdns[0].get_attributes_for_oid(NameOID.COMMON_NAME)  # CN first in the DER
        answer = s.get("/api/x", "internal/id-alice")
        assert answer.status == 200, answer
        assert echo_backend.snapshot()[-1].header_values("X-Client-Subject") == ["C=US,O=Acme,CN=alice"]
        usual = issue_client(s.pki.chains["internal"].issuing, dn.x509_name(dn.parse_dn("CN=alice,O=Acme,C=US")), now=now)
        write_pem(s.pki.clients_dir / "usual-alice.crt", usual.cert)
        write_pem(s.pki.clients_dir / "usual-alice.key", usual.key)
        assert s.get("/api/x", "usual-alice").status == 403
