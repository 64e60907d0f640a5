# no_websocket.py: the chat of chat_app.py, reachable without a WebSocket too (docs/transports.md)
import os

from chat_app import AppConnection, ChatChannel

from cablecar import Cable

cable = Cable(
    AppConnection,
    [ChatChannel],
    history=True,  # positions on every message: Last-Event-ID resumes an event stream
    broadcast_key=os.environ.get("CABLE_BROADCAST_KEY", "change-me"),  # POST /_broadcast
)
