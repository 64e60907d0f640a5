"""What every network adapter shares: ``BrokerAdapter``, its settings (each declared
once: the URL, the channel prefix, the connect and publish timeouts) and what follows
from them (the redacted URL, the stream-name prefix, the guarded delivery to the
cable); the listener's reconnect loop, its log lines and backoff; and, for the adapters
that run that loop (Redis, PostgreSQL), ``ListeningAdapter``: its settings, the wanted
channels, the subscribes waiting for them, ``start`` and ``close``.

Invariants:

1. One task (``Listener.run``) owns an adapter's listening connection: it connects,
   lets the adapter resubscribe and serve, and when the connection fails reconnects
   with exponential backoff and jitter. Nothing else reconnects.
2. ``first_attempt`` completes after the first connection attempt, whether it
   succeeded or not (``start`` returns then; the adapter keeps retrying), and always
   when the loop ends.
3. Any failure while serving (a bug included) is logged and followed by a reconnect:
   the listener never ends by itself.

Logging (the adapter's logger), the same words for every service: WARNING "cannot
reach <Service> at <url>" at start and "lost connection to <Service> at <url>" when an
established listener fails; INFO "reconnected to <Service> at <url> after N s; K streams
resubscribed" (or "connected to ..." after a failed start) when it is back; DEBUG for
each failed attempt in between; ERROR with a traceback for an unexpected exception.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Generic, TypeVar

from .._urls import redact_url
from ..errors import AdapterError
from .base import MessageHandler

__all__ = [
    "BrokerAdapter",
    "Listener",
    "ListeningAdapter",
    "StallWatch",
]

C = TypeVar("C")
K = TypeVar("K", bound=Hashable)


@dataclass(eq=False, repr=False)
class BrokerAdapter:
    """The settings every network adapter takes (each declared here once) and what
    follows from them. Subclasses are dataclasses too (``eq=False``: adapters compare
    and hash by identity), set ``service`` (its name in log lines and errors) and
    ``_logger``, and extend ``__post_init__`` (calling this one first).

    Its ``repr`` shows the class and the URL without its password.
    """

    service: ClassVar[str]
    _logger: ClassVar[logging.Logger]

    url: str
    channel_prefix: str | None = None
    _: KW_ONLY
    connect_timeout: float = 2.0
    publish_timeout: float = 5.0

    def __post_init__(self) -> None:
        self._where = redact_url(self.url)
        #: What goes before a stream name in the service: ``"<prefix>:"`` or nothing.
        self._prefix = f"{self.channel_prefix}:" if self.channel_prefix else ""
        self._on_message: MessageHandler | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._where}>"

    def _check_open(self) -> None:
        """Raise :class:`~cablecar.errors.AdapterError` once the adapter is closed."""
        if self._closed:
            raise AdapterError(f"the {self.service} adapter is closed")

    def _deliver(self, stream: str, payload: bytes) -> None:
        """Hand a message on ``stream`` to the cable; an exception is logged, never
        raised into the listener."""
        handler = self._on_message
        if handler is None:
            return
        try:
            handler(stream, payload)
        except Exception:
            self._logger.exception("message handler failed for stream %r", stream)


class Listener(Generic[C]):
    """The reconnect loop of one adapter (see the module docstring). Everything it needs
    comes from the adapter: its ``service`` name, logger and redacted URL for log lines;
    ``_connect_listener`` (raises one of ``_errors`` when the service is unreachable),
    ``_serve`` (resubscribe, call ``ready(streams)``, listen until the connection fails,
    by raising) and ``_discard`` (close a failed connection, never raises); how an error
    reads (``_describe``); and the backoff (``reconnect_delay``, ``max_reconnect_delay``).
    """

    def __init__(self, adapter: ListeningAdapter[Any, C]) -> None:
        self._adapter = adapter
        self._task: asyncio.Task[None] | None = None
        self.first_attempt: asyncio.Future[None] | None = None
        self._attempt = 0
        self._down_since: float | None = None
        self._ever_connected = False
        #: The listener serves a connection now; times it came back after a loss.
        self.connected = False
        self.reconnects = 0

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self, name: str) -> None:
        """Start the loop (once)."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self.first_attempt = loop.create_future()
            self._task = loop.create_task(self.run(), name=name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._first_attempt_done()

    def _first_attempt_done(self) -> None:
        if self.first_attempt is not None and not self.first_attempt.done():
            self.first_attempt.set_result(None)

    def backoff(self, attempt: int) -> float:
        """Seconds before reconnect attempt ``attempt``: exponential with jitter."""
        adapter = self._adapter
        delay = min(adapter.max_reconnect_delay, adapter.reconnect_delay * 2.0**attempt)
        return delay / 2 + random.uniform(0, delay / 2)

    def _ready(self, streams: int) -> None:
        log, service, where = self._adapter._logger, self._adapter.service, self._adapter._where
        self.connected = True
        if self._down_since is not None and self._ever_connected:
            self.reconnects += 1
            log.info(
                "reconnected to %s at %s after %.1f s; %d streams resubscribed",
                service,
                where,
                time.monotonic() - self._down_since,
                streams,
            )
        elif self._down_since is not None:
            log.info("connected to %s at %s", service, where)
        else:
            log.debug("listening on %s at %s", service, where)
        self._down_since = None
        self._attempt = 0
        self._ever_connected = True
        self._first_attempt_done()

    def _failed(self, exc: BaseException, *, connecting: bool) -> None:
        self.connected = False
        adapter = self._adapter
        log, service, where = adapter._logger, adapter.service, adapter._where
        if not connecting and not isinstance(exc, adapter._errors):
            log.error("%s listener failed", service, exc_info=exc)
        text = adapter._describe(exc)
        if self._down_since is not None:
            verb = "still unreachable" if connecting else "dropped the connection again"
            log.debug("%s at %s %s: %s", service, where, verb, text)
            return
        self._down_since = time.monotonic()
        if connecting:
            log.warning(
                "cannot reach %s at %s (%s); retrying in the background, "
                "subscriptions wait until it is up",
                service,
                where,
                text,
            )
        else:
            log.warning(
                "lost connection to %s at %s (%s); reconnecting. Messages published "
                "until the listener is back are lost",
                service,
                where,
                text,
            )

    async def run(self) -> None:
        adapter = self._adapter
        try:
            while True:
                try:
                    conn = await adapter._connect_listener()
                except adapter._errors as exc:
                    self._failed(exc, connecting=True)
                else:
                    try:
                        await adapter._serve(conn, self._ready)
                    except Exception as exc:
                        self._failed(exc, connecting=False)
                    finally:
                        await adapter._discard(conn)
                self._first_attempt_done()
                await asyncio.sleep(self.backoff(self._attempt))
                self._attempt += 1
        finally:
            self._first_attempt_done()


@dataclass(eq=False, repr=False, kw_only=True)
class ListeningAdapter(BrokerAdapter, abc.ABC, Generic[K, C]):
    """The part of an adapter around its :class:`Listener` (connections of type ``C``):
    the listener's settings, which service channels (keys of type ``K``) are wanted,
    for which stream, and the subscribes waiting for their channel to go live.

    Invariants:

    1. ``_channels`` maps every wanted channel to its stream; a message on a channel
       not in it is dropped, so delivery stops as soon as ``unsubscribe`` is called.
    2. A subscribe waits on a future in ``_waiters`` until the listener confirms its
       channel (``_resolve``), the channel is no longer wanted (``_forget``), or the
       adapter closes (``AdapterError``).

    Subclasses set ``service``, ``_logger`` and ``_errors`` (the exception types that
    mean "the service is unreachable"), may override ``_describe``, and provide the
    listener's three steps: ``_connect_listener``, ``_serve`` and ``_discard``.
    """

    _errors: ClassVar[tuple[type[BaseException], ...]]

    health_check_interval: float = 5.0
    reconnect_delay: float = 0.1
    max_reconnect_delay: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._channels: dict[K, str] = {}
        self._waiters: dict[K, list[asyncio.Future[None]]] = {}
        self._listener: Listener[C] = Listener(self)

    def _describe(self, exc: BaseException) -> str:
        """How an error reads in a log line."""
        return str(exc)

    @abc.abstractmethod
    async def _connect_listener(self) -> C:
        """Open a listening connection."""

    @abc.abstractmethod
    async def _serve(self, conn: C, ready: Callable[[int], None]) -> None:
        """Resubscribe every wanted channel on ``conn``, call ``ready``, then listen."""

    @abc.abstractmethod
    async def _discard(self, conn: C) -> None:
        """Close a connection that failed or is no longer used (never raises)."""

    @abc.abstractmethod
    async def _close_connections(self) -> None:
        """Close what the adapter holds besides the listener (called once, by ``close``)."""

    async def start(self, on_message: MessageHandler) -> None:
        """Connect the listener and deliver subscribed streams to ``on_message``.

        Returns after the first connection attempt. If the service is unreachable it
        logs a WARNING and keeps retrying in the background; ``subscribe`` waits
        meanwhile.
        """
        self._on_message = on_message
        self._ensure_listener()
        assert self._listener.first_attempt is not None
        await asyncio.shield(self._listener.first_attempt)

    async def close(self) -> None:
        """Stop the listener, end every subscribe still waiting with
        :class:`~cablecar.errors.AdapterError`, and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._listener.stop()
        closed = AdapterError(f"the {self.service} adapter was closed")
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(closed)
        self._waiters.clear()
        self._channels.clear()
        await self._close_connections()

    @property
    def reconnects(self) -> int:
        """Times the listener came back after losing the service."""
        return self._listener.reconnects

    def _ensure_listener(self) -> None:
        self._check_open()
        self._listener.start(f"cablecar-{self.service.lower()}-listener")

    def _want(self, channel: K, stream: str) -> None:
        """Mark ``channel`` wanted for ``stream`` (the listener is started if needed)."""
        self._ensure_listener()
        self._channels[channel] = stream

    def _until_live(self, channel: K) -> asyncio.Future[None]:
        """A future that completes when ``channel`` is live (see invariant 2)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        return waiter

    def _resolve(self, channel: K) -> None:
        """The listener confirmed ``channel``: its subscribes return."""
        for waiter in self._waiters.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _forget(self, channel: K) -> bool:
        """``channel`` is no longer wanted (its waiting subscribes return); false if it
        was not wanted."""
        if self._channels.pop(channel, None) is None:
            return False
        self._resolve(channel)
        return True


class StallWatch:
    """A service that took a publish and did not answer in time is *stalled* (its socket
    is open, nothing answers: a frozen process, a black-holed network) until a probe
    succeeds again. The adapter's ``connected`` (so ``/ready``) is false meanwhile.

    ``mark(probe)`` starts probing (once per stall): ``probe()`` every ``interval``
    seconds, each bounded by ``timeout``, until one returns."""

    def __init__(self, logger: logging.Logger, service: str, where: str) -> None:
        self.logger = logger
        self.service = service
        self.where = where
        self.stalled = False
        self._task: asyncio.Task[None] | None = None

    def mark(self, probe: Callable[[], Awaitable[object]], interval: float = 0.5,
             timeout: float = 1.0) -> None:  # fmt: skip
        if self.stalled:
            return
        self.stalled = True
        self.logger.warning(
            "%s at %s took a publish and did not answer: not ready until it answers",
            self.service,
            self.where,
        )
        self._task = asyncio.ensure_future(self._probe(probe, interval, timeout))

    async def _probe(
        self, probe: Callable[[], Awaitable[object]], interval: float, timeout: float
    ) -> None:
        started = time.monotonic()
        while self.stalled:
            try:
                async with asyncio.timeout(timeout):
                    await probe()
            except Exception:
                await asyncio.sleep(interval)
                continue
            self.stalled = False
            self.logger.info(
                "%s at %s answers again after %.1f s", self.service, self.where,
                time.monotonic() - started,
            )  # fmt: skip

    def close(self) -> None:
        self.stalled = False
        if self._task is not None:
            self._task.cancel()
            self._task = None
