"""A transport that keeps what the server sent: the in-process tester's socket.

The hub and the session write to a :class:`RecordingSink` exactly as they write to a
standalone socket or an ASGI connection (see :class:`cablecar.transport.Sink`);
the sink decodes each frame and appends it to a list instead of framing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .. import _json

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["RecordingSink"]


def _keep(data: bytes) -> bytes:
    return data


class RecordingSink:
    """A :class:`~cablecar.transport.Sink` that records every frame, decoded.

    Attributes:
        frames: every frame the server sent, decoded from JSON, pings included, in order.
        close_code: the WebSocket close code the server closed with, or ``None``.
        session: the :class:`~cablecar.session.Session` writing here (set by the tester).
    """

    # The hub groups recipients by ``prepare``: every recording sink shares one group key.
    prepare: ClassVar[Callable[[bytes], Any]] = staticmethod(_keep)

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.close_code: int | None = None
        self.session: Session | None = None

    def send_prepared(self, wire: Any) -> None:
        """Record one frame (called by the hub per recipient, and by :meth:`send`)."""
        try:
            self.frames.append(_json.loads(wire))
        except ValueError:  # not JSON: a core bug the test should see, not a crash here
            self.frames.append(bytes(wire))

    def send(self, data: bytes) -> None:
        """Record one frame for this socket only."""
        self.send_prepared(data)

    def pause_reading(self) -> None:
        """Nothing to pause: a test sends its commands one at a time."""

    def resume_reading(self) -> None:
        """See :meth:`pause_reading`."""

    def close(self, code: int = 1000) -> None:
        """The server closed the socket: remember the code; as a real socket does once
        the close handshake is over, tell the session the transport is gone (on the
        next loop iteration, never from inside the session's own ``close``).
        """
        if self.close_code is not None:
            return
        self.close_code = code
        session = self.session
        if session is not None:
            asyncio.get_running_loop().call_soon(session.transport_closed)
