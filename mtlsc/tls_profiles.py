"""Mozilla's server-side TLS profiles (guidelines 5.7, the version sslyze 6.3.1 grades against), as
nginx 1.22 with OpenSSL 3.0 takes them (docs/nginx-facts.md §14, docs/language.md "Server TLS").

A profile is data: the emitter writes it, the checks judge certificates against it, `mtlsc diff`
orders profiles from strong to weak. The cipher lists are Mozilla's OpenSSL spellings, with two
deliberate departures, both narrower than Mozilla's: `intermediate` leaves out the three
`DHE-RSA-*` suites (they need a DH parameter file and serve only clients without ECDHE, older than
any client the profile is meant for), and every profile pins the TLS 1.3 suites, which OpenSSL would
otherwise take from its own defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

GUIDELINES = "5.7"
DEFAULT = "intermediate"

# One list for every profile; OpenSSL's default groups add X448, secp521r1 and the ffdhe groups.
CURVES = ("X25519", "prime256v1", "secp384r1")
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")

_INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
)
_OLD_CIPHERS = (
    *_INTERMEDIATE_CIPHERS,
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
    "DHE-RSA-AES128-SHA256", "DHE-RSA-AES256-SHA256", "AES128-GCM-SHA256", "AES256-GCM-SHA384",
    "AES128-SHA256", "AES256-SHA256", "AES128-SHA", "AES256-SHA", "DES-CBC3-SHA",
)

# RFC 7919's ffdhe2048 group, what Mozilla's generator tells `old` servers to download: a published
# constant, so the compiled file is the same on every machine (tests/test_tls_profiles.py derives p).
FFDHE2048_PEM = """-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    rank: int  # 0 strongest: a change to a higher rank accepts more (`mtlsc diff`: widening)
    protocols: tuple[str, ...]  # as nginx's ssl_protocols spells them
    ciphers: tuple[str, ...]  # TLS 1.2 and older; empty: TLS 1.3 only, nginx's default list is never used
    prefer_server_ciphers: bool
    dh_params: bool  # needs ssl_dhparam (DHE suites)
    seclevel0: bool  # OpenSSL 3.0 refuses TLS 1.0/1.1 (SHA-1 signatures) above security level 0
    # what Mozilla asks of the server certificate
    cert_types: tuple[str, ...]  # "ecdsa", "rsa"
    cert_curves: tuple[str, ...]  # cryptography's curve names
    cert_signatures: tuple[str, ...]  # OpenSSL's signature algorithm names
    rsa_min_bits: int
    max_lifespan_days: int
    oldest_clients: str

    @property
    def cipher_string(self) -> str:
        return ":".join(self.ciphers) + (":@SECLEVEL=0" if self.seclevel0 else "")


PROFILES: dict[str, Profile] = {
    "modern": Profile(
        "modern", 0, ("TLSv1.3",), (), False, False, False,
        ("ecdsa",), ("secp256r1", "secp384r1"), ("ecdsa-with-SHA256", "ecdsa-with-SHA384", "ecdsa-with-SHA512"),
        2048, 90, "Firefox 63, Android 10, Chrome 70, Edge 75, Java 11, OpenSSL 1.1.1, Safari 12.1"),
    "intermediate": Profile(
        "intermediate", 1, ("TLSv1.2", "TLSv1.3"), _INTERMEDIATE_CIPHERS, False, False, False,
        ("ecdsa", "rsa"), ("secp256r1", "secp384r1"),
        ("sha256WithRSAEncryption", "ecdsa-with-SHA256", "ecdsa-with-SHA384", "ecdsa-with-SHA512"),
        2048, 366, "Firefox 27, Android 4.4.2, Chrome 31, Edge, IE 11 on Windows 7, Java 8u31, OpenSSL 1.0.1, Safari 9"),
    "old": Profile(
        "old", 2, ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"), _OLD_CIPHERS, True, True, True,
        ("rsa",), ("secp256r1", "secp384r1"), ("sha256WithRSAEncryption",),
        2048, 366, "Firefox 1, Android 2.3, Chrome 1, IE 8 on Windows XP, Java 6, OpenSSL 0.9.8, Safari 1"),
}


def profile(name: str) -> Profile:
    return PROFILES[name]


def weaker(before: str, after: str) -> bool:
    """True when `after` accepts something `before` refused (protocols, suites)."""
    return PROFILES[after].rank > PROFILES[before].rank
