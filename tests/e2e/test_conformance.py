"""The shared Action Cable conformance suite (official @rails/actioncable and @anycable/core
clients, raw sockets) against a real cablecar server, including a server restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import free_port
from ..servers import CONFORMANCE, CablecarProcess, run_conformance_suite

pytestmark = [
    pytest.mark.node,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not CONFORMANCE.exists(), reason="../shared/conformance is not beside the repo"
    ),
]


@pytest.mark.parametrize("history", [False, True], ids=["plain", "history"])
def test_conformance_suite_passes(
    tmp_path: Path, history: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every conformance test passes; the run ends with 'N passed, 0 failed'. With
    history=True too: plain Action Cable clients see the same protocol."""
    monkeypatch.setenv("CABLE_HISTORY", "1" if history else "")
    port = free_port()
    server = CablecarProcess(port, log=tmp_path / "server.log").start()
    assert server.proc is not None
    try:
        run_conformance_suite("tests.servers", server.url, port, server.proc.pid, tmp_path)
    finally:
        server.stop()
