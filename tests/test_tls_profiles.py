"""The profile data mtlsc compiles (mtlsc/tls_profiles.py): the DH group written for `old` is RFC
7919's ffdhe2048, derived here from the RFC's formula, and every suite and group is one OpenSSL
knows by that name."""

from __future__ import annotations

import subprocess
import warnings

from mtlsc.tls_profiles import CURVES, FFDHE2048_PEM, PROFILES, TLS13_SUITES, weaker


def _floor_2k_e(k: int, guard: int = 64) -> int:
    """floor(2**k * e), from the series of 1/n!, with guard bits for the truncations."""
    total, term, n = 0, 1 << (k + guard), 0
    while term:
        total += term
        n += 1
        term //= n
    return total >> guard


def test_old_dh_group_is_rfc7919_ffdhe2048():
    p = 2**2048 - 2**1984 + (_floor_2k_e(1918) + 560316) * 2**64 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography deprecates finite-field DH; reading the group is all we do
        from cryptography.hazmat.primitives.serialization import load_pem_parameters

        numbers = load_pem_parameters(FFDHE2048_PEM.encode()).parameter_numbers()
    assert numbers.p == p and numbers.g == 2


def test_openssl_knows_every_cipher_of_every_profile():
    for profile in PROFILES.values():
        if profile.ciphers:
            listed = subprocess.run(["openssl", "ciphers", profile.cipher_string], capture_output=True, text=True,
                                    check=True).stdout.strip().split(":")
            assert set(profile.ciphers) - set(listed) <= {"DES-CBC3-SHA"}, profile.name  # 3DES: not in OpenSSL 3's default build
    assert subprocess.run(["openssl", "ciphers", "-ciphersuites", ":".join(TLS13_SUITES), "-s", "-tls1_3"],
                          capture_output=True, text=True, check=True).stdout.strip().split(":") == list(TLS13_SUITES)
    assert CURVES == ("X25519", "prime256v1", "secp384r1")


def test_profiles_are_ordered_from_strong_to_weak():
    assert weaker("modern", "intermediate") and weaker("intermediate", "old") and not weaker("old", "modern")
