"""Fixtures of the client tests: ``server`` (cablecar and Rails Action Cable, shared) and
``fresh_server`` (a test's own, which it may stop and start again)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import free_port
from .client_support import ANCHORS_INSTALL, SERVER_KINDS, CablecarServer, RailsServer, Server


@pytest.fixture(scope="session")
def rails_anchors() -> Path:
    """Install the anchors once (Debian's ruby-actioncable and puma when missing)."""
    last = ""
    for _attempt in range(30):  # another process may hold the dpkg lock for a while
        result = subprocess.run(
            [str(ANCHORS_INSTALL)], capture_output=True, text=True, timeout=900, check=False
        )
        if result.returncode == 0:
            return Path(result.stdout.strip().splitlines()[-1])
        last = result.stderr
        if "lock" not in last:
            break
        time.sleep(10)
    pytest.fail(f"{ANCHORS_INSTALL} failed:\n{last[-3000:]}")


def _make(kind: str, request: pytest.FixtureRequest, tmp: Path) -> Server:
    if kind == "rails":
        return RailsServer(free_port(), tmp, request.getfixturevalue("rails_anchors"))
    return CablecarServer(free_port(), tmp)


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A running server shared by the tests that don't stop it."""
    srv = _make(request.param, request, tmp_path_factory.mktemp("servers"))
    srv.start()
    yield srv
    srv.stop(fast=True)


@pytest.fixture(params=SERVER_KINDS)
def fresh_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A running server of the test's own, which the test may stop and start again."""
    srv = _make(request.param, request, tmp_path)
    srv.start()
    yield srv
    srv.stop(fast=True)
