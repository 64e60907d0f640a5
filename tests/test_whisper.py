"""Whisper: client-to-client events on a subscription's whisper stream, with no action
code, no history, and never back to the sender."""

from __future__ import annotations

from typing import Any

from cablecar import Cable, Channel, Connection

from .conftest import ConnectWS
from .test_history import ext_connect

TYPING = '{"channel":"TypingChannel","room":"1"}'
PLAIN = '{"channel":"PlainChannel"}'


class TypingChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from(f"typing_{self.params['room']}", whisper=True)


class PlainChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("plain")


async def test_whisper_reaches_the_others_but_not_the_sender(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """A whispers {"event":"typing"}: B and C receive it without a position, A does not;
    a whisper on a channel with no whisper stream goes nowhere; a later history replay
    does not contain it."""
    cable = Cable(Connection, [TypingChannel, PlainChannel], history=True)
    server = await cablecar_server(cable)
    clients = [(await ext_connect(ws_connect, server.url))[0] for _ in range(3)]
    for ws in clients:
        await ws.subscribe(TYPING)
        await ws.subscribe(PLAIN)
    a, b, c = clients
    await a.send({"command": "whisper", "identifier": TYPING, "data": {"event": "typing"}})
    await a.send({"command": "whisper", "identifier": PLAIN, "data": {"event": "nope"}})
    for ws in (b, c):
        assert await ws.recv_data() == {"identifier": TYPING, "message": {"event": "typing"}}
    await cable.broadcast("typing_1", {"event": "stored"})
    for ws in (a, b, c):  # the next thing each one sees is the broadcast
        frame = await ws.recv_data()
        assert frame["message"] == {"event": "stored"} and frame["offset"] == 1
    assert await a.quiet(0.2) == [] and await b.quiet(0.05) == []


class RoomTypingChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_for(self.params["room"], whisper=True)


async def test_stream_for_passes_whisper_on(cablecar_server: Any, ws_connect: ConnectWS) -> None:
    """``stream_for(model, whisper=True)`` makes the model's stream the whisper stream, as
    ``stream_from(name, whisper=True)`` does: B receives A's whisper."""
    cable = Cable(Connection, [RoomTypingChannel], history=True)
    server = await cablecar_server(cable)
    ident = '{"channel":"RoomTypingChannel","room":"7"}'
    a, b = [(await ext_connect(ws_connect, server.url))[0] for _ in range(2)]
    for ws in (a, b):
        assert (await ws.subscribe(ident))["type"] == "confirm_subscription"
    await a.send({"command": "whisper", "identifier": ident, "data": {"event": "typing"}})
    assert await b.recv_data() == {"identifier": ident, "message": {"event": "typing"}}
