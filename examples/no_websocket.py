# no_websocket.py: a chat reachable without a WebSocket too (docs/transports.md)
import os

from cablecar import Cable, Channel, Connection


class AppConnection(Connection):
    identified_by = ("current_user",)

    async def connect(self):
        user = self.request.query.get("user")
        if not user:
            self.reject_unauthorized()
        self.current_user = user


class ChatChannel(Channel):
    async def subscribed(self):
        self.stream_from(f"chat_{self.params['room']}")

    async def speak(self, data):
        await self.cable.broadcast(
            f"chat_{self.params['room']}", {"from": self.current_user, "body": data["body"]}
        )


cable = Cable(
    AppConnection,
    [ChatChannel],
    history=True,  # positions on every message: Last-Event-ID resumes an event stream
    broadcast_key=os.environ.get("CABLE_BROADCAST_KEY", "change-me"),  # POST /_broadcast
)
