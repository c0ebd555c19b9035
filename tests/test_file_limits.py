"""Files a user names are read only when they are regular files, and at most 64 MiB
(mtlsc/files.py): `bundle "/dev/zero"` once grew `mtlsc check` past 5 GB (issue 11 §5)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mtlsc import files
from support import REPO

POLICY = """\
ca a {{ bundle "{bundle}" }}
server a.example.com {{
  certificate "/tmp/x.crt" key "/tmp/x.key"  backend "http://127.0.0.1:9"
  route / {{ require a  allow any }}
}}
"""


def _check(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtlsc", "check", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("kind", ["char-device", "fifo", "directory", "too-large"])
def test_a_bundle_that_is_not_a_bounded_regular_file_is_a_located_error(tmp_path, kind):
    if kind == "char-device":
        bundle = "/dev/zero"
    elif kind == "fifo":
        bundle = str(tmp_path / "bundle.pem")
        os.mkfifo(bundle)  # nobody writes to it: opening it for reading must not block
    elif kind == "directory":
        bundle = str(tmp_path)
    else:
        bundle = str(tmp_path / "huge.pem")
        with open(bundle, "wb") as f:
            f.truncate(files.MAX_BYTES + 1)  # sparse: no disk used
    policy = tmp_path / "p.mtls"
    policy.write_text(POLICY.format(bundle=bundle))
    run = _check(str(policy))
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert f"error[MTLS901]: cannot read CA bundle `{bundle}`: it " in run.stderr
    assert f"{policy}:1:15" in run.stderr
    assert "name a regular PEM file" in run.stderr


def test_a_policy_file_that_is_a_device_is_refused():
    run = _check("/dev/zero")
    assert run.returncode == 2, run.stderr
    assert "cannot read the policy file: it is a character device, not a regular file" in run.stderr


def test_read_bytes_reads_a_regular_file_and_refuses_past_the_limit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert files.read_bytes(path) == b"x" * 100
    with pytest.raises(OSError, match="mtlsc reads files up to 99 bytes"):
        files.read_bytes(path, limit=99)
