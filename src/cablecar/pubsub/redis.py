"""Redis pub/sub adapter (``redis://``, ``rediss://``, ``unix://``), on ``redis.asyncio``.

One dedicated listener connection per adapter carries every SUBSCRIBE. PUBLISH goes
through a second connection (opened on first use, so a publish-only ``Broadcaster``
never opens a listener) with automatic pipelining: one writer task sends everything
queued since its last round trip as one batch, so concurrent broadcasts cost one round
trip per batch instead of one each, keep their order, and never open more connections.

Invariants (on top of :mod:`cablecar.pubsub.base`):

1. ``self._channels`` is the set of streams that should be subscribed (keyed by the
   Redis channel name, ``f"{prefix}:{stream}"`` or ``stream``). A listener link
   marks a channel *live* only when Redis has acknowledged the last SUBSCRIBE sent for
   it on that link (acknowledgements arrive in command order, so counting SUBSCRIBEs
   in flight per channel is exact even across a quick unsubscribe/subscribe).
   ``subscribe`` returns when its channel goes live.
2. The supervisor task owns the listener connection: it connects, re-sends SUBSCRIBE
   for every channel in ``self._channels``, reads until the connection fails, then
   reconnects with exponential backoff and jitter. Nothing else reconnects.
3. Messages for a channel no longer in ``self._channels`` are dropped, so delivery
   stops as soon as ``unsubscribe`` is called, even before Redis processed it.
4. Payloads are passed through as the ``bytes`` Redis returned; they are never decoded.
5. Publishes are sent in the order ``publish`` was called; a publish whose caller gave
   up (cancellation) before its batch was written is not sent. A batch is answered
   within ``publish_timeout`` of its oldest publish, or all of it raises
   ``PublishTimeout`` and its connection is dropped (one timer per batch, none per
   publish or per reply).

Logging (logger ``cablecar.pubsub.redis``): WARNING when the listener loses Redis (or
cannot reach it at start), INFO when it is back with the number of streams
resubscribed, DEBUG for each failed attempt in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from ..errors import AdapterError, ConfigurationError, PublishTimeout
from ._listener import ListeningAdapter

__all__ = ["RedisPubSub"]

logger = logging.getLogger("cablecar.pubsub.redis")

_ERRORS = (RedisError, OSError)
# One pipelined round trip carries at most this many publishes / payload bytes.
_BATCH_COUNT = 1000
_BATCH_BYTES = 4 * 1024 * 1024

#: A queued PUBLISH: Redis channel, payload, the caller's future, loop time queued.
_Publish = tuple[bytes, bytes, "asyncio.Future[None]", float]


class _Link:
    """One listener connection and what Redis has confirmed on it."""

    __slots__ = ("conn", "inflight", "live", "reads", "resubscribed", "resubscribing")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        #: replies read on this link so far (the silence watchdog compares them)
        self.reads = 0
        #: channel -> SUBSCRIBE commands sent on this link and not acknowledged yet
        self.inflight: dict[bytes, int] = {}
        #: channels whose last SUBSCRIBE Redis acknowledged (and not unsubscribed since)
        self.live: set[bytes] = set()
        #: channels re-sent right after connecting, not acknowledged yet
        self.resubscribing: set[bytes] = set()
        self.resubscribed = asyncio.Event()

    def settle(self, channel: bytes) -> None:
        self.resubscribing.discard(channel)
        if not self.resubscribing:
            self.resubscribed.set()


class _Silence:
    """The listener's health check: one timer every ``health_check_interval``, not a
    timeout around every read. A link that read nothing for one interval is sent a
    PING; nothing for a second one, and its reader is cancelled (it then raises a
    connection error, and the listener reconnects)."""

    __slots__ = ("adapter", "dead", "link", "pinged", "reader", "seen", "timer")

    def __init__(self, adapter: RedisPubSub, link: _Link, reader: asyncio.Task[None]) -> None:
        self.adapter = adapter
        self.link = link
        self.reader = reader
        self.seen = 0
        self.pinged = False
        self.dead = False
        self.timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.adapter.health_check_interval, self._check)

    def _check(self) -> None:
        link = self.link
        if link.reads != self.seen:
            self.seen = link.reads
            self.pinged = False
        elif not self.pinged:
            self.pinged = True
            self.adapter._spawn_send(link, b"PING")
        else:
            self.dead = True
            self.reader.cancel()
            return
        self._arm()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(eq=False, repr=False)
class RedisPubSub(ListeningAdapter[bytes, Any]):
    """Redis PUBLISH/SUBSCRIBE.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` or
            ``unix:///path/to/redis.sock``.
        channel_prefix: streams live in Redis as ``f"{channel_prefix}:{stream}"`` (Rails'
            convention), so that several applications can share one Redis.
        connect_timeout: seconds to wait for a TCP connection to Redis.
        publish_timeout: upper bound, in seconds, on one ``publish`` (connect included);
            past it ``publish`` raises :class:`~cablecar.errors.PublishTimeout` (the
            outcome is unknown) and the adapter reports itself not ``connected`` (so
            ``/ready`` answers 503) until Redis answers again.
        health_check_interval: the listener checks its connection this often: one
            that read nothing since the last check is sent a PING, and nothing read by
            the next check means the connection is dead (a silent Redis is noticed
            within two to three intervals; one timer, not a timeout per read).
        reconnect_delay: first delay, in seconds, before reconnecting the listener; it
            doubles (with jitter) on each failed attempt ...
        max_reconnect_delay: ... up to this many seconds.

    Example::

        cable = Cable(..., pubsub=RedisPubSub("redis://127.0.0.1:6379/0", channel_prefix="shop"))

    Delivery is at most once: while Redis is unreachable ``publish`` raises
    :class:`~cablecar.errors.AdapterError` (within ``publish_timeout``) and those
    messages are lost; the listener resubscribes everything by itself once Redis is
    back, and ``subscribe`` calls made during the outage return then.
    """

    service = "Redis"
    _logger = logger
    _errors = _ERRORS

    # The settings and their defaults: ListeningAdapter's.

    def __post_init__(self) -> None:
        super().__post_init__()
        # The pool is only a factory of connections configured from the URL; this
        # adapter owns its two connections. No retries inside redis-py: a retried
        # PUBLISH could be delivered twice, and the listener has its own reconnect loop.
        # RESP2: pub/sub messages come back from read_response() as plain arrays
        # (redis-py >= 8 speaks RESP3 by default and would route them elsewhere).
        try:
            self._factory: ConnectionPool = ConnectionPool.from_url(
                self.url,
                protocol=2,
                socket_connect_timeout=self.connect_timeout,
                # No per-read timeout inside redis-py (it costs a timer per reply): a
                # batch of publishes has one deadline (_write), the listener a watchdog.
                socket_timeout=None,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {self._where!r}: {exc}") from None
        self._outbox: deque[_Publish] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._publisher: Any = None  # the publishing connection, once opened
        self._link: _Link | None = None
        self._pings: set[asyncio.Task[None]] = set()
        self._stalled = False  # a publish timed out and Redis has not answered since

    # -- the adapter contract (start and close: ListeningAdapter) ---------------------

    async def subscribe(self, stream: str) -> None:
        """Subscribe to ``stream``; return once Redis has acknowledged the SUBSCRIBE.

        During an outage this waits until Redis is back and the listener has
        resubscribed.

        Raises:
            AdapterError: the adapter was closed while waiting.
        """
        channel = self._channel(stream)
        self._want(channel, stream)
        link = self._link
        if link is not None and channel in link.live:
            return
        waiter = self._until_live(channel)
        if link is not None:
            await self._send(link, b"SUBSCRIBE", channel)
        await waiter

    async def unsubscribe(self, stream: str) -> None:
        """Stop delivering ``stream`` (immediately) and UNSUBSCRIBE in Redis."""
        channel = self._channel(stream)
        if not self._forget(channel):
            return
        link = self._link
        if link is not None:
            link.live.discard(channel)
            link.settle(channel)
            await self._send(link, b"UNSUBSCRIBE", channel)

    async def publish(self, stream: str, payload: bytes) -> None:
        """PUBLISH ``payload`` on ``stream``.

        Raises:
            AdapterError: Redis did not take the message within ``publish_timeout``
                (unreachable, refused, or the adapter is closed). The message is lost.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        # The deadline is enforced by the writer, one timer per batch (not per publish).
        self._outbox.append((self._channel(stream), payload, done, loop.time()))
        if self._writer is None:
            self._writer = loop.create_task(self._write())
        await done

    async def _close_connections(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.wait([self._writer])
        _fail(self._outbox, AdapterError("the Redis adapter was closed"))
        self._outbox.clear()
        if self._publisher is not None:
            await self._drop_publisher(self._publisher)

    # -- the publisher -----------------------------------------------------------------

    async def _write(self) -> None:
        """Send queued publishes in batches, one round trip each, until none are left.

        A batch must be answered within ``publish_timeout`` of its oldest publish (so
        every publish is, queueing included); past that, each of its publishes raises
        :class:`~cablecar.errors.PublishTimeout` and the connection is dropped.
        """
        try:
            while self._outbox:
                batch: list[_Publish] = []
                size = 0
                while self._outbox and len(batch) < _BATCH_COUNT and size < _BATCH_BYTES:
                    item = self._outbox.popleft()
                    if not item[2].done():  # its caller gave up: do not send it late
                        batch.append(item)
                        size += len(item[1])
                if not batch:
                    continue
                try:
                    async with asyncio.timeout_at(batch[0][3] + self.publish_timeout):
                        await self._send_batch(batch)
                except TimeoutError:
                    await self._timed_out(batch)
                except BaseException as exc:  # closed (cancelled), or a bug: never leave
                    closed = isinstance(exc, asyncio.CancelledError)  # a caller waiting
                    error = AdapterError(
                        "the Redis adapter was closed" if closed
                        else f"publish to Redis at {self._where} failed: {exc!r}"
                    )  # fmt: skip
                    _fail(batch, error)
                    if closed or not isinstance(exc, Exception):
                        raise
                    logger.exception("publishing to Redis failed")
        finally:
            self._writer = None

    async def _timed_out(self, batch: list[_Publish]) -> None:
        self._stalled = True  # not ready until Redis answers again
        conn = self._publisher
        if conn is not None:  # its replies may still come: never read them as others'
            await self._drop_publisher(conn)
        error = PublishTimeout(
            f"publish to Redis at {self._where}: no answer within "
            f"{self.publish_timeout:g} s; the outcome is unknown (Redis may still "
            "deliver it, so a retry may deliver it twice)"
        )
        _fail(batch, error)

    async def _send_batch(self, batch: list[_Publish]) -> None:
        conn = None
        try:
            conn = await self._publishing_connection()
            await conn.send_packed_command(_pack_publishes(batch), check_health=False)
            for _, _, done, _ in batch:
                try:
                    await conn.read_response()
                except ResponseError as exc:  # this command only (an ACL refusal, say)
                    if not done.done():
                        done.set_exception(AdapterError(f"Redis refused PUBLISH: {exc}"))
                else:
                    self._stalled = False
                    if not done.done():
                        done.set_result(None)
        except _ERRORS as exc:
            if conn is not None:
                await self._drop_publisher(conn)
            error = AdapterError(
                f"publish to Redis at {self._where} failed: {exc or type(exc).__name__}"
            )
            _fail(batch, error)

    async def _publishing_connection(self) -> Any:
        conn = self._publisher
        if conn is not None and conn.is_connected and await _idle_and_open(conn):
            return conn
        if conn is not None:
            await self._drop_publisher(conn)
        self._publisher = await self._new_connection()
        return self._publisher

    async def _drop_publisher(self, conn: Any) -> None:
        """Close the publishing connection ``conn``; the next publish opens a new one."""
        if self._publisher is conn:
            self._publisher = None
        await self._discard(conn)

    # -- the listener ------------------------------------------------------------------

    def _channel(self, stream: str) -> bytes:
        return (self._prefix + stream).encode("utf-8", "surrogatepass")

    @property
    def connected(self) -> bool:
        """Whether the listener is connected now and Redis answers: false from a publish
        that timed out until Redis answers again (a stalled, not closed, connection)."""
        return self._listener.connected and not self._stalled

    async def _new_connection(self) -> Any:
        """A new connection to Redis: the listener's, or the publisher's."""
        # redis-py leaves make_connection unannotated.
        conn = self._factory.make_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.connect()
        except BaseException:
            await self._discard(conn)
            raise
        return conn

    _connect_listener = _new_connection

    async def _serve(self, conn: Any, ready: Callable[[int], None]) -> None:
        link = _Link(conn)
        self._link = link
        reader = asyncio.get_running_loop().create_task(self._read(link))
        try:
            channels = list(self._channels)
            link.resubscribing.update(channels)
            if channels:
                await self._send(link, b"SUBSCRIBE", *channels)
            else:
                link.resubscribed.set()
            settled = asyncio.ensure_future(link.resubscribed.wait())
            await asyncio.wait([reader, settled], return_when=asyncio.FIRST_COMPLETED)
            settled.cancel()
            if not reader.done():
                ready(len(channels))
            # Returns only by raising: the connection failed. Shielded: a cancel of this
            # task reaches the finally below at once, which ends the reader itself.
            await asyncio.shield(reader)
        finally:
            if self._link is link:
                self._link = None
            reader.cancel()
            done, _ = await asyncio.wait([reader], timeout=1.0)
            if not done:
                # redis-py can lose a cancellation that meets its own read timeout and
                # read on: closing the connection ends the read (seen at shutdown).
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
                await asyncio.wait([reader], timeout=1.0)

    async def _read(self, link: _Link) -> None:
        conn = link.conn
        reader = asyncio.current_task()
        assert reader is not None
        watch = _Silence(self, link, reader)
        try:
            while True:
                try:
                    response = await conn.read_response()
                except asyncio.CancelledError:
                    if watch.dead and reader.uncancel() == 0:
                        raise RedisConnectionError(
                            f"no answer to PING within {self.health_check_interval:g} s"
                        ) from None
                    raise
                link.reads += 1
                self._stalled = False
                if not isinstance(response, list) or not response:
                    continue  # "PONG" outside subscribed mode
                kind = response[0]
                if kind == b"message":
                    self._dispatch(response[1], response[2])
                elif kind == b"subscribe":
                    self._acknowledged(link, response[1])
                # "unsubscribe" and "pong" need nothing
        finally:
            watch.stop()
            if self._link is link:
                self._link = None

    def _dispatch(self, channel: bytes, payload: bytes) -> None:
        stream = self._channels.get(channel)
        if stream is not None:
            self._deliver(stream, payload)

    def _acknowledged(self, link: _Link, channel: bytes) -> None:
        left = link.inflight.get(channel, 0) - 1
        if left > 0:
            link.inflight[channel] = left
            return
        link.inflight.pop(channel, None)
        if channel in self._channels:
            link.live.add(channel)
            self._resolve(channel)
        link.settle(channel)

    def _spawn_send(self, link: _Link, command: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._send(link, command))
        self._pings.add(task)
        task.add_done_callback(self._pings.discard)

    async def _send(self, link: _Link, command: bytes, *channels: bytes) -> None:
        if self._link is not link or not link.conn.is_connected:
            return  # the supervisor resubscribes everything on the next link
        if command == b"SUBSCRIBE":
            for channel in channels:
                link.inflight[channel] = link.inflight.get(channel, 0) + 1
        try:
            await link.conn.send_command(command, *channels)
        except _ERRORS as exc:
            # The reader sees the broken connection too; the next link resubscribes.
            logger.debug("could not send %s to Redis: %s", command.decode(), exc)

    @staticmethod
    async def _discard(conn: Any) -> None:
        try:
            await conn.disconnect(nowait=True)
        except _ERRORS:
            pass


def _fail(publishes: Iterable[_Publish], error: BaseException) -> None:
    """Raise ``error`` in every caller of ``publishes`` still waiting."""
    for _, _, done, _ in publishes:
        if not done.done():
            done.set_exception(error)


def _pack_publishes(batch: list[_Publish]) -> bytes:
    """The batch's PUBLISH commands in RESP, as one buffer (redis-py's general
    ``pack_commands`` cost a twentieth of the server's CPU on a many-streams load)."""
    parts: list[bytes] = []
    add = parts.append
    for channel, payload, _, _ in batch:
        add(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n" % (len(channel), channel, len(payload)))
        add(payload)
        add(b"\r\n")
    return b"".join(parts)


async def _idle_and_open(conn: Any) -> bool:
    """Whether an idle connection is still usable: Redis sent nothing (no EOF).

    Checked before reusing the publishing connection, so that the first publish after
    a Redis restart reconnects instead of failing (and is never sent twice).
    """
    probe = getattr(conn, "can_read", None) or conn.can_read_destructive  # redis-py < 8
    try:
        return not await probe()
    except _ERRORS:
        return False
