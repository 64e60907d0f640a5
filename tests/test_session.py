"""Unit tests of :mod:`cablecar.session`: one connection's life as the transport contract
(:class:`cablecar.transport.SessionPort`) drives it, on a recording sink (no network)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from cablecar import Cable, Channel, Connection
from cablecar.errors import Unauthorized

from .core import open_session, until

journal: list[str] = []


class AppConnection(Connection):
    identified_by = ("user",)

    async def connect(self) -> None:
        self.user = self.request.query.get("user")
        if self.user == "slow":
            await asyncio.sleep(0.2)
        if not self.user:
            raise Unauthorized()

    async def disconnect(self) -> None:
        journal.append(f"disconnect {self.user}")


class RoomChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from(f"room_{self.params['room']}")

    async def unsubscribed(self) -> None:
        journal.append(f"unsubscribed {self.params['room']}")

    async def echo(self, data: dict[str, Any]) -> None:
        self.transmit({"n": data["n"]})


ROOM = '{"channel":"RoomChannel","room":"1"}'


def subscribe(room: str = "1") -> bytes:
    identifier = orjson.dumps({"channel": "RoomChannel", "room": room}).decode()
    return orjson.dumps({"command": "subscribe", "identifier": identifier})


def perform(n: int) -> bytes:
    data = orjson.dumps({"action": "echo", "n": n}).decode()
    return orjson.dumps({"command": "message", "identifier": ROOM, "data": data})


@pytest.fixture
async def cable() -> AsyncIterator[Cable]:
    journal.clear()
    cable = Cable(connection=AppConnection, channels=[RoomChannel])
    await cable.start()
    try:
        yield cable
    finally:
        await cable.stop()


async def test_commands_sent_before_the_welcome_run_after_it_in_order(cable: Cable) -> None:
    """A subscribe and three performs received while connect() still runs are answered
    after the welcome, in the order sent."""
    from cablecar.http import Request
    from cablecar.testing import RecordingSink

    sink = RecordingSink()
    session = cable.open_session(sink, Request("GET", "/cable", "user=slow"), None)
    sink.session = session
    session.start()
    for data in (subscribe(), perform(1), perform(2), perform(3)):
        session.receive(data)
    await until(lambda: len(sink.frames) >= 5, "five frames")
    assert sink.frames[0] == {"type": "welcome"}
    assert sink.frames[1] == {"identifier": ROOM, "type": "confirm_subscription"}
    assert [f["message"]["n"] for f in sink.frames[2:5]] == [1, 2, 3]


async def test_a_refused_connection_is_told_unauthorized_and_closed(cable: Cable) -> None:
    """connect() raising Unauthorized: the sink gets one disconnect frame and a close."""
    _, sink = await open_session(cable, "")
    assert sink.frames == [{"type": "disconnect", "reason": "unauthorized", "reconnect": False}]
    await until(lambda: sink.close_code == 1000)
    assert cable.statistics()["connections"] == 0


async def test_fail_closes_with_the_code_alone(cable: Cable) -> None:
    """A WebSocket protocol violation (fail) closes with its code and no Action Cable
    disconnect frame; the connection's callbacks still run."""
    session, sink = await open_session(cable, "user=ann")
    session.receive(subscribe())
    await until(lambda: len(sink.frames) == 2)
    session.fail(1007)
    assert sink.close_code == 1007
    assert all(f.get("type") != "disconnect" for f in sink.frames)
    await until(lambda: journal == ["unsubscribed 1", "disconnect ann"], "the callbacks")


async def test_close_sends_the_reason_then_closes_and_ignores_what_comes_after(
    cable: Cable,
) -> None:
    """close(reason) writes the disconnect frame, then closes with the code; commands
    received afterwards are ignored and a second close does nothing."""
    session, sink = await open_session(cable, "user=bo")
    session.close("server_restart", True, 1001)
    session.receive(subscribe())
    session.close("remote", False)
    await asyncio.sleep(0.05)
    assert sink.frames == [
        {"type": "welcome"},
        {"type": "disconnect", "reason": "server_restart", "reconnect": True},
    ]
    assert sink.close_code == 1001


async def test_a_client_closing_first_gets_no_more_replies(cable: Cable) -> None:
    """After the client's close frame (peer_closing) its commands get no reply (the
    transport, which sent its own close frame, drops broadcasts itself); when the socket
    is gone the callbacks run, its streams are left and broadcasts no longer reach it."""
    session, sink = await open_session(cable, "user=cy")
    session.receive(subscribe())
    await until(lambda: len(sink.frames) == 2)
    session.peer_closing()
    session.receive(perform(1))
    await asyncio.sleep(0.05)
    assert len(sink.frames) == 2
    session.transport_closed()
    await until(lambda: journal == ["unsubscribed 1", "disconnect cy"], "the callbacks")
    assert cable.streams() == {}
    await cable.broadcast("room_1", {"late": True})
    await asyncio.sleep(0.05)
    assert len(sink.frames) == 2


async def test_malformed_input_is_logged_once_per_kind_and_the_session_goes_on(
    cable: Cable, caplog: pytest.LogCaptureFixture
) -> None:
    """Non-JSON, unknown commands and binary messages get no answer and one WARNING per
    kind however often they come; the next good command is answered."""
    session, sink = await open_session(cable, "user=di")
    with caplog.at_level(logging.WARNING, logger="cablecar"):
        for _ in range(3):
            session.receive(b"not json")
            session.receive(b'{"command":"dance","identifier":"{}"}')
            session.receive_binary(b"\x00")
        session.receive(subscribe())
        await until(lambda: len(sink.frames) == 2)
    assert sink.frames[1]["type"] == "confirm_subscription"
    kinds = [getattr(r, "cablecar_kind", r.getMessage()) for r in caplog.records]
    assert len(kinds) == len(set(kinds)) == 3, kinds


async def test_too_slow_disconnects_with_its_reason(cable: Cable) -> None:
    """A transport reporting a client that does not read (too_slow) gets it disconnected
    with reason too_slow, reconnect true."""
    session, sink = await open_session(cable, "user=ed")
    session.too_slow()
    assert sink.frames[-1] == {"type": "disconnect", "reason": "too_slow", "reconnect": True}
    assert sink.close_code == 1000
