"""README.md opens with the two commands that work on a fresh machine; CI runs the second one."""

from __future__ import annotations

import re

from support import REPO


def _readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)[1]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_install_and_test_commands():
    install, test = _readme_commands()
    assert "pip install ." in install and "mtlsc compile policies/" in install
    assert "pytest" in test and "apt-get install" in test


def test_ci_runs_the_readme_test_command_verbatim():
    test = _readme_commands()[1]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test in ci, "keep .ci/run and README.md's test command identical"
