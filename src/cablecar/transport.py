"""The contract between the core and a transport: what a transport provides (:class:`Sink`),
what it may call (:class:`SessionPort`), and how the core answers before an upgrade
(:class:`Refusal`).

The core owns this contract; transports (``transports/standalone``, ``transports/asgi``,
or a third one) implement it and import the core, never the other way round.

A transport's life of one socket::

    refusal = cable.admit(request)            # origin, running, max_connections
    if refusal is not None:
        answer refusal.status / refusal.body / refusal.headers; close
    session = cable.open_session(sink, request, subprotocol)   # a SessionPort
    session.start()                           # runs connect(), then welcome
    for every text message: session.receive(data)   (binary: session.receive_binary(data))
    on a close frame from the peer: session.peer_closing()
    if output backs up past the limit: session.too_slow()
    when the socket is gone: session.transport_closed()

Plain HTTP requests at the health path are answered with ``cable.health(method)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

__all__ = ["Refusal", "SessionPort", "Sink"]


class Sink(Protocol):
    """Where a session's output goes: one per socket.

    ``prepare`` turns a JSON frame (bytes) into what ``send_prepared`` writes: the
    standalone transport builds the complete WebSocket frame once; the ASGI
    transport builds the ``websocket.send`` message once. The hub calls ``prepare``
    once per broadcast and identifier group and ``send_prepared`` per recipient, so
    a broadcast is framed once whatever the number of recipients.

    Every method is called on the event loop thread.
    """

    prepare: ClassVar[Callable[[bytes], Any]]

    def send_prepared(self, wire: Any) -> None:
        """Queue prepared output. Hot path: no awaits, no copies, never blocks."""

    def send(self, data: bytes) -> None:
        """``send_prepared(prepare(data))`` for output to this socket only."""

    def close(self, code: int = 1000) -> None:
        """Flush queued output, send a close frame, close the socket (bounded in time)."""

    def pause_reading(self) -> None:
        """Stop reading client input until :meth:`resume_reading` (TCP pushes back)."""

    def resume_reading(self) -> None:
        """Read client input again."""


class SessionPort(Protocol):
    """The calls a transport makes on the session of a socket (``cable.open_session``)."""

    def start(self) -> None:
        """The socket is open: run ``connect``, then send ``welcome``."""

    def receive(self, data: bytes) -> None:
        """One complete text message from the client (UTF-8 bytes)."""

    def receive_binary(self, data: bytes) -> None:
        """One complete binary message (Action Cable sessions ignore it, logged once)."""

    def warn_once(self, kind: str, msg: str, *args: Any) -> None:
        """Log refused input at WARNING once per connection per kind."""

    def close(self, reason: str | None, reconnect: bool, code: int = 1000) -> None:
        """Send ``disconnect``, then close the socket with ``code``."""

    def fail(self, code: int) -> None:
        """The client broke the WebSocket protocol: close with ``code`` alone (RFC 6455
        "fail the WebSocket connection": no Action Cable ``disconnect`` first)."""

    def too_slow(self) -> None:
        """The client does not read its output fast enough: cut it."""

    def peer_closing(self) -> None:
        """The client sent a close frame: send nothing more."""

    def transport_closed(self) -> None:
        """The socket is gone: leave every stream, run the callbacks."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the core will not open a connection, and the HTTP answer for it.

    Attributes:
        status: the HTTP status (403 origin, 503 busy or shutting down).
        reason: a short text, sent as ``{"error": reason}``.
        headers: extra response headers (``Retry-After``).
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
