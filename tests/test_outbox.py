"""Broadcasts made while the pub/sub service is down wait in a bounded outbox and go out
in order when it is back: nothing is lost silently (``outbox_size``, ``outbox_age``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from cablecar import Broadcaster, Cable, Channel, Connection
from cablecar.errors import AdapterError, OutboxFull

from .conftest import TIMEOUT, ConnectWS
from .services import RedisServer, ServiceUnavailable

ROOM = '{"channel":"RoomChannel","room":"1"}'

pytestmark = pytest.mark.services


class AppConnection(Connection):
    pass


class RoomChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("room_1")


@pytest.fixture
def redis() -> Any:
    try:
        server = RedisServer()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    server.start()
    yield server
    server.close()


async def received(ws: Any, n: int) -> list[Any]:
    return [(await ws.recv_data(timeout=TIMEOUT * 3))["message"]["n"] for _ in range(n)]


async def test_broadcasts_while_redis_is_down_wait_and_arrive_in_order(
    cablecar_server: Any, ws_connect: ConnectWS, redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis is killed; the cable's broadcasts 1-3 return (they wait: statistics show 3),
    the 4th raises OutboxFull; a Broadcaster's (another process's) 10-11 wait too and its
    12th raises. Redis comes back on the same port: the cable's own subscriber gets 1, 2, 3
    in order (the cable publishes them once its listener is subscribed again), then a live
    5; the Broadcaster publishes 10 and 11 as soon as Redis answers (a server whose
    listener is not back yet misses them, as any message published while it reconnects:
    if they arrive, they arrive once and in order). Nothing twice."""
    caplog.set_level(logging.WARNING, logger="cablecar.outbox")
    cable = Cable(AppConnection, [RoomChannel], redis.url, outbox_size=3, outbox_age=60)
    server = await cablecar_server(cable)
    ws = await ws_connect(server.url)
    await ws.subscribe(ROOM)
    broadcaster = Broadcaster(redis.url, outbox_size=2, timeout=TIMEOUT * 3)
    await cable.broadcast("room_1", {"n": 0})
    assert await received(ws, 1) == [0]
    redis.stop(kill=True)
    async with asyncio.timeout(TIMEOUT):
        for n in (1, 2, 3):
            await cable.broadcast("room_1", {"n": n})
        with pytest.raises(OutboxFull):
            await cable.broadcast("room_1", {"n": 4})
        for n in (10, 11):
            await broadcaster.broadcast("room_1", {"n": n})
        with pytest.raises(OutboxFull):
            await broadcaster.broadcast("room_1", {"n": 12})
    assert cable.statistics()["outbox"] == {
        "waiting": 3, "overflowed": 1, "expired": 0, "delivered_late": 0,
    }  # fmt: skip
    await asyncio.sleep(0.5)
    redis.start()
    async with asyncio.timeout(TIMEOUT * 3):
        while cable.statistics()["outbox"]["delivered_late"] < 3 or len(broadcaster._outbox):
            await asyncio.sleep(0.05)
    await cable.broadcast("room_1", {"n": 5})
    got = []
    while 5 not in got:
        got += await received(ws, 1)
    assert [n for n in got if n < 10] == [1, 2, 3, 5]
    assert [n for n in got if n >= 10] in ([], [10], [11], [10, 11])
    assert await ws.quiet(0.3) == []
    assert broadcaster._outbox.figures()["delivered_late"] == 2
    metrics = cable.metrics().body.decode()
    assert "cablecar_outbox_overflowed_total 1.0" in metrics
    assert "cablecar_outbox_delivered_late_total 3.0" in metrics
    assert "cablecar_outbox_waiting 0.0" in metrics
    assert "broadcasts wait in the outbox" in caplog.text
    await broadcaster.close()


async def test_waiting_broadcasts_age_out_loudly_and_at_most_once_stays_available(
    redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A broadcast that waits longer than outbox_age is dropped with an ERROR naming its
    stream; with outbox_size=0 a broadcast to a dead Redis raises AdapterError at once."""
    caplog.set_level(logging.WARNING, logger="cablecar.outbox")
    redis.stop(kill=True)
    aging = Broadcaster(redis.url, outbox_age=0.3, timeout=0.5)
    await aging.broadcast("room_9", {"n": 1})
    await asyncio.sleep(1.0)
    redis.start()
    await aging.close()
    assert "a broadcast to 'room_9' waited over 0.3s for the pub/sub service: dropped" in (
        caplog.text
    )
    redis.stop(kill=True)
    strict = Broadcaster(redis.url, outbox_size=0)
    with pytest.raises(AdapterError):
        await strict.broadcast("room_9", {"n": 2})
    await strict.close()
    redis.start()
