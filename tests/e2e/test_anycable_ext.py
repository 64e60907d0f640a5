"""The official @anycable/core client (extended protocol) recovers everything it missed
from cablecar with history=True: a TCP cut, a history request, a burst, a dead node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..conftest import free_port
from ..servers import ROOT, CablecarProcess

JS = ROOT / "tests" / "js"
APP = "tests/e2e/reliable_app.py:cable"

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]


def run_node(pattern: str, env: dict[str, str], file: str = "anycable_ext.test.mjs") -> str:
    """Run the tests of ``tests/js/<file>`` whose names match ``pattern``; all must pass."""
    result = subprocess.run(
        ["node", "--test", "--test-timeout=60000", f"--test-name-pattern={pattern}", file],
        cwd=JS, env={**os.environ, **env}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout, result.stdout[-3000:]
    return result.stdout


def start(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch, **env: str
) -> CablecarProcess:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    server = CablecarProcess(free_port(), APP, log=tmp_path / f"{name}.log").start()
    for key in env:
        monkeypatch.delenv(key)
    return server


def test_one_server_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scenarios a (TCP cut, restored, 10 missed then live), c (since; history_not_found
    past the limit) and d (a cut during a burst): exactly once and in order."""
    server = start(tmp_path, "memory", monkeypatch)
    limited = start(tmp_path, "limited", monkeypatch, CABLE_HISTORY_LIMIT="3")
    try:
        out = run_node("^[acd]:", {"CABLE_URL": server.url, "CABLE_URL_LIMITED": limited.url})
    finally:
        server.stop()
        limited.stop()
    print(out[-2000:])


@pytest.mark.services
@pytest.mark.parametrize("kind", ["redis", "postgres", "nats"])
def test_two_servers_and_a_dead_node(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any
) -> None:
    """Scenario b, on Redis, PostgreSQL and NATS (JetStream): the client's server is SIGKILLed, 10
    messages are broadcast from a third process, the client reconnects to the other
    server and gets the 10, then live."""
    broker = request.getfixturevalue(f"{kind}_server")
    prefix = f"b{free_port()}"
    env = {"CABLE_PUBSUB": broker.url, "CABLE_PREFIX": prefix}
    one = start(tmp_path, "one", monkeypatch, **env)
    two = start(tmp_path, "two", monkeypatch, **env)
    assert one.proc is not None
    cluster = {
        "kind": kind,
        "url1": one.url,
        "url2": two.url,
        "pid1": one.proc.pid,
        "pubsub": broker.url,
        "prefix": prefix,
        "python": sys.executable,
    }
    try:
        run_node("^b:", {"CLUSTER": json.dumps(cluster)})
    finally:
        one.stop()
        two.stop()
