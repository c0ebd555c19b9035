"""`ca NAME { leaf ... }`: the checks of mtlsc/checks/leaves.py (MTLS120, 121, 316-319), the CA-bundle
checks that must leave a leaf CA alone, and what the emitter writes for it (no nginx here: see
tests/test_leaf_ca_nginx.py and tests/test_leaf_anchor_facts_nginx.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlsc import pipeline
from mtlsc.lab.pki import issue_client, make_crl, make_root, write_pem

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
GOOD_DAYS = (timedelta(days=-1), timedelta(days=90))


def _leaf(d: Path, name: str, *, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,), ca: bool | None = False, days=GOOD_DAYS,
          ns: bytes | None = None) -> str:
    """`ca=None`: no basicConstraints; `ns`: a Netscape certificate type (DER BIT STRING)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Laptops"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW + days[0]).not_valid_after(NOW + days[1]))
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if ns is not None:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("2.16.840.1.113730.1.1"), ns), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    write_pem(d / f"{name}.pem", b.sign(key, hashes.SHA256()))
    return f"{name}.pem"


SERVER = """
server api.test {{
  listen 8443
  certificate "/etc/nginx/api.crt" key "/etc/nginx/api.key"
  backend "http://127.0.0.1:9000"
  route = /healthz {{ public }}
  route /l/ {{ require laptops }}
  route /o/ {{ optional laptops  forward fingerprint verify }}
{more}}}
"""


def _run(d: Path, leaves: list[str], cas: str = "", more: str = "", now: datetime = NOW):
    files = " ".join(f'"{f}"' for f in leaves)
    text = f'nginx ">= 1.22"\nca laptops {{ leaf {files} }}\n{cas}' + SERVER.format(more=more)
    (d / "p.mtls").write_text(text)
    return text, pipeline.check([str(d / "p.mtls")], now=now).diagnostics


def _codes(diags) -> set[str]:
    return {x.code for x in diags}


def _one(diags, code: str):
    found = [x for x in diags if x.code == code]
    assert len(found) == 1, [(x.code, x.message) for x in diags]
    return found[0]


def _at(text: str, needle: str) -> tuple[int, int]:
    at = text.index(needle)
    return text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1


def test_a_good_leaf_ca_raises_no_ca_bundle_finding(tmp_path):
    """Self-signed CA:FALSE leaves are what MTLS313 and MTLS234 report in a `bundle`; under `leaf`
    they are the point. `require` with no `allow` is not MTLS207 (the list is the allow list)."""
    _, diags = _run(tmp_path, [_leaf(tmp_path, "alice"), _leaf(tmp_path, "bob")])
    assert _codes(diags) <= {"MTLS105"}, [(x.code, x.message) for x in diags]


def test_mtls120_triggers_on_an_eku_without_client_auth(tmp_path):
    text, diags = _run(tmp_path, [_leaf(tmp_path, "alice"), _leaf(tmp_path, "srv", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))])
    d = _one(diags, "MTLS120")
    assert (d.span.line, d.span.col) == _at(text, '"srv.pem"')
    assert "serverAuth" in d.message and "unsuitable certificate purpose" in d.message


def test_mtls120_clean_with_client_auth_or_no_eku(tmp_path):
    _, diags = _run(tmp_path, [_leaf(tmp_path, "alice"), _leaf(tmp_path, "plain", eku=())])
    assert "MTLS120" not in _codes(diags)


def _staff(d: Path, crl: bool) -> str:
    root = make_root("staff root", now=NOW)
    write_pem(d / "staff.pem", root.cert)
    if crl:
        write_pem(d / "staff.crl", make_crl(root, [], now=NOW))
    return 'ca staff { bundle "staff.pem"' + (' crl "staff.crl"' if crl else "") + " }\n"


def test_mtls121_triggers_beside_a_ca_with_a_crl(tmp_path):
    text, diags = _run(tmp_path, [_leaf(tmp_path, "alice")], _staff(tmp_path, crl=True),
                       "  route /s/ { require staff  allow any }\n")
    d = _one(diags, "MTLS121")
    assert (d.span.line, d.span.col) == _at(text, "route /l/")
    assert "unable to get certificate CRL" in d.message
    assert "MTLS102" not in _codes(diags), "MTLS102 would ask for a CRL of the leaf, which cannot exist"


