"""Presence of one subscription: join as a member, see who is here, follow arrivals and
departures (servers with ``history=True``, extended protocol).

Example::

    sub = await consumer.subscribe("ChatChannel", room="1")
    await sub.presence.join("ann", {"name": "Ann"})
    members = await sub.presence.info()            # {"ann": {"name": "Ann"}, ...}
    event = await sub.presence.receive(timeout=5)  # {"type": "join", "id": "bob", "info": ...}
    await sub.whisper({"event": "typing"})         # to the others on the whisper stream
    await sub.presence.leave()

The member joined is remembered: after a reconnect the client joins again (in the
``subscribe`` frame, or after a resumed session), as ``@anycable/web`` does, so a quick
reconnect within the server's presence TTL causes no leave/join for the others.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from cablecar._json import JSON
from cablecar.errors import CablecarError

if TYPE_CHECKING:
    from .subscription import Subscription

__all__ = ["Presence", "PresenceError"]


class PresenceError(CablecarError):
    """The server has no presence for this subscription (its channel streams none, the
    server runs without ``history=True``, the client is not on the extended protocol),
    or refused the join (``info`` too large)."""


class Presence:
    """``subscription.presence``: join, leave, members and events."""

    def __init__(self, subscription: Subscription) -> None:
        self._sub = subscription
        #: ``{"id": ..., "info": ...}`` while joined: sent again after a reconnect.
        self.joined: dict[str, JSON] | None = None
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._info: asyncio.Future[dict[str, Any]] | None = None
        self._info_lock = asyncio.Lock()

    async def join(self, id: str | int, info: JSON = None) -> None:
        """Join as member ``id`` with ``info`` (any JSON value). Everyone on the stream
        gets a ``join`` event when ``id`` is new there (several connections of one id
        count once).

        Raises:
            PresenceError: the connection does not speak the extended protocol.
        """
        self.joined = {"id": str(id), "info": info}
        await self._sub._command("join", presence=self.joined)

    async def leave(self) -> None:
        """Leave; a ``leave`` event when this was the member's last connection."""
        self.joined = None
        await self._sub._command("leave")

    async def info(self, timeout: float | None = 10.0) -> dict[str, JSON]:
        """The stream's members: ``{id: info}``.

        Raises:
            PresenceError: the server has no presence for this subscription.
            TimeoutError: no answer in time.
        """
        async with self._info_lock:
            self._info = asyncio.get_running_loop().create_future()
            try:
                await self._sub._command("presence", data={})
                async with asyncio.timeout(timeout):
                    reply = await self._info
            finally:
                self._info = None
        if reply.get("type") != "info":
            raise PresenceError(f"no presence for {self._sub.identifier}")
        records = reply.get("records") or []
        return {
            str(r["id"]): r.get("info")
            for r in records
            if isinstance(r, dict) and isinstance(r.get("id"), str)
        }

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """The next ``join`` or ``leave`` event on the stream:
        ``{"type": "join", "id": ..., "info": ...}`` or ``{"type": "leave", "id": ...}``.

        Raises:
            TimeoutError: nothing arrived in time.
        """
        async with asyncio.timeout(timeout):
            return await self._events.get()

    def _on_frame(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in ("info", "error"):
            if self._info is not None and not self._info.done():
                self._info.set_result(message)
        elif kind in ("join", "leave"):
            self._events.put_nowait(message)
