"""The app the official @anycable/core client drives in tests/js/anycable_ext.test.mjs:
``cablecar serve tests/e2e/reliable_app.py:cable`` with ``CABLE_PUBSUB`` (default
``memory://``), ``CABLE_HISTORY_LIMIT``, ``CABLE_PRESENCE_TTL``, ``CABLE_PREFIX`` and
``CABLE_BROADCAST_KEY`` (the HTTP broadcast API) from the environment."""

from __future__ import annotations

import os
from typing import Any

from cablecar import Cable, Channel, Connection


class AppConnection(Connection):
    identified_by = ("user",)

    async def connect(self) -> None:
        self.user = self.request.query.get("user") or "anon"


class ChatChannel(Channel):
    """``chat_<room>``: history, presence and whisper on one stream."""

    async def subscribed(self) -> None:
        self.stream_from(f"chat_{self.params['room']}", whisper=True, presence=True)

    async def speak(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast(f"chat_{self.params['room']}", {"n": data["n"]})


class PlainChannel(Channel):
    """``plain_<room>``: no presence, no whisper."""

    async def subscribed(self) -> None:
        self.stream_from(f"plain_{self.params['room']}")


cable = Cable(
    AppConnection,
    [ChatChannel, PlainChannel],
    os.environ.get("CABLE_PUBSUB", "memory://"),
    allowed_origins="*",
    history=True,
    history_limit=int(os.environ.get("CABLE_HISTORY_LIMIT", "100")),
    presence_ttl=float(os.environ.get("CABLE_PRESENCE_TTL", "15")),
    channel_prefix=os.environ.get("CABLE_PREFIX") or None,
    broadcast_key=os.environ.get("CABLE_BROADCAST_KEY") or None,
)
