"""The application docs/testing.md tests (test_chat_app.py beside it).

Serve it with ``cablecar serve examples/testing/chat_app.py:cable``.
"""

from __future__ import annotations

from typing import Any

from cablecar import Cable, Channel, Connection, periodically

#: Stands in for your session store: session cookie -> user name.
SESSIONS = {"s-alice": "alice", "s-bob": "bob"}
ROOMS = ("lobby", "python")


class AppConnection(Connection):
    """Identified by the user of the ``session`` cookie; anyone else is refused."""

    identified_by = ("current_user",)

    async def connect(self) -> None:
        user = SESSIONS.get(self.request.cookies.get("session", ""))
        if user is None:
            self.reject_unauthorized()
        self.current_user = user


class ChatChannel(Channel):
    """``{"channel": "ChatChannel", "room": "lobby"}``; action ``speak {"body"}``."""

    async def subscribed(self) -> None:
        room = self.params.get("room")
        if room not in ROOMS:
            self.reject()
            return
        self.stream_for(room)  # the stream "chat:lobby"

    async def speak(self, data: dict[str, Any]) -> None:
        body = str(data.get("body", "")).strip()
        if not body:
            self.transmit({"error": "empty message"})
            return
        await ChatChannel.broadcast_to(
            self.params["room"], {"user": self.current_user, "body": body}
        )


class NotificationsChannel(Channel):
    """Each user's own stream; plain ``def`` code runs in a thread pool."""

    def subscribed(self) -> None:
        self.stream_for(self.current_user)  # "notifications:alice"

    def mark_read(self, data: dict[str, Any]) -> None:
        self.transmit({"read": data["id"]})


class StatusChannel(Channel):
    """Sends a heartbeat every 30 seconds."""

    async def subscribed(self) -> None:
        self.beats = 0

    @periodically(every=30)
    async def heartbeat(self) -> None:
        self.beats += 1
        self.transmit({"heartbeat": self.beats})


def make_cable() -> Cable:
    """A new cable for this app (tests make one each)."""
    return Cable(
        connection=AppConnection, channels=[ChatChannel, NotificationsChannel, StatusChannel]
    )


cable = make_cable()
