"""SPKI (public-key) pins without nginx: the two spellings of a pin, what lowering makes of them,
the njs module and test script that only SPKI policies get, the model and the cast (the holder's
certificate, its renewal, the same subject with another key), and the lab's copy of the pin.
On nginx: tests/test_spki_nginx.py."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import pytest

from mtlsc import ir, pipeline, values
from mtlsc.emit import san as san_emit
from mtlsc.lab.rewrite import rewrite_for_lab
from mtlsc.model.cast import cast
from mtlsc.model.evaluate import Client, evaluate
from mtlsc.parse import parse
from mtlsc.source import Source

HEX = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
B64 = base64.b64encode(bytes.fromhex(HEX)).decode()

POLICY = f"""\
nginx ">= 1.22" with njs
ca corp {{ bundle "ca/root.pem" }}
identity key {{ fingerprint spki "sha256//{B64}" }}
identity ops {{ subject "CN=ops,O=Corp" }}
server api.example.com {{
  certificate "/x.crt" key "/x.key"
  backend "http://127.0.0.1:9000"
  route /k/ {{ require corp  allow key ops  forward spki_sha256 }}
  route /o/ {{ require corp  allow ops }}
}}
"""


def test_a_pin_is_hex_with_or_without_colons_or_curls_base64():
    assert values.fingerprint(HEX, "spki") == HEX
    assert values.fingerprint(":".join(HEX[i:i + 2] for i in range(0, 64, 2)).upper(), "spki") == HEX
    assert values.fingerprint(f"sha256//{B64}", "spki") == HEX


@pytest.mark.parametrize("text", [HEX[:40], "sha256//" + B64[:-1], "sha256//" + B64.replace("=", "A"), "sha1//" + B64,
                                  f"sha256//{B64} "])
def test_anything_else_is_refused(text):
    with pytest.raises(values.ValueProblem):
        values.fingerprint(text, "spki")


def test_a_base64_pin_without_spki_is_told_to_say_spki():
    with pytest.raises(values.ValueProblem) as e:
        values.fingerprint(f"sha256//{B64}")
    assert "fingerprint spki" in e.value.help


def lower_text(text: str):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "p.mtls").write_text(text)
        result = pipeline.read_and_lower([str(Path(d) / "p.mtls")])
    return result.policy, result.diagnostics


def _policy():
    policy, diags = lower_text(POLICY)
    assert policy is not None, diags
    return policy


def test_lowering_makes_a_key_identity_that_needs_njs():
    [key] = [i for i in _policy().identities if i.name == "key"]
    assert key.kind is ir.IdentityKind.SPKI and key.fingerprint == HEX and key.needs_njs


def test_the_njs_table_names_the_pins_only_where_an_allow_list_has_them():
    policy = _policy()
    m = san_emit.module_for(policy.servers[0], "p_")
    san_emit.add_allow_list(m, "p_", 0, [i for i in policy.identities if i.name == "key"])
    assert m.spki and m.table["allow0"]["spki"] == [HEX] and m.table["allow0"]["sha256"] == []
    plain = san_emit.module_for(policy.servers[0], "p_")
    san_emit.forward_variable(plain, "p_", "fingerprint_sha256")
    assert not plain.spki  # a module without key pins is emitted as before


def test_the_model_admits_the_key_in_any_certificate_and_nothing_else():
    server = _policy().servers[0]
    assert evaluate(server, "/k/x", Client("CN=a", "", verified_by="corp", spki=HEX)).status == 200
    assert evaluate(server, "/k/x", Client("CN=b", "", verified_by="corp", spki=HEX, sha256="1" * 64)).status == 200
    assert evaluate(server, "/k/x", Client("CN=a", "", verified_by="corp", spki="0" * 64)).status == 403
    assert evaluate(server, "/k/x", Client("CN=a", "", verified_by="corp", sha256=HEX)).status == 403
    out = evaluate(server, "/k/x", Client("CN=a", "", verified_by="corp", spki=HEX))
    assert dict(out.headers)["X-Client-Spki-Sha256"] == HEX


def test_the_cast_holds_the_holder_its_renewal_and_the_same_subject_with_another_key():
    policy = _policy()
    server = policy.servers[0]
    members = {m.file: m for m in cast(policy)}
    holder, renewed, near = members["corp/id-key"], members["corp/renewed-key"], members["corp/near-key-1"]
    assert holder.subject == renewed.subject == near.subject
    assert not holder.mintable and not renewed.mintable and near.mintable
    assert evaluate(server, "/k/x", holder.client("corp")).status == 200
    assert evaluate(server, "/k/x", renewed.client("corp")).status == 200
    assert evaluate(server, "/k/x", near.client("corp")).status == 403


def test_the_test_script_computes_the_key_hash_only_when_forwarded():
    from mtlsc.emit import testscript

    script = testscript.emit(_policy(), None)["tests.sh"]
    assert "spki_sha256) openssl x509" in script
    assert "identity key renewed with the same key" in script
    assert "near miss of identity key" in script
    unforwarded, _ = lower_text(POLICY.replace("forward spki_sha256", ""))
    assert "spki_sha256)" not in testscript.emit(unforwarded, None)["tests.sh"]


def test_the_lab_copy_pins_the_labs_key_and_nothing_else_changes():
    source = Source("p.mtls", POLICY)
    tree, _ = parse(source)
    out = rewrite_for_lab(source, tree, port_for=lambda n, l: 1, cert_dir="/c", backend="http://b", install_dir="/i",
                          key_pins={"key": "ab" * 32})
    assert f'identity key {{ fingerprint spki "{"ab" * 32}" }}' in out
    assert 'identity ops { subject "CN=ops,O=Corp" }' in out and B64 not in out
