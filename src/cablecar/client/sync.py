"""A blocking facade over the asyncio client, for scripts that don't use asyncio.

The consumer runs on an event loop in a background thread; each method here submits a
coroutine to that loop and waits for its result::

    from cablecar.client.sync import connect

    with connect("ws://127.0.0.1:8080/cable") as consumer:
        sub = consumer.subscribe("ChatChannel", room="1")
        sub.perform("speak", body="hi")
        print(sub.receive(timeout=5))

Reconnection, re-subscription and stale detection work as in :mod:`cablecar.client`, in the
background thread. Callbacks are not offered here: iterate or call ``receive``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from cablecar._json import JSON

from .consumer import Consumer, ConsumerState
from .subscription import Subscription, SubscriptionClosed

__all__ = ["SyncConsumer", "SyncSubscription", "connect"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="cablecar-client-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: stop the coroutine too
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.close()


class SyncSubscription:
    """The blocking twin of :class:`~cablecar.client.Subscription`."""

    def __init__(self, sub: Subscription, runner: _LoopThread) -> None:
        self._sub = sub
        self._runner = runner
        #: The identifier string sent to the server.
        self.identifier = sub.identifier

    def __repr__(self) -> str:
        return "<Sync" + repr(self._sub)[1:]

    @property
    def connected(self) -> bool:
        """Whether the server has confirmed the subscription on the live connection."""
        return self._sub.connected

    @property
    def reconnected(self) -> bool:
        """True once the subscription has been confirmed again after a reconnect."""
        return self._sub.reconnected

    def perform(
        self, action: str, data: Mapping[str, JSON] | None = None, /, **fields: JSON
    ) -> None:
        """Call an action of the channel; see :meth:`Subscription.perform`."""
        self._runner.run(self._sub.perform(action, data, **fields))

    def send(self, data: Mapping[str, JSON]) -> None:
        """Send data without an action (the channel's ``receive``)."""
        self._runner.run(self._sub.send(data))

    def receive(self, timeout: float | None = None) -> JSON:
        """The next message; see :meth:`Subscription.receive`.

        Raises:
            TimeoutError: nothing arrived in time.
            SubscriptionClosed: the subscription has ended.
        """
        return self._runner.run(self._sub.receive(timeout))

    def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the subscription is confirmed on the live connection."""
        self._runner.run(self._sub.wait_connected(timeout))

    def __iter__(self) -> Iterator[JSON]:
        while True:
            try:
                yield self.receive()
            except SubscriptionClosed:
                return

    def unsubscribe(self) -> None:
        """Leave the channel."""
        self._runner.run(self._sub.unsubscribe())


class SyncConsumer(ConsumerState):
    """The blocking twin of :class:`~cablecar.client.Consumer`; made by :func:`connect`.
    Its state (``connected``, ``closed``, ``disconnect_reason``, ``connections``) is the
    consumer's (:class:`~cablecar.client.consumer.ConsumerState`)."""

    def __init__(self, consumer: Consumer, runner: _LoopThread) -> None:
        self._consumer = consumer
        self._runner = runner
        # ConsumerState's properties read the same connection as the consumer's.
        self._connection = consumer._connection
        self._closed = consumer._closed

    def subscribe(
        self, channel: str, params: Mapping[str, JSON] | None = None, **fields: JSON
    ) -> SyncSubscription:
        """Subscribe and wait for the confirmation; see :meth:`Consumer.subscribe`."""
        sub = self._runner.run(self._consumer.subscribe(channel, params, **fields))
        return SyncSubscription(sub, self._runner)

    def close(self) -> None:
        """Close the connection and stop the background loop. Idempotent."""
        if self._runner.loop.is_closed():
            return
        try:
            self._runner.run(self._consumer.close())
        except (RuntimeError, concurrent.futures.CancelledError):
            pass  # the loop is already stopping
        finally:
            self._runner.stop()

    def __enter__(self) -> SyncConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(url: str, **options: Any) -> SyncConsumer:
    """Connect (waiting for ``welcome``) and return a blocking consumer.

    Args:
        url: the cable's URL.
        **options: the keyword arguments of :class:`~cablecar.client.Consumer`.

    Raises:
        ConnectionRejected: the server refused the connection.
        OSError: the server could not be reached.
    """
    runner = _LoopThread()

    async def open_consumer() -> Consumer:
        consumer = Consumer(url, **options)
        await consumer.open()
        return consumer

    try:
        consumer = runner.run(open_consumer())
    except BaseException:
        runner.stop()
        raise
    return SyncConsumer(consumer, runner)
