"""A public trust store named as a bundle gives a few summed-up, correct findings, not thousands
of lines, and no library warnings on stderr (issue 11 §5)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter

import certifi

from support import REPO


def test_a_copied_public_store_is_summarised(tmp_path):
    bundle = tmp_path / "store.pem"
    shutil.copy(certifi.where(), bundle)
    policy = tmp_path / "p.mtls"
    policy.write_text(f"""ca a {{ bundle "{bundle}" }}
server a.example.com {{
  certificate "/tmp/x.crt" key "/tmp/x.key"  backend "http://127.0.0.1:9"
  route = /healthz {{ public }}
  route / {{ require a  allow any }}
}}
""")
    run = subprocess.run([sys.executable, "-m", "mtlsc", "check", "--format", "json", str(policy)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 1
    assert "Warning" not in run.stderr, run.stderr  # e.g. cryptography's CryptographyDeprecationWarning
    import json
    codes = Counter(d["code"] for d in json.loads(run.stdout)["diagnostics"])
    assert codes["MTLS230"] == 1 and codes["MTLS234"] == 1, codes
    assert "MTLS111" not in codes, "a SHA-1 self-signed root (ACCVRAIZ1) is a root, not an intermediate"
    public = next(d for d in json.loads(run.stdout)["diagnostics"] if d["code"] == "MTLS230")
    assert "more certificates of this file alike" in public["message"]
    assert sum(codes.values()) <= 10, codes
