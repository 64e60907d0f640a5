"""NATS adapter (``nats://``, ``tls://``), on nats-py, with core NATS subjects.

One NATS connection per adapter carries subscriptions and publishes (NATS multiplexes
both on one socket). nats-py reconnects by itself and replays every subscription
before it reports the reconnect; this adapter adds the initial connection (retried
until the server is up), subject mapping, confirmation of subscriptions, and logs.

**Subjects.** A NATS subject is a ``.``-separated list of tokens, and ``*``, ``>``
and whitespace are wildcards or separators, so a stream name cannot be used as is.
Each stream name (with its prefix, ``f"{prefix}:{stream}"``) becomes one token by
:func:`subject_for`: ASCII letters, digits, ``-``, ``_`` and ``:`` stand for
themselves and every other UTF-8 byte becomes ``%XX``. ``"chat_1"`` stays
``chat_1``, ``"chat.1"`` becomes ``chat%2E1``, ``"*"`` becomes ``%2A``. The mapping is
injective (so names never collide) and readable in ``nats sub`` for common names.
The empty name is ``%``, and a token longer than 1000 characters is replaced by
``%H`` plus its SHA-256, neither of which the escaping can produce.

Invariants (on top of :mod:`cablecar.pubsub.base`):

1. ``subscribe`` returns after a PING/PONG round trip (``flush``) completed on the
   same, still-connected connection after the SUB was written: the server has the
   subscription. (It takes two flushes: nats-py writes PING ahead of commands still
   queued for its flusher task.) During an outage it waits for nats-py's reconnect (which replays the
   SUB and flushes before reporting back).
2. ``publish`` returns once the server has answered a flush after the PUB, and raises
   :class:`~cablecar.errors.AdapterError` at once while the connection is down,
   instead of letting nats-py buffer the message for a later reconnect.
3. Messages of a stream that was unsubscribed are dropped even if already queued.

Logging (logger ``cablecar.pubsub.nats``): WARNING when the connection is lost (or
the server is unreachable at start), INFO when nats-py has reconnected, with the
number of streams resubscribed, DEBUG for each failed attempt.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, MaxPayloadError, NoServersError, StaleConnectionError
from nats.errors import Error as NatsError

from ..errors import AdapterError, ConfigurationError, PublishTimeout
from ._listener import BrokerAdapter, StallWatch
from .base import MessageHandler

__all__ = ["NatsPubSub", "subject_for"]

logger = logging.getLogger("cablecar.pubsub.nats")

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_:")
_MAX_TOKEN = 1000
_ERRORS = (NatsError, OSError)
# What nats-py reports through error_cb while it (re)connects.
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    StaleConnectionError,
    ConnectionClosedError,
    NoServersError,
)


#: A flush timeout nats-py never reaches (see ``NatsPubSub._flush``).
_NEVER = 24 * 3600


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # an abandoned flush's error is not worth a warning


def subject_for(name: str) -> str:
    """The NATS subject (a single token) for a (prefixed) stream name.

    >>> subject_for("chat_1"), subject_for("chat.1"), subject_for("a b"), subject_for(">")
    ('chat_1', 'chat%2E1', 'a%20b', '%3E')
    """
    raw = name.encode("utf-8", "surrogatepass")
    if not raw:
        return "%"
    token = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if len(token) > _MAX_TOKEN:
        return "%H" + hashlib.sha256(raw).hexdigest()
    return token


def _valid_server(url: str) -> bool:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return False
    return parts.scheme in ("nats", "tls") and bool(parts.hostname)


@dataclass(eq=False, repr=False, kw_only=True)
class NatsPubSub(BrokerAdapter):
    """NATS core publish/subscribe.

    Args:
        url: ``nats://[user:password@]host:port`` (or ``tls://...``); several servers
            may be given separated by commas.
        channel_prefix: streams are published on ``subject_for(f"{prefix}:{stream}")``,
            so that several applications can share one NATS.
        connect_timeout: seconds for one connection attempt.
        publish_timeout: upper bound, in seconds, on one ``publish`` (waiting for the
            first connection included).
        reconnect_time_wait: seconds nats-py waits between reconnection attempts to
            the same server.
        ping_interval: seconds between nats-py's keep-alive PINGs; two unanswered
            PINGs mean the connection is dead.

    Delivery is at most once: while NATS is unreachable ``publish`` raises
    :class:`~cablecar.errors.AdapterError`, and messages published meanwhile are not
    replayed. The largest payload is the server's ``max_payload`` (1 MiB by default).
    """

    service = "NATS"
    _logger = logger

    reconnect_time_wait: float = 0.5
    ping_interval: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        servers = [s.strip() for s in self.url.split(",") if s.strip()]
        if not servers or not all(_valid_server(s) for s in servers):
            raise ConfigurationError(f"bad NATS URL {self._where!r}: expected nats://host:port")
        self._servers = servers
        self._where = self._where.replace(",", ", ")
        self._nc: Client | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._generation = 0  # bumped on every disconnect
        self._lost: asyncio.Future[None] | None = None  # resolved on the next disconnect
        self._first_attempt = asyncio.Event()  # the first connection attempt is over
        self._subs: dict[str, Subscription] = {}
        self._down_since: float | None = None
        self._ever_connected = False
        self._reconnects = 0
        self._stall = StallWatch(logger, self.service, self._where)

    # -- the adapter contract ----------------------------------------------------------

    async def start(self, on_message: MessageHandler) -> None:
        """Connect and deliver subscribed streams to ``on_message``.

        Returns after the first connection attempt. If NATS is unreachable it logs a
        WARNING and keeps trying in the background; ``subscribe`` waits meanwhile.
        """
        self._on_message = on_message
        task = self._ensure_connecting()
        attempted = asyncio.ensure_future(self._first_attempt.wait())
        await asyncio.wait(
            [task, attempted], timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        attempted.cancel()

    async def subscribe(self, stream: str) -> None:
        """Subscribe to ``stream``; return once the server has the subscription.

        Raises:
            AdapterError: the adapter was closed while waiting.
        """
        nc = await self._client()
        sub = self._subs.get(stream)
        if sub is None:

            async def deliver(msg: Msg) -> None:
                if self._subs.get(stream) is sub:
                    self._deliver(stream, msg.data)

            subject = subject_for(self._prefix + stream)
            try:
                sub = await nc.subscribe(subject, cb=deliver)
            except _ERRORS as exc:
                raise AdapterError(f"NATS subscribe to {subject!r} failed: {exc}") from exc
            self._subs[stream] = sub
        await self._confirm(nc)

    async def unsubscribe(self, stream: str) -> None:
        """Stop delivering ``stream`` (immediately) and UNSUB on the server."""
        sub = self._subs.pop(stream, None)
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except _ERRORS as exc:
            logger.debug("NATS unsubscribe of %r: %s", stream, exc)

    async def publish(self, stream: str, payload: bytes) -> None:
        """Publish ``payload`` on ``stream``'s subject; return once the server has it.

        Raises:
            AdapterError: NATS is unreachable, the payload exceeds the server's
                ``max_payload``, or the adapter is closed: the message was not published.
            PublishTimeout: the message was written but NATS did not confirm it within
                ``publish_timeout`` (the outcome is unknown; ``connected`` is false until
                NATS answers again).
        """
        task = self._ensure_connecting()
        if not task.done():
            await asyncio.wait([task], timeout=self.publish_timeout)
        nc = self._nc
        if nc is None or not task.done() or not nc.is_connected:
            raise AdapterError(f"NATS at {self._where} is unreachable; message not published")
        written = False
        try:
            async with asyncio.timeout(self.publish_timeout):
                await nc.publish(subject_for(self._prefix + stream), payload)
                written = True
                if not await self._flush(nc, 1):
                    raise PublishTimeout(
                        f"lost the connection to NATS at {self._where} after the publish: "
                        "the outcome is unknown (it may have been delivered)"
                    )
        except PublishTimeout:
            raise
        except MaxPayloadError:
            raise AdapterError(
                f"payload of {len(payload)} bytes exceeds the NATS server's max_payload "
                f"({nc.max_payload} bytes)"
            ) from None
        except (*_ERRORS, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            if written and isinstance(exc, TimeoutError):
                # NATS has the PUB (or nats-py will send it) but did not answer the PING
                self._stall.mark(lambda: self._flush(nc, 1))
                raise PublishTimeout(
                    f"NATS at {self._where} did not confirm the publish within "
                    f"{self.publish_timeout}s: the outcome is unknown (it may still be "
                    "delivered)"
                ) from exc
            raise AdapterError(f"publish to NATS at {self._where} failed: {detail}") from exc

    async def close(self) -> None:
        """Flush what was published and close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stall.close()
        task = self._connecting
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self._subs.clear()
        self._connected.set()  # wake subscribers waiting for a reconnect (they raise)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        nc = self._nc
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception as exc:  # closing never fails the caller (CPython 3.13.0's
                # writelines on a lost transport raises TypeError inside nats-py)
                logger.debug("closing the NATS connection: %r", exc)

    # -- connection --------------------------------------------------------------------

    def _ensure_connecting(self) -> asyncio.Task[None]:
        self._check_open()
        if self._connecting is None:
            self._nc = Client()
            self._connecting = asyncio.get_running_loop().create_task(
                self._connect(self._nc), name="cablecar-nats-connect"
            )
        return self._connecting

    async def _connect(self, nc: Client) -> None:
        # nats-py annotates these seconds as int but uses them as floats.
        seconds: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "reconnect_time_wait": self.reconnect_time_wait,
            "ping_interval": self.ping_interval,
        }
        await nc.connect(
            servers=self._servers,
            name="cablecar",
            max_reconnect_attempts=-1,  # never give up: subscriptions wait for NATS
            allow_reconnect=True,
            max_outstanding_pings=2,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
            **seconds,
        )
        if self._down_since is not None:
            logger.info("connected to NATS at %s", self._where)
        else:
            logger.debug("connected to NATS at %s", self._where)
        self._down_since = None
        self._ever_connected = True
        self._connected.set()

    @property
    def connected(self) -> bool:
        """Whether the client is connected to NATS now and NATS answers (false from a
        publish that timed out until NATS answers a PING again)."""
        return self._connected.is_set() and not self._closed and not self._stall.stalled

    @property
    def reconnects(self) -> int:
        """Times the client came back after losing NATS."""
        return self._reconnects

    async def _client(self) -> Client:
        """The connected client, waiting (without bound) for the first connection."""
        task = self._ensure_connecting()
        await asyncio.wait([task])  # not shield(): close() cancelling it must not cancel us
        if self._closed or self._nc is None or task.cancelled():
            raise AdapterError("the NATS adapter was closed")
        task.result()
        return self._nc

    async def _confirm(self, nc: Client) -> None:
        """Return once a PING/PONG completed on an unbroken connection."""
        while True:
            await self._connected.wait()
            if self._closed:
                raise AdapterError("the NATS adapter was closed")
            generation = self._generation
            try:
                # Two round trips: nats-py writes PING straight to the socket, ahead of
                # commands (our SUB) still queued for its flusher task, so the first
                # PONG can come back before the server saw the SUB. The flusher runs
                # while we wait for that PONG; the second PING follows the SUB.
                flushed = await self._flush(nc, 2)
            except _ERRORS as exc:
                logger.debug("NATS flush failed (%s); waiting for the connection", exc)
                if nc.is_closed and not self._closed:
                    raise AdapterError(f"the NATS connection is closed: {exc}") from exc
                await asyncio.sleep(0.05)
                continue
            if flushed and generation == self._generation and nc.is_connected:
                return

    async def _flush(self, nc: Client, times: int) -> bool:
        """``times`` PING/PONG round trips; False if the connection was lost meanwhile.

        nats-py leaves a PING sent on a connection that then dies unanswered until its
        timeout; racing it against the disconnect callback avoids that wait.

        nats-py's own flush timeout is never reached: when it fires, nats-py cancels the
        PONG's future but keeps it queued, and the late PONG of a stalled server that
        resumes then breaks nats-py's read loop (``InvalidStateError``), dropping the
        connection. The callers bound the wait instead; an abandoned flush ends with the
        PONG or with the connection.
        """
        if self._lost is None or self._lost.done():
            self._lost = asyncio.get_running_loop().create_future()
        lost = self._lost

        async def flush() -> None:
            for _ in range(times):
                await nc.flush(timeout=_NEVER)

        flushing = asyncio.ensure_future(flush())
        flushing.add_done_callback(_retrieve)
        await asyncio.wait([flushing, lost], return_when=asyncio.FIRST_COMPLETED)
        if not flushing.done():
            flushing.cancel()
            await asyncio.wait([flushing])
            return False
        flushing.result()  # raises what flush raised
        return True

    # -- nats-py callbacks -------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        if self._closed:
            return
        if isinstance(exc, _CONNECTION_ERRORS):
            self._first_attempt.set()
            if self._down_since is None and not self._ever_connected:
                self._down_since = time.monotonic()
                logger.warning(
                    "cannot reach NATS at %s (%s); retrying in the background, "
                    "subscriptions wait until it is up",
                    self._where,
                    str(exc) or type(exc).__name__,
                )
            else:
                logger.debug("NATS at %s: %s", self._where, str(exc) or type(exc).__name__)
            return
        logger.warning("NATS error: %s", str(exc) or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        self._generation += 1
        self._connected.clear()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self._closed or not self._ever_connected:
            return
        self._down_since = time.monotonic()
        logger.warning(
            "lost connection to NATS at %s; reconnecting. Messages published until it is back are lost",
            self._where,
        )

    async def _on_reconnected(self) -> None:
        since = self._down_since
        self._down_since = None
        self._reconnects += 1
        self._connected.set()
        logger.info(
            "reconnected to NATS at %s after %.1f s; %d streams resubscribed",
            self._where,
            time.monotonic() - since if since is not None else 0.0,
            len(self._subs),
        )

    async def _on_closed(self) -> None:
        self._connected.set()
        if not self._closed:
            logger.error(
                "the NATS connection to %s closed for good; no more reconnects", self._where
            )
