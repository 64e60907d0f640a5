"""The app tests/js/signed_streams.test.mjs drives: ``$pubsub`` signed with
``SIGNED_SECRET``, public streams when ``PUBLIC_STREAMS=1``, and a ``ControlChannel``
whose ``publish`` action broadcasts, so the Node test can send to any stream."""

from __future__ import annotations

import os
from typing import Any

from cablecar import Cable, Channel, Connection


class ControlChannel(Channel):
    async def subscribed(self) -> None:
        pass

    async def publish(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast(data["stream"], data["message"])


cable = Cable(
    Connection,
    [ControlChannel],
    allowed_origins="*",
    streams_secret=os.environ["SIGNED_SECRET"],
    public_streams=os.environ.get("PUBLIC_STREAMS") == "1",
)
