"""The pub/sub adapter contract.

An adapter moves ``(stream, payload)`` pairs between processes. It never decodes a
payload (encoded JSON bytes) and knows nothing of channels or sockets.

Invariants every adapter keeps:

1. ``subscribe(stream)`` returns only once the subscription is live: a publish made
   after it returns (from any process) is delivered. While the service is down it
   waits (retrying with backoff) rather than failing.
2. The hub calls ``subscribe`` once per stream (it reference-counts local
   subscribers) and ``unsubscribe`` when the last local subscriber leaves; adapters
   still treat repeated calls as idempotent.
3. ``on_message`` (given to ``start``) is called on the event loop, in publish order
   per stream, with the stream name as the publisher gave it (prefixes, hashing and
   subject mapping are undone by the adapter).
4. Delivery is at most once: publishes made while the service is unreachable may be
   lost. After a reconnect the adapter re-subscribes every live stream by itself.
5. ``publish`` works without ``start`` (a publish-only ``Broadcaster``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["MessageHandler", "PubSub"]

#: Called with ``(stream, payload)`` for every message on a subscribed stream.
MessageHandler = Callable[[str, bytes], None]


@runtime_checkable
class PubSub(Protocol):
    """What the server needs from a pub/sub adapter."""

    async def start(self, on_message: MessageHandler) -> None:
        """Connect the listener; from now on deliver subscribed streams to ``on_message``."""

    async def subscribe(self, stream: str) -> None:
        """Listen to ``stream``; return once the subscription is live."""

    async def unsubscribe(self, stream: str) -> None:
        """Stop listening to ``stream``."""

    async def publish(self, stream: str, payload: bytes) -> None:
        """Send ``payload`` to every process subscribed to ``stream``."""

    async def close(self) -> None:
        """Release every connection; the adapter cannot be used afterwards."""

    @property
    def connected(self) -> bool:
        """Whether the listener is connected to the service now (``/ready`` and the
        metrics say so)."""

    @property
    def reconnects(self) -> int:
        """How many times the listener came back after losing the service."""
