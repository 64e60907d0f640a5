"""Presence and whisper from the Python client: join, members, events, whisper to the
others, errors that say why, and a member that stays through a cut connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cablecar import Cable, Channel, Connection
from cablecar.client import Backoff, PresenceError, connect

from ..conftest import TIMEOUT
from .test_client_recovery import CuttableProxy


class RoomChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from(f"room_{self.params['room']}", presence=True, whisper=True)


class PlainChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("plain")


def make_cable(**settings: Any) -> Cable:
    return Cable(Connection, [RoomChannel, PlainChannel], **settings)


async def test_join_info_events_whisper_and_leave(cablecar_server: Any) -> None:
    """Ann joins: Bob gets the join event and sees her in info(); Ann's whisper reaches
    Bob only; Ann leaves: Bob gets the leave and an empty info()."""
    server = await cablecar_server(make_cable(history=True))
    async with connect(server.url) as ann_c, connect(server.url) as bob_c:
        ann = await ann_c.subscribe("RoomChannel", room="1")
        bob = await bob_c.subscribe("RoomChannel", room="1")
        await ann.presence.join("ann", {"name": "Ann"})
        assert await bob.presence.receive(TIMEOUT) == {
            "type": "join", "id": "ann", "info": {"name": "Ann"},
        }  # fmt: skip
        assert await bob.presence.info() == {"ann": {"name": "Ann"}}
        await ann.whisper({"typing": True})
        assert await bob.receive(TIMEOUT) == {"typing": True}
        with pytest.raises(TimeoutError):
            await ann.receive(0.3)
        await ann.presence.leave()
        assert await bob.presence.receive(TIMEOUT) == {"type": "leave", "id": "ann"}
        assert await bob.presence.info() == {}


async def test_no_presence_raises_presence_error(cablecar_server: Any) -> None:
    """info() on a channel without a presence stream raises PresenceError (the server
    answered ``error``); whisper and join on a cable without history raise it at once."""
    server = await cablecar_server(make_cable(history=True))
    async with connect(server.url) as consumer:
        plain = await consumer.subscribe("PlainChannel")
        with pytest.raises(PresenceError):
            await plain.presence.info()
    plain_server = await cablecar_server(make_cable())
    async with connect(plain_server.url) as consumer:
        room = await consumer.subscribe("RoomChannel", room="1")
        with pytest.raises(PresenceError, match="extended protocol"):
            await room.whisper({"x": 1})
        with pytest.raises(PresenceError):
            await room.presence.join("me")


async def test_a_member_stays_through_a_cut_connection(cablecar_server: Any) -> None:
    """Ann's TCP connection is cut for 0.5 s (presence TTL 5 s): she resumes and joins
    again; Bob sees neither a leave nor a second join, and she is still listed."""
    server = await cablecar_server(make_cable(history=True, presence_ttl=5.0))
    proxy = CuttableProxy(server.port)
    port = await proxy.start()
    backoff = Backoff(initial=0.1, factor=1.5, maximum=0.3, jitter=0.0)
    try:
        async with (
            connect(f"ws://127.0.0.1:{port}/cable", backoff=backoff) as ann_c,
            connect(server.url) as bob_c,
        ):
            ann = await ann_c.subscribe("RoomChannel", room="2")
            bob = await bob_c.subscribe("RoomChannel", room="2")
            await ann.presence.join("ann", {"n": 1})
            assert (await bob.presence.receive(TIMEOUT))["type"] == "join"
            proxy.cut()
            await asyncio.sleep(0.5)
            proxy.open = True
            async with asyncio.timeout(TIMEOUT * 2):
                while ann_c.connections < 2 or not ann.connected:
                    await asyncio.sleep(0.02)
            with pytest.raises(TimeoutError):
                await bob.presence.receive(1.0)
            assert await bob.presence.info() == {"ann": {"n": 1}}
    finally:
        proxy.close()
