"""One subscription's runtime: its streams, pending stream changes, timers, rejection.

The user's :class:`~cablecar.Channel` instance is the subscription's *application*
face; this object is its *runtime* face (as Phoenix separates ``Phoenix.Channel`` from
``Phoenix.Channel.Server``). The channel holds it in one private slot and forwards
its public API here; the session and the hub talk to this object only, never to the
channel's attributes, so nothing a user names on a channel can break the server.

Invariants:

1. Every method runs on the event loop thread. Channel methods that user code may
   call from the worker pool reach it through ``Runtime.threadsafe``, which keeps
   their order relative to the end of the user call that made them.
2. Stream changes asked for by user code are recorded (``pending``) and applied by
   the session once the user call returns (:meth:`apply`), in the order asked; a new
   stream is live in the adapter before :meth:`apply` returns.
3. The identifier is encoded to JSON once, at subscribe; the hub groups fast-path
   members by ``key`` = (that JSON, the sink's ``prepare``).
4. Once :meth:`leave` ran, the subscription is in no hub group and has no timer.
5. While ``holding`` (a backlog is being replayed), new streams join the hub *held*:
   their broadcasts wait in ``buffered`` (at most ``_MAX_BUFFERED``: past it the
   client counts as too slow); :meth:`release` sends them after the backlog, skipping
   offsets the backlog already carried, so the client sees no duplicate and no gap.
6. A broadcast is stored before it is published, so a backlog can carry an entry whose
   live copy has not reached this process yet. After :meth:`release`, such a stream
   stays held (``waiting``) until its live broadcasts reach the backlog's last offset
   (or ``_CATCH_UP`` seconds): what arrives meanwhile goes straight to the client,
   offsets the backlog carried dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _json, instrumentation
from ._logging import short
from .protocol import frames

if TYPE_CHECKING:
    from .channel import Channel, ChannelSpec, StreamCallback
    from .hub import Hub
    from .session import Session

__all__ = ["AddStream", "RemoveStream", "StopAll", "StreamOp", "Subscription"]

logger = logging.getLogger("cablecar.channel")

#: Broadcasts a held subscription may buffer during a replay.
_MAX_BUFFERED = 10_000

#: Seconds a replayed stream waits for its live broadcasts to catch up with the backlog
#: (invariant 6) before it is delivered live again regardless.
_CATCH_UP = 2.0


@dataclass(frozen=True, slots=True)
class AddStream:
    """``stream_from(stream, callback)``: listen to ``stream`` (replacing a callback)."""

    stream: str
    callback: StreamCallback | None


@dataclass(frozen=True, slots=True)
class RemoveStream:
    """``stop_stream_from(stream)``."""

    stream: str


@dataclass(frozen=True, slots=True)
class StopAll:
    """``stop_all_streams()``."""


StreamOp = AddStream | RemoveStream | StopAll
_STOP_ALL = StopAll()


class Subscription:
    """The server side of one ``subscribe``: owned by a :class:`~cablecar.session.Session`."""

    __slots__ = (
        "buffered",
        "catch_up",
        "channel",
        "held",
        "holding",
        "identifier",
        "identifier_json",
        "join_on_confirm",
        "key",
        "pending",
        "presence_id",
        "presence_stream",
        "rejected",
        "session",
        "sink",
        "spec",
        "streams",
        "timers",
        "waiting",
        "whisper_stream",
    )

    def __init__(
        self,
        session: Session,
        cls: type[Channel],
        spec: ChannelSpec,
        identifier: str,
        identifier_json: bytes,
        params: dict[str, Any],
    ) -> None:
        self.session = session
        self.sink = session.sink
        self.spec = spec
        self.identifier = identifier
        self.identifier_json = identifier_json
        #: The hub's group for fast-path broadcasts: one frame per (identifier, sink kind).
        self.key = (identifier_json, type(session.sink).prepare, session.ext)
        #: Streams listened to, in the order added, with their callbacks (None: fast path).
        self.streams: dict[str, StreamCallback | None] = {}
        self.pending: list[StreamOp] = []
        self.rejected = False
        self.timers: list[asyncio.TimerHandle] = []
        #: New streams join held (a backlog replay is coming); see :meth:`release`.
        #: Where ``whisper`` commands go, and the presence stream (``stream_from`` flags).
        self.whisper_stream: str | None = None
        self.presence_stream: str | None = None
        #: The presence member id this subscription joined as, if any.
        self.presence_id: str | None = None
        #: A ``join_presence`` made in ``subscribed``: done right after the confirmation.
        self.join_on_confirm: tuple[str, Any] | None = None
        self.holding = False
        self.held: set[str] = set()
        self.buffered: list[tuple[str, int, bytes, bytes]] = []
        #: Replayed streams still held after :meth:`release`: the last offset the
        #: backlog carried, which live broadcasts have not reached yet (invariant 6).
        self.waiting: dict[str, int] = {}
        self.catch_up: asyncio.TimerHandle | None = None
        self.channel: Channel = cls(self, params)

    # -- what channel code asks for (on the loop thread) -------------------------------

    def add_stream(
        self,
        stream: str,
        callback: StreamCallback | None,
        whisper: bool = False,
        presence: bool = False,
    ) -> None:
        self.pending.append(AddStream(stream, callback))
        if whisper:
            self.whisper_stream = stream
        if presence:
            self.presence_stream = stream

    def remove_stream(self, stream: str) -> None:
        self.pending.append(RemoveStream(stream))

    def stop_all(self) -> None:
        self.pending.append(_STOP_ALL)

    def reject(self) -> None:
        self.rejected = True

    def transmit(self, payload: bytes) -> None:
        """Send ``{"identifier": ..., "message": <payload>}`` to this subscriber."""
        self.session.send(frames.data_frame(self.identifier_json, payload))

    def transmit_message(self, message: Any) -> None:
        """:meth:`transmit` ``message`` encoded to JSON."""
        self.transmit(_json.dumps(message))

    def transmit_from_channel(self, payload: bytes) -> None:
        """``Channel.transmit``: the frame, a log line, the ``transmit`` event."""
        self.transmit(payload)
        channel = type(self.channel).__name__
        if logger.isEnabledFor(logging.DEBUG):  # Rails logs transmissions at DEBUG too
            logger.debug("%s: %s transmitting %s", self.session, channel, short(payload))
        if instrumentation.active("transmit"):
            instrumentation.emit("transmit", {"channel": channel, "data": payload, "via": None})

    @property
    def active(self) -> bool:
        """Whether this is still the session's live subscription for its identifier."""
        return self.session.is_active(self)

    # -- applied by the session ----------------------------------------------------------

    async def apply(self, hub: Hub) -> None:
        """Apply the stream changes asked for; wait until new streams are live."""
        ops = self.pending
        if not ops:
            return
        self.pending = []
        streams = self.streams
        live: list[str] = []
        for op in ops:
            if isinstance(op, AddStream):
                if op.stream in streams:
                    hub.remove(op.stream, self, streams.pop(op.stream))
                streams[op.stream] = op.callback
                held = self.holding and op.callback is None
                if held:
                    self.held.add(op.stream)
                logger.info(
                    "%s: %s is streaming from %s",
                    self.session,
                    type(self.channel).__name__,
                    op.stream,
                )
                if hub.add(op.stream, self, op.callback, held=held):
                    live.append(op.stream)
            elif isinstance(op, RemoveStream):
                if op.stream in streams:
                    hub.remove(op.stream, self, streams.pop(op.stream))
                    logger.info(
                        "%s: %s stopped streaming from %s",
                        self.session,
                        type(self.channel).__name__,
                        op.stream,
                    )
            else:
                self.leave_streams(hub)
        for stream in live:
            await hub.ensure_live(stream)

    def leave_streams(self, hub: Hub) -> None:
        """Leave every stream at once (no broadcast reaches this subscriber after)."""
        for stream, callback in self.streams.items():
            hub.remove(stream, self, callback)
        self.streams.clear()
        self.held.clear()
        self._stop_timer()
        self.buffered.clear()

    # -- replay (history) ------------------------------------------------------------------

    def hold(self, hub: Hub) -> None:
        """Buffer the broadcasts of every fast-path stream from now on (a backlog is
        about to be read), and of streams added later, until :meth:`release`."""
        self.holding = True
        self._stop_timer()
        for stream, callback in self.streams.items():
            if callback is None and stream not in self.held:
                hub.hold(stream, self)
                self.held.add(stream)

    def buffer(self, stream: str, offset: int, payload: bytes, position: bytes) -> None:
        """A broadcast arrived while held (called by the hub)."""
        if not self.holding:  # released, waiting for live to catch up (invariant 6)
            mark = self.waiting.get(stream)
            if mark is not None:
                if offset and offset <= mark:  # the backlog carried it
                    if offset == mark:
                        self._caught_up(stream)
                    return
                self._caught_up(stream)
            self.send_data(payload, position)
            return
        self.buffered.append((stream, offset, payload, position))
        if len(self.buffered) > _MAX_BUFFERED:
            self.session.too_slow()

    def release(self, hub: Hub, sent: dict[str, int]) -> None:
        """Send what was buffered, except offsets at or below ``sent[stream]`` (the
        backlog carried them), then deliver live again: at once for a stream whose live
        broadcasts have reached ``sent[stream]``, else once they do (invariant 6)."""
        self.holding = False
        buffered, self.buffered = self.buffered, []
        latest: dict[str, int] = {}
        for stream, offset, payload, position in buffered:
            latest[stream] = max(latest.get(stream, 0), offset)
            if offset and offset <= sent.get(stream, 0):
                continue
            self.send_data(payload, position)
        for stream in list(self.held):
            mark = sent.get(stream, 0)
            if mark and latest.get(stream, 0) < mark:
                self.waiting[stream] = mark
            else:
                self.held.discard(stream)
                hub.release(stream, self)
        if self.waiting:
            self.catch_up = asyncio.get_running_loop().call_later(_CATCH_UP, self._stop_waiting)

    def _stop_timer(self) -> None:
        # A new replay (or the end) makes the previous one's catch-up moot.
        self.waiting.clear()
        if self.catch_up is not None:
            self.catch_up.cancel()
            self.catch_up = None

    def _caught_up(self, stream: str) -> None:
        # Called from the hub's delivery loop, which must not change membership:
        # the stream joins its group on the next loop iteration.
        del self.waiting[stream]
        asyncio.get_running_loop().call_soon(self._unhold, stream)

    def _unhold(self, stream: str) -> None:
        if self.holding or stream in self.waiting or stream not in self.held:
            return  # held again for another replay, or already left
        self.held.discard(stream)
        self.session.runtime.hub.release(stream, self)

    def _stop_waiting(self) -> None:
        self.catch_up = None
        for stream in list(self.waiting):
            del self.waiting[stream]
            self._unhold(stream)

    def send_data(self, payload: bytes, position: bytes) -> None:
        """A broadcast to this subscriber alone (backlog or buffered)."""
        if position and self.session.ext:
            self.session.send(frames.positioned_frame(self.identifier_json, payload, position))
        else:
            self.session.send(frames.data_frame(self.identifier_json, payload))

    def leave(self, hub: Hub) -> None:
        """End: no streams, no timers, no pending changes."""
        self.holding = False
        self.cancel_timers()
        self.pending.clear()
        self.leave_streams(hub)

    def stream_of(self, callback: StreamCallback) -> str:
        """The stream a custom callback serves (for log lines)."""
        return next((s for s, cb in self.streams.items() if cb is callback), "?")

    # -- timers -------------------------------------------------------------------------

    def start_timers(self, clock: Any) -> None:
        """Schedule the channel's ``periodically`` methods on ``clock`` (the loop, or a
        virtual clock with ``time()`` and ``call_later()``)."""
        for name, every in self.spec.timers:
            self._schedule(clock, name, every)

    def _schedule(self, clock: Any, name: str, every: float) -> None:
        def tick() -> None:
            if not self.active:
                return
            self.session.timer_tick(self, name)
            self._schedule(clock, name, every)

        handles = self.timers
        now = clock.time()
        handles[:] = [h for h in handles if not h.cancelled() and h.when() > now]
        handles.append(clock.call_later(every, tick))

    def cancel_timers(self) -> None:
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()

    # -- callbacks ------------------------------------------------------------------------

    def hooks(self, kind: str) -> list[Callable[..., Awaitable[Any] | Any]]:
        """The channel's bound hook methods of ``kind`` (``before_subscribe``...), in order."""
        channel = self.channel
        return [getattr(channel, name) for name in self.spec.hooks.get(kind, ())]

    def rescuer_for(self, exc: BaseException) -> Callable[..., Any] | None:
        """The channel's ``rescue_from`` handler for ``exc``, if any."""
        for types, name in self.spec.rescuers:
            if isinstance(exc, types):
                return getattr(self.channel, name)  # type: ignore[no-any-return]
        return None

    def __repr__(self) -> str:
        return f"<Subscription {self.identifier}>"
