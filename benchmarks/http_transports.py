"""Beyond WebSockets: server-sent events fan-out against WebSocket fan-out, and long-polling
round trips against WebSocket round trips, in the same run.

1. ``sse_fanout``: a fresh ``cablecar serve examples/conformance_app.py:cable`` per transport;
   ``--clients`` subscribers of one room, as WebSockets, then as event streams
   (``GET /events``). One more WebSocket client sends ``--broadcasts`` ``speak`` actions;
   every delivery is counted. Server CPU per delivery, read from ``/proc`` between the first
   send and the last delivery.
2. ``longpoll_roundtrip``: one client sends ``speak`` and waits for its own message to come
   back, ``--round-trips`` times, over a WebSocket, then over long polling (the command in
   a poll's body; the answer in that poll or the next). Median and p99 latency, and server
   CPU per round trip.

    .venv/bin/python benchmarks/http_transports.py --clients 500 --round-trips 300

Prints one JSON line per part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import httpx
from _common import cpu_seconds, emit, machine_info, raise_nofile_limit
from presence import _ident, _subscribed
from websockets.asyncio.client import ClientConnection

__all__ = ["main", "run_longpoll_roundtrip", "run_sse_fanout"]


def _speak(room: str, body: str) -> str:
    data = json.dumps({"action": "speak", "body": body})
    return json.dumps({"command": "message", "identifier": _ident(room), "data": data})


async def _ws_reader(ws: ClientConnection, counts: list[int]) -> None:
    async for raw in ws:
        if '"body"' in raw:
            counts[0] += 1


async def _sse_reader(
    port: int, user: str, room: str, counts: list[int], ready: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    query = httpx.QueryParams({"user": user, "identifier": _ident(room)})
    writer.write(f"GET /events?{query} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    buffer = b""
    try:
        while chunk := await reader.read(65536):
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if event.startswith(b"event: confirm_subscription"):
                    ready.set()
                elif event.startswith(b"data: ") and b'"body"' in event:
                    counts[0] += 1
    finally:
        writer.close()


async def _until(pred: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} missing")
        await asyncio.sleep(0.005)


async def _fanout(
    url: str, port: int, pid: int, transport: str, clients: int, broadcasts: int
) -> dict[str, Any]:
    room = f"bench-{transport}"
    counts = [0]
    tasks: list[asyncio.Task[None]] = []
    sockets: list[ClientConnection] = []
    for i in range(clients):
        if transport == "websocket":
            ws = await _subscribed(url, f"u{i}", room)
            sockets.append(ws)
            tasks.append(asyncio.create_task(_ws_reader(ws, counts)))
        else:
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(_sse_reader(port, f"u{i}", room, counts, ready)))
            await asyncio.wait_for(ready.wait(), 20)
    sender = await _subscribed(url, "sender", room)  # its own copies are not counted
    expected = clients * broadcasts
    cpu0, t0 = cpu_seconds([pid]), time.monotonic()
    for n in range(broadcasts):
        await sender.send(_speak(room, str(n)))
    await _until(
        lambda: counts[0] >= expected, 120, f"{transport} deliveries ({counts[0]} of {expected})"
    )
    cpu, wall = cpu_seconds([pid]) - cpu0, time.monotonic() - t0
    await sender.close()
    await asyncio.gather(*(ws.close() for ws in sockets))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "deliveries": counts[0],
        "expected": expected,
        "server_cpu_us_per_delivery": round(cpu / expected * 1e6, 2),
        "deliveries_per_s": round(expected / wall),
    }


def run_sse_fanout(clients: int, broadcasts: int) -> dict[str, Any]:
    """Part 1: the same fan-out to WebSocket subscribers and to event streams."""
    from presence import cablecar

    out: dict[str, Any] = {}
    for transport in ("websocket", "sse"):
        with cablecar() as (url, pid):
            port = int(url.split(":")[2].split("/")[0])
            out[transport] = asyncio.run(_fanout(url, port, pid, transport, clients, broadcasts))
    ws_cpu = out["websocket"]["server_cpu_us_per_delivery"]
    out["sse_vs_websocket_cpu"] = (
        round(out["sse"]["server_cpu_us_per_delivery"] / ws_cpu, 2) if ws_cpu else None
    )
    return {"scenario": "sse_fanout", "clients": clients, "broadcasts": broadcasts, **out}


async def _ws_roundtrips(url: str, pid: int, n: int) -> dict[str, Any]:
    room = "bench-rt-ws"
    ws = await _subscribed(url, "rt", room)
    latencies = []
    cpu0 = cpu_seconds([pid])
    for i in range(n):
        t0 = time.perf_counter()
        await ws.send(_speak(room, str(i)))
        while f'"body":"{i}"' not in await ws.recv():
            pass
        latencies.append(time.perf_counter() - t0)
    cpu = cpu_seconds([pid]) - cpu0
    await ws.close()
    return _summary(latencies, cpu, n)


async def _lp_roundtrips(port: int, pid: int, n: int) -> dict[str, Any]:
    room = "bench-rt-lp"
    base = f"http://127.0.0.1:{port}/lp"
    async with httpx.AsyncClient(timeout=30) as http:
        opened = await http.post(f"{base}?user=rt")
        pid_header = {"X-AnyCable-Poll-ID": opened.headers["X-AnyCable-Poll-ID"]}
        ack = int(opened.headers["X-Cablecar-Poll-Seq"])
        subscribe = json.dumps({"command": "subscribe", "identifier": _ident(room)})

        async def poll(body: str = "") -> str:
            nonlocal ack
            headers = {**pid_header, "X-Cablecar-Poll-Ack": str(ack)}
            answer = await http.post(base, content=body, headers=headers)
            ack = int(answer.headers["X-Cablecar-Poll-Seq"])
            return answer.text

        while "confirm_subscription" not in await poll(subscribe):
            pass
        latencies = []
        cpu0 = cpu_seconds([pid])
        for i in range(n):
            t0 = time.perf_counter()
            text = await poll(_speak(room, str(i)))
            while f'\\"body\\":\\"{i}\\"' not in text and f'"body":"{i}"' not in text:
                text = await poll()
            latencies.append(time.perf_counter() - t0)
        cpu = cpu_seconds([pid]) - cpu0
    return _summary(latencies, cpu, n)


def _summary(latencies: list[float], cpu: float, n: int) -> dict[str, Any]:
    latencies.sort()
    return {
        "round_trips": n,
        "median_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 2),
        "server_cpu_us_per_round_trip": round(cpu / n * 1e6, 1),
    }


def run_longpoll_roundtrip(n: int) -> dict[str, Any]:
    """Part 2: speak and see it come back, over a WebSocket and over long polling."""
    from presence import cablecar

    with cablecar() as (url, pid):
        port = int(url.split(":")[2].split("/")[0])
        ws = asyncio.run(_ws_roundtrips(url, pid, n))
        lp = asyncio.run(_lp_roundtrips(port, pid, n))
    return {
        "scenario": "longpoll_roundtrip",
        "websocket": ws,
        "longpoll": lp,
        "longpoll_vs_websocket_cpu": round(
            lp["server_cpu_us_per_round_trip"] / ws["server_cpu_us_per_round_trip"], 2
        )
        if ws["server_cpu_us_per_round_trip"]
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--broadcasts", type=int, default=100)
    ap.add_argument("--round-trips", type=int, default=300)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    raise_nofile_limit()
    info = machine_info()
    emit({**run_sse_fanout(a.clients, a.broadcasts), "machine": info}, a.out)
    emit({**run_longpoll_roundtrip(a.round_trips), "machine": info}, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
