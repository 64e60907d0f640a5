"""The server side of one socket: commands in order, subscriptions, output, close.

Invariants:

1. Commands of one connection run one at a time, in arrival order (Rails runs them
   concurrently on a pool and reorders them). Timer ticks and custom stream
   callbacks go through the same queue, so user code of one connection never runs
   concurrently with itself.
2. The connection's ``connect`` runs first; commands that arrive before ``welcome``
   wait in the queue and run after it.
3. A client fault never escapes: it becomes a frame, a log line (WARNING, once per
   connection per kind) or a bounded disconnect. Exceptions from user code are
   logged at ERROR with channel and action, passed to ``rescue_from`` handlers and
   the cable's ``on_error`` hooks, and the connection goes on.
4. An idle session owns no task: the queue runner exists only while there is work.
5. The queue is bounded: input waiting in it past ``max_message_size`` bytes pauses
   reading from the socket (TCP pushes back on the client) until it drains; a timer
   tick is queued at most once at a time; custom stream callbacks that fall
   ``_MAX_QUEUED`` items behind cut the connection as a slow consumer.
6. Nothing a client sends is dropped for its rate: over ``max_commands_per_second``
   (after a burst of ``command_burst``) commands wait in the queue for their turn,
   and the queue's byte bound (5) stops reading the socket, so TCP throttles the
   client. Only a protocol violation or a full server ends a connection.
7. The subscription's own state and logic live in :mod:`cablecar._subscription`;
   the session owns the order in which user code runs and the connection's life.
8. Extended protocol (``history=True``): every welcome carries a new ``sid``; the
   session's entry (identifiers, subscriptions and their streams) is saved after each
   change and on close, so a client may resume it once, on any node, within
   ``sessions_ttl``. A resumed session runs ``restored()`` hooks instead of
   ``connect``/``subscribed``; its subscriptions stay held until the client's history
   request (or ``_RESUME_HOLD`` seconds) so the backlog and live broadcasts interleave
   without duplicates.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from . import _json, instrumentation
from ._concurrency import call_user
from ._logging import Redacted, redact, short
from ._subscription import Subscription
from .channel import channel_spec
from .connection import Unauthorized
from .errors import InvalidCommand
from .history.base import pack
from .http import Request
from .protocol import (
    EXT_SUBPROTOCOL,
    DisconnectReason,
    History,
    HistoryRequest,
    Join,
    Leave,
    Perform,
    Ping,
    Pong,
    PresenceInfo,
    Subscribe,
    Unsubscribe,
    Whisper,
    frames,
    parse_command,
    parse_identifier,
)

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .channel import StreamCallback
    from .connection import Connection
    from .transport import Sink

__all__ = ["Session", "State"]

logger = logging.getLogger("cablecar.session")


class State(enum.IntEnum):
    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


_OPEN = object()
_TEARDOWN = object()

#: Queued items (stream callbacks) past which a connection counts as too slow.
_MAX_QUEUED = 10_000

#: Seconds a resumed session's subscriptions wait for the client's history request
#: before live broadcasts flow again without it.
_RESUME_HOLD = 5.0

#: Seconds between confirm_subscription and the backlog of a subscribe with history.
_REPLAY_AFTER_CONFIRM = 0.02

#: Previous sids remembered per session (``exclude_socket`` across resumes).
_LINEAGE = 8


class _Bucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = now

    def take(self, now: float) -> float:
        """Take one token; the seconds to wait until it is there (0.0: at once)."""
        tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            self.last = now
            return 0.0
        wait = (1.0 - tokens) / self.rate
        self.tokens = 0.0  # the token that arrives after ``wait`` is taken then
        self.last = now + wait
        return wait


class Session:
    """Server state of one client socket, independent of the transport
    (a :class:`~cablecar.transport.SessionPort`)."""

    __slots__ = (
        "__weakref__",
        "_commands",
        "_goodbye",
        "_overran",
        "_paused",
        "_peers",
        "_presence_key",
        "_queue",
        "_queued_bytes",
        "_starting",
        "_task",
        "_ticks",
        "_warned",
        "connection",
        "ext",
        "last_seen",
        "lineage",
        "pongs",
        "request",
        "runtime",
        "sid",
        "sink",
        "state",
        "subprotocol",
        "subscriptions",
        "welcomed",
    )

    def __init__(
        self, runtime: Runtime, sink: Sink, request: Request, subprotocol: str | None
    ) -> None:
        self.runtime = runtime
        self.sink = sink
        self.request = request
        self.subprotocol = subprotocol
        self.connection: Connection | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self.state = State.CONNECTING
        self._queue: deque[Any] = deque()
        self._task: asyncio.Task[None] | None = None
        self._starting = False  # _run is being started (and may run eagerly)
        self._warned: set[str] | None = None
        now = runtime.loop_time()
        cfg = runtime.config
        self._commands = _Bucket(cfg.max_commands_per_second, cfg.command_burst, now)
        #: Whispers and presence changes: commands that reach other clients directly.
        self._peers = _Bucket(cfg.max_peer_events_per_second, cfg.peer_event_burst, now)
        self._queued_bytes = 0  # client input waiting in the queue
        self._paused = False  # reading from the socket paused (input backpressure)
        self._ticks: set[tuple[Subscription, str]] = set()  # timer ticks in the queue
        self.welcomed = False
        #: Speaks the extended protocol (a cable with ``history=True``).
        self.ext: bool = subprotocol == EXT_SUBPROTOCOL and runtime.store is not None
        #: This connection's session id (extended protocol), and the ones it resumed.
        self.sid: str | None = None
        self.lineage: tuple[str, ...] = ()
        self._presence_key: str | None = None
        self._goodbye = False  # the client closed first (a close frame)
        self._overran = False  # connect() ran past connect_timeout (Runtime's watch)
        #: Loop time of the client's last message (``pong_timeout``).
        self.last_seen = now
        #: Held to ``pong_timeout`` (extended protocol); HTTP transports cannot pong.
        self.pongs = True

    # -- called by the transport --------------------------------------------------------

    def start(self) -> None:
        """The socket is open: run ``connect``, then send ``welcome``."""
        self.runtime.opened(self)
        if logger.isEnabledFor(logging.INFO):
            request = self.request
            kind = getattr(self.sink, "kind", "WebSocket")
            logger.info(
                '%s: Started %s "%s" [%s] for %s',
                self,
                request.method,
                request.path,
                kind,
                request.client[0] if request.client else "?",
            )
            if kind == "WebSocket":
                logger.info(
                    "%s: Successfully upgraded to WebSocket (protocol %s)", self, self.subprotocol
                )
        self._enqueue(_OPEN)

    def open_as(self, connection: Connection) -> None:
        """Open with a connection whose ``connect`` already ran (``cablecar.testing``'s
        ``stub_connection``): send ``welcome`` at once."""
        self.runtime.opened(self)
        self.connection = connection
        self._welcome()

    def receive(self, data: bytes) -> None:
        """One text message from the client."""
        if self.state >= State.CLOSING:
            return
        self.last_seen = self.runtime.loop_time()
        self._queued_bytes += len(data)
        if self._queued_bytes > self.runtime.config.max_message_size and not self._paused:
            # Actions are slower than the client sends: stop reading until they catch up.
            self._paused = True
            self.sink.pause_reading()
        self._enqueue(data)

    def receive_binary(self, data: bytes) -> None:
        """A binary message: Action Cable frames are text, so it is ignored (logged once)."""
        self.warn_once("binary", "binary frame ignored (Action Cable frames are text)")

    def transport_closed(self) -> None:
        """The socket is gone: stop output, leave every stream, run the callbacks."""
        if self.state == State.CLOSED:
            return
        if self.state < State.CLOSING:
            self.runtime.stats.closed["client"] += 1
        self.state = State.CLOSED
        self.runtime.closed(self)
        if self.welcomed:
            if self.sid is not None:
                self.runtime.save_session(self, final=True)  # resumable for sessions_ttl
            if not self._goodbye:  # vanished: members stay one presence_ttl
                self.runtime.presence_detached(self)  # (else the teardown leaves at once)
        self._detach()
        self._queue.clear()
        self._queued_bytes = 0
        self._ticks.clear()
        self._enqueue(_TEARDOWN)

    def peer_closing(self) -> None:
        """The client sent a close frame: nothing more is sent to it. A client that
        closes first is leaving (a tab closed, a page left): its presence ends at once
        rather than one ``presence_ttl`` later."""
        if self.state < State.CLOSING:
            self.runtime.stats.closed["client"] += 1
            self.state = State.CLOSING
            self._goodbye = True

    def _detach(self) -> None:
        # Leave the hub at once: no broadcast is written to a closing socket.
        hub = self.runtime.hub
        if self.sid is not None:
            for sid in (self.sid, *self.lineage):
                if hub.sids.get(sid) is self.sink:
                    del hub.sids[sid]
        for sub in self.subscriptions.values():
            sub.cancel_timers()
            sub.leave_streams(hub)

    # -- output -----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send one JSON frame to this client (dropped once closing)."""
        if self.state < State.CLOSING:
            self.sink.send(data)

    def close(self, reason: str | None, reconnect: bool, code: int = 1000) -> None:
        """Send ``disconnect`` with ``reason``/``reconnect``, then close the socket
        with WebSocket close ``code``."""
        if self.state >= State.CLOSING:
            return
        self.runtime.stats.closed[reason or "none"] += 1
        self.sink.send(frames.disconnect(reason, reconnect))
        self.state = State.CLOSING
        self._detach()
        self.sink.close(code)

    def fail(self, code: int) -> None:
        """Close with WebSocket ``code`` and no ``disconnect`` frame (the client broke
        the WebSocket protocol: RFC 6455 fails the connection with the close alone)."""
        if self.state >= State.CLOSING:
            return
        self.runtime.stats.closed[f"protocol_error_{code}"] += 1
        self.state = State.CLOSING
        self._detach()
        self.sink.close(code)

    def too_slow(self) -> None:
        """The client does not read its output fast enough: cut it."""
        if self.state < State.CLOSING:
            self.runtime.stats.slow_consumers += 1
            logger.warning(
                "%s: slow consumer, pending output over %d bytes; disconnecting",
                self,
                self.runtime.config.max_pending_output,
            )
            self.close(DisconnectReason.TOO_SLOW, True)

    def warn_once(self, kind: str, msg: str, *args: Any) -> None:
        """Log a refused input at WARNING, once per connection per kind (later ones
        at DEBUG). The record carries ``cablecar_kind``; arguments are formatted only
        when the line is emitted."""
        if self._warned is None:
            self._warned = set()
        extra = {"cablecar_kind": kind}
        if kind in self._warned:
            logger.debug("%s: " + msg, self, *args, extra=extra)
            return
        self._warned.add(kind)
        logger.warning("%s: " + msg, self, *args, extra=extra)

    # -- state for subscriptions and tests -------------------------------------------------

    def is_active(self, sub: Subscription) -> bool:
        """Whether ``sub`` is this open session's subscription for its identifier."""
        return self.state == State.OPEN and self.subscriptions.get(sub.identifier) is sub

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task running this session's queue, or ``None`` while idle."""
        return self._task

    @property
    def queued_bytes(self) -> int:
        """Client input waiting in the queue."""
        return self._queued_bytes

    # -- the queue --------------------------------------------------------------------

    def stream_callback(self, sub: Subscription, callback: StreamCallback, message: Any) -> None:
        """Run a custom ``stream_from`` callback in order with commands."""
        if self.state < State.CLOSING:
            if len(self._queue) >= _MAX_QUEUED:
                # The callbacks cannot keep up with the broadcasts: like a client that
                # does not read, this connection would grow the server's memory.
                self.too_slow()
                return
            self._enqueue(partial(self._run_callback, sub, callback, message))

    def timer_tick(self, sub: Subscription, method: str) -> None:
        """Run a ``periodically`` method in order with commands (a tick still waiting
        is not queued twice, so a method slower than its period cannot pile up)."""
        if self.state < State.CLOSING:
            key = (sub, method)
            if key in self._ticks:
                return
            self._ticks.add(key)
            self._enqueue(partial(self._tick, sub, method))

    def _enqueue(self, item: Any) -> None:
        self._queue.append(item)
        if self._task is None and not self._starting:
            # On Python 3.12+ the task starts eagerly: the queue is worked on right here
            # until something has to wait (most connects, subscribes and actions never
            # do, and then no task is scheduled at all). Items enqueued meanwhile are
            # taken by that same run.
            self._starting = True
            try:
                task = self.runtime.spawn(self._run(), eager=True)
            finally:
                self._starting = False
            if not task.done():
                self._task = task

    async def _run(self) -> None:
        queue = self._queue
        try:
            while queue:
                item = queue.popleft()
                try:
                    await self._handle(item)
                except Exception:  # a bug of ours: log it, keep the connection going
                    logger.exception("%s: internal error handling input", self)
                except BaseException as exc:
                    if _propagates(exc):
                        raise
                    logger.exception("%s: internal error handling input", self)
        finally:
            self._task = None

    async def _throttle(self, bucket: _Bucket, kind: str, what: str) -> None:
        """Take a token from ``bucket``, waiting for one if the client is over its rate
        (the command is delayed, never dropped; TCP slows the client down)."""
        wait = bucket.take(self.runtime.loop_time())
        if wait > 0.0:
            self.runtime.stats.throttled_commands += 1
            self.warn_once(kind, "%s throttled: over %s/s", what, bucket.rate)
            await asyncio.sleep(wait)

    async def _handle(self, item: Any) -> None:
        if isinstance(item, bytes):
            if self.state == State.OPEN:
                await self._throttle(self._commands, "rate_limited", "commands")
            self._queued_bytes -= len(item)
            if self._paused and self._queued_bytes <= self.runtime.config.max_message_size // 2:
                self._paused = False
                if self.state < State.CLOSING:
                    self.sink.resume_reading()
            if self.state == State.OPEN:
                await self._command(item)
        elif item is _OPEN:
            await self._open()
        elif item is _TEARDOWN:
            await self._teardown()
        else:  # a stream callback or a timer tick (see _run_callback, _tick)
            await item()

    async def _run_callback(
        self, sub: Subscription, callback: StreamCallback, message: Any
    ) -> None:
        if not sub.active:
            return
        where = f"stream callback for {sub.stream_of(callback)!r}"
        result = await self._call(sub, callback, where, message)
        if result is not None:
            try:
                sub.transmit_message(result)
            except Exception as exc:  # not JSON-serializable, most likely
                await self._rescue(sub, exc, where)

    async def _tick(self, sub: Subscription, method: str) -> None:
        self._ticks.discard((sub, method))
        if sub.active:
            await self._call(sub, getattr(sub.channel, method), method)

    # -- lifecycle --------------------------------------------------------------------

    async def _open(self) -> None:
        runtime = self.runtime
        if self.ext:
            previous = self.request.headers.get("x-anycable-restore-sid") or self.request.query.get(
                "sid"
            )
            if previous and len(previous) <= 128 and await self._resume(previous):
                return
        connection = runtime.connection_class(self, self.request)
        self.connection = connection
        if not await self._connection_callback(connection, "connect"):
            return
        if self.state != State.CONNECTING:
            return  # the client left while connect() ran
        self._welcome()

    async def _connection_callback(self, connection: Connection, name: str) -> bool:
        """Run ``connection.connect()`` (bounded by ``connect_timeout``) or
        ``connection.restored()``; when it refuses, overruns or raises, close the socket
        as Action Cable does and return False."""
        runtime = self.runtime
        # Bounded by the runtime's watch, not a timer per connection (connect_overran).
        watched = name == "connect"
        if watched:
            runtime.watch_connect(self)
        try:
            await call_user(runtime.pool, getattr(connection, name))
        except Unauthorized:
            what = "connection" if name == "connect" else "resume"
            logger.info("%s: %s rejected (unauthorized)", self, what)
            self.close(DisconnectReason.UNAUTHORIZED, False)
            return False
        except BaseException as exc:
            overran = self._overran and isinstance(exc, asyncio.CancelledError)
            if overran:
                task = asyncio.current_task()
                if task is not None and task.uncancel() > 0:
                    raise  # cancelled for another reason as well (a shutdown)
                timeout = runtime.config.connect_timeout
                logger.error("%s: %s() took over %ss; closing", self, name, timeout)
            elif _propagates(exc):
                raise
            else:
                logger.error(
                    "%s: %s#%s raised %s", self, type(connection).__name__, name,
                    type(exc).__name__, exc_info=exc,
                )  # fmt: skip
                runtime.report_error(exc, {"connection": connection, "callback": name})
            self.close(DisconnectReason.INVALID_REQUEST, True)
            return False
        finally:
            if watched:
                runtime.unwatch_connect(self)
        return True

    def connect_overran(self) -> None:
        """``connect()`` ran past ``connect_timeout`` (called by the runtime's watch):
        cancel it; :meth:`_connection_callback` closes the socket."""
        task = self._task
        if task is not None and not self._overran:
            self._overran = True
            task.cancel()

    def _welcome(self, restored_ids: list[str] | None = None) -> None:
        self.state = State.OPEN
        self.welcomed = True
        self.runtime.welcomed_session(self)
        if self.ext:
            self.sid = secrets.token_urlsafe(24)  # 192 random bits
            sids = self.runtime.hub.sids
            for sid in (self.sid, *self.lineage):
                sids[sid] = self.sink
            self.sink.send(frames.welcome(self.sid, restored_ids))
            self.runtime.save_session(self)
        else:
            self.sink.send(frames.WELCOME)
        logger.debug("%s: welcomed", self)
        if self.connection is not None and instrumentation.active("connect"):
            instrumentation.emit("connect", {"connection": self.connection})

    def entry(self) -> bytes | None:
        """What a resume needs (identifiers, subscriptions and their streams), as JSON;
        ``None`` when the identifiers are not JSON values (such a session cannot be
        resumed on another node)."""
        connection = self.connection
        if connection is None:
            return None
        subs = {
            identifier: list(sub.streams)
            for identifier, sub in self.subscriptions.items()
            if all(callback is None for callback in sub.streams.values())
        }
        try:
            return _json.dumps(
                {
                    "ids": connection.identifiers,
                    "subs": subs,
                    # The whisper and presence streams of each subscription.
                    "wp": {
                        identifier: [sub.whisper_stream, sub.presence_stream]
                        for identifier, sub in self.subscriptions.items()
                        if identifier in subs
                        and (sub.whisper_stream is not None or sub.presence_stream is not None)
                    },
                    "lineage": [self.sid, *self.lineage][:_LINEAGE] if self.sid else [],
                }
            )
        except TypeError:
            return None

    async def _resume(self, previous: str) -> bool:
        """Resume the session saved under ``previous``; False: connect afresh."""
        runtime = self.runtime
        store = runtime.store
        assert store is not None
        try:
            data = await store.take_session(previous)
            entry = _json.loads(data) if data is not None else None
            ids = entry["ids"] if isinstance(entry, dict) else None
            subs = entry["subs"] if isinstance(entry, dict) else None
            lineage = entry.get("lineage", []) if isinstance(entry, dict) else []
            flags = entry.get("wp", {}) if isinstance(entry, dict) else {}
            if not isinstance(flags, dict):
                flags = {}
            if not isinstance(ids, dict) or not isinstance(subs, dict):
                return False
        except Exception as exc:
            logger.info("%s: session %s... not resumed: %s", self, previous[:6], exc)
            return False
        connection = runtime.connection_class(self, self.request)
        self.connection = connection
        for name in type(connection).identified_by:
            setattr(connection, name, ids.get(name))
        if not await self._connection_callback(connection, "restored"):
            return True
        if self.state != State.CONNECTING:
            return True
        self.lineage = tuple(s for s in lineage if isinstance(s, str))[:_LINEAGE]
        restored: list[str] = []
        for identifier, streams in list(subs.items())[: runtime.config.max_subscriptions]:
            if not isinstance(identifier, str) or not isinstance(streams, list):
                continue
            sub = self._build(identifier)
            if sub is None:
                continue
            self.subscriptions[identifier] = sub
            sub.holding = True
            wp = flags.get(identifier)
            whisper, presence = wp if isinstance(wp, list) and len(wp) == 2 else (None, None)
            for stream in streams:
                if isinstance(stream, str) and stream:
                    sub.add_stream(stream, None, stream == whisper, stream == presence)
            try:
                await call_user(runtime.pool, sub.channel.restored)
                await sub.apply(runtime.hub)
            except BaseException as exc:
                if _propagates(exc):
                    raise
                await self._rescue(sub, exc, "restored")
                del self.subscriptions[identifier]
                sub.leave(runtime.hub)
                continue
            restored.append(identifier)
        if self.state != State.CONNECTING:
            return True
        self._welcome(restored)
        runtime.stats.resumed_sessions += 1
        logger.info("%s: session resumed with %d subscriptions", self, len(restored))
        clock = runtime.timer_clock()
        for identifier in restored:
            sub = self.subscriptions[identifier]
            sub.start_timers(clock)
        runtime.loop.call_later(_RESUME_HOLD, self._release_unclaimed, restored)
        return True

    def _release_unclaimed(self, identifiers: list[str]) -> None:
        for identifier in identifiers:
            sub = self.subscriptions.get(identifier)
            if sub is not None and sub.holding and self.state == State.OPEN:
                sub.release(self.runtime.hub, {})

    async def _teardown(self) -> None:
        for sub in list(self.subscriptions.values()):
            await self._unsubscribe(sub)
        self.subscriptions.clear()
        connection = self.connection
        logger.info(
            '%s: Finished "%s" [%s]',
            self,
            self.request.path,
            getattr(self.sink, "kind", "WebSocket"),
        )
        if connection is not None and instrumentation.active("disconnect"):
            instrumentation.emit("disconnect", {"connection": connection})
        if connection is not None and self.welcomed:
            try:
                await call_user(self.runtime.pool, connection.disconnect)
            except BaseException as exc:
                if _propagates(exc):
                    raise
                logger.error(
                    "%s: %s#disconnect raised %s",
                    self,
                    type(connection).__name__,
                    type(exc).__name__,
                    exc_info=exc,
                )
                self.runtime.report_error(exc, {"connection": connection, "callback": "disconnect"})

    # -- commands ---------------------------------------------------------------------

    async def _command(self, text: bytes) -> None:
        try:
            command = parse_command(text)
        except InvalidCommand as exc:
            self.warn_once(exc.kind, "invalid command ignored: %s", exc)
            return
        if isinstance(command, Whisper | Join | Leave):  # they reach other clients
            await self._throttle(self._peers, "peer_rate_limited", "whispers and presence changes")
        if isinstance(command, Perform):
            await self._perform(command)
        elif isinstance(command, Subscribe):
            await self._subscribe(command.identifier, command.history, command.presence)
        elif isinstance(command, Unsubscribe):
            sub = self._subscription(command.identifier, "unsubscribe from")
            if sub is None:
                return
            del self.subscriptions[command.identifier]
            await self._unsubscribe(sub)
            if self.sid is not None:
                self.runtime.save_session(self)
        elif isinstance(command, History):
            await self._history_command(command)
        elif isinstance(command, Whisper):
            await self._whisper(command)
        elif isinstance(command, Join):
            sub = self._subscription(command.identifier, "join for")
            if sub is None:
                return
            await self.presence_join(sub, command.id, command.info)
        elif isinstance(command, Leave):
            sub = self.subscriptions.get(command.identifier)
            if sub is not None:
                await self.presence_leave(sub)
        elif isinstance(command, PresenceInfo):
            await self._presence_info(command)
        elif isinstance(command, Ping):
            self.send(frames.PONG)
        elif isinstance(command, Pong):
            pass  # keepalive: last_seen is updated on every message

    def _build(self, identifier: str, identifier_json: bytes | None = None) -> Subscription | None:
        """A subscription for ``identifier`` (its channel built), or ``None`` with a
        log line when the identifier or its channel is unknown."""
        try:
            name, params = parse_identifier(identifier)
        except InvalidCommand as exc:
            self.warn_once(exc.kind, "subscription refused: %s", exc)
            return None
        cls = self.runtime.registry.get(name)
        if cls is None:
            self.warn_once(
                "unknown_channel", "subscription refused: unknown channel %s", short(name)
            )
            return None
        if identifier_json is None:
            identifier_json = frames.encode_identifier(identifier)
        return Subscription(self, cls, channel_spec(cls), identifier, identifier_json, params)

    async def _subscribe(
        self,
        identifier: str,
        history: HistoryRequest | None = None,
        presence: tuple[str, Any] | None = None,
    ) -> None:
        existing = self.subscriptions.get(identifier)
        if existing is not None:
            self.send(frames.confirm(existing.identifier_json))  # idempotent
            if history is not None and self.ext:
                await self._replay(existing, history)
            return
        identifier_json = frames.encode_identifier(identifier)
        runtime = self.runtime
        if len(self.subscriptions) >= runtime.config.max_subscriptions:
            self.warn_once(
                "too_many_subscriptions",
                "subscription refused: over %d subscriptions",
                runtime.config.max_subscriptions,
            )
            self.send(frames.reject(identifier_json))
            runtime.stats.rejected_subscriptions += 1
            return
        sub = self._build(identifier, identifier_json)
        if sub is None:
            self.send(frames.reject(identifier_json))
            runtime.stats.rejected_subscriptions += 1
            return
        cls = type(sub.channel)
        replay = history is not None and self.ext
        sub.holding = replay
        self.subscriptions[identifier] = sub
        ok = True
        try:
            for hook in sub.hooks("before_subscribe"):
                await call_user(runtime.pool, hook)
                if sub.rejected:
                    break
            if not sub.rejected:
                await call_user(runtime.pool, sub.channel.subscribed)
            await sub.apply(runtime.hub)
        except BaseException as exc:
            if _propagates(exc):
                raise
            ok = await self._rescue(sub, exc, "subscribed")
        if sub.rejected or not ok or self.state != State.OPEN:
            if self.subscriptions.get(identifier) is sub:
                del self.subscriptions[identifier]
            sub.leave(runtime.hub)
            self.send(frames.reject(identifier_json))
            self._subscription_answer(cls.__name__, identifier, confirmed=False)
            return
        self.send(frames.confirm(identifier_json))
        self._subscription_answer(cls.__name__, identifier, confirmed=True)
        if self.sid is not None:
            runtime.save_session(self)
        if replay:
            assert history is not None
            # The official client maps the identifier only once it has handled the
            # confirmation: a confirm_history in the same read would be dropped (its
            # messages are kept). Answer in a later write; live broadcasts are held.
            await asyncio.sleep(_REPLAY_AFTER_CONFIRM)
            await self._replay(sub, history)
        if sub.join_on_confirm is not None:  # join_presence() in subscribed()
            deferred, sub.join_on_confirm = sub.join_on_confirm, None
            await self.presence_join(sub, *deferred)
        if presence is not None and self.ext:
            await self.presence_join(sub, *presence)
        sub.start_timers(runtime.timer_clock())
        for hook in sub.hooks("after_subscribe"):
            await self._call(sub, hook, "after_subscribe")

    def _subscription(self, identifier: str, what: str) -> Subscription | None:
        """The subscription of ``identifier``; None (logged once per connection) when
        the client holds none: ``what`` names the command ("message for")."""
        sub = self.subscriptions.get(identifier)
        if sub is None:
            self.warn_once(
                "unknown_subscription", "%s unknown subscription %s", what, short(identifier)
            )
        return sub

    async def _perform(self, command: Perform) -> None:
        sub = self._subscription(command.identifier, "message for")
        if sub is None:
            return
        takes_data = sub.spec.actions.get(command.action)
        if takes_data is None:
            self.warn_once(
                "action_not_allowed",
                "unable to process %s#%s(%s)",
                type(sub.channel).__name__,
                short(command.action),
                Redacted(command.data, self.runtime.config.filter_parameters),
            )
            return
        action = command.action
        method = getattr(sub.channel, action)
        before = len(sub.streams), next(reversed(sub.streams), None)
        channel = type(sub.channel).__name__
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s: %s#%s(%s)",
                self,
                channel,
                action,
                Redacted(command.data, self.runtime.config.filter_parameters, ruby=True),
            )
        started = time.perf_counter()
        if takes_data:
            await self._call(sub, method, action, command.data)
        else:
            await self._call(sub, method, action)
        duration = time.perf_counter() - started
        self.runtime.stats.action(channel, action, duration)
        if instrumentation.active("perform_action"):
            instrumentation.emit(
                "perform_action",
                {
                    "channel": channel,
                    "action": action,
                    "data": redact(command.data, self.runtime.config.filter_parameters),
                    "duration": duration,
                },
            )
        if self.sid is not None and before != (len(sub.streams), next(reversed(sub.streams), None)):
            self.runtime.save_session(self)

    def _subscription_answer(self, channel: str, identifier: str, *, confirmed: bool) -> None:
        if not confirmed:
            self.runtime.stats.rejected_subscriptions += 1
        what = "confirmation" if confirmed else "rejection"
        logger.info("%s: %s is transmitting the subscription %s", self, channel, what)
        event = f"transmit_subscription_{what}"
        if instrumentation.active(event):
            instrumentation.emit(event, {"channel": channel, "identifier": identifier})

    async def _whisper(self, command: Whisper) -> None:
        """Publish ``data`` to the subscription's whisper stream, for everyone but the
        sender: transient (no history, no position), no channel code runs."""
        sub = self.subscriptions.get(command.identifier)
        stream = sub.whisper_stream if sub is not None else None
        if sub is None or stream is None or stream not in sub.streams:
            logger.debug("%s: whisper ignored: no whisper stream", self)
            return
        try:
            payload = _json.dumps(command.data)
        except TypeError:
            return
        try:
            await self.runtime.adapter.publish(stream, pack(0, b"", self.sid or None, payload))
        except Exception as exc:
            logger.warning("%s: whisper not published: %s", self, exc)

    # -- presence (extended protocol) -------------------------------------------------------

    @property
    def presence_key(self) -> str:
        """What this connection's presence records are kept under: its ``sid``, or for a
        plain-protocol client (joined by its channel, ``join_presence``) a private key."""
        if self.sid is not None:
            return self.sid
        if self._presence_key is None:
            self._presence_key = "p:" + secrets.token_urlsafe(12)
        return self._presence_key

    def _presence_error(self, sub: Subscription) -> None:
        self.send(frames.presence(sub.identifier_json, {"type": "error"}))

    async def presence_join(self, sub: Subscription, pid: str, info: Any) -> None:
        """Join ``sub``'s presence stream as member ``pid`` with ``info``; a ``join``
        event goes to the stream when ``pid`` is new there. Anything that prevents it
        gets a presence ``error`` reply."""
        runtime = self.runtime
        store = runtime.store
        stream = sub.presence_stream
        if store is None or stream is None or stream not in sub.streams:
            self._presence_error(sub)
            return
        try:
            encoded = _json.dumps(info)
        except TypeError:
            encoded = b"null"
        if len(encoded) > runtime.config.max_presence_info:
            self.warn_once(
                "presence_info",
                "presence join refused: info over %d bytes",
                runtime.config.max_presence_info,
            )
            self._presence_error(sub)
            return
        if sub.presence_id is not None and sub.presence_id != pid:
            await self.presence_leave(sub)
        try:
            new = await store.presence_join(stream, self.presence_key, pid, encoded)
        except Exception as exc:
            logger.warning("%s: presence unavailable: %s", self, exc)
            self._presence_error(sub)
            return
        sub.presence_id = pid
        runtime.presence_joined(self, sub)
        if new:
            await runtime.presence_event(
                stream, b'{"type":"join","id":%s,"info":%s}' % (_json.dumps(pid), encoded)
            )

    async def presence_leave(self, sub: Subscription) -> None:
        """Leave ``sub``'s presence stream; a ``leave`` event when the member has no
        other session."""
        runtime = self.runtime
        store = runtime.store
        stream = sub.presence_stream
        if store is None or stream is None or sub.presence_id is None:
            return
        sub.presence_id = None
        runtime.presence_left(self, sub)
        try:
            gone = await store.presence_leave(stream, self.presence_key)
        except Exception as exc:
            logger.warning("%s: presence unavailable: %s", self, exc)
            return
        if gone is not None:
            await runtime.presence_event(stream, b'{"type":"leave","id":%s}' % _json.dumps(gone))

    async def _presence_info(self, command: PresenceInfo) -> None:
        sub = self.subscriptions.get(command.identifier)
        if sub is None:
            self.send(
                frames.presence(frames.encode_identifier(command.identifier), {"type": "error"})
            )
            return
        store = self.runtime.store
        stream = sub.presence_stream
        if store is None or stream is None or stream not in sub.streams:
            self._presence_error(sub)
            return
        try:
            members = await store.presence_members(stream)
        except Exception as exc:
            logger.warning("%s: presence unavailable: %s", self, exc)
            self._presence_error(sub)
            return
        reply: dict[str, Any] = {"type": "info", "total": len(members)}
        if command.return_records:
            reply["records"] = [{"id": pid, "info": _json.loads(info)} for pid, info in members]
        self.send(frames.presence(sub.identifier_json, reply))

    # -- history (extended protocol) --------------------------------------------------------

    async def _history_command(self, command: History) -> None:
        sub = self._subscription(command.identifier, "history for")
        if sub is None:
            self.send(frames.reject_history(frames.encode_identifier(command.identifier)))
            return
        if not self.ext:
            self.send(frames.reject_history(sub.identifier_json))
            return
        await self._replay(sub, command.history)

    async def _replay(self, sub: Subscription, request: HistoryRequest) -> None:
        """Send the backlog ``request`` asks for, then ``confirm_history`` (or
        ``reject_history``, with no backlog), then what arrived meanwhile."""
        runtime = self.runtime
        store = runtime.store
        hub = runtime.hub
        sub.hold(hub)
        sent: dict[str, int] = {}
        backlog: list[tuple[str, list[Any]]] = []
        ok = store is not None
        if store is not None:
            try:
                for stream, callback in list(sub.streams.items()):
                    if callback is not None:
                        continue
                    position = request.streams.get(stream)
                    if position is not None:
                        entries = await store.after(stream, position[0], position[1])
                    elif request.since:
                        entries = await store.since(stream, request.since)
                    else:
                        continue
                    if entries is None:
                        ok = False
                        break
                    backlog.append((stream, entries))
            except Exception as exc:  # the store is down: the client refetches state
                logger.warning("%s: history unavailable: %s", self, exc)
                ok = False
        if not sub.active or self.state != State.OPEN:
            return
        if ok and store is not None:
            mine = {self.sid, *self.lineage}
            for stream, entries in backlog:
                for entry in entries:
                    sent[stream] = entry.offset
                    if entry.exclude is not None and entry.exclude in mine:
                        continue
                    sub.send_data(entry.payload, frames.position(stream, store.epoch, entry.offset))
            self.send(frames.confirm_history(sub.identifier_json))
            runtime.stats.history_recoveries["confirmed"] += 1
        else:
            self.send(frames.reject_history(sub.identifier_json))
            runtime.stats.history_recoveries["rejected"] += 1
        sub.release(hub, sent)

    async def _unsubscribe(self, sub: Subscription) -> None:
        sub.cancel_timers()
        if sub.presence_id is not None:
            await self.presence_leave(sub)
        for hook in sub.hooks("before_unsubscribe"):
            await self._call(sub, hook, "before_unsubscribe", apply=False)
        await self._call(sub, sub.channel.unsubscribed, "unsubscribed", apply=False)
        for hook in sub.hooks("after_unsubscribe"):
            await self._call(sub, hook, "after_unsubscribe", apply=False)
        sub.leave(self.runtime.hub)

    # -- helpers ----------------------------------------------------------------------

    async def _call(
        self, sub: Subscription, fn: Any, where: str, *args: Any, apply: bool = True
    ) -> Any:
        result = None
        try:
            result = await call_user(self.runtime.pool, fn, *args)
        except BaseException as exc:
            if _propagates(exc):
                raise
            await self._rescue(sub, exc, where)
        if apply and self.state == State.OPEN:
            try:
                await sub.apply(self.runtime.hub)
            except Exception as exc:
                await self._rescue(sub, exc, where)
        return result

    async def _rescue(self, sub: Subscription, exc: BaseException, where: str) -> bool:
        """Give ``exc`` to the channel's ``rescue_from`` handler; True if one handled it."""
        handler = sub.rescuer_for(exc)
        if handler is not None:
            try:
                await call_user(self.runtime.pool, handler, exc)
                return True
            except BaseException as again:
                if _propagates(again):
                    raise
                exc = again
        logger.error(
            "%s: %s#%s raised %s",
            self,
            type(sub.channel).__name__,
            where,
            type(exc).__name__,
            exc_info=exc,
        )
        self.runtime.report_error(
            exc, {"connection": self.connection, "channel": sub.channel, "action": where}
        )
        return False

    def __repr__(self) -> str:
        who = self.connection.connection_identifier if self.connection is not None else ""
        client = self.request.client
        peer = f"{client[0]}:{client[1]}" if client else "?"
        request_id = self.request.headers.get("x-request-id")
        tag = f" request {request_id[:64]}" if request_id else ""
        return f"<connection {who or '-'} from {peer}{tag}>"


def _propagates(exc: BaseException) -> bool:
    """Whether an exception out of user code must travel on (our task is being
    cancelled) rather than be reported as the user's error. A ``CancelledError`` the
    user's code raised by itself, ``SystemExit`` and ``KeyboardInterrupt`` from an
    action are reported like any other error: they must not stop the server."""
    if isinstance(exc, GeneratorExit):
        return True
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is None or task.cancelling() > 0
    return False
