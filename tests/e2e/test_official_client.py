"""The official @rails/actioncable client under Node against a real cablecar server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import free_port
from ..servers import ROOT, CablecarProcess

JS = ROOT / "tests" / "js"

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]


def test_official_client_scenarios(tmp_path: Path) -> None:
    """subscribe/perform/receive, reject, ordered actions, unauthorized: all pass under Node."""
    server = CablecarProcess(free_port(), log=tmp_path / "server.log").start()
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
