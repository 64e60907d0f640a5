"""Broadcasting from any process: a Django view, a Celery task, a cron script.

A :class:`Broadcaster` publishes to the same pub/sub service as the cablecar servers
(Redis, PostgreSQL or NATS), so every server process delivers the message to its own
subscribers::

    from cablecar import Broadcaster

    broadcaster = Broadcaster("redis://127.0.0.1:6379/0")     # one per process, reused

    # async code (an ASGI view, an asyncio worker)
    await broadcaster.broadcast("chat_1", {"body": "hello"})
    await broadcaster.broadcast_to(ChatChannel, room, {"body": "hello"})
    await broadcaster.remote_connections.where(current_user="bob").disconnect()

    # sync code (a WSGI view, a Celery task, a script)
    broadcaster.broadcast_sync("chat_1", {"body": "hello"})

Each message is encoded to JSON once; servers forward the bytes without decoding them.
While the service is unreachable, broadcasts wait in a bounded outbox (``outbox_size``,
``outbox_age``) and go out in order when it is back; a broadcast that finds the outbox
full raises :class:`~cablecar.errors.OutboxFull`, one that ages out is logged at ERROR.
``outbox_size=0`` is at most once: :class:`~cablecar.errors.AdapterError` at once.
:class:`~cablecar.errors.PublishTimeout` means the outcome is unknown (the service took
the connection but did not answer: it may still deliver it). ``close()`` waits up to
``timeout`` for the outbox to empty.

The async methods use an adapter bound to the event loop they first run on. The sync
methods use a second adapter on a private event loop in a daemon thread, started on
first use and reused by every later call from any thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import urlsplit

from . import _json
from ._naming import broadcasting_for
from ._outbox import Outbox
from ._remote import RemoteConnections
from .errors import ConfigurationError
from .history import HistoryStore, StoreSettings, store_from_url
from .history.base import stamp
from .pubsub import PubSub, adapter_from_url

__all__ = ["Broadcaster"]

_T = TypeVar("_T")


class Broadcaster:
    """Publish to cablecar streams from outside the server process.

    Args:
        url: the pub/sub URL the servers use: ``redis://...``, ``postgresql://...`` or
            ``nats://...``. ``memory://`` is refused: it cannot reach another process.
        channel_prefix: the servers' ``channel_prefix``, if they set one.
        timeout: seconds ``broadcast_sync`` (and ``close_sync``) wait at most.
        history: the servers run with ``history=True``: store each broadcast in the
            backend's history too, so that clients that were away recover it (give the
            servers' ``history_limit`` and ``history_ttl`` if they changed them).
        outbox_size: broadcasts that may wait while the service is down (``0``: none,
            at most once).
        outbox_age: seconds a waiting broadcast is kept.

    Raises:
        ConfigurationError: ``memory://``, an unknown scheme, or the adapter's extra is
            not installed.
    """

    def __init__(
        self,
        url: str,
        *,
        channel_prefix: str | None = None,
        timeout: float = 10.0,
        history: bool = False,
        history_limit: int = 100,
        history_ttl: float = 300.0,
        outbox_size: int = 10_000,
        outbox_age: float = 60.0,
    ) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "memory":
            raise ConfigurationError(
                "Broadcaster('memory://') cannot reach another process: the memory adapter "
                "only delivers inside the process that owns the Cable. Use the servers' "
                "Redis, PostgreSQL or NATS URL (or cable.broadcast() inside the server)."
            )
        self.url = url
        self.channel_prefix = channel_prefix
        self.timeout = timeout
        self._adapter: PubSub = adapter_from_url(url, channel_prefix=channel_prefix)
        self._history = StoreSettings(history_limit, history_ttl) if history else None
        self._store = self._new_store()
        self._sync_store: HistoryStore | None = None
        self._adapter_loop: asyncio.AbstractEventLoop | None = None
        self._sync_adapter: PubSub | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._outbox = Outbox(self._stamp_and_publish, outbox_size, outbox_age)
        self._sync_outbox = Outbox(self._stamp_and_publish_on_thread, outbox_size, outbox_age)
        #: ``await b.remote_connections.where(current_user="bob").disconnect()`` closes
        #: the matching connections on every server process.
        self.remote_connections = RemoteConnections(self._publish)

    # -- async -------------------------------------------------------------------------

    async def broadcast(
        self, stream: str, message: Any, *, exclude_socket: str | None = None
    ) -> None:
        """Send ``message`` (any JSON value) to every subscriber of ``stream``.

        Args:
            exclude_socket: the ``sid`` of a connection that must not receive it.

        Raises:
            AdapterError: the service did not take the message.
            TypeError: ``message`` cannot be encoded to JSON.
        """
        await self._outbox.send(stream, _json.dumps(message), exclude_socket, 0.0)

    async def _stamp_and_publish(
        self, stream: str, payload: bytes, exclude: str | None, sent: float
    ) -> None:
        await self._publish(stream, await stamp(self._store, stream, payload, exclude, sent))

    async def broadcast_to(self, channel: type, model: Any, message: Any) -> None:
        """Broadcast to ``channel.broadcasting_for(model)`` (``"chat:<key>"``), the
        stream a channel's ``stream_for(model)`` listens to.
        """
        await self.broadcast(_stream_for(channel, model), message)

    async def close(self) -> None:
        """Wait up to ``timeout`` for waiting broadcasts (those left are logged), then
        close the connections (both the async and the sync side). Idempotent."""
        if len(self._outbox):
            await self._outbox.flush(self.timeout)
        self._outbox.close()
        self._closed = True
        await self._adapter.close()
        if self._store is not None:
            await self._store.close()
        loop, thread = self._stop_thread()
        if loop is not None and self._sync_adapter is not None:
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._sync_adapter.close(), loop)
            )
        self._join(loop, thread)

    async def __aenter__(self) -> Broadcaster:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _publish(self, stream: str, payload: bytes) -> None:
        if self._closed:
            raise RuntimeError("this Broadcaster is closed")
        loop = asyncio.get_running_loop()
        if self._adapter_loop is None:
            self._adapter_loop = loop
        elif self._adapter_loop is not loop:
            raise RuntimeError(
                "this Broadcaster's async methods are bound to the event loop they first ran "
                "on; create one Broadcaster per event loop, or use broadcast_sync()"
            )
        await self._adapter.publish(stream, payload)

    # -- sync --------------------------------------------------------------------------

    def broadcast_sync(
        self, stream: str, message: Any, *, exclude_socket: str | None = None
    ) -> None:
        """:meth:`broadcast` for synchronous code; thread-safe.

        Raises:
            AdapterError: the service did not take the message.
            TimeoutError: no answer within ``timeout`` seconds.
            TypeError: ``message`` cannot be encoded to JSON.
        """
        payload = _json.dumps(message)
        self._run_sync(self._sync_outbox.send(stream, payload, exclude_socket, 0.0))

    def broadcast_to_sync(self, channel: type, model: Any, message: Any) -> None:
        """:meth:`broadcast_to` for synchronous code; thread-safe."""
        self.broadcast_sync(_stream_for(channel, model), message)

    def disconnect_sync(self, *, reconnect: bool = True, **identifiers: Any) -> None:
        """``remote_connections.where(**identifiers).disconnect(reconnect=...)`` for
        synchronous code (a logout view, say); thread-safe.
        """
        where = RemoteConnections(self._publish_sync).where(**identifiers)
        self._run_sync(where.disconnect(reconnect=reconnect))

    def close_sync(self) -> None:
        """Close the sync side: its connections, loop and thread. Idempotent.

        The async side (if used) needs ``await close()`` on its own loop. Waits up to
        ``timeout`` for waiting broadcasts first (those left are logged).
        """
        loop = self._thread_loop
        if loop is not None and len(self._sync_outbox):
            asyncio.run_coroutine_threadsafe(self._sync_outbox.flush(self.timeout), loop).result(
                self.timeout + 1
            )
        loop, thread = self._stop_thread()
        if loop is not None and self._sync_adapter is not None:
            asyncio.run_coroutine_threadsafe(self._sync_adapter.close(), loop).result(self.timeout)
        if loop is not None and self._sync_store is not None:
            asyncio.run_coroutine_threadsafe(self._sync_store.close(), loop).result(self.timeout)
            self._sync_store = None
        self._join(loop, thread)

    def __enter__(self) -> Broadcaster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_sync()

    def _new_store(self) -> HistoryStore | None:
        if self._history is None:
            return None
        return store_from_url(self.url, self._history, prefix=self.channel_prefix)

    async def _stamp_and_publish_on_thread(
        self, stream: str, payload: bytes, exclude: str | None, sent: float
    ) -> None:
        # Runs on the private loop, which owns the sync adapter and store.
        if self._history is not None and self._sync_store is None:
            self._sync_store = self._new_store()
        await self._publish_sync(
            stream, await stamp(self._sync_store, stream, payload, exclude, sent)
        )

    async def _publish_sync(self, stream: str, payload: bytes) -> None:
        # Runs on the private loop, which owns the sync adapter.
        assert self._sync_adapter is not None
        await self._sync_adapter.publish(stream, payload)

    def _run_sync(self, coro: Coroutine[Any, Any, _T]) -> _T:
        try:
            loop = self._ensure_thread()
        except BaseException:
            coro.close()
            raise
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _ensure_thread(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("this Broadcaster is closed")
            if self._thread_loop is None:
                if self._sync_adapter is None:
                    self._sync_adapter = adapter_from_url(
                        self.url, channel_prefix=self.channel_prefix
                    )
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=run, name="cablecar-broadcaster", daemon=True)
                thread.start()
                ready.wait(self.timeout)
                self._thread_loop, self._thread = loop, thread
            return self._thread_loop

    def _stop_thread(self) -> tuple[asyncio.AbstractEventLoop | None, threading.Thread | None]:
        with self._lock:
            loop, thread = self._thread_loop, self._thread
            self._thread_loop = self._thread = None
            return loop, thread

    def _join(
        self, loop: asyncio.AbstractEventLoop | None, thread: threading.Thread | None
    ) -> None:
        self._sync_adapter = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.timeout)
        if not thread.is_alive():
            loop.close()


def _stream_for(channel: type, model: Any) -> str:
    # A cablecar Channel has broadcasting_for(); any class naming itself *Channel works too.
    naming = getattr(channel, "broadcasting_for", None)
    if callable(naming):
        return str(naming(model))
    return broadcasting_for(channel, model)
