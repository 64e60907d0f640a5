"""Unit tests of :mod:`cablecar.hub`: the fan-out, grouping and reference counting, driven
through real sessions on recording sinks (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cablecar import Cable, Channel
from cablecar.pubsub import MemoryPubSub

from .core import FramingSink, UserConnection, open_session, until


class RoomChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from(f"room_{self.params['room']}")


class ShoutChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("room_1", lambda message: self.transmit({"loud": message["n"]}))


class CountingPubSub(MemoryPubSub):
    """The in-process adapter, keeping a journal of what the hub asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.journal: list[tuple[str, str]] = []

    async def subscribe(self, stream: str) -> None:
        self.journal.append(("subscribe", stream))
        await super().subscribe(stream)

    async def unsubscribe(self, stream: str) -> None:
        self.journal.append(("unsubscribe", stream))
        await super().unsubscribe(stream)


ROOM1 = '{"channel":"RoomChannel","room":"1"}'
ROOM1_OTHER_SPELLING = '{"room":"1","channel":"RoomChannel"}'


@pytest.fixture
async def cable() -> AsyncIterator[Cable]:
    pubsub = CountingPubSub()
    cable = Cable(connection=UserConnection, channels=[RoomChannel, ShoutChannel], pubsub=pubsub)
    await cable.start()
    try:
        yield cable
    finally:
        await cable.stop()


async def subscribe(sink: Any, identifier: str) -> None:
    sink.session.receive(b'{"command":"subscribe","identifier":%s}' % _quoted(identifier))
    await until(
        lambda: any(f.get("identifier") == identifier and "type" in f for f in sink.frames),
        f"an answer to subscribing {identifier}",
    )


def _quoted(identifier: str) -> bytes:
    import orjson

    return orjson.dumps(identifier)


def messages(sink: Any) -> list[Any]:
    return [f for f in sink.frames if "message" in f and f.get("type") != "ping"]


async def test_a_broadcast_is_framed_once_per_identifier_and_the_same_bytes_go_to_all() -> None:
    """100 subscribers under one identifier and 1 under another spelling of it: one
    broadcast is prepared twice (once per group), and every member of the big group is
    handed the very same object."""
    cable = Cable(connection=UserConnection, channels=[RoomChannel])
    await cable.start()
    try:
        sinks = [
            (await open_session(cable, f"user=u{i}", sink=FramingSink()))[1] for i in range(100)
        ]
        odd = (await open_session(cable, "user=odd", sink=FramingSink()))[1]
        for sink in sinks:
            await subscribe(sink, ROOM1)
        await subscribe(odd, ROOM1_OTHER_SPELLING)
        FramingSink.prepared.clear()
        await cable.broadcast("room_1", {"n": 1})
        await until(lambda: all(messages(s) for s in [*sinks, odd]), "every delivery")
        assert len(FramingSink.prepared) == 2
        first = sinks[0].wires[-1]
        assert all(s.wires[-1] is first for s in sinks)
        assert odd.wires[-1] is not first
        assert messages(odd) == [{"identifier": ROOM1_OTHER_SPELLING, "message": {"n": 1}}]
        assert messages(sinks[7]) == [{"identifier": ROOM1, "message": {"n": 1}}]
    finally:
        await cable.stop()


async def test_the_adapter_hears_of_a_stream_once_while_it_has_subscribers(cable: Cable) -> None:
    """The first local subscriber subscribes the adapter, later ones do not; the last one
    out unsubscribes it; a stream with subscribers left stays."""
    pubsub: Any = cable.pubsub
    a = (await open_session(cable, "user=a"))[1]
    b = (await open_session(cable, "user=b"))[1]
    await subscribe(a, ROOM1)
    await subscribe(b, ROOM1)
    assert pubsub.journal.count(("subscribe", "room_1")) == 1
    assert cable.streams() == {"room_1": 2}
    a.session.receive(b'{"command":"unsubscribe","identifier":%s}' % _quoted(ROOM1))
    await until(lambda: cable.streams() == {"room_1": 1})
    assert ("unsubscribe", "room_1") not in pubsub.journal
    b.session.transport_closed()  # the socket went away
    await until(lambda: ("unsubscribe", "room_1") in pubsub.journal, "the adapter unsubscribed")
    assert cable.streams() == {}


