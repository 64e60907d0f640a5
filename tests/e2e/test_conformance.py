"""The shared Action Cable conformance suite (official @rails/actioncable and @anycable/core
clients, raw sockets) against a real cablecar server, including a server restart."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import free_port
from ..servers import ROOT, CablecarProcess

CONFORMANCE = ROOT.parent / "shared" / "conformance" / "run.sh"

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
    pidfile = tmp_path / "server.pid"
    ctl = f"{shlex.quote(sys.executable)} -m tests.servers"
    server = CablecarProcess(port, log=tmp_path / "server.log").start()
    assert server.proc is not None
    pidfile.write_text(str(server.proc.pid))
    env = {
        **os.environ,
        "CABLE_STOP_CMD": f"cd {shlex.quote(str(ROOT))} && {ctl} stop {pidfile}",
        "CABLE_START_CMD": f"cd {shlex.quote(str(ROOT))} && {ctl} start {port} {pidfile}",
        "CONFORMANCE_HOME": str(Path.home() / ".cache" / "cablecar-conformance"),
    }
    try:
        result = subprocess.run(
            ["bash", str(CONFORMANCE), server.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=500,
        )
    finally:
        subprocess.run(["bash", "-c", env["CABLE_STOP_CMD"]], capture_output=True, timeout=30)
        server.stop()
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    passed, _, rest = last.partition(" passed, ")
    assert rest == "0 failed" and int(passed) >= 50, last
