"""`mtlsc demo-pki`: a throwaway PKI shaped like a policy, for demos and tests only.

The CA bundles and CRLs go where the policy names them; the CA keys are never written, so the
result can be committed as an example but never used to issue anything. Client certificates
(with keys) are written only when `--clients` is given.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mtlsc import pipeline
from mtlsc.render import render


def demo_pki(paths: list[str], clients: Path | None, force: bool) -> int:
    result = pipeline.read_and_lower(paths)
    if result.policy is None:
        sys.stderr.write(render(result.diagnostics, result.sources))
        return 2 if result.io_error else 1
    existing = [p for ca in result.policy.cas for p in (*ca.bundle, *ca.crls) if Path(p).exists()]
    if existing and not force:
        sys.stderr.write(f"error: {existing[0]} exists; pass --force to replace the demo PKI\n")
        return 2
    from mtlsc.lab.pki import build_lab_pki

    work = Path(tempfile.mkdtemp(prefix="mtlsc-demo-"))
    try:
        # Ten years: the committed example CRLs must stay current; real CRLs live days, not years.
        lab = build_lab_pki(result.policy, work, now=datetime.now(timezone.utc), crl_valid=timedelta(days=3650))
        if clients is not None:
            if clients.exists():
                shutil.rmtree(clients)
            shutil.copytree(lab.clients_dir, clients)
            shutil.copy(lab.server_ca, clients / "server-ca.pem")
            sys.stderr.write(f"wrote client certificates to {clients}\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for ca in result.policy.cas:
        sys.stderr.write(f"ca {ca.name}: wrote {len(ca.bundle)} certificate(s), {len(ca.crls)} CRL(s)\n")
    return 0
