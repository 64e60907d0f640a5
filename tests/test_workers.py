"""``cablecar serve --workers 4``: a worker killed with SIGKILL under load is replaced,
the others keep serving, and its clients reconnect and recover what they missed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import cablecar.client
from cablecar import Broadcaster
from cablecar.client import Backoff

from .conftest import TIMEOUT, free_port
from .servers import ROOT
from .services import children

pytestmark = pytest.mark.services


def test_a_killed_worker_is_replaced_and_its_clients_miss_nothing(
    redis_server: Any, tmp_path: Path
) -> None:
    """12 clients on 4 workers (history on, Redis); one worker is SIGKILLed; 10
    messages are broadcast meanwhile: every client gets all of them once, in order; the
    parent starts a new worker in its place; SIGTERM then stops everything with 0."""
    port = free_port()
    prefix = f"w{port}"
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cablecar", "serve", "examples/conformance_app.py:cable",
         "--port", str(port), "--workers", "4", "--pubsub", redis_server.url,
         "--channel-prefix", prefix, "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "CABLE_HISTORY": "1"},
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while len(children(proc.pid)) < 4 or not _answers(port):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.1)
        before = children(proc.pid)
        got = asyncio.run(_scenario(port, redis_server.url, prefix, proc.pid))
        assert all(g == list(range(12)) for g in got), got
        deadline = time.monotonic() + 10
        while True:  # a new worker in place of the killed one
            now = children(proc.pid)
            if len(now) == 4 and now != before:
                break
            assert time.monotonic() < deadline, (before, now, log.read_text())
            time.sleep(0.1)
        assert re.search(r"started worker \d+ in its place", log.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()


def _sockets(pid: int) -> int:
    """Open sockets of a process (its clients, plus its listener and Redis links)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed since the listing
            count += os.readlink(fd).startswith("socket:")
    return count


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


async def _scenario(port: int, redis_url: str, prefix: str, parent: int) -> list[list[int]]:
    backoff = Backoff(initial=0.1, factor=1.5, maximum=0.5, jitter=0.0)
    url = f"ws://127.0.0.1:{port}/cable"
    consumers = [
        await cablecar.client.connect(f"{url}?user=c{i}", backoff=backoff) for i in range(12)
    ]
    try:
        subs = [await c.subscribe("ChatChannel", room=prefix) for c in consumers]
        async with Broadcaster(redis_url, channel_prefix=prefix, history=True) as broadcaster:
            await broadcaster.broadcast(f"chat_{prefix}", {"n": 0})
            for sub in subs:
                assert await sub.receive(TIMEOUT) == {"n": 0}
            victim = max(children(parent), key=_sockets)  # the one holding most clients
            os.kill(victim, signal.SIGKILL)
            for n in range(1, 11):
                await broadcaster.broadcast(f"chat_{prefix}", {"n": n})
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # everyone is back (on the other workers)
            await broadcaster.broadcast(f"chat_{prefix}", {"n": 11})
            got: list[list[int]] = []
            for sub in subs:
                seen = [0]
                while seen[-1] != 11:
                    seen.append((await sub.receive(TIMEOUT * 2))["n"])
                got.append(seen)
            assert any(c.connections > 1 for c in consumers), "nobody was on the killed worker"
            return got
    finally:
        for c in consumers:
            await c.close()


def test_a_stop_that_meets_a_worker_still_starting_exits_0() -> None:
    """The supervisor's stop reaching a worker before it installed its signal handlers
    (it dies of the SIGTERM itself) still ends the service with 0; a worker that fails on
    its own during a stop is still reported."""
    from cablecar.cli import _supervise

    starting = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                for _ in range(2)]  # fmt: skip
    for proc in starting:
        proc.send_signal(signal.SIGTERM)
    assert _supervise(starting, lambda: starting[0], lambda: True, lambda *a: None) == 0
    failing = [subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])]
    assert _supervise(failing, lambda: failing[0], lambda: True, lambda *a: None) == 3