async def test_a_quick_unsubscribe_and_subscribe_leaves_the_adapter_subscribed(
    cable: Cable,
) -> None:
    """Leaving and joining the same stream back to back (before the adapter answered)
    ends with the adapter subscribed, and a broadcast arrives."""
    pubsub: Any = cable.pubsub
    a = (await open_session(cable, "user=a"))[1]
    await subscribe(a, ROOM1)
    for _ in range(5):
        a.session.receive(b'{"command":"unsubscribe","identifier":%s}' % _quoted(ROOM1))
        a.session.receive(b'{"command":"subscribe","identifier":%s}' % _quoted(ROOM1))
    await until(lambda: sum(f.get("type") == "confirm_subscription" for f in a.frames) == 6)
    assert cable.streams() == {"room_1": 1}
    # the in-process adapter delivers only what it is subscribed to
    await cable.broadcast("room_1", {"n": 2})
    await until(lambda: bool(messages(a)), "the broadcast")
    assert messages(a) == [{"identifier": ROOM1, "message": {"n": 2}}]
    assert ("subscribe", "room_1") in pubsub.journal


async def test_exclude_socket_skips_only_that_connection(cable: Cable) -> None:
    """A broadcast with exclude_socket=<sid> reaches every subscriber but that one."""
    from cablecar.protocol import EXT_SUBPROTOCOL

    history = Cable(connection=UserConnection, channels=[RoomChannel], history=True)
    await history.start()
    try:
        sender, s = await open_session(history, "user=s", subprotocol=EXT_SUBPROTOCOL)
        _, other = await open_session(history, "user=o", subprotocol=EXT_SUBPROTOCOL)
        for sink in (s, other):
            await subscribe(sink, ROOM1)
        assert sender.sid
        await history.broadcast("room_1", {"n": 3}, exclude_socket=sender.sid)
        await history.broadcast("room_1", {"n": 4})
        await until(lambda: len(messages(other)) == 2 and len(messages(s)) == 1)
        assert [m["message"] for m in messages(s)] == [{"n": 4}]
    finally:
        await history.stop()


async def test_a_stream_callback_gets_the_decoded_message_beside_the_fast_path(
    cable: Cable,
) -> None:
    """A subscription with a stream callback gets the decoded message through it, while
    fast-path subscribers of the same stream get the raw broadcast."""
    a = (await open_session(cable, "user=a"))[1]
    b = (await open_session(cable, "user=b"))[1]
    await subscribe(a, ROOM1)
    await subscribe(b, '{"channel":"ShoutChannel"}')
    await cable.broadcast("room_1", {"n": 5})
    await until(lambda: bool(messages(a)) and bool(messages(b)))
    assert messages(a) == [{"identifier": ROOM1, "message": {"n": 5}}]
    assert messages(b) == [{"identifier": '{"channel":"ShoutChannel"}', "message": {"loud": 5}}]


async def test_a_closing_socket_gets_no_more_broadcasts(cable: Cable) -> None:
    """Once a session closes (here: the server disconnects it), broadcasts skip it."""
    a_session, a = await open_session(cable, "user=a")
    b = (await open_session(cable, "user=b"))[1]
    await subscribe(a, ROOM1)
    await subscribe(b, ROOM1)
    a_session.close("remote", False)
    await cable.broadcast("room_1", {"n": 6})
    await until(lambda: bool(messages(b)))
    assert messages(a) == []
    assert a.frames[-1] == {"type": "disconnect", "reason": "remote", "reconnect": False}
