"""Unit tests of :mod:`cablecar._subscription`: one subscription's streams, timers and
rejection, owned by the subscription and not by the user's channel (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from cablecar import Cable, Channel, periodically
from cablecar.protocol import EXT_SUBPROTOCOL
from cablecar.pubsub import MemoryPubSub

from .core import UserConnection, open_session, until


class CrowdedChannel(Channel):
    """Uses, as its own state, every name the server once kept on the channel."""

    async def subscribed(self) -> None:
        self._streams = ["mine"]
        self._pending = "mine"
        self._timers = 0
        self._session = "mine"
        self._rejected = "no"
        self._identifier = b"mine"
        self._sub = None
        self.streams = {"mine": 1}
        self.stream_from("crowded")

    @periodically(every=0.02)
    async def tick(self) -> None:
        self._timers += 1

    async def report(self, data: dict[str, Any]) -> None:
        self.transmit(
            {"streams": self._streams, "ticked": self._timers > 0, "session": self._session}
        )

    async def leave(self, data: dict[str, Any]) -> None:
        self.stop_stream_from("crowded")
        self.transmit({"left": True})


class GateChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("gate")  # a stream added before the rejection is dropped
        if self.params.get("key") != "open":
            self.reject()

    @periodically(every=0.02)
    async def tick(self) -> None:
        self.transmit({"tick": True})


@pytest.fixture
async def cable() -> AsyncIterator[Cable]:
    cable = Cable(connection=UserConnection, channels=[CrowdedChannel, GateChannel])
    await cable.start()
    try:
        yield cable
    finally:
        await cable.stop()


def command(kind: str, identifier: str, **data: Any) -> bytes:
    frame: dict[str, Any] = {"command": kind, "identifier": identifier}
    if data:
        frame["data"] = orjson.dumps(data).decode()
    return orjson.dumps(frame)


CROWDED = '{"channel":"CrowdedChannel"}'


async def test_a_channel_may_use_any_attribute_name_for_its_own_state(cable: Cable) -> None:
    """A channel that keeps ``_streams``, ``_pending``, ``_timers``, ``_session``... of its
    own still streams, ticks, answers and leaves its stream."""
    session, sink = await open_session(cable)
    session.receive(command("subscribe", CROWDED))
    await until(lambda: any(f.get("type") == "confirm_subscription" for f in sink.frames))
    await cable.broadcast("crowded", {"n": 1})
    await until(lambda: {"identifier": CROWDED, "message": {"n": 1}} in sink.frames)
    await asyncio.sleep(0.1)  # a few ticks
    session.receive(command("message", CROWDED, action="report"))
    await until(lambda: any("streams" in f.get("message", {}) for f in sink.frames))
    report = next(f["message"] for f in sink.frames if "streams" in f.get("message", {}))
    assert report == {"streams": ["mine"], "ticked": True, "session": "mine"}
    session.receive(command("message", CROWDED, action="leave"))
    await until(lambda: cable.streams() == {}, "the stream left")
    await cable.broadcast("crowded", {"n": 2})
    await asyncio.sleep(0.05)
    assert {"identifier": CROWDED, "message": {"n": 2}} not in sink.frames


async def test_a_rejected_subscription_keeps_no_stream_and_no_timer(cable: Cable) -> None:
    """reject() in subscribed(): the client gets reject_subscription, the stream added
    before it is not kept, no timer ticks, and broadcasts do not reach it."""
    session, sink = await open_session(cable)
    gate = '{"channel":"GateChannel","key":"shut"}'
    session.receive(command("subscribe", gate))
    await until(lambda: len(sink.frames) == 2)
    assert sink.frames[1] == {"identifier": gate, "type": "reject_subscription"}
    assert cable.streams() == {}
    await cable.broadcast("gate", {"n": 1})
    await asyncio.sleep(0.1)
    assert len(sink.frames) == 2


async def test_the_confirmation_comes_before_any_broadcast_and_timers_stop_on_unsubscribe(
    cable: Cable,
) -> None:
    """The stream is live by the time the client is confirmed (a broadcast right after
    arrives); timers tick while subscribed and not after the unsubscribe."""
    session, sink = await open_session(cable)
    gate = '{"channel":"GateChannel","key":"open"}'
    session.receive(command("subscribe", gate))
    await until(lambda: len(sink.frames) >= 2)
    assert sink.frames[1] == {"identifier": gate, "type": "confirm_subscription"}
    await cable.broadcast("gate", {"n": 1})
    await until(lambda: {"identifier": gate, "message": {"n": 1}} in sink.frames)
    await until(lambda: sum(f.get("message") == {"tick": True} for f in sink.frames) >= 2)
    session.receive(command("unsubscribe", gate))
    await until(lambda: cable.streams() == {})
    await asyncio.sleep(0.03)
    ticks = sum(f.get("message") == {"tick": True} for f in sink.frames)
    await asyncio.sleep(0.1)
    assert sum(f.get("message") == {"tick": True} for f in sink.frames) == ticks


class GatedPubSub(MemoryPubSub):
    """The in-process adapter with a gate: while shut, publishes wait (a broadcast that
    is stored but whose live copy has not reached this process yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.open.set()

    async def publish(self, stream: str, payload: bytes) -> None:
        await self.open.wait()
        await super().publish(stream, payload)


async def test_a_backlog_entry_whose_live_copy_comes_later_is_delivered_once() -> None:
    """A broadcast stored (so in the backlog a history request returns) but published
    only after the replay: the client gets it once, from the backlog, and the next
    broadcast once, live, in order."""
    pubsub = GatedPubSub()
    cable = Cable(connection=UserConnection, channels=[RoomChannel], history=True, pubsub=pubsub)
    await cable.start()
    try:
        session, sink = await open_session(cable, subprotocol=EXT_SUBPROTOCOL)
        session.receive(command("subscribe", ROOM))
        await until(lambda: any(f.get("type") == "confirm_subscription" for f in sink.frames))
        await cable.broadcast("room_1", {"n": 1})
        await until(lambda: numbers(sink) == [1])
        first = next(f for f in sink.frames if f.get("message") == {"n": 1})
        pubsub.open.clear()
        late = asyncio.ensure_future(cable.broadcast("room_1", {"n": 2}))  # stored, waits
        await asyncio.sleep(0.05)
        position = {"epoch": first["epoch"], "offset": first["offset"]}
        history = {"command": "history", "identifier": ROOM,
                   "history": {"streams": {"room_1": position}}}  # fmt: skip
        session.receive(orjson.dumps(history))
        await until(lambda: any(f.get("type") == "confirm_history" for f in sink.frames))
        assert numbers(sink) == [1, 2]  # from the backlog
        pubsub.open.set()
        await late  # its live copy arrives now
        await cable.broadcast("room_1", {"n": 3})
        await until(lambda: 3 in numbers(sink))
        await asyncio.sleep(0.05)
        assert numbers(sink) == [1, 2, 3]
    finally:
        await cable.stop()


class RoomChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("room_1")


ROOM = '{"channel":"RoomChannel"}'


def numbers(sink: Any) -> list[int]:
    return [f["message"]["n"] for f in sink.frames if "n" in (f.get("message") or {})]
