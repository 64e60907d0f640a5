"""The broadcast fast path: JSON encoded once, one frame per identifier group, the same
bytes written to every recipient. Counted, not timed."""

from __future__ import annotations

import asyncio
import base64
import os
import resource
from typing import Any

import orjson
import pytest
import uvloop

from cablecar import Cable, Channel, _json
from cablecar.transports.standalone import serve
from cablecar.transports.standalone import websocket as standalone

from .conftest import TIMEOUT

N = 1000


class FeedChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("feed")


def _masked(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    _b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return await reader.readexactly(n)


async def _client(port: int, identifier: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /cable HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: actioncable-v1-json\r\n\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    assert orjson.loads(await _read_frame(reader)) == {"type": "welcome"}
    writer.write(_masked(orjson.dumps({"command": "subscribe", "identifier": identifier})))
    assert orjson.loads(await _read_frame(reader))["type"] == "confirm_subscription"
    return reader, writer


@pytest.fixture(autouse=True)
def _enough_file_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * N:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * N), hard))


async def test_broadcast_to_1000_subscribers_encodes_once_and_frames_once_per_group(
    cablecar_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 subscribers in two identifier groups: one JSON encode for the broadcast,
    two frames built (one per group), zero JSON decodes, and every subscriber gets
    exactly the same bytes as the others in its group."""
    counts = {"dumps": 0, "loads": 0, "frames": 0}
    real_dumps, real_loads, real_frame = _json.dumps, _json.loads, standalone._Socket.prepare

    def dumps(value: Any) -> bytes:
        counts["dumps"] += 1
        return real_dumps(value)

    def loads(data: Any) -> Any:
        counts["loads"] += 1
        return real_loads(data)

    def frame(data: bytes) -> bytes:
        counts["frames"] += 1
        return real_frame(data)

    # Before anyone subscribes: the hub groups subscribers by the sink's prepare.
    monkeypatch.setattr(standalone._Socket, "prepare", staticmethod(frame))
    cable = Cable(channels=[FeedChannel], ping_interval=3600)
    server = await cablecar_server(cable)
    ident_a = '{"channel":"FeedChannel"}'
    ident_b = '{"channel":"FeedChannel","v":2}'
    clients = await asyncio.gather(
        *(_client(server.port, ident_a if i % 2 else ident_b) for i in range(N))
    )
    assert cable.streams()["feed"] == N

    monkeypatch.setattr(_json, "dumps", dumps)
    monkeypatch.setattr(_json, "loads", loads)
    counts.update(dumps=0, loads=0, frames=0)
    deliveries_before = cable.statistics()["deliveries_total"]
    await cable.broadcast("feed", {"text": "hello, everyone", "n": 1})

    assert counts == {"dumps": 1, "loads": 0, "frames": 2}
    assert cable.statistics()["deliveries_total"] - deliveries_before == N

    received = await asyncio.wait_for(
        asyncio.gather(*(_read_frame(r) for r, _w in clients)), TIMEOUT * 2
    )
    by_identifier: dict[str, set[bytes]] = {}
    for raw in received:
        msg = orjson.loads(raw)
        assert msg["message"] == {"text": "hello, everyone", "n": 1}
        by_identifier.setdefault(msg["identifier"], set()).add(raw)
    assert {k: len(v) for k, v in by_identifier.items()} == {ident_a: 1, ident_b: 1}
    for _r, w in clients:
        w.close()


def _writes() -> int:
    """Write system calls this process made so far (``syscw`` of /proc/self/io)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("syscw:"))


def test_frames_for_one_socket_in_one_tick_leave_in_one_write() -> None:
    """On uvloop (what ``cablecar serve`` runs): a lone broadcast is written to every
    subscriber before ``broadcast`` returns (nothing waits for a later tick); ten
    broadcasts in one tick reach 50 subscribers complete and in order with two writes
    per socket (the first frame at once, the other nine together at the start of the
    next tick), not ten."""
    uvloop.run(_one_write_per_tick())


async def _one_write_per_tick() -> None:
    cable = Cable(channels=[FeedChannel], ping_interval=3600)
    server = await serve(cable, "127.0.0.1", 0)
    n = 50
    try:
        clients = [await _client(server.port, '{"channel":"FeedChannel"}') for _ in range(n)]
        await asyncio.sleep(0.1)  # the subscribes' own writes are done

        before = _writes()
        await cable.broadcast("feed", {"n": 0})
        lone = _writes() - before  # no await since: written in this very tick
        assert lone == n, lone
        got = await asyncio.wait_for(asyncio.gather(*(_read_frame(r) for r, _w in clients)),
                                     TIMEOUT)  # fmt: skip
        assert all(orjson.loads(raw)["message"] == {"n": 0} for raw in got)

        before = _writes()
        for i in range(1, 11):
            await cable.broadcast("feed", {"n": i})  # the memory adapter: all in this tick
        for reader, _w in clients:
            seq = [orjson.loads(await asyncio.wait_for(_read_frame(reader), TIMEOUT))["message"]
                   ["n"] for _ in range(10)]  # fmt: skip
            assert seq == list(range(1, 11))
        burst = _writes() - before
        assert burst == 2 * n, burst  # 10 * n without coalescing
        for _r, w in clients:
            w.close()
    finally:
        await server.close(timeout=1.0)
