"""The official @rails/actioncable client under Node against real cablecar servers: the
standalone server, and the cable behind ``CableMiddleware`` in Starlette served by the
uvicorn and granian commands."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ..asgi_servers import ASGIProcess
from ..conftest import free_port
from ..servers import ROOT, CablecarProcess, ServerProcess

JS = ROOT / "tests" / "js"

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]


SERVERS: dict[str, Callable[[int, Path], ServerProcess]] = {
    "standalone": lambda port, log: CablecarProcess(port, log=log),
    "uvicorn": lambda port, log: ASGIProcess(port, "uvicorn", "middleware", log=log),
    "granian": lambda port, log: ASGIProcess(port, "granian", "middleware", log=log),
}


@pytest.mark.parametrize("kind", SERVERS)
def test_official_client_scenarios(tmp_path: Path, kind: str) -> None:
    """subscribe/perform/receive, reject, ordered actions, unauthorized: all pass under Node."""
    server = SERVERS[kind](free_port(), tmp_path / "server.log").start()
    try:
        result = subprocess.run(
            ["node", "--test", "--test-timeout=30000", "official_client.test.mjs"],
            cwd=JS,
            env={**os.environ, "CABLE_URL": server.url},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
