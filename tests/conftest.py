"""Shared fixtures. Keep this file small: reusable code belongs in `mtlsc.lab`."""

from __future__ import annotations

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
