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
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from . import _json
from ._concurrency import call_user
from .connection import Unauthorized
from .errors import InvalidCommand
from .http import Request
from .protocol import (
    DisconnectReason,
    Perform,
    Subscribe,
    Unsubscribe,
    frames,
    parse_command,
    parse_identifier,
)

if TYPE_CHECKING:
    from .channel import Channel, StreamCallback
    from .connection import Connection
    from .cable import Cable
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


class Session:
    """Server state of one client socket, independent of the transport."""

    __slots__ = (
        "__weakref__",
        "_last",
        "_paused",
        "_queue",
        "_queued_bytes",
        "_refused",
        "_task",
        "_ticks",
        "_tokens",
        "_warned",
        "cable",
        "connection",
        "request",
        "sink",
        "state",
        "subprotocol",
        "subscriptions",
        "welcomed",
    )

    def __init__(self, cable: Cable, sink: Sink, request: Request, subprotocol: str | None) -> None:
        self.cable = cable
        self.sink = sink
        self.request = request
        self.subprotocol = subprotocol
        self.connection: Connection | None = None
        self.subscriptions: dict[str, Channel] = {}
        self.state = State.CONNECTING
        self._queue: deque[Any] = deque()
        self._task: asyncio.Task[None] | None = None
        self._warned: set[str] | None = None
        self._tokens = float(cable.config.command_burst)
        self._last = 0.0
        self._refused = 0
        self._queued_bytes = 0  # client input waiting in the queue
        self._paused = False  # reading from the socket paused (input backpressure)
        self._ticks: set[tuple[Channel, str]] = set()  # timer ticks waiting in the queue
        self.welcomed = False

    # -- called by the transport --------------------------------------------------------

    def start(self) -> None:
        """The socket is open: run ``connect``, then send ``welcome``."""
        self.cable._session_opened(self)
        self._enqueue(_OPEN)

    def receive(self, text: bytes) -> None:
        """One text message from the client."""
        if self.state >= State.CLOSING:
            return
        cfg = self.cable.config
        now = self.cable.loop_time()
        tokens = self._tokens + (now - self._last) * cfg.max_commands_per_second
        self._last = now
        if tokens > cfg.command_burst:
            tokens = cfg.command_burst
        if tokens < 1.0:
            self._tokens = tokens
            self._refused += 1
            self.warn_once(
                "rate_limited", "command refused: over %s commands/s", cfg.max_commands_per_second
            )
            if self._refused > cfg.command_burst:
                logger.warning("%s: disconnected, kept sending over the command rate limit", self)
                self.close(DisconnectReason.TOO_MANY_COMMANDS, True)
            return
        self._tokens = tokens - 1.0
        self._refused = 0
        self._queued_bytes += len(text)
        if self._queued_bytes > cfg.max_message_size and not self._paused:
            # Actions are slower than the client sends: stop reading until they catch up.
            pause = getattr(self.sink, "pause_reading", None)
            if pause is not None:
                self._paused = True
                pause()
        self._enqueue(text)

    def transport_closed(self) -> None:
        """The socket is gone: stop output, leave every stream, run the callbacks."""
        if self.state == State.CLOSED:
            return
        self.state = State.CLOSED
        self.cable._session_closed(self)
        self._detach()
        self._queue.clear()
        self._queued_bytes = 0
        self._ticks.clear()
        self._enqueue(_TEARDOWN)

    def _detach(self) -> None:
        # Leave the hub at once: no broadcast is written to a closing socket.
        hub = self.cable.hub
        for channel in self.subscriptions.values():
            _cancel_timers(channel)
            for stream, callback in channel._streams.items():
                hub.remove(stream, channel, callback)
            channel._streams.clear()

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
        self.sink.send(frames.disconnect(reason, reconnect))
        self.state = State.CLOSING
        self._detach()
        self.sink.close(code)

    def too_slow(self) -> None:
        """The client does not read its output fast enough: cut it."""
        if self.state < State.CLOSING:
            logger.warning(
                "%s: slow consumer, pending output over %d bytes; disconnecting",
                self,
                self.cable.config.max_pending_output,
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

    # -- the queue --------------------------------------------------------------------

    def stream_callback(self, channel: Channel, callback: StreamCallback, message: Any) -> None:
        """Run a custom ``stream_from`` callback in order with commands."""
        if self.state < State.CLOSING:
            if len(self._queue) >= _MAX_QUEUED:
                # The callbacks cannot keep up with the broadcasts: like a client that
                # does not read, this connection would grow the server's memory.
                self.too_slow()
                return
            self._enqueue(("stream", channel, callback, message))

    def timer_tick(self, channel: Channel, method: str) -> None:
        """Run a ``periodically`` method in order with commands (a tick still waiting
        is not queued twice, so a method slower than its period cannot pile up)."""
        if self.state < State.CLOSING:
            key = (channel, method)
            if key in self._ticks:
                return
            self._ticks.add(key)
            self._enqueue(("timer", channel, method))

    def _enqueue(self, item: Any) -> None:
        self._queue.append(item)
        if self._task is None:
            self._task = self.cable.spawn(self._run())

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

    async def _handle(self, item: Any) -> None:
        if isinstance(item, bytes):
            self._queued_bytes -= len(item)
            if self._paused and self._queued_bytes <= self.cable.config.max_message_size // 2:
                self._paused = False
                resume = getattr(self.sink, "resume_reading", None)
                if resume is not None and self.state < State.CLOSING:
                    resume()
            if self.state == State.OPEN:
                await self._command(item)
        elif item is _OPEN:
            await self._open()
        elif item is _TEARDOWN:
            await self._teardown()
        else:
            kind, channel = item[0], item[1]
            if kind == "timer":
                self._ticks.discard((channel, item[2]))
            if (
                self.state != State.OPEN
                or channel._session is not self
                or self.subscriptions.get(channel.identifier) is not channel
            ):
                return
            if kind == "timer":
                await self._call(channel, getattr(channel, item[2]), item[2])
            else:
                callback = item[2]
                stream = next((s for s, cb in channel._streams.items() if cb is callback), "?")
                where = f"stream callback for {stream!r}"
                result = await self._call(channel, callback, where, item[3])
                if result is not None:
                    try:
                        channel.transmit(result)
                    except Exception as exc:  # not JSON-serializable, most likely
                        await self._rescue(channel, exc, where)

    # -- lifecycle --------------------------------------------------------------------

    async def _open(self) -> None:
        cable = self.cable
        connection = cable.connection_class(self, self.request)
        self.connection = connection
        try:
            async with asyncio.timeout(cable.config.connect_timeout):
                await call_user(cable.pool, connection.connect)
        except Unauthorized:
            logger.info("%s: connection rejected (unauthorized)", self)
            self.close(DisconnectReason.UNAUTHORIZED, False)
            return
        except TimeoutError:
            logger.error("%s: connect() took over %ss; closing", self, cable.config.connect_timeout)
            self.close(DisconnectReason.INVALID_REQUEST, True)
            return
        except BaseException as exc:
            if _propagates(exc):
                raise
            logger.error(
                "%s: %s#connect raised %s",
                self,
                type(connection).__name__,
                type(exc).__name__,
                exc_info=exc,
            )
            cable.report_error(exc, {"connection": connection, "callback": "connect"})
            self.close(DisconnectReason.INVALID_REQUEST, True)
            return
        if self.state != State.CONNECTING:
            return  # the client left while connect() ran
        self.state = State.OPEN
        self.welcomed = True
        cable._session_welcomed(self)
        self.sink.send(frames.WELCOME)
        logger.debug("%s: welcomed", self)

    async def _teardown(self) -> None:
        for channel in list(self.subscriptions.values()):
            await self._unsubscribe_channel(channel)
        self.subscriptions.clear()
        connection = self.connection
        if connection is not None and self.welcomed:
            try:
                await call_user(self.cable.pool, connection.disconnect)
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
                self.cable.report_error(exc, {"connection": connection, "callback": "disconnect"})

    # -- commands ---------------------------------------------------------------------

    async def _command(self, text: bytes) -> None:
        try:
            command = parse_command(text)
        except InvalidCommand as exc:
            self.warn_once(exc.kind, "invalid command ignored: %s", exc)
            return
        if isinstance(command, Perform):
            await self._perform(command)
        elif isinstance(command, Subscribe):
            await self._subscribe(command.identifier)
        elif isinstance(command, Unsubscribe):
            channel = self.subscriptions.pop(command.identifier, None)
            if channel is None:
                self.warn_once(
                    "unknown_subscription",
                    "unsubscribe from unknown subscription %s",
                    _short(command.identifier),
                )
                return
            await self._unsubscribe_channel(channel)

    async def _subscribe(self, identifier: str) -> None:
        existing = self.subscriptions.get(identifier)
        if existing is not None:
            self.send(frames.confirm(existing._identifier_json))  # idempotent
            return
        identifier_json = _json.dumps(identifier)
        if len(self.subscriptions) >= self.cable.config.max_subscriptions:
            self.warn_once(
                "too_many_subscriptions",
                "subscription refused: over %d subscriptions",
                self.cable.config.max_subscriptions,
            )
            self.send(frames.reject(identifier_json))
            return
        try:
            name, params = parse_identifier(identifier)
        except InvalidCommand as exc:
            self.warn_once(exc.kind, "subscription refused: %s", exc)
            self.send(frames.reject(identifier_json))
            return
        cls = self.cable.channel_class(name)
        if cls is None:
            self.warn_once(
                "unknown_channel", "subscription refused: unknown channel %s", _short(name)
            )
            self.send(frames.reject(identifier_json))
            return
        channel = cls(self, identifier, params)
        self.subscriptions[identifier] = channel
        ok = True
        try:
            for hook in channel._hook_methods("before_subscribe"):
                await call_user(self.cable.pool, hook)
                if channel._rejected:
                    break
            if not channel._rejected:
                await call_user(self.cable.pool, channel.subscribed)
            await self._apply_streams(channel)
        except BaseException as exc:
            if _propagates(exc):
                raise
            ok = await self._rescue(channel, exc, "subscribed")
        if channel._rejected or not ok or self.state != State.OPEN:
            if self.subscriptions.get(identifier) is channel:
                del self.subscriptions[identifier]
            self._leave_streams(channel)
            self.send(frames.reject(identifier_json))
            logger.debug("%s: %s rejected", self, cls.__name__)
            return
        self.send(frames.confirm(identifier_json))
        _start_timers(channel)
        for hook in channel._hook_methods("after_subscribe"):
            await self._call(channel, hook, "after_subscribe")

    async def _perform(self, command: Perform) -> None:
        channel = self.subscriptions.get(command.identifier)
        if channel is None:
            self.warn_once(
                "unknown_subscription",
                "message for unknown subscription %s",
                _short(command.identifier),
            )
            return
        action = type(channel)._actions.get(command.action)
        if action is None:
            self.warn_once(
                "action_not_allowed",
                "unable to process %s#%s(%s)",
                type(channel).__name__,
                _short(command.action),
                _Filtered(self.cable, command.data),
            )
            return
        method = getattr(channel, action.name)
        if action.takes_data:
            await self._call(channel, method, action.name, command.data)
        else:
            await self._call(channel, method, action.name)

    async def _unsubscribe_channel(self, channel: Channel) -> None:
        _cancel_timers(channel)
        for hook in channel._hook_methods("before_unsubscribe"):
            await self._call(channel, hook, "before_unsubscribe", apply=False)
        await self._call(channel, channel.unsubscribed, "unsubscribed", apply=False)
        for hook in channel._hook_methods("after_unsubscribe"):
            await self._call(channel, hook, "after_unsubscribe", apply=False)
        channel._ops.clear()
        self._leave_streams(channel)

    # -- helpers ----------------------------------------------------------------------

    async def _call(
        self, channel: Channel, fn: Any, where: str, *args: Any, apply: bool = True
    ) -> Any:
        result = None
        try:
            result = await call_user(self.cable.pool, fn, *args)
        except BaseException as exc:
            if _propagates(exc):
                raise
            await self._rescue(channel, exc, where)
        if apply and self.state == State.OPEN:
            try:
                await self._apply_streams(channel)
            except Exception as exc:
                await self._rescue(channel, exc, where)
        return result

    async def _rescue(self, channel: Channel, exc: BaseException, where: str) -> bool:
        """Give ``exc`` to the channel's ``rescue_from`` handler; True if one handled it."""
        handler = channel._rescuer_for(exc)
        if handler is not None:
            try:
                await call_user(self.cable.pool, handler, exc)
                return True
            except BaseException as again:
                if _propagates(again):
                    raise
                exc = again
        logger.error(
            "%s: %s#%s raised %s",
            self,
            type(channel).__name__,
            where,
            type(exc).__name__,
            exc_info=exc,
        )
        self.cable.report_error(
            exc, {"connection": self.connection, "channel": channel, "action": where}
        )
        return False

    async def _apply_streams(self, channel: Channel) -> None:
        """Apply the stream changes user code asked for; wait until new streams are live."""
        ops = channel._ops
        if not ops:
            return
        channel._ops = []
        hub = self.cable.hub
        streams = channel._streams
        pending: list[str] = []
        for op in ops:
            if op is None:
                for stream, callback in streams.items():
                    hub.remove(stream, channel, callback)
                streams.clear()
            elif isinstance(op, str):
                if op in streams:
                    hub.remove(op, channel, streams.pop(op))
            else:
                stream, callback = op
                if stream in streams:
                    hub.remove(stream, channel, streams.pop(stream))
                streams[stream] = callback
                if hub.add(stream, channel, callback):
                    pending.append(stream)
        for stream in pending:
            await hub.ensure_live(stream)

    def _leave_streams(self, channel: Channel) -> None:
        hub = self.cable.hub
        for stream, callback in channel._streams.items():
            hub.remove(stream, channel, callback)
        channel._streams.clear()

    def __repr__(self) -> str:
        who = self.connection.connection_identifier if self.connection is not None else ""
        client = self.request.client
        peer = f"{client[0]}:{client[1]}" if client else "?"
        return f"<connection {who or '-'} from {peer}>"


def _start_timers(channel: Channel) -> None:
    session = channel._session
    # cable.timer_clock: a seam for cablecar.testing's virtual clock (None: the loop).
    loop = session.cable.timer_clock or asyncio.get_running_loop()
    for name, every in type(channel)._timers:
        _schedule(loop, channel, session, name, every)


def _schedule(
    loop: asyncio.AbstractEventLoop, channel: Channel, session: Session, name: str, every: float
) -> None:
    def tick() -> None:
        if (
            session.state != State.OPEN
            or session.subscriptions.get(channel.identifier) is not channel
        ):
            return
        session.timer_tick(channel, name)
        _schedule(loop, channel, session, name, every)

    handles = channel._timer_handles
    handles[:] = [h for h in handles if not h.cancelled() and h.when() > loop.time()]
    handles.append(loop.call_later(every, tick))


def _cancel_timers(channel: Channel) -> None:
    for handle in channel._timer_handles:
        handle.cancel()
    channel._timer_handles.clear()


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


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


class _Filtered:
    """``cable.filter(data)`` for a log line, computed only if the line is emitted."""

    __slots__ = ("cable", "data")

    def __init__(self, cable: Cable, data: Any) -> None:
        self.cable = cable
        self.data = data

    def __str__(self) -> str:
        try:
            return _short(self.cable.filter(self.data))
        except RecursionError:
            return "<data nested too deeply to show>"
