"""Every exception cablecar raises, in one tree.

::

    CablecarError
    ├── ProtocolViolation          the client's fault (a base class: raised as a subclass)
    │   ├── InvalidCommand         a frame that is not a well-formed Action Cable command
    │   ├── ActionNotAllowed       (cablecar.testing) perform of an action the channel lacks
    │   ├── FrameError             (standalone transport) a WebSocket protocol violation
    │   └── HandshakeError         (standalone transport) a bad HTTP upgrade request
    ├── Unauthorized               Connection.reject_unauthorized(): refuse the connection
    ├── ConfigurationError         the developer's fault (bad settings, bad adapter URL)
    ├── AdapterError               the pub/sub service failed (Redis, PostgreSQL, NATS)
    │   ├── PublishTimeout         no answer in time: the message may still be delivered
    │   └── OutboxFull             the service is down and the outbox is full: not sent
    ├── SubscriptionRejected       (client) the server answered reject_subscription
    ├── SubscriptionClosed         (client) iterating a subscription that has ended
    └── ConnectionRejected         (client, cablecar.testing) the server refused the connection

Besides these, ``Cable(...)`` raises ``TypeError`` for an unknown setting, and the
public API raises ``ValueError``/``TypeError``/``RuntimeError`` for misuse, each with a
message naming the fix.

Client faults never escape a session: each becomes a frame, a log line or a bounded
disconnect. ``FrameError`` and ``HandshakeError`` never leave the standalone transport;
``Unauthorized`` is caught by the session.
"""

from __future__ import annotations

__all__ = [
    "ActionNotAllowed",
    "AdapterError",
    "CablecarError",
    "ConfigurationError",
    "ConnectionRejected",
    "InvalidCommand",
    "OutboxFull",
    "ProtocolViolation",
    "PublishTimeout",
    "SubscriptionRejected",
    "Unauthorized",
]


class CablecarError(Exception):
    """Base class of every cablecar error."""


class ProtocolViolation(CablecarError):
    """The client sent something the protocol does not allow."""

    @property
    def reason(self) -> str:
        """What the client is told (the exception's message)."""
        return str(self)


class InvalidCommand(ProtocolViolation):
    """A frame that is not a well-formed Action Cable command.

    Attributes:
        kind: a short, stable name for the kind of fault (``"not_json"``,
            ``"bad_identifier"``, ...), used to log each kind once per connection.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class ActionNotAllowed(ProtocolViolation):
    """The action is not a public method defined on the user's channel class."""


class Unauthorized(CablecarError):
    """Raised by :meth:`~cablecar.Connection.reject_unauthorized`: the client gets
    ``disconnect`` reason ``unauthorized``, ``reconnect: false``."""


class ConfigurationError(CablecarError):
    """Settings that cannot work (a bad adapter URL, a missing extra, ...)."""


class AdapterError(CablecarError):
    """The pub/sub service failed."""


class PublishTimeout(AdapterError):
    """The service did not confirm a publish in time: the outcome is **unknown**. The
    message may still be delivered (a stalled broker that resumes sends what it had), so
    a retry may deliver it twice; a message that must not repeat needs an id the
    subscribers de-duplicate on (with ``history=True``, its offset)."""


class OutboxFull(AdapterError):
    """The pub/sub service is down and ``outbox_size`` broadcasts already wait for it:
    this one was **not** sent (nor queued). Retry later, or raise ``outbox_size``."""


class SubscriptionRejected(CablecarError):
    """The server answered a subscribe with ``reject_subscription``."""


class ConnectionRejected(CablecarError):
    """The server closed the connection before or instead of ``welcome``.

    Attributes:
        reason: the ``disconnect`` frame's reason (``"unauthorized"``, ...), if any.
    """

    def __init__(self, reason: str | None, message: str | None = None) -> None:
        super().__init__(message or f"connection rejected: {reason}")
        self.reason = reason
