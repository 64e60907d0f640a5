"""A small application for the testing helpers' own tests: one of each kind of channel."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from cablecar import Cable, Channel, Connection, periodically, rescue_from

#: What the callbacks did, in order (cleared by each test through ``make_cable``).
events: list[str] = []


@dataclass
class Room:
    id: int


class AppConnection(Connection):
    """``?user=``, else an ``x-user`` header, else a ``user`` cookie."""

    identified_by = ("current_user",)

    async def connect(self) -> None:
        request = self.request
        user = (
            request.query.get("user")
            or request.headers.get("x-user")
            or request.cookies.get("user")
        )
        if user == "crash":
            raise RuntimeError("the user database is down")
        if not user:
            self.reject_unauthorized()
        self.current_user = user

    async def disconnect(self) -> None:
        events.append(f"disconnect {self.current_user}")


class ChatChannel(Channel):
    async def subscribed(self) -> None:
        if not self.params.get("room"):
            self.reject()
            return
        self.stream_from(f"chat_{self.params['room']}")
        self.stream_for(Room(int(self.params["room"])))

    async def unsubscribed(self) -> None:
        events.append(f"unsubscribed {self.current_user} {self.params.get('room')}")

    async def speak(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast(
            f"chat_{self.params['room']}", {"from": self.current_user, "body": data["body"]}
        )
        self.transmit({"ok": True})

    async def leave(self) -> None:
        self.stop_stream_from(f"chat_{self.params['room']}")

    async def boom(self) -> None:
        raise ValueError("boom in an action")

    async def lookup(self, data: dict[str, Any]) -> None:
        self.transmit({"found": {"a": 1}[data["key"]]})

    @rescue_from(KeyError)
    async def _missing(self, exc: KeyError) -> None:
        self.transmit({"error": f"no such key: {exc.args[0]}"})

    async def kick(self) -> None:
        self.connection.close(reason="kicked", reconnect=False)

    async def wait(self) -> None:
        await GATES[-1].wait()

    async def receive(self, data: dict[str, Any]) -> None:
        self.transmit({"received": data})


#: ``ChatChannel#wait`` waits for the last event here (each test adds its own).
GATES: list[asyncio.Event] = []


class SyncChannel(Channel):
    """Plain ``def`` methods: they run in the cable's thread pool."""

    def subscribed(self) -> None:
        self.stream_from("sync")

    def shout(self, data: dict[str, Any]) -> None:
        self.cable.broadcast_sync("sync", {"shout": data["text"].upper()})
        self.transmit({"shouted": True})


class ClockChannel(Channel):
    async def subscribed(self) -> None:
        self.ticks = 0

    @periodically(every=1.0)
    async def second(self) -> None:
        self.ticks += 1
        self.transmit({"second": self.ticks})

    @periodically(every=2.5)
    def slow(self) -> None:
        self.transmit({"slow": True})


class ShoutChannel(Channel):
    """A custom stream callback: each broadcast is transformed per subscriber."""

    async def subscribed(self) -> None:
        self.stream_from("news", lambda message: {"headline": message["title"].upper()})


def make_cable(**settings: Any) -> Cable:
    """A fresh cable with every channel above."""
    events.clear()
    return Cable(
        connection=AppConnection,
        channels=[ChatChannel, SyncChannel, ClockChannel, ShoutChannel],
        **settings,
    )
