"""An asyncio Action Cable client with the official JS client's behaviour.

Works against cablecar and against Rails Action Cable (or AnyCable)::

    import cablecar.client

    async with cablecar.client.connect("ws://127.0.0.1:8080/cable") as consumer:
        sub = await consumer.subscribe("ChatChannel", room="1")
        await sub.perform("speak", body="hi")
        async for message in sub:
            print(message)

Needs the ``websockets`` package (``pip install 'cablecar-py[client]'``).
"""

from __future__ import annotations

from cablecar.errors import ConnectionRejected, SubscriptionRejected

try:
    import websockets as _websockets  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised in a clean virtualenv
    raise ImportError(
        "cablecar.client needs the websockets package: pip install 'cablecar-py[client]'",
        name="websockets",
    ) from _exc

from .consumer import SUBPROTOCOLS, Consumer, connect
from .monitor import STALE_THRESHOLD, Backoff, ConnectionMonitor
from .presence import Presence, PresenceError
from .subscription import Subscription, SubscriptionClosed

__all__ = [
    "STALE_THRESHOLD",
    "SUBPROTOCOLS",
    "Backoff",
    "ConnectionMonitor",
    "ConnectionRejected",
    "Consumer",
    "Presence",
    "PresenceError",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionRejected",
    "connect",
]
