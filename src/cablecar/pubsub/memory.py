"""The embedded default: delivery inside one process, no services."""

from __future__ import annotations

from .base import MessageHandler

__all__ = ["MemoryPubSub"]


class MemoryPubSub:
    """In-process pub/sub: ``publish`` hands the payload straight to the hub.

    Only the cable that owns this adapter receives its broadcasts; another process
    (or a ``Broadcaster``) cannot reach it. Use Redis, PostgreSQL or NATS for that.
    """

    __slots__ = ("_on_message", "_streams")

    def __init__(self) -> None:
        self._on_message: MessageHandler | None = None
        self._streams: set[str] = set()

    async def start(self, on_message: MessageHandler) -> None:
        self._on_message = on_message

    async def subscribe(self, stream: str) -> None:
        self._streams.add(stream)

    async def unsubscribe(self, stream: str) -> None:
        self._streams.discard(stream)

    async def publish(self, stream: str, payload: bytes) -> None:
        # Hot path: no copy, no task; the hub writes frames synchronously.
        if self._on_message is not None and stream in self._streams:
            self._on_message(stream, payload)

    @property
    def connected(self) -> bool:
        """Always: there is no service to lose."""
        return True

    @property
    def reconnects(self) -> int:
        return 0

    async def close(self) -> None:
        self._on_message = None
        self._streams.clear()
