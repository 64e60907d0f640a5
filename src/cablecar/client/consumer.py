"""The consumer: a connection to an Action Cable server and its subscriptions.

Mirrors ``consumer.js``, ``subscriptions.js`` and ``subscription_guarantor.js`` of the
official client (``@rails/actioncable``, ``app/javascript/action_cable/``); the socket
itself is in
:mod:`cablecar.client.connection`.

* Every ``welcome`` re-sends ``subscribe`` for every subscription (the server keeps no state
  across sockets); an unanswered ``subscribe`` is re-sent every 0.5 s until confirmed or
  rejected (the ``SubscriptionGuarantor``).
* Several subscriptions may share one identifier; ``unsubscribe`` goes to the server when
  the last of them leaves.

Better than the JS client where it costs nothing: the first connection's failure is raised
from :meth:`Consumer.open` instead of being retried silently, and a second subscription with
an identifier that is already confirmed is confirmed locally (Rails would ignore the
duplicate ``subscribe`` forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Generator, Mapping
from typing import Any

from websockets.exceptions import ConnectionClosed

from cablecar import _json
from cablecar._json import JSON
from cablecar.protocol.constants import Command

from .connection import SUBPROTOCOLS, Connection
from .monitor import STALE_THRESHOLD, Backoff, ConnectionMonitor
from .presence import PresenceError
from .subscription import Callback, Subscription, SubscriptionClosed

__all__ = ["SUBPROTOCOLS", "Consumer", "ConsumerState", "connect"]


class ConsumerState:
    """What a consumer shows of its connection, read-only: shared by :class:`Consumer`
    and its blocking twin :class:`~cablecar.client.sync.SyncConsumer`, which read the
    same connection."""

    _connection: Connection
    _closed: asyncio.Event

    @property
    def connected(self) -> bool:
        """Whether the socket is open and ``welcome`` has arrived."""
        return self._connection.welcomed

    @property
    def closed(self) -> bool:
        """Whether the consumer has stopped for good (closed here or by the server)."""
        return self._closed.is_set()

    @property
    def disconnect_reason(self) -> str | None:
        """The reason of the ``disconnect`` frame that stopped the consumer for good."""
        return self._connection.disconnect_reason

    @property
    def connections(self) -> int:
        """How many times ``welcome`` arrived (1 + successful reconnects)."""
        return self._connection.connections


class Consumer(ConsumerState):
    """A connection to an Action Cable server and its subscriptions.

    Use :func:`connect` to make one. All arguments are keyword-only.

    Args:
        url: ``ws://``, ``wss://`` (or ``http(s)://``) URL of the cable, e.g.
            ``ws://127.0.0.1:8080/cable?user=bob``.
        headers: extra HTTP headers for the upgrade request (``Authorization``, ...).
        cookies: cookies to send, as a mapping; joined into one ``Cookie`` header.
        origin: the ``Origin`` header; ``None`` sends none (a non-browser client).
        reconnect: reopen lost connections; ``False`` makes any loss final.
        backoff: delays between reconnect attempts.
        stale_threshold: seconds without any frame before the connection counts as stale.
        open_timeout: seconds for the handshake plus ``welcome``.
        subscribe_timeout: seconds :meth:`subscribe` waits for the confirmation.
        send_timeout: seconds ``perform``/``send`` wait for a disconnected subscription to
            be confirmed again before giving up.
        resubscribe_interval: seconds between re-sends of an unconfirmed ``subscribe``.
        max_size: the largest frame accepted from the server, in bytes.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        origin: str | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        stale_threshold: float = STALE_THRESHOLD,
        open_timeout: float = 10.0,
        subscribe_timeout: float = 10.0,
        send_timeout: float = 10.0,
        resubscribe_interval: float = 0.5,
        max_size: int = 16 * 2**20,
    ) -> None:
        all_headers = dict(headers or {})
        if cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        self._connection = Connection(
            url,
            self,
            headers=all_headers,
            origin=origin,
            reconnect=reconnect,
            monitor=ConnectionMonitor(stale_threshold, backoff or Backoff()),
            open_timeout=open_timeout,
            max_size=max_size,
        )
        self.url = self._connection.url
        self._subscribe_timeout = subscribe_timeout
        self._send_timeout = send_timeout
        self._resubscribe_interval = resubscribe_interval
        self._subs: dict[str, list[Subscription]] = {}
        self._pending: dict[str, float] = {}  # identifier -> when subscribe was last sent
        #: identifier -> stream -> {"epoch", "offset"}: the last position seen per stream
        #: (extended protocol), sent back in history requests after a reconnect.
        self._positions: dict[str, dict[str, dict[str, JSON]]] = {}
        #: Unix time before which nothing can have been missed (history ``since``).
        self._since = int(time.time())
        self._guarantor: asyncio.Task[None] | None = None
        self._opened = False
        self._closed = asyncio.Event()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "connected" if self.connected else "connecting"
        return f"<Consumer {self.url} {state}>"

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[Subscription]:
        """The live subscriptions, oldest first."""
        return [sub for subs in self._subs.values() for sub in subs]

    async def open(self) -> None:
        """Connect and wait for ``welcome``; later losses are handled in the background.

        Raises:
            ConnectionRejected: the server refused the connection (``unauthorized``
                disconnect, an HTTP error instead of the upgrade, or no Action Cable
                subprotocol); ``reason`` holds the ``disconnect`` reason if there was one.
            OSError: the server could not be reached.
            TimeoutError: no ``welcome`` within ``open_timeout``.
        """
        if self._opened:
            raise RuntimeError("the consumer is already open")
        self._opened = True
        try:
            await self._connection.start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and end every subscription. Idempotent."""
        await self._connection.close()
        await self._on_stop(self._connection.disconnect_reason)

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the consumer stops for good (see :attr:`disconnect_reason`)."""
        async with asyncio.timeout(timeout):
            await self._closed.wait()

    async def __aenter__(self) -> Consumer:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __await__(self) -> Generator[Any, None, Consumer]:
        return self.__aenter__().__await__()

    # -- subscriptions -------------------------------------------------------------------

    async def subscribe(
        self,
        channel: str,
        params: Mapping[str, JSON] | None = None,
        *,
        on_message: Callback | None = None,
        on_connected: Callback | None = None,
        on_disconnected: Callback | None = None,
        on_rejected: Callback | None = None,
        **fields: JSON,
    ) -> Subscription:
        """Subscribe to a channel and wait for the server's confirmation.

        The identifier is ``{"channel": channel, **params, **fields}`` encoded the way the
        JS client's ``JSON.stringify`` does it (``channel`` first, no spaces).

        Args:
            channel: the channel's name, e.g. ``"ChatChannel"``.
            params: identifier fields, as a mapping (for names that clash with keywords).
            on_message: called with each message (then ``receive()``/``async for`` are off).
            on_connected: called with ``reconnected: bool`` on each confirmation.
            on_disconnected: called with ``will_reconnect: bool`` when the socket drops.
            on_rejected: called (no arguments) when the server rejects the subscription.
            **fields: more identifier fields, e.g. ``room="1"``.

        Returns:
            The confirmed subscription.

        Raises:
            SubscriptionRejected: the server answered ``reject_subscription``.
            SubscriptionClosed: the consumer is closed.
            RuntimeError: the consumer was never opened.
            TimeoutError: no answer within ``subscribe_timeout``.
        """
        if not self._opened:
            raise RuntimeError("open the consumer first: async with connect(url) as consumer")
        if self.closed:
            raise SubscriptionClosed(self.disconnect_reason)
        identity: dict[str, JSON] = {"channel": channel, **(params or {}), **fields}
        identifier = _json.dumps(identity).decode()
        sub = Subscription(
            self,
            identity,
            identifier,
            on_message=on_message,
            on_connected=on_connected,
            on_disconnected=on_disconnected,
            on_rejected=on_rejected,
        )
        siblings = self._subs.setdefault(identifier, [])
        already_confirmed = any(s.connected for s in siblings)
        siblings.append(sub)
        if already_confirmed:
            sub._on_confirm()  # the server holds one subscription per identifier
        elif self.connected and identifier not in self._pending:
            await self._send_subscribe(identifier)
        try:
            async with asyncio.timeout(self._subscribe_timeout):
                await asyncio.shield(sub._first)
        except BaseException:
            sub._released.set()
            if not sub.closed:
                await sub.unsubscribe()
            raise
        sub._released.set()
        return sub

    async def _remove(self, sub: Subscription) -> None:
        siblings = self._subs.get(sub.identifier, [])
        if sub in siblings:
            siblings.remove(sub)
        if siblings:
            return  # like the JS client: unsubscribe only when no one else uses it
        self._subs.pop(sub.identifier, None)
        self._pending.pop(sub.identifier, None)
        with contextlib.suppress(ConnectionClosed):
            await self._connection.send(
                {"command": Command.UNSUBSCRIBE, "identifier": sub.identifier}
            )

    async def _send_message(self, sub: Subscription, data: dict[str, JSON]) -> None:
        frame = {
            "command": Command.MESSAGE,
            "identifier": sub.identifier,
            "data": _json.dumps(data).decode(),
        }
        deadline = time.monotonic() + self._send_timeout
        while True:
            await sub.wait_connected(max(0.0, deadline - time.monotonic()))
            try:
                await self._connection.send(frame)
                return
            except ConnectionClosed:
                # The frame was not written (the socket was already closing): send it again
                # once the subscription is confirmed on the next connection.
                await asyncio.sleep(0.01)

    async def _send_ext(self, sub: Subscription, frame: dict[str, JSON]) -> None:
        """An extended-protocol command of ``sub`` (whisper, join, leave, presence),
        sent once the subscription is confirmed on the live connection."""
        await sub.wait_connected(self._send_timeout)
        if not self._connection.ext:
            raise PresenceError(
                f"{frame['command']} needs the extended protocol (a server with history=True)"
            )
        with contextlib.suppress(ConnectionClosed):
            await self._connection.send({**frame, "identifier": sub.identifier})

    def _joined(self, identifier: str) -> dict[str, JSON] | None:
        for sub in self._subs.get(identifier, ()):
            if sub.presence.joined is not None:
                return sub.presence.joined
        return None

    def _history_request(self, identifier: str) -> dict[str, JSON]:
        return {"since": self._since, "streams": dict(self._positions.get(identifier, {}))}

    async def _send_subscribe(self, identifier: str) -> None:
        self._pending[identifier] = time.monotonic()
        frame: dict[str, JSON] = {"command": Command.SUBSCRIBE, "identifier": identifier}
        if self._connection.ext and identifier in self._positions:
            frame["history"] = self._history_request(identifier)  # what we missed
        joined = self._joined(identifier) if self._connection.ext else None
        if joined is not None:  # join again right after the confirmation
            frame["presence"] = joined
        with contextlib.suppress(ConnectionClosed):
            await self._connection.send(frame)

    async def _guarantee(self) -> None:
        """Re-send ``subscribe`` while unanswered (the JS ``SubscriptionGuarantor``)."""
        while True:
            await asyncio.sleep(self._resubscribe_interval)
            now = time.monotonic()
            for identifier, sent_at in list(self._pending.items()):
                if now - sent_at >= self._resubscribe_interval and identifier in self._subs:
                    await self._send_subscribe(identifier)

    # -- what the connection tells us (connection.Handler) -------------------------------

    async def _on_welcome(self, restored: list[str] | None) -> None:
        """Subscribe everything again (the server forgot it all with the old socket),
        except what a resumed session still holds: for those, ask what was missed."""
        if self._guarantor is None or self._guarantor.done():
            self._guarantor = asyncio.create_task(self._guarantee())
        for identifier in list(self._subs):
            if restored is not None and identifier in restored:
                for sub in self._subs.get(identifier, ()):
                    sub._on_confirm()
                with contextlib.suppress(ConnectionClosed):
                    await self._connection.send(
                        {
                            "command": Command.HISTORY,
                            "identifier": identifier,
                            "history": self._history_request(identifier),
                        }
                    )
                    joined = self._joined(identifier)
                    if joined is not None:  # the server kept it; joining again is quiet
                        await self._connection.send(
                            {"command": Command.JOIN, "identifier": identifier, "presence": joined}
                        )
            else:
                await self._send_subscribe(identifier)

    def _on_answer(self, identifier: str, *, confirmed: bool) -> None:
        """Confirm or reject every subscription with this identifier."""
        self._pending.pop(identifier, None)
        subs = self._subs.get(identifier, []) if confirmed else self._subs.pop(identifier, [])
        for sub in list(subs):
            if confirmed:
                sub._on_confirm()
            else:
                sub._on_reject()

    def _on_message(
        self, identifier: str, message: JSON, position: tuple[str, str, int] | None
    ) -> None:
        """Hand a data frame to every subscription with this identifier."""
        if position is not None:
            stream, epoch, offset = position
            self._positions.setdefault(identifier, {})[stream] = {"epoch": epoch, "offset": offset}
            self._since = int(time.time())
        for sub in list(self._subs.get(identifier, ())):
            sub._on_message(message, position)

    def _on_presence(self, identifier: str, message: dict[str, JSON]) -> None:
        """A presence frame: an event, or the answer to ``info``."""
        for sub in list(self._subs.get(identifier, ())):
            sub.presence._on_frame(message)

    def _on_history(self, identifier: str, *, found: bool) -> None:
        """The server answered a history request: complete, or the gap is lost."""
        for sub in list(self._subs.get(identifier, ())):
            sub._on_history(found)

    def _on_socket_closed(self, will_reconnect: bool) -> None:
        """Mark every subscription disconnected until the next confirmation."""
        self._pending.clear()
        if self._guarantor is not None:
            self._guarantor.cancel()
        for sub in self.subscriptions:
            sub._on_socket_closed(will_reconnect)

    async def _on_stop(self, reason: str | None) -> None:
        """End every subscription: the consumer is done."""
        if self._guarantor is not None:
            self._guarantor.cancel()
        subs = self.subscriptions
        self._subs.clear()
        self._pending.clear()
        for sub in subs:
            sub._end_now(lambda: SubscriptionClosed(reason))
        self._closed.set()
        for sub in subs:
            await sub._finish(lambda: SubscriptionClosed(reason))


#: ``connect(url, **options)`` makes an unopened :class:`Consumer` (the options are its
#: constructor's): ``async with connect(url) as consumer`` opens it (waiting for
#: ``welcome``) and closes it; ``consumer = await connect(url)`` opens it and leaves
#: closing to you.
#:
#: Example::
#:
#:     async with cablecar.client.connect("ws://127.0.0.1:8080/cable") as consumer:
#:         sub = await consumer.subscribe("ChatChannel", room="1")
#:         await sub.perform("speak", body="hi")
#:         print(await sub.receive(timeout=5))
connect = Consumer
