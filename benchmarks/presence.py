"""Presence and whisper: whisper fan-out CPU against a broadcast's, and join+leave across
two nodes on Redis.

1. ``whisper``: one ``cablecar serve examples/conformance_app.py:cable`` with
   ``history=True`` (memory), ``--clients`` extended-protocol subscribers of one room.
   ``--senders`` of them each send ``--each`` ``speak`` actions (broadcasts to the room),
   then each sends as many whispers (to the room but the sender). Server CPU per delivery,
   read from ``/proc`` between the first send and the last delivery, for both.
2. ``presence``: two such servers sharing a throwaway ``redis-server``; ``--members``
   clients on node 1 each join the room's presence and leave it again; a watcher on node 2
   counts every ``join`` and ``leave`` event. Events per second (wall clock, first join
   sent to last leave seen) and server CPU per event on both nodes together.

    .venv/bin/python benchmarks/presence.py --clients 500 --members 200

Prints one JSON line per part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from _common import REPO, cpu_seconds, emit, free_port, machine_info, raise_nofile_limit
from websockets.asyncio.client import ClientConnection, connect

__all__ = ["main", "run_presence", "run_whisper"]

EXT = "actioncable-v1-ext-json"
APP = f"{REPO / 'examples' / 'conformance_app.py'}:cable"


@contextmanager
def cablecar(pubsub: str = "memory://") -> Iterator[tuple[str, int]]:
    """A ``cablecar serve`` of the conformance app with history on: (URL, pid)."""
    port = free_port()
    env = {**os.environ, "CABLE_HISTORY": "1", "CABLE_METRICS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cablecar", "serve", APP, "--port", str(port),
         "--pubsub", pubsub, "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("cablecar did not start") from None
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/cable", proc.pid
    finally:
        proc.terminate()
        proc.wait(15)


@contextmanager
def redis() -> Iterator[str]:
    """A throwaway ``redis-server`` on a free port: its URL."""
    port = free_port()
    folder = tempfile.mkdtemp(prefix="cablecar-bench-presence-")
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _ident(room: str) -> str:
    return json.dumps({"channel": "ChatChannel", "room": room}, separators=(",", ":"))


async def _subscribed(url: str, user: str, room: str) -> ClientConnection:
    ws = await connect(f"{url}?user={user}", subprotocols=[EXT], max_size=None)  # type: ignore[list-item]
    ident = _ident(room)
    await ws.send(json.dumps({"command": "subscribe", "identifier": ident}))
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("type") == "confirm_subscription":
            return ws


async def _count(ws: ClientConnection, counts: dict[str, int]) -> None:
    """Count presence events by type, whispers (``w``) and speaks (``body``)."""
    async for raw in ws:
        frame = json.loads(raw)
        message = frame.get("message")
        if not isinstance(message, dict):
            continue
        key = (
            message.get("type", "")
            if frame.get("type") == "presence"
            else ("w" if "w" in message else "body" if "body" in message else "")
        )
        counts[key] = counts.get(key, 0) + 1


async def _until(pred: Any, seconds: float, counts: dict[str, int]) -> None:
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"deliveries missing; counted {counts}")
        await asyncio.sleep(0.005)


async def _whisper(url: str, pid: int, clients: int, senders: int, each: int) -> dict[str, Any]:
    room = "bench-whisper"
    sockets = [await _subscribed(url, f"u{i}", room) for i in range(clients)]
    counts: dict[str, int] = {}
    readers = [asyncio.create_task(_count(ws, counts)) for ws in sockets]
    ident = _ident(room)
    out: dict[str, Any] = {}
    for kind in ("broadcast", "whisper"):
        key = "body" if kind == "broadcast" else "w"
        expected = senders * each * (clients if kind == "broadcast" else clients - 1)
        counts[key] = 0
        cpu0, t0 = cpu_seconds([pid]), time.monotonic()
        for n in range(each):
            for ws in sockets[:senders]:
                if kind == "broadcast":
                    data = json.dumps({"action": "speak", "body": str(n)})
                    await ws.send(
                        json.dumps({"command": "message", "identifier": ident, "data": data})
                    )
                else:
                    await ws.send(
                        json.dumps({"command": "whisper", "identifier": ident, "data": {"w": n}})
                    )
        await _until(lambda key=key, expected=expected: counts.get(key, 0) >= expected, 120, counts)
        cpu, wall = cpu_seconds([pid]) - cpu0, time.monotonic() - t0
        out[kind] = {
            "deliveries": expected,
            "server_cpu_us_per_delivery": round(cpu / expected * 1e6, 2),
            "deliveries_per_s": round(expected / wall),
        }
    await asyncio.gather(*(ws.close() for ws in sockets))  # readers drain meanwhile
    for task in readers:
        task.cancel()
    broadcast_cpu = out["broadcast"]["server_cpu_us_per_delivery"]
    out["whisper_vs_broadcast_cpu"] = (  # None when the run was too short to see CPU ticks
        round(out["whisper"]["server_cpu_us_per_delivery"] / broadcast_cpu, 2)
        if broadcast_cpu
        else None
    )
    return out


def run_whisper(clients: int, senders: int, each: int) -> dict[str, Any]:
    """Part 1: whisper fan-out against broadcast fan-out on one node."""
    with cablecar() as (url, pid):
        result = asyncio.run(_whisper(url, pid, clients, senders, each))
    return {"scenario": "whisper", "clients": clients, "senders": senders, "each": each, **result}


async def _presence(url1: str, url2: str, pids: list[int], members: int) -> dict[str, Any]:
    room = "bench-presence"
    ident = _ident(room)
    watcher = await _subscribed(url2, "watcher", room)
    counts: dict[str, int] = {}
    reader = asyncio.create_task(_count(watcher, counts))
    sockets = [await _subscribed(url1, f"m{i}", room) for i in range(members)]
    others: dict[str, int] = {}
    drains = [asyncio.create_task(_count(ws, others)) for ws in sockets]
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    for i, ws in enumerate(sockets):
        presence = {"id": f"m{i}", "info": {"n": i}}
        await ws.send(json.dumps({"command": "join", "identifier": ident, "presence": presence}))
    for ws in sockets:
        await ws.send(json.dumps({"command": "leave", "identifier": ident}))
    await _until(
        lambda: counts.get("join", 0) >= members and counts.get("leave", 0) >= members, 120, counts
    )
    cpu, wall = cpu_seconds(pids) - cpu0, time.monotonic() - t0
    await asyncio.gather(*(ws.close() for ws in (*sockets, watcher)))
    for task in (reader, *drains):
        task.cancel()
    events = 2 * members
    return {
        "events": events,
        "events_per_s": round(events / wall),
        "server_cpu_us_per_event": round(cpu / events * 1e6, 1),
    }


def run_presence(members: int) -> dict[str, Any]:
    """Part 2: join+leave of ``members`` on node 1, seen on node 2, over Redis."""
    with redis() as url, cablecar(url) as (url1, pid1), cablecar(url) as (url2, pid2):
        result = asyncio.run(_presence(url1, url2, [pid1, pid2], members))
    return {"scenario": "presence", "members": members, "nodes": 2, "pubsub": "redis", **result}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--senders", type=int, default=20)
    ap.add_argument("--each", type=int, default=10, help="speaks, then whispers, per sender")
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    raise_nofile_limit()
    info = machine_info()
    emit({**run_whisper(a.clients, a.senders, a.each), "machine": info}, a.out)
    emit({**run_presence(a.members), "machine": info}, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
