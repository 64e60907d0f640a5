"""The hub: which local subscriptions listen to which stream, and the fan-out.

Invariants:

1. A stream is subscribed in the adapter while, and only while, it has at least one
   local subscriber (reference counting); adapter calls for one stream are
   serialized by a per-stream lock, so a quick unsubscribe/subscribe cannot leave
   the adapter in the wrong state.
2. ``deliver`` never awaits and never changes membership: sinks only schedule their
   own removal (closing is deferred to the loop), so iterating the groups is safe.
3. Fast-path members are grouped by ``Subscription.key`` = (identifier JSON, sink kind,
   extended protocol or not): one data frame and one transport frame per group, the
   same object written to every member. A broadcast's position fields (``history``)
   go only to extended-protocol groups; plain Action Cable clients see what they
   always did.
4. A subscription whose backlog is being replayed is *held*: its deliveries go to the
   subscription's buffer instead of its socket, and the subscription sends them after
   the backlog, skipping offsets the backlog already carried.
5. A broadcast that excludes a socket (``exclude_socket``) skips the one sink
   registered under that sid (or any sid it was restored from).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _json
from ._stats import LATENCY_BUCKETS, ActionStats
from .history.base import ENVELOPE, unpack
from .protocol.frames import data_frame, positioned_frame
from .pubsub.base import PubSub

if TYPE_CHECKING:
    from ._subscription import Subscription
    from .channel import StreamCallback
    from .transport import Sink

__all__ = ["Hub"]

logger = logging.getLogger("cablecar.hub")

_GroupKey = tuple[bytes, Callable[[bytes], Any], bool]


class _StreamLock:
    """Serializes adapter calls for one stream; dropped when no caller waits."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Hub:
    """Fan-out of broadcasts to this process's subscribers."""

    def __init__(self, adapter: PubSub) -> None:
        self.adapter = adapter
        self._groups: dict[str, dict[_GroupKey, dict[Sink, None]]] = {}
        self._slow: dict[str, dict[Subscription, StreamCallback]] = {}
        self._counts: dict[str, int] = {}
        self._live: set[str] = set()
        self._locks: dict[str, _StreamLock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._system: dict[str, Callable[[bytes], None]] = {}
        self._held: dict[str, dict[Subscription, None]] = {}
        #: Sinks by session id, for ``exclude_socket``.
        self.sids: dict[str, Sink] = {}
        #: Adapter subscribes awaiting the broker's answer right now.
        self.subscribes_in_flight = 0
        #: Broadcast deliveries written (fast path) since start, and their JSON bytes.
        self.deliveries = 0
        self.bytes_out = 0
        #: Seconds from ``cable.broadcast`` to the last socket write, sampled broadcasts.
        self.latency = ActionStats(LATENCY_BUCKETS)

    # -- delivery (called by the adapter) --------------------------------------------------

    def deliver(self, stream: str, payload: bytes) -> None:
        """Write ``payload`` to every local subscriber of ``stream``.

        Hot path: no JSON work, no awaits, one frame per group, nothing allocated
        per recipient.
        """
        offset = 0
        position = b""
        sent = 0.0
        skip: Sink | None = None
        if payload and payload[0] == ENVELOPE:
            offset, position, exclude, sent, payload = unpack(payload)
            if exclude is not None:
                skip = self.sids.get(exclude)
        groups = self._groups.get(stream)
        if groups is not None:
            n = 0
            size = 0
            for (identifier_json, prepare, ext), sinks in groups.items():
                if ext and position:
                    frame = positioned_frame(identifier_json, payload, position)
                else:
                    frame = data_frame(identifier_json, payload)
                wire = prepare(frame)
                if skip is None:
                    for sink in sinks:
                        sink.send_prepared(wire)
                    count = len(sinks)
                else:
                    count = 0
                    for sink in sinks:
                        if sink is not skip:
                            sink.send_prepared(wire)
                            count += 1
                n += count
                size += count * len(frame)
            self.deliveries += n
            self.bytes_out += size
            if sent:  # a sampled broadcast: how long from publish to the last write
                self.latency.observe(max(0.0, time.time() - sent))
        held = self._held.get(stream)
        if held:
            for sub in list(held):
                if sub.sink is not skip:
                    sub.buffer(stream, offset, payload, position)
        slow = self._slow.get(stream)
        if slow:
            try:
                message = _json.loads(payload)
            except ValueError:
                logger.warning(
                    "broadcast on %r is not JSON; custom stream callbacks skipped", stream
                )
                message = None
            else:
                for sub, callback in list(slow.items()):
                    sub.session.stream_callback(sub, callback, message)
        system = self._system.get(stream)
        if system is not None:
            system(payload)

    # -- membership ------------------------------------------------------------------------

    def add(
        self,
        stream: str,
        sub: Subscription,
        callback: StreamCallback | None,
        *,
        held: bool = False,
    ) -> bool:
        """Add a subscriber (``held``: its broadcasts go to its buffer until
        :meth:`release`); True when the stream still has to become live (await
        :meth:`ensure_live`)."""
        if callback is not None:
            self._slow.setdefault(stream, {})[sub] = callback
        elif held:
            self._held.setdefault(stream, {})[sub] = None
        else:
            self._groups.setdefault(stream, {}).setdefault(sub.key, {})[sub.sink] = None
        self._counts[stream] = self._counts.get(stream, 0) + 1
        return stream not in self._live

    def hold(self, stream: str, sub: Subscription) -> None:
        """Send ``stream``'s broadcasts for ``sub`` to its buffer (a backlog is coming)."""
        groups = self._groups.get(stream)
        if groups is None:
            return
        sinks = groups.get(sub.key)
        if sinks is not None and sinks.pop(sub.sink, 0) is None:
            if not sinks:
                del groups[sub.key]
                if not groups:
                    del self._groups[stream]
            self._held.setdefault(stream, {})[sub] = None

    def release(self, stream: str, sub: Subscription) -> None:
        """Deliver ``stream`` to ``sub``'s socket again (undoes :meth:`hold`)."""
        held = self._held.get(stream)
        if held is not None and held.pop(sub, 0) is None:
            if not held:
                del self._held[stream]
            self._groups.setdefault(stream, {}).setdefault(sub.key, {})[sub.sink] = None

    def remove(self, stream: str, sub: Subscription, callback: StreamCallback | None) -> None:
        """Remove a subscriber; the last one out unsubscribes the adapter (in the background)."""
        if callback is None:
            held = self._held.get(stream)
            if held is not None and held.pop(sub, 0) is None:
                if not held:
                    del self._held[stream]
                self._uncount(stream)
                return
            groups = self._groups.get(stream)
            if groups is not None:
                key = sub.key
                sinks = groups.get(key)
                if sinks is not None and sinks.pop(sub.sink, 0) is None:
                    if not sinks:
                        del groups[key]
                        if not groups:
                            del self._groups[stream]
                else:
                    return
            else:
                return
        else:
            slow = self._slow.get(stream)
            if slow is None or slow.pop(sub, None) is None:
                return
            if not slow:
                del self._slow[stream]
        self._uncount(stream)

    def _uncount(self, stream: str) -> None:
        count = self._counts[stream] - 1
        if count:
            self._counts[stream] = count
        else:
            del self._counts[stream]
            self._spawn(self._sync(stream))

    async def ensure_live(self, stream: str) -> None:
        """Return once ``stream`` is subscribed in the adapter (if it still has subscribers)."""
        if stream not in self._live:
            await self._sync(stream)

    def send_to_all(self, sinks: list[Sink], data: bytes) -> None:
        """Write one frame to many sockets: prepared once per sink kind (pings)."""
        wires: dict[Callable[[bytes], Any], Any] = {}
        for sink in sinks:
            prepare = type(sink).prepare
            wire = wires.get(prepare)
            if wire is None:
                wire = wires[prepare] = prepare(data)
            sink.send_prepared(wire)

    async def add_internal(self, stream: str, handler: Callable[[bytes], None]) -> None:
        """Route a stream to an internal handler (the remote-control stream)."""
        self._system[stream] = handler
        self._counts[stream] = self._counts.get(stream, 0) + 1
        await self._sync(stream)

    async def _sync(self, stream: str) -> None:
        entry = self._locks.get(stream)
        if entry is None:
            entry = self._locks[stream] = _StreamLock()
        entry.users += 1
        try:
            async with entry.lock:
                wanted = stream in self._counts
                if wanted and stream not in self._live:
                    self.subscribes_in_flight += 1
                    try:
                        await self.adapter.subscribe(stream)
                    finally:
                        self.subscribes_in_flight -= 1
                    self._live.add(stream)
                elif not wanted and stream in self._live:
                    self._live.discard(stream)
                    await self.adapter.unsubscribe(stream)
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[stream]

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("pub/sub unsubscribe failed", exc_info=task.exception())

    # -- introspection ---------------------------------------------------------------------

    @property
    def streams(self) -> list[str]:
        """Streams with local subscribers."""
        return [s for s in self._counts if s not in self._system]

    def subscriber_count(self, stream: str) -> int:
        """Local subscribers of ``stream``."""
        return self._counts.get(stream, 0)

    async def close(self) -> None:
        """Wait for background adapter calls to finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
