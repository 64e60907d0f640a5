"""One subscription of a consumer: perform actions, receive messages, react to its lifecycle.

Invariants:

* A subscription is *connected* while the server has confirmed it on the live socket. It
  stops being connected when the socket closes and becomes connected again when the consumer
  re-subscribes after a reconnect; :attr:`Subscription.reconnected` then turns true.
* Messages queue up across reconnects, so ``async for`` simply continues.
* A subscription *ends* exactly once: unsubscribed, rejected, or its consumer closed for good.
  Messages that arrived before the end can still be read; after them, ``receive()`` raises
  (:class:`SubscriptionClosed` or :class:`~cablecar.errors.SubscriptionRejected`) and
  ``async for`` stops.
* Callbacks run one at a time, in the order of the events, on a task of their own, so a
  slow callback never delays the socket reader (which would look like a stale connection).
  None runs before ``subscribe()`` has returned the subscription.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from cablecar._json import JSON
from cablecar.errors import CablecarError, SubscriptionRejected

from .presence import Presence

if TYPE_CHECKING:
    from .consumer import Consumer

__all__ = ["Callback", "Subscription", "SubscriptionClosed"]

logger = logging.getLogger("cablecar.client")

#: A callback: a plain function, or an ``async def`` (awaited before the next event).
Callback = Callable[..., Any]


class SubscriptionClosed(CablecarError):
    """The subscription has ended and will deliver nothing more.

    Attributes:
        reason: the server's ``disconnect`` reason when the server ended the connection for
            good (``"unauthorized"``, ``"remote"``, ...); ``None`` when this program
            unsubscribed or closed the consumer.
    """

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(
            f"subscription closed: server disconnected ({reason})"
            if reason
            else "subscription closed"
        )
        self.reason = reason


class _End:
    """Queue marker: the subscription has ended."""


_END = _End()


class Subscription:
    """A channel subscription, created by :meth:`Consumer.subscribe`.

    Example::

        sub = await consumer.subscribe("ChatChannel", room="1")
        await sub.perform("speak", body="hi")
        async for message in sub:
            print(message)

    Attributes:
        channel: the channel name.
        params: the identifier's fields, ``channel`` first.
        identifier: the identifier string sent to the server (``JSON.stringify(params)``).
        reconnected: true once the subscription has been confirmed again after a reconnect.
        position: ``(stream, epoch, offset)`` of the last message received, when the
            server runs with ``history=True`` (extended protocol); else ``None``.
        history_lost: how many times the server answered that messages missed during a
            disconnection are no longer in its history (``reject_history``): refetch
            the state then. Within the history window nothing is missed: after a
            reconnect the missed messages come first, in order, each once.
    """

    def __init__(
        self,
        consumer: Consumer,
        params: dict[str, JSON],
        identifier: str,
        *,
        on_message: Callback | None = None,
        on_connected: Callback | None = None,
        on_disconnected: Callback | None = None,
        on_rejected: Callback | None = None,
    ) -> None:
        self._consumer = consumer
        self.channel: str = params["channel"]
        self.params = params
        self.identifier = identifier
        self.reconnected = False
        self.position: tuple[str, str, int] | None = None
        self.history_lost = 0
        self._ever_confirmed = False
        self._connected = asyncio.Event()
        self._first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._messages: asyncio.Queue[JSON] = asyncio.Queue()
        self._end: Callable[[], CablecarError] | None = None
        self._callbacks = {
            "message": on_message,
            "connected": on_connected,
            "disconnected": on_disconnected,
            "rejected": on_rejected,
        }
        #: Presence on the subscription's presence stream (extended protocol).
        self.presence = Presence(self)
        self._released = asyncio.Event()  # set when subscribe() hands the subscription out
        self._events: asyncio.Queue[tuple[str, tuple[Any, ...]]] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        if any(self._callbacks.values()):
            self._events = asyncio.Queue()
            self._dispatcher = asyncio.create_task(
                self._dispatch(), name=f"cablecar-client-callbacks {identifier}"
            )

    def __repr__(self) -> str:
        state = "closed" if self.closed else "connected" if self.connected else "pending"
        return f"<Subscription {self.identifier} {state}>"

    # -- state -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the server has confirmed this subscription on the live connection."""
        return self._connected.is_set() and self._end is None

    @property
    def closed(self) -> bool:
        """Whether the subscription has ended (unsubscribed, rejected or consumer closed)."""
        return self._end is not None

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the subscription is confirmed on the live connection.

        Args:
            timeout: seconds to wait at most; ``None`` waits as long as it takes.

        Raises:
            TimeoutError: not confirmed in time.
            SubscriptionClosed: the subscription has ended.
            SubscriptionRejected: the server rejected it.
        """
        async with asyncio.timeout(timeout):
            await self._connected.wait()
        if self._end is not None:
            raise self._end()

    # -- sending -----------------------------------------------------------------------

    async def perform(
        self, action: str, data: Mapping[str, JSON] | None = None, /, **fields: JSON
    ) -> None:
        """Call an action of the channel (``subscription.perform`` in the JS client).

        Sends ``{**data, **fields, "action": action}``. If the connection is being
        re-established, waits for the subscription to be confirmed again (at most the
        consumer's ``send_timeout``) so the action is not lost.

        Args:
            action: the channel method to call.
            data: fields of the action's data, as a mapping.
            **fields: more fields of the action's data.

        Raises:
            SubscriptionClosed: the subscription has ended.
            TimeoutError: the subscription stayed disconnected for ``send_timeout``.
        """
        await self.send({**(data or {}), **fields, "action": action})

    async def send(self, data: Mapping[str, JSON]) -> None:
        """Send data without an action: the server calls the channel's ``receive``.

        Args:
            data: the message, any JSON object.

        Raises:
            SubscriptionClosed: the subscription has ended.
            TimeoutError: the subscription stayed disconnected for ``send_timeout``.
        """
        await self._consumer._send_message(self, dict(data))

    async def whisper(self, data: JSON) -> None:
        """Send ``data`` to the other subscribers of the channel's whisper stream
        (``stream_from(..., whisper=True)``) with no action code and no history: typing
        indicators, cursors. Nothing comes back; the sender does not receive it.

        Raises:
            PresenceError: the connection does not speak the extended protocol.
            SubscriptionClosed: the subscription has ended.
        """
        await self._command("whisper", data=data)

    async def _command(self, command: str, **fields: JSON) -> None:
        await self._consumer._send_ext(self, {"command": command, **fields})

    # -- receiving ---------------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> JSON:
        """The next message broadcast or transmitted to this subscription.

        Args:
            timeout: seconds to wait at most; ``None`` waits as long as it takes.

        Returns:
            The ``message`` value of the next data frame.

        Raises:
            TimeoutError: nothing arrived in time.
            SubscriptionClosed: the subscription has ended and every message was read.
            SubscriptionRejected: the server rejected the subscription (after a reconnect).
            RuntimeError: messages go to an ``on_message`` callback instead.
        """
        if self._callbacks["message"] is not None:
            raise RuntimeError("this subscription delivers messages to its on_message callback")
        async with asyncio.timeout(timeout):
            item = await self._messages.get()
        if isinstance(item, _End):
            self._messages.put_nowait(item)  # every later receive() ends the same way
            assert self._end is not None
            raise self._end()
        return item

    def _discard_received(self) -> None:
        """Forget the messages received so far (kept: the end of the subscription).
        ``cablecar perform --wait-reply`` wants the answer to what it sends next, not
        what ``subscribed()`` transmitted (which arrives before the confirmation)."""
        kept = [item for item in _drain(self._messages) if isinstance(item, _End)]
        for item in kept:
            self._messages.put_nowait(item)

    def __aiter__(self) -> AsyncIterator[JSON]:
        return self

    async def __anext__(self) -> JSON:
        try:
            return await self.receive()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    async def unsubscribe(self) -> None:
        """Leave the channel: the server runs ``unsubscribed`` (no acknowledgement exists).

        Messages already received can still be read. Idempotent.
        """
        if self._end is None:
            await self._consumer._remove(self)
            await self._finish(lambda: SubscriptionClosed(None))

    # -- called by the consumer --------------------------------------------------------

    def _on_confirm(self) -> None:
        if self._end is not None or self._connected.is_set():
            return
        self.reconnected = self._ever_confirmed
        self._ever_confirmed = True
        self._connected.set()
        if not self._first.done():
            self._first.set_result(None)
        self._emit("connected", self.reconnected)

    def _on_reject(self) -> None:
        if self._end is not None:
            return
        error = f"{self.channel} rejected the subscription {self.identifier}"
        if not self._first.done():
            self._first.set_exception(SubscriptionRejected(error))
            self._first.exception()  # retrieved: subscribe() may have given up waiting
        self._emit("rejected")
        self._end_now(lambda: SubscriptionRejected(error))

    def _on_history(self, found: bool) -> None:
        if not found:
            self.history_lost += 1

    def _on_message(self, message: JSON, position: tuple[str, str, int] | None = None) -> None:
        if self._end is not None:
            return
        if position is not None:
            self.position = position
        if self._callbacks["message"] is not None:
            self._emit("message", message)
        else:
            self._messages.put_nowait(message)

    def _on_socket_closed(self, will_reconnect: bool) -> None:
        if self._connected.is_set() and self._end is None:
            self._connected.clear()
            self._emit("disconnected", will_reconnect)

    def _end_now(self, error: Callable[[], CablecarError]) -> None:
        """End without waiting for callbacks (from the consumer's reader)."""
        if self._end is not None:
            return
        self._end = error
        self._connected.set()  # wake wait_connected(), which then raises
        if not self._first.done():
            self._first.set_exception(error())
            self._first.exception()
        self._messages.put_nowait(_END)
        if self._events is not None:
            self._events.put_nowait(("end", ()))

    async def _finish(self, error: Callable[[], CablecarError], grace: float = 1.0) -> None:
        """End, then let queued callbacks run (at most ``grace`` seconds)."""
        self._end_now(error)
        if self._dispatcher is not None and not self._dispatcher.done():
            if self._dispatcher is asyncio.current_task():
                return  # a callback unsubscribed: the dispatcher stops after it
            try:
                await asyncio.wait_for(asyncio.shield(self._dispatcher), grace)
            except TimeoutError:
                self._dispatcher.cancel()

    def _emit(self, kind: str, *args: Any) -> None:
        if self._events is not None and self._callbacks.get(kind) is not None:
            self._events.put_nowait((kind, args))

    async def _dispatch(self) -> None:
        assert self._events is not None
        # Callbacks may use the subscription (``await sub.perform(...)``), so none runs
        # before subscribe() has returned it to the caller.
        await self._released.wait()
        while True:
            kind, args = await self._events.get()
            if kind == "end":
                return
            callback = self._callbacks[kind]
            assert callback is not None
            try:
                result = callback(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # A user's callback failing must not stop the subscription.
                logger.exception("on_%s callback of %s raised", kind, self.identifier)


def _drain(queue: asyncio.Queue[JSON]) -> list[JSON]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
