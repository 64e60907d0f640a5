"""cablecar: Action Cable for Python.

Channels, streams and broadcasting over WebSockets, wire-compatible with Action
Cable's JavaScript clients (``@rails/actioncable``, ``@anycable/web``)::

    from cablecar import Cable, Channel, Connection

    class ChatChannel(Channel):
        async def subscribed(self):
            self.stream_from(f"chat_{self.params['room']}")

    cable = Cable(channels=[ChatChannel])

Serve it with ``cablecar serve app:cable``; broadcast with
``await cable.broadcast("chat_1", {"body": "hi"})``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .cable import Cable
from .channel import (
    Channel,
    after_subscribe,
    after_unsubscribe,
    before_subscribe,
    before_unsubscribe,
    periodically,
    rescue_from,
)
from .config import CableConfig
from .connection import Connection
from .errors import (
    ActionNotAllowed,
    AdapterError,
    CablecarError,
    ConfigurationError,
    ConnectionRejected,
    InvalidCommand,
    ProtocolViolation,
    PublishTimeout,
    SubscriptionRejected,
    Unauthorized,
)
from .http import Request, Response

if TYPE_CHECKING:
    from .broadcast import Broadcaster
    from .transports.asgi import CableMiddleware

__all__ = [
    "ActionNotAllowed",
    "AdapterError",
    "Broadcaster",
    "Cable",
    "CableConfig",
    "CableMiddleware",
    "CablecarError",
    "Channel",
    "ConfigurationError",
    "Connection",
    "ConnectionRejected",
    "InvalidCommand",
    "ProtocolViolation",
    "PublishTimeout",
    "Request",
    "Response",
    "SubscriptionRejected",
    "Unauthorized",
    "__version__",
    "after_subscribe",
    "after_unsubscribe",
    "before_subscribe",
    "before_unsubscribe",
    "periodically",
    "rescue_from",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import cablecar` stays light.
    if name == "Broadcaster":
        from .broadcast import Broadcaster

        return Broadcaster
    if name == "CableMiddleware":
        from .transports.asgi import CableMiddleware

        return CableMiddleware
    raise AttributeError(f"module 'cablecar' has no attribute {name!r}")
