"""What every network adapter shares: the listener's reconnect loop, its log lines,
backoff, the guarded handler call and the stream-name prefix; and, for the adapters
that run that loop (Redis, PostgreSQL), ``ListeningAdapter``: the wanted channels, the
subscribes waiting for them, delivery to the cable, ``start`` and ``close``.

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
from typing import ClassVar, Generic, TypeVar

from .._urls import redact_url
from ..errors import AdapterError
from .base import MessageHandler

__all__ = [
    "Listener",
    "ListeningAdapter",
    "StallWatch",
    "prefix_for",
    "redact_url",
    "safe_deliver",
]

C = TypeVar("C")
K = TypeVar("K", bound=Hashable)


def prefix_for(channel_prefix: str | None) -> str:
    """What goes before a stream name in the service: ``"<prefix>:"`` or nothing."""
    return f"{channel_prefix}:" if channel_prefix else ""


def safe_deliver(
    handler: MessageHandler | None, stream: str, payload: bytes, logger: logging.Logger
) -> None:
    """Call the cable's handler; an exception is logged, never raised into the listener."""
    if handler is None:
        return
    try:
        handler(stream, payload)
    except Exception:
        logger.exception("message handler failed for stream %r", stream)


class Listener(Generic[C]):
    """The reconnect loop of one adapter (see the module docstring).

    Args:
        service: the service's name in log lines (``"Redis"``).
        url: its URL (credentials are removed before logging).
        logger: the adapter's logger.
        connect: open a listening connection (raises one of ``errors`` when it cannot).
        serve: resubscribe on the connection, call ``ready(streams)`` once that is done,
            then listen until the connection fails (by raising).
        discard: close a connection that failed (never raises).
        errors: the exception types that mean "the service is unreachable".
        describe: how an error reads in a log line.
    """

    def __init__(
        self,
        service: str,
        url: str,
        logger: logging.Logger,
        *,
        connect: Callable[[], Awaitable[C]],
        serve: Callable[[C, Callable[[int], None]], Awaitable[None]],
        discard: Callable[[C], Awaitable[None]],
        errors: tuple[type[BaseException], ...],
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        describe: Callable[[BaseException], str] = str,
    ) -> None:
        self.service = service
        self.where = redact_url(url)
        self.logger = logger
        self._connect = connect
        self._serve = serve
        self._discard = discard
        self._errors = errors
        self._delay = reconnect_delay
        self._max_delay = max_reconnect_delay
        self._describe = describe
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
        delay = min(self._max_delay, self._delay * 2.0**attempt)
        return delay / 2 + random.uniform(0, delay / 2)

    def _ready(self, streams: int) -> None:
        log = self.logger
        self.connected = True
        if self._down_since is not None and self._ever_connected:
            self.reconnects += 1
            log.info(
                "reconnected to %s at %s after %.1f s; %d streams resubscribed",
                self.service,
                self.where,
                time.monotonic() - self._down_since,
                streams,
            )
        elif self._down_since is not None:
            log.info("connected to %s at %s", self.service, self.where)
        else:
            log.debug("listening on %s at %s", self.service, self.where)
        self._down_since = None
        self._attempt = 0
        self._ever_connected = True
        self._first_attempt_done()

    def _failed(self, exc: BaseException, *, connecting: bool) -> None:
        self.connected = False
        log = self.logger
        if not connecting and not isinstance(exc, self._errors):
            log.error("%s listener failed", self.service, exc_info=exc)
        text = self._describe(exc)
        if self._down_since is not None:
            verb = "still unreachable" if connecting else "dropped the connection again"
            log.debug("%s at %s %s: %s", self.service, self.where, verb, text)
            return
        self._down_since = time.monotonic()
        if connecting:
            log.warning(
                "cannot reach %s at %s (%s); retrying in the background, "
                "subscriptions wait until it is up",
                self.service,
                self.where,
                text,
            )
        else:
            log.warning(
                "lost connection to %s at %s (%s); reconnecting. Messages published "
                "until the listener is back are lost",
                self.service,
                self.where,
                text,
            )

    async def run(self) -> None:
        try:
            while True:
                try:
                    conn = await self._connect()
                except self._errors as exc:
                    self._failed(exc, connecting=True)
                else:
                    try:
                        await self._serve(conn, self._ready)
                    except Exception as exc:
                        self._failed(exc, connecting=False)
                    finally:
                        await self._discard(conn)
                self._first_attempt_done()
                await asyncio.sleep(self.backoff(self._attempt))
                self._attempt += 1
        finally:
            self._first_attempt_done()


class ListeningAdapter(abc.ABC, Generic[K, C]):
    """The part of an adapter around its :class:`Listener` (connections of type ``C``):
    which service channels (keys of type ``K``) are wanted, for which stream, and the
    subscribes waiting for their channel to go live.

    Invariants:

    1. ``_channels`` maps every wanted channel to its stream; a message on a channel
       not in it is dropped, so delivery stops as soon as ``unsubscribe`` is called.
    2. A subscribe waits on a future in ``_waiters`` until the listener confirms its
       channel (``_resolve``), the channel is no longer wanted (``_forget``), or the
       adapter closes (``AdapterError``).

    Subclasses set ``service`` (its name in log lines and errors) and provide the
    listener's three steps: ``_connect_listener``, ``_serve`` and ``_discard``.
    """

    service: ClassVar[str]

    def __init__(
        self,
        url: str,
        channel_prefix: str | None,
        logger: logging.Logger,
        *,
        publish_timeout: float,
        reconnect_delay: float,
        max_reconnect_delay: float,
        errors: tuple[type[BaseException], ...],
        describe: Callable[[BaseException], str] = str,
    ) -> None:
        self.url = url
        self._where = redact_url(url)
        self._prefix = prefix_for(channel_prefix)
        self._publish_timeout = publish_timeout
        self._on_message: MessageHandler | None = None
        self._channels: dict[K, str] = {}
        self._waiters: dict[K, list[asyncio.Future[None]]] = {}
        self._closed = False
        self._listener: Listener[C] = Listener(
            self.service,
            url,
            logger,
            connect=self._connect_listener,
            serve=self._serve,
            discard=self._discard,
            errors=errors,
            reconnect_delay=reconnect_delay,
            max_reconnect_delay=max_reconnect_delay,
            describe=describe,
        )

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

    def _check_open(self) -> None:
        """Raise :class:`~cablecar.errors.AdapterError` once the adapter is closed."""
        if self._closed:
            raise AdapterError(f"the {self.service} adapter is closed")

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

    def _deliver(self, stream: str, payload: bytes) -> None:
        """Hand a message on ``stream`` to the cable (see :func:`safe_deliver`)."""
        safe_deliver(self._on_message, stream, payload, self._listener.logger)


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


def describe_first_line(exc: BaseException) -> str:
    """The first line of an error's text (drivers put hints on the next lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
