"""README.md opens with the two commands that work on a fresh machine; CI runs the second one.

Both install with constraints.txt, which pins every dependency; tests/setup.sh is the test setup.
"""

from __future__ import annotations

import re
import tomllib

from support import REPO


def _readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)[1]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def _pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(p) == 2 for p in pins), "constraints.txt: one `name==version` a line"
    return {_norm(name): version for name, version in pins}


def _norm(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_readme_opens_with_install_and_test_commands():
    install, test = _readme_commands()
    assert "pip install -c constraints.txt ." in install and "mtlsc compile policies/" in install
    assert test.startswith("bash tests/setup.sh && ") and "python -m pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    test = _readme_commands()[1]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test in ci, "keep .ci/run and README.md's test command identical"


def test_setup_installs_nginx_njs_and_pinned_packages():
    setup = (REPO / "tests" / "setup.sh").read_text()
    assert "apt-get install" in setup and "libnginx-mod-http-js" in setup
    assert "-c constraints.txt -e '.[test]'" in setup and "npm ci" in setup
    assert "MTLSC_NEWEST" in setup and "--upgrade-strategy eager" in setup  # the documented newest run
    assert "MTLSC_NEWEST=1 bash tests/setup.sh" in (REPO / "README.md").read_text()


def test_constraints_pin_every_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = _pins()
    assert "mtlsc" not in pins
    missing = sorted({_norm(r) for r in declared} - set(pins))
    assert not missing, f"constraints.txt lacks {missing}: regenerate it (its header says how)"
