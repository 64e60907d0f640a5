"""The application the Action Cable conformance suite (and the benchmark harness) drives.

    cablecar serve examples/conformance_app.py:cable --port 8080
    CABLE_HISTORY=1 cablecar serve ...     # with history=True (stream history, resumable sessions)
    CABLE_METRICS=0 cablecar serve ...     # without /metrics
    CABLE_STREAMS_SECRET=s cablecar serve ...  # $pubsub signed streams, signed with "s"

Connection: identified by ?user=NAME; ?user=reject is refused (unauthorized); no user
means an anonymous one. BenchmarkChannel streams "all" (actions echo and broadcast),
ChatChannel streams chat_<room> (rejects a blank room), RejectChannel always rejects.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from cablecar import Cable, Channel, Connection


class AppConnection(Connection):
    identified_by = ("current_user",)

    async def connect(self) -> None:
        user = self.request.query.get("user")
        if user == "reject":
            self.reject_unauthorized()
        self.current_user = user or f"anon-{secrets.token_hex(4)}"


class BenchmarkChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("all")

    async def echo(self, data: dict[str, Any]) -> None:
        self.transmit(data)

    async def broadcast(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast("all", data)
        self.transmit({**data, "action": "broadcastResult"})


class ChatChannel(Channel):
    async def subscribed(self) -> None:
        if not self.params.get("room"):
            self.reject()
            return
        # presence and whisper for extended-protocol clients (history=True)
        self.stream_from(f"chat_{self.params['room']}", presence=True, whisper=True)

    async def speak(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast(
            f"chat_{self.params['room']}", {"from": self.current_user, "body": data.get("body")}
        )


class RejectChannel(Channel):
    async def subscribed(self) -> None:
        self.reject()


cable = Cable(
    connection=AppConnection,
    channels=[BenchmarkChannel, ChatChannel, RejectChannel],
    allowed_origins="*",  # the Node clients send no Origin; browsers from anywhere may connect
    # The suite echoes a 1 MiB payload; wrapped in a command (JSON in JSON) the frame is a
    # little over the 1 MiB default limit.
    max_message_size=2 * 1024 * 1024,
    # ... and echoes it back: a single frame over max_pending_output would cut the client.
    max_pending_output=4 * 1024 * 1024,
    history=os.environ.get("CABLE_HISTORY") == "1",
    metrics_path=None if os.environ.get("CABLE_METRICS") == "0" else "/metrics",
    streams_secret=os.environ.get("CABLE_STREAMS_SECRET") or None,  # $pubsub signed streams
)
