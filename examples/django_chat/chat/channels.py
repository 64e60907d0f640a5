"""The chat channel: plain ``def`` actions use the ORM, ``async def`` ones the async ORM."""

from __future__ import annotations

from typing import Any

from cablecar import Channel

from .models import Message


def room_stream(room: str) -> str:
    return f"chat_{room}"


class ChatChannel(Channel):
    """``{"channel": "ChatChannel", "room": "lobby"}``: the room's messages, live."""

    async def subscribed(self) -> None:
        room = self.params.get("room")
        if not isinstance(room, str) or not room:
            self.reject()
            return
        self.stream_from(room_stream(room))

    def speak(self, data: dict[str, Any]) -> None:
        # A plain def runs in the cable's thread pool: the ORM is safe here, and the
        # thread's database connection is closed afterwards, as after a Django request.
        body = str(data.get("body", "")).strip()[:1000]
        if not body:
            return
        message = Message.objects.create(
            room=self.params["room"], author=self.current_user, body=body
        )
        self.cable.broadcast_sync(room_stream(message.room), message.as_json())

    async def history(self, data: dict[str, Any]) -> None:
        # An async def runs on the event loop: Django's async ORM.
        recent = (
            Message.objects.filter(room=self.params["room"])
            .select_related("author")
            .order_by("-id")[: int(data.get("limit", 20))]
        )
        messages = [m.as_json() async for m in recent]
        self.transmit({"history": messages[::-1]})

    def whoami(self) -> None:
        user = self.current_user  # the django.contrib.auth user of the session cookie
        self.transmit({"id": user.pk, "username": user.get_username()})
