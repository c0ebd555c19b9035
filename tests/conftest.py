"""Shared fixtures. Keep this file small: reusable code belongs in `mtlsc.lab`."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from mtlsc.lab.echo import EchoBackend, running_echo_backend
from mtlsc.lab.nginx import NginxMissing, find_nginx


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    """The real nginx binary. Missing nginx fails the test: the suite proves behaviour on nginx."""
    try:
        return find_nginx()
    except NginxMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def now() -> datetime:
    """The current UTC time rounded down to the minute: real nginx checks validity against NOW."""
    return datetime.now(timezone.utc).replace(second=0, microsecond=0)


@pytest.fixture
def echo_backend() -> Iterator[EchoBackend]:
    """A fresh echo backend on a free loopback port."""
    with running_echo_backend() as backend:
        yield backend


# ---- a test marked `nginx` must use the nginx binary ----------------------------------------------

_NGINX_RUNS = [0]  # nginx processes run (start, `-t`, reload) so far
_REAL_POPEN_INIT = subprocess.Popen.__init__


def _counting_popen_init(self, args, *rest, **kw):
    argv0 = args[0] if isinstance(args, (list, tuple)) and args else args
    if isinstance(argv0, (str, os.PathLike)) and os.path.basename(os.fspath(argv0)) == "nginx":
        _NGINX_RUNS[0] += 1
    _REAL_POPEN_INIT(self, args, *rest, **kw)


subprocess.Popen.__init__ = _counting_popen_init


def _nginx_masters() -> int:
    """nginx masters alive now whose parent is init (daemonised), started by this test run."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmd = open(f"/proc/{entry.name}/cmdline", "rb").read().split(b"\0")[0]
            except OSError:
                continue
            if cmd.startswith(b"nginx: master process"):
                count += 1
    return count


@pytest.fixture(autouse=True)
def _nginx_marker_is_honest(request):
    """`pytest -m nginx` selects the tests that prove behaviour on the real binary: a test carrying
    the marker that neither runs nginx nor talks to one running (a module fixture's) is mislabelled,
    and fails here."""
    if not request.node.get_closest_marker("nginx"):
        yield
        return
    before = _NGINX_RUNS[0]
    seen, done = [_nginx_masters()], threading.Event()

    def watch():  # a lab started by a child process (`mtlsc lab`) runs nginx where Popen cannot see it
        while not done.wait(0.1) and not seen[0]:
            seen[0] = _nginx_masters()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield
    done.set()
    watcher.join(timeout=5)
    if _NGINX_RUNS[0] == before and not seen[0]:
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.passed:
            pytest.fail("marked `nginx` but never used the nginx binary: drop the marker or start nginx",
                        pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call":
        item.rep_call = rep
    return rep
