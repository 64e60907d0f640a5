"""The contract between the server core and a transport: the :class:`Sink`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

__all__ = ["Sink"]


class Sink(Protocol):
    """Where a session's output goes: one per socket.

    ``prepare`` turns a JSON frame (bytes) into what ``send_prepared`` writes: the
    standalone transport builds the complete WebSocket frame once; the ASGI
    transport builds the ``websocket.send`` message once. The hub calls ``prepare``
    once per broadcast and identifier group and ``send_prepared`` per recipient, so
    a broadcast is framed once whatever the number of recipients.
    """

    prepare: ClassVar[Callable[[bytes], Any]]

    def send_prepared(self, wire: Any) -> None:
        """Queue prepared output. Hot path: no awaits, no copies, never blocks."""

    def send(self, data: bytes) -> None:
        """``send_prepared(prepare(data))`` for output to this socket only."""

    def close(self, code: int = 1000) -> None:
        """Flush queued output, send a close frame, close the socket (bounded in time)."""
