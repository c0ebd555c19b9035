"""Grade a running server's TLS the way the field does: sslyze's Mozilla check
(`sslyze --mozilla_config=PROFILE`), against the profile the policy chose.

sslyze is a separate tool with its own pinned dependencies (it needs an older `cryptography` than
mtlsc pins), installed by tests/setup.sh into its own virtual environment; mtlsc runs its command
line, as a user would, and reads the compliance lines it prints.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

# Where tests/setup.sh installs it (tests/sslyze-constraints.txt pins it and its dependencies).
SSLYZE_VENV_BIN = "/opt/mtlsc-sslyze/bin/sslyze"
INSTALL_HINT = ("sslyze is required: `bash tests/setup.sh` installs it into /opt/mtlsc-sslyze, "
                "or point $MTLSC_SSLYZE at the sslyze command")
# Trust in the server certificate: the lab's CA is no public one. Everything else must pass.
TRUST_ITEMS = frozenset({"certificate_path_validation"})

_ISSUE = re.compile(r"^\s+\* (?P<key>[a-z0-9_]+): (?P<text>.*)$")


class SslyzeMissing(RuntimeError):
    pass


def find_sslyze() -> str:
    explicit = os.environ.get("MTLSC_SSLYZE")
    for candidate in (explicit, SSLYZE_VENV_BIN, shutil.which("sslyze")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise SslyzeMissing(INSTALL_HINT)


@dataclass(frozen=True)
class Grade:
    profile: str
    command: list[str]
    returncode: int
    output: str
    issues: dict[str, str] = field(default_factory=dict)  # Mozilla check item -> sslyze's words

    @property
    def failures(self) -> dict[str, str]:
        """The issues that are the server's configuration, not trust in its certificate."""
        return {k: v for k, v in self.issues.items() if k not in TRUST_ITEMS}

    @property
    def completed(self) -> bool:
        return "COMPLIANCE AGAINST TLS CONFIGURATION" in self.output


def parse_compliance(output: str) -> dict[str, str]:
    """The `* item: reason` lines under sslyze's compliance heading."""
    _, found, tail = output.partition("COMPLIANCE AGAINST TLS CONFIGURATION")
    if not found:
        return {}
    return {m["key"]: m["text"] for m in map(_ISSUE.match, tail.splitlines()) if m}


def grade(host: str, port: int, server_name: str, profile: str, *, ca_file: str | None = None,
          client: tuple[str, str] | None = None, timeout: float = 300) -> Grade:
    """sslyze's Mozilla check of `host:port`, with SNI `server_name`. `ca_file`: roots to validate the
    server certificate with (then trust passes too). `client`: (certificate, key) to present: a server
    that asks for client certificates makes sslyze's ROBOT scan, which the check needs, refuse to run
    without one."""
    command = [find_sslyze(), f"--mozilla_config={profile}", "--sni", server_name,
               *(["--certinfo_ca_file", ca_file] if ca_file else []),
               *(["--cert", client[0], "--key", client[1]] if client else []), f"{host}:{port}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    return Grade(profile, command, proc.returncode, output, parse_compliance(proc.stdout))
