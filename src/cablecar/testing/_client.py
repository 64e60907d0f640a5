"""The client side of an in-process test: a connection and its subscriptions.

A :class:`TestConnection` owns a real :class:`~cablecar.session.Session` writing to a
:class:`~cablecar.testing.RecordingSink`. Subscribing, performing and unsubscribing
send the same JSON commands a browser sends; the answers are read back from the
frames the server wrote. Nothing of the server is replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import _json
from ..channel import Channel, channel_spec
from ..connection import Connection
from ..errors import ActionNotAllowed
from ..http import Request
from ..protocol import MessageType
from ..session import Session, State
from ._sink import RecordingSink

if TYPE_CHECKING:
    from ._tester import ChannelTester

__all__ = ["TestConnection", "TestSubscription"]

_CONFIRM = MessageType.CONFIRMATION.value
_REJECT = MessageType.REJECTION.value


class TestSubscription:
    """One subscription made with :meth:`TestConnection.subscribe`.

    Attributes:
        connection: the :class:`TestConnection` it belongs to.
        identifier: the identifier string sent to the server (``{"channel":...}``).
        params: the decoded identifier (``{"channel": "ChatChannel", "room": "1"}``).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, connection: TestConnection, identifier: str, start: int) -> None:
        self.connection = connection
        self.identifier = identifier
        self.params: dict[str, Any] = _json.loads(identifier)
        self._start = start  # index of the first frame that can answer this subscribe

    # -- state --------------------------------------------------------------------------

    @property
    def channel(self) -> Channel | None:
        """The live channel instance (your class), or ``None`` once rejected or ended."""
        sub = self.connection.session.subscriptions.get(self.identifier)
        return sub.channel if sub is not None else None

    @property
    def confirmed(self) -> bool:
        """Whether the server answered ``confirm_subscription`` (and not a later reject)."""
        return self._status() == _CONFIRM

    @property
    def rejected(self) -> bool:
        """Whether the server answered ``reject_subscription``."""
        return self._status() == _REJECT

    @property
    def streams(self) -> list[str]:
        """The streams this subscription listens to now, in the order they were added."""
        sub = self.connection.session.subscriptions.get(self.identifier)
        return list(sub.streams) if sub is not None else []

    @property
    def transmissions(self) -> list[Any]:
        """The ``message`` of every frame this subscription received, decoded, in order:
        what channel code ``transmit``-ted and the broadcasts on its streams."""
        return [f["message"] for f in self._frames() if "message" in f]

    # -- commands -----------------------------------------------------------------------

    async def perform(
        self, action: str, data: Mapping[str, Any] | None = None, /, **fields: Any
    ) -> list[Any]:
        """Perform ``action`` with ``{**data, **fields, "action": action}``, as
        ``subscription.perform(action, data)`` does in the JavaScript client (and in
        :mod:`cablecar.client`), and wait until the server has handled it.

        Returns:
            The messages this subscription received meanwhile.

        Raises:
            ActionNotAllowed: the channel has no such action (a typo, a private method).
            RuntimeError: the subscription is not active (rejected, unsubscribed).
        """
        channel = self.channel
        self.connection._check_open(f"cannot perform {action!r}")
        if channel is None:
            raise RuntimeError(f"cannot perform {action!r}: {self._label()} is not active")
        actions = channel_spec(type(channel)).actions
        if action not in actions:
            raise ActionNotAllowed(
                f"{type(channel).__name__} has no action {action!r}; "
                f"its actions: {', '.join(sorted(actions)) or '(none)'}"
            )
        before = len(self.transmissions)
        payload = _json.dumps({**(data or {}), **fields, "action": action}).decode()
        await self.connection.send(
            {"command": "message", "identifier": self.identifier, "data": payload}
        )
        return self.transmissions[before:]

    async def send(self, data: Mapping[str, Any]) -> list[Any]:
        """Send ``data`` as the JavaScript client's ``subscription.send(data)`` does: the
        server runs ``data["action"]``, or the channel's ``receive`` action without one.

        Returns:
            The messages this subscription received meanwhile.
        """
        before = len(self.transmissions)
        await self.connection.send(
            {
                "command": "message",
                "identifier": self.identifier,
                "data": _json.dumps(dict(data)).decode(),
            }
        )
        return self.transmissions[before:]

    async def unsubscribe(self) -> None:
        """Send ``unsubscribe`` and wait until ``unsubscribed`` has run."""
        await self.connection.send({"command": "unsubscribe", "identifier": self.identifier})

    # -- assertions ---------------------------------------------------------------------

    def assert_has_stream(self, stream: str) -> None:
        """Assert that the subscription listens to ``stream``."""
        if stream not in self.streams:
            raise AssertionError(
                f"{self._label()} does not stream from {stream!r}; its streams: {self.streams!r}"
            )

    def assert_has_no_stream(self, stream: str) -> None:
        """Assert that the subscription does not listen to ``stream``."""
        if stream in self.streams:
            raise AssertionError(
                f"{self._label()} streams from {stream!r}; its streams: {self.streams!r}"
            )

    def assert_no_streams(self) -> None:
        """Assert that the subscription listens to no stream at all."""
        if self.streams:
            raise AssertionError(f"{self._label()} has streams: {self.streams!r}")

    def assert_has_stream_for(self, model: Any) -> None:
        """Assert that the subscription listens to ``ChannelClass.broadcasting_for(model)``."""
        self.assert_has_stream(self._channel_class().broadcasting_for(model))

    def assert_has_no_stream_for(self, model: Any) -> None:
        """Assert that the subscription does not listen to ``broadcasting_for(model)``."""
        self.assert_has_no_stream(self._channel_class().broadcasting_for(model))

    # -- helpers ------------------------------------------------------------------------

    def _frames(self) -> list[dict[str, Any]]:
        return [
            f
            for f in self.connection.sink.frames[self._start :]
            if isinstance(f, dict) and f.get("identifier") == self.identifier
        ]

    def _status(self) -> str | None:
        status = None
        for frame in self._frames():
            kind = frame.get("type")
            if kind in (_CONFIRM, _REJECT):
                status = kind
        return status

    def _channel_class(self) -> type[Channel]:
        name = self.params.get("channel")
        cls = self.connection.tester.cable.channels.get(name) if isinstance(name, str) else None
        if cls is None:
            raise AssertionError(f"{self._label()}: no channel registered as {name!r}")
        return cls

    def _label(self) -> str:
        status = self._status()
        state = {_CONFIRM: "", _REJECT: " (rejected)"}.get(status or "", " (not confirmed)")
        if status == _CONFIRM and self.channel is None:
            state = " (connection closed)" if self.connection.closed else " (unsubscribed)"
        return f"subscription {self.identifier}{state}"

    def __repr__(self) -> str:
        return (
            f"<TestSubscription {self.identifier} confirmed={self.confirmed} "
            f"rejected={self.rejected} streams={self.streams!r} "
            f"transmissions={self.transmissions!r}>"
        )


