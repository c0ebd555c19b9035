"""tests.sh's `sans_of` (the SAN values the backend must receive, computed by openssl + awk from the
certificate) against mtlsc's own rule (`mtlsc.san.forwarded`, what the njs module sends), on
certificates whose SAN values hold what OpenSSL's text listing cannot tell apart: `, ` followed by
another kind's prefix, `%`, spaces, non-ASCII bytes, long values (DER long-form lengths), IPv6."""

from __future__ import annotations

import datetime
import functools
import ipaddress
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlsc import pipeline, san
from mtlsc.dn import der

REPO = Path(__file__).resolve().parent.parent

KINDS = {"uri": ("URI",), "dns": ("DNS",), "email": ("email",), "ip": ("IP Address",)}
_KEY = ec.generate_private_key(ec.SECP256R1())


@functools.cache
def _sans_of_function() -> str:
    script = pipeline.compile_policy([str(REPO / "policies" / "spiffe-mesh.mtls")]).outputs["tests.sh"]
    start = script.index("sans_of() {")
    return script[start:script.index("\n}\n", start) + 3]


def _san_der(names: list[tuple[str, str]]) -> bytes:
    """The extension's value written byte by byte: cryptography would refuse the odd e-mail values."""
    tags = {"email": 0x81, "dns": 0x82, "uri": 0x86, "ip": 0x87}
    body = b"".join(der.encode(tags[k], ipaddress.ip_address(v).packed if k == "ip" else v.encode())
                    for k, v in names)
    return der.encode(0x30, body)


def _certificate(names: list[tuple[str, str]], critical: bool) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sans")]))
            .public_key(_KEY.public_key()).serial_number(7).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)))
    if names:
        cert = cert.add_extension(x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, _san_der(names)),
                                  critical=critical)
    return cert.sign(_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _script_values(function: str, pem: Path) -> dict[str, str]:
    script = function + "".join(f'printf "%s\\n" "$(sans_of "$1" "{label}")"\n' for (label,) in KINDS.values())
    out = subprocess.run(["bash", "-c", script, "sans", str(pem)], capture_output=True, text=True, timeout=60, check=True)
    return dict(zip(KINDS, out.stdout.split("\n")))


_text = st.lists(st.sampled_from(list("az09.-_~:/@%, \"\\é") + [", DNS:evil", ", URI:x", ", "]),
                 min_size=1, max_size=8).map("".join)
_names = st.lists(st.one_of(
    st.tuples(st.just("uri"), _text.map(lambda t: "spiffe://d/" + t)),
    st.tuples(st.just("dns"), _text),
    st.tuples(st.just("email"), _text.map(lambda t: t + "@x.org")),
    st.tuples(st.just("ip"), st.sampled_from(["10.0.0.1", "2001:db8::1", "::", "fe80::1:0:0:2"])),
    st.tuples(st.just("uri"), st.just("https://h/" + "x" * 300)),
), max_size=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(names=_names, critical=st.booleans())
def test_sans_of_reads_what_mtlsc_forwards(tmp_path, names, critical):
    pem = tmp_path / "c.pem"
    pem.write_bytes(_certificate(names, critical))
    got = _script_values(_sans_of_function(), pem)
    sans = san.Sans(tuple((k, ipaddress.ip_address(v).packed.hex() if k == "ip" else v) for k, v in names))
    assert got == {k: san.forwarded(sans, k) for k in KINDS}