def test_mtls121_clean_without_crl_or_on_its_own_server(tmp_path):
    _, diags = _run(tmp_path, [_leaf(tmp_path, "alice")], _staff(tmp_path, crl=False),
                    "  route /s/ { require staff  allow any }\n")
    assert "MTLS121" not in _codes(diags)
    other = '\nserver staff.test {\n  listen 8443\n  certificate "/etc/nginx/a.crt" key "/etc/nginx/a.key"\n' \
            '  backend "http://127.0.0.1:9000"\n  route / { require staff  allow any }\n}\n'
    _, diags = _run(tmp_path, [_leaf(tmp_path, "alice")], _staff(tmp_path, crl=True) + other)
    assert "MTLS121" not in _codes(diags)


def test_mtls316_triggers_on_a_leaf_issued_by_a_ca(tmp_path):
    root = make_root("company root", now=NOW)
    issued = issue_client(root, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carol")]), now=NOW)
    write_pem(tmp_path / "carol.pem", issued.cert)
    text, diags = _run(tmp_path, [_leaf(tmp_path, "alice"), "carol.pem"])
    d = _one(diags, "MTLS316")
    assert (d.span.line, d.span.col) == _at(text, '"carol.pem"')
    assert "company root" in d.message
    assert not _codes(diags) & {"MTLS315", "MTLS313"}


def test_mtls316_clean_for_self_signed_leaves(tmp_path):
    assert "MTLS316" not in _codes(_run(tmp_path, [_leaf(tmp_path, "alice")])[1])


def test_mtls317_triggers_on_a_ca_under_leaf(tmp_path):
    text, diags = _run(tmp_path, [_leaf(tmp_path, "root", ca=True)])
    d = _one(diags, "MTLS317")
    assert (d.span.line, d.span.col) == _at(text, '"root.pem"')
    assert "use" in d.help or "bundle" in d.help


def test_mtls317_triggers_on_a_netscape_ssl_ca_type_without_basic_constraints(tmp_path):
    """nsCertType `client, sslCA` and no basicConstraints: a CA to OpenSSL, which a holder can
    write into their own certificate (tests/test_leaf_attack_nginx.py shows it minting on nginx)."""
    text, diags = _run(tmp_path, [_leaf(tmp_path, "alice", ca=None, ns=bytes.fromhex("03020284"))])
    assert (_one(diags, "MTLS317").span.line, _one(diags, "MTLS317").span.col) == _at(text, '"alice.pem"')


def test_mtls317_clean_for_ca_false(tmp_path):
    assert "MTLS317" not in _codes(_run(tmp_path, [_leaf(tmp_path, "alice")])[1])
    # nginx refuses to chain through these (tests/test_leaf_attack_nginx.py::test_which_leaves_nginx_lets_sign)
    for i, (ca, ns) in enumerate([(None, None), (False, "03020284"), (None, "03020182"), (None, "03020780")]):
        leaf = _leaf(tmp_path, f"l{i}", ca=ca, ns=bytes.fromhex(ns) if ns else None)
        assert "MTLS317" not in _codes(_run(tmp_path, [leaf])[1]), (ca, ns)


def test_mtls318_triggers_on_expired_and_not_yet_valid_leaves(tmp_path):
    text, diags = _run(tmp_path, [_leaf(tmp_path, "old", days=(timedelta(days=-60), timedelta(days=-1))),
                                  _leaf(tmp_path, "new", days=(timedelta(days=1), timedelta(days=60)))])
    found = sorted((x.span.line, x.span.col, x.message) for x in diags if x.code == "MTLS318")
    assert [(a, b) for a, b, _ in found] == sorted([_at(text, '"old.pem"'), _at(text, '"new.pem"')])
    assert "certificate has expired" in found[0][2] and "not yet valid" in found[1][2]
    assert "MTLS310" not in _codes(diags)


def test_mtls318_clean_for_a_current_leaf(tmp_path):
    assert "MTLS318" not in _codes(_run(tmp_path, [_leaf(tmp_path, "alice")])[1])


def test_mtls319_triggers_within_the_window(tmp_path):
    text, diags = _run(tmp_path, [_leaf(tmp_path, "soon", days=(timedelta(days=-30), timedelta(days=3)))])
    assert (_one(diags, "MTLS319").span.line, _one(diags, "MTLS319").span.col) == _at(text, '"soon.pem"')


def test_mtls319_clean_outside_the_window(tmp_path):
    assert "MTLS319" not in _codes(_run(tmp_path, [_leaf(tmp_path, "alice")])[1])


def test_mtls313_help_points_a_self_signed_client_certificate_to_leaf(tmp_path):
    _leaf(tmp_path, "alice")
    (tmp_path / "p.mtls").write_text('nginx ">= 1.22"\nca c { bundle "alice.pem" }\n'
                                     + SERVER.format(more="").replace("laptops", "c"))
    d = _one(pipeline.check([str(tmp_path / "p.mtls")], now=NOW).diagnostics, "MTLS313")
    assert "`leaf`" in d.help


def _compiled(d: Path, leaves: list[str], cas: str = "", more: str = "") -> str:
    _run(d, leaves, cas, more)
    result = pipeline.compile_policy([str(d / "p.mtls")], now=NOW)
    assert not result.failed, [(x.code, x.message) for x in result.diagnostics]
    return next(text for path, text in result.outputs.items() if path.startswith("nginx/api.test_"))


def _fingerprint(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA1()).hex()


def test_emitted_leaf_gate_lists_exactly_the_leaves_on_every_route_of_the_ca(tmp_path):
    conf = _compiled(tmp_path, [_leaf(tmp_path, "alice"), _leaf(tmp_path, "bob")])
    assert "ssl_verify_depth 0;" in conf
    gate = conf[conf.index('map "$ssl_client_verify:$ssl_client_fingerprint"'):]
    gate = gate[:gate.index("}")]
    keys = sorted(line.split()[0] for line in gate.splitlines()[1:] if line.strip())
    assert keys == sorted(['"~^SUCCESS:"', "default"] + [f'"SUCCESS:{_fingerprint(tmp_path / n)}"' for n in ("alice.pem", "bob.pem")])
    var = gate.split()[2]
    # the `require` and the `optional` route both: a verified certificate that is not listed is refused
    assert conf.count(f"if ({var}) {{ return 403") == 2
    assert ".keys.js" not in conf and "js_import" not in conf


def test_emitted_depth_is_the_other_cas_beside_a_leaf_ca(tmp_path):
    conf = _compiled(tmp_path, [_leaf(tmp_path, "alice")], _staff(tmp_path, crl=False).replace(" }", " depth 2 }"),
                     "  route /s/ { require staff  allow any }\n")
    assert "ssl_verify_depth 2;" in conf
    assert conf.count("_not_leaf") == 3 and "$ssl_client_i_dn" in conf  # map + two gates; and the issuer binding


def test_mtls206_asserts_the_leaf_gate(tmp_path, monkeypatch):
    """MTLS206 is an assertion on the emitter: a location of a leaf CA's route without the
    fingerprint gate (an emitter bug, simulated) is reported; the real emitter passes it."""
    from mtlsc.emit import identity_maps, nginx as emit_nginx

    files = [_leaf(tmp_path, "alice")]
    assert "MTLS206" not in _codes(_run(tmp_path, files)[1])
    monkeypatch.setattr(emit_nginx, "leaf_maps", lambda *a: [])
    monkeypatch.setattr(emit_nginx, "_LAST_VIEWS", ())
    text, diags = _run(tmp_path, files)
    found = sorted((x.span.line, x.span.col) for x in diags if x.code == "MTLS206")
    assert found == sorted([_at(text, "route /l/"), _at(text, "route /o/")]), [(x.code, x.message) for x in diags]
    assert identity_maps.leaf_maps  # the real one is untouched


def _same_name(d: Path, name: str, *, key_id: bool) -> str:
    """A self-signed leaf named `CN=alice,O=Laptops`, with or without an authorityKeyIdentifier
    naming its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Laptops"), x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW + GOOD_DAYS[0]).not_valid_after(NOW + GOOD_DAYS[1])
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if key_id:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    write_pem(d / f"{name}.pem", b.sign(key, hashes.SHA256()))
    return f"{name}.pem"


def test_mtls329_triggers_on_two_leaves_of_one_name_without_key_ids(tmp_path):
    text, diags = _run(tmp_path, [_same_name(tmp_path, "old", key_id=False), _same_name(tmp_path, "new", key_id=True)])
    d = _one(diags, "MTLS329")  # only the one naming no key: the other is told apart by its identifier
    assert (d.span.line, d.span.col) == _at(text, '"old.pem"')
    assert "openssl req -x509" in d.help


def test_mtls329_clean_with_own_key_ids_a_file_twice_or_other_names(tmp_path):
    both = [_same_name(tmp_path, "old", key_id=True), _same_name(tmp_path, "new", key_id=True)]
    assert "MTLS329" not in _codes(_run(tmp_path, both)[1])
    assert "MTLS329" not in _codes(_run(tmp_path, [both[0], both[0]])[1])
    assert "MTLS329" not in _codes(_run(tmp_path, [_leaf(tmp_path, "alice"), _leaf(tmp_path, "bob")])[1])
