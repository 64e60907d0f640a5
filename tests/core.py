"""Driving the core without a network: sessions opened through the transport contract
(:mod:`cablecar.transport`) on sinks that record what the core wrote.

Unit tests of :mod:`cablecar.hub`, :mod:`cablecar.session` and
:mod:`cablecar._subscription` use it; a real server is not involved, the core is.

It also holds the small application classes many test modules share (connections
identified by ``?user=``, a chat channel), whether or not they drive a real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

from cablecar import Cable, Channel, Connection
from cablecar.http import Request
from cablecar.protocol import SUBPROTOCOLS
from cablecar.session import Session
from cablecar.testing import RecordingSink

from .timing import TIMEOUT

__all__ = [
    "ChatChannel",
    "CurrentUserConnection",
    "FramingSink",
    "SignedInConnection",
    "UserConnection",
    "open_session",
    "until",
]


class UserConnection(Connection):
    """Identified by ``?user=`` (``anon`` without it)."""

    identified_by = ("user",)

    async def connect(self) -> None:
        self.user = self.request.query.get("user", "anon")


class CurrentUserConnection(Connection):
    """Identified by ``current_user``: ``?user=`` (``anon`` without it)."""

    identified_by = ("current_user",)

    async def connect(self) -> None:
        self.current_user = self.request.query.get("user", "anon")


class SignedInConnection(Connection):
    """Identified by ``current_user``: ``?user=``; rejected as unauthorized without it."""

    identified_by = ("current_user",)

    async def connect(self) -> None:
        user = self.request.query.get("user")
        if not user:
            self.reject_unauthorized()
        self.current_user = user


class ChatChannel(Channel):
    """Streams ``chat_<room>``; ``speak`` broadcasts ``{"body": ...}`` to it."""

    async def subscribed(self) -> None:
        self.stream_from(f"chat_{self.params['room']}")

    async def speak(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast(f"chat_{self.params['room']}", {"body": data["body"]})


class FramingSink(RecordingSink):
    """A recording sink that also counts ``prepare`` calls and keeps each prepared
    object as written, so a test sees that one broadcast is framed once per group and
    the same object goes to every member."""

    prepared: ClassVar[list[bytes]] = []

    @staticmethod
    def _prepare(data: bytes) -> bytes:
        wire = bytes(data)  # a new object each call: identity shows sharing
        FramingSink.prepared.append(wire)
        return wire

    prepare: ClassVar[Callable[[bytes], Any]] = _prepare

    def __init__(self) -> None:
        super().__init__()
        self.wires: list[Any] = []

    def send_prepared(self, wire: Any) -> None:
        """Keep the object, then record it decoded."""
        self.wires.append(wire)
        super().send_prepared(wire)


async def until(predicate: Callable[[], bool], what: str = "the condition") -> None:
    """Let the loop run until ``predicate()`` holds (bounded by the suite's timeout)."""
    async with asyncio.timeout(TIMEOUT):
        while not predicate():
            await asyncio.sleep(0.005)
    assert predicate(), what


async def open_session(
    cable: Cable,
    query: str = "",
    *,
    sink: RecordingSink | None = None,
    subprotocol: str = SUBPROTOCOLS[0],
) -> tuple[Session, RecordingSink]:
    """A session of ``cable`` on a recording sink, started and welcomed."""
    sink = sink if sink is not None else RecordingSink()
    session = cable.open_session(sink, Request("GET", "/cable", query), subprotocol)
    sink.session = session
    session.start()
    await until(lambda: bool(sink.frames) or sink.close_code is not None, "a welcome")
    return session, sink
