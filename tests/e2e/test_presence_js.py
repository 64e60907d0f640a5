"""Presence and whisper through the official @anycable/web client: join/info/leave,
one member per id, errors that settle, whisper to the others only, and a cluster on
Redis whose SIGKILLed node's members leave within the presence TTL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ..conftest import free_port
from . import test_anycable_ext as anycable_ext

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]


def run_node(pattern: str, env: dict[str, str]) -> str:
    return anycable_ext.run_node(pattern, env, "presence.test.mjs")


def start(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    return anycable_ext.start(tmp_path, name, monkeypatch, **{"CABLE_PRESENCE_TTL": "2", **env})


def test_presence_and_whisper_on_one_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A joins and B sees it in events and info(); a second session of A's id adds no
    join and its leave is silent; A's unsubscribe is one leave; info() on a channel
    without presence rejects; a whisper reaches two of three, not the sender."""
    server = start(tmp_path, "one", monkeypatch)
    try:
        out = run_node("^(join|info|whisper)", {"CABLE_URL": server.url})
    finally:
        server.stop()
    assert "# pass 3" in out, out[-2000:]


@pytest.mark.services
def test_presence_across_two_nodes_on_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server: Any
) -> None:
    """A member on node 1 is seen by a client of node 2; node 1 is SIGKILLed and the
    member leaves within the TTL (2 s) plus the sweep."""
    env = {"CABLE_PUBSUB": redis_server.url, "CABLE_PREFIX": f"p{free_port()}"}
    one = start(tmp_path, "one", monkeypatch, **env)
    two = start(tmp_path, "two", monkeypatch, **env)
    assert one.proc is not None
    cluster = {"url1": one.url, "url2": two.url, "pid1": one.proc.pid}
    try:
        out = run_node("^cluster", {"CLUSTER": json.dumps(cluster)})
    finally:
        one.stop()
        two.stop()
    assert "# pass 1" in out, out[-2000:]