class TestConnection:
    """A client connected in-process (made by :meth:`ChannelTester.connect` or
    :meth:`ChannelTester.stub_connection`).

    Identifiers read as attributes: ``conn.current_user``.

    Attributes:
        tester: the :class:`~cablecar.testing.ChannelTester` that made it.
        session: the server's :class:`~cablecar.session.Session` for this client.
        sink: the :class:`~cablecar.testing.RecordingSink` the server writes to.
        request: the :class:`~cablecar.Request` the connection was opened with.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, tester: ChannelTester, session: Session, sink: RecordingSink) -> None:
        self.tester = tester
        self.session = session
        self.sink = sink
        self.request: Request = session.request
        self.subscriptions: list[TestSubscription] = []

    # -- state --------------------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        """Your :class:`~cablecar.Connection` instance for this client."""
        connection = self.session.connection
        if connection is None:
            raise RuntimeError("the connection has not run connect() yet")
        return connection

    @property
    def identifiers(self) -> dict[str, Any]:
        """The ``identified_by`` attributes and their values."""
        return self.connection.identifiers

    @property
    def frames(self) -> list[Any]:
        """Every frame the server sent, decoded, except pings."""
        return [
            f for f in self.sink.frames if not (isinstance(f, dict) and f.get("type") == "ping")
        ]

    @property
    def closed(self) -> bool:
        """Whether the server closed the connection (or :meth:`disconnect` was called)."""
        return self.session.state >= State.CLOSING

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code the server closed with, if it did."""
        return self.sink.close_code

    @property
    def disconnect_frame(self) -> dict[str, Any] | None:
        """The ``{"type": "disconnect", "reason": ..., "reconnect": ...}`` frame, if sent."""
        for frame in reversed(self.sink.frames):
            if isinstance(frame, dict) and frame.get("type") == "disconnect":
                return frame
        return None

    # -- commands -----------------------------------------------------------------------

    async def subscribe(
        self,
        channel: str | type[Channel],
        params: Mapping[str, Any] | None = None,
        /,
        **fields: Any,
    ) -> TestSubscription:
        """Subscribe to ``channel`` (its registered name or its class) with the
        identifier ``{"channel": name, **params, **fields}`` (encoded as the JavaScript
        client does) and wait for the server's answer.

        Example::

            sub = await conn.subscribe("ChatChannel", room="1")
            assert sub.confirmed
            sub.assert_has_stream("chat_1")

        Raises:
            ValueError: a class that is not registered with the cable.
        """
        name = channel if isinstance(channel, str) else self._registered_name(channel)
        identifier = _json.dumps({"channel": name, **(params or {}), **fields}).decode()
        sub = TestSubscription(self, identifier, len(self.sink.frames))
        self.subscriptions.append(sub)
        await self.send({"command": "subscribe", "identifier": identifier})
        return sub

    async def send(self, command: dict[str, Any] | str | bytes) -> None:
        """Send one raw command (a dict is encoded to JSON) and wait until the server
        has handled it.

        Raises:
            RuntimeError: the connection is closed.
        """
        self._check_open("cannot send")
        if isinstance(command, dict):
            data = _json.dumps(command)
        else:
            data = command.encode() if isinstance(command, str) else command
        self.session.receive(data)
        await self.tester.settle()

    async def disconnect(self) -> None:
        """Close the socket from the client side and wait until every channel's
        ``unsubscribed`` and the connection's ``disconnect`` have run."""
        self.session.transport_closed()
        await self.tester.settle()

    # -- helpers ------------------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self.closed:
            reason = (self.disconnect_frame or {}).get("reason")
            raise RuntimeError(f"{what}: the connection is closed (disconnect reason {reason!r})")

    def _registered_name(self, cls: type[Channel]) -> str:
        channels = self.tester.cable.channels
        for name, registered in channels.items():
            if registered is cls:
                return name
        raise ValueError(
            f"{cls.__name__} is not registered with this cable; registered: "
            f"{', '.join(channels) or '(none)'}"
        )

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: the connection's identifiers.
        session = self.__dict__.get("session")
        connection = session.connection if session is not None else None
        if connection is not None and name in type(connection).identified_by:
            return getattr(connection, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        who = self.session.connection
        state = "closed" if self.closed else "open"
        return f"<TestConnection {who!r} {state}>"
