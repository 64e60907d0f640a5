"""One run of a cable, from ``start()`` to ``stop()``: the loop, the pool, the live sessions.

:class:`~cablecar.Cable` is the application's face; this is what sessions, channels
and the hub use while it runs. A stopped cable drops its runtime and builds a new one
on the next ``start()``, so a cable can run again (one test after another, a restarted
app) without anything being reset by hand.

Invariants:

1. Everything here runs on the loop thread, except :meth:`Runtime.threadsafe`, the one
   way user code on a worker thread reaches the loop.
2. ``sessions`` holds every open socket; ``welcomed`` the ones that got ``welcome``.
   A session is in them from ``opened`` to ``closed``, exactly once.
3. Every task the runtime spawns is awaited or cancelled by :meth:`Runtime.shutdown`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import _json
from ._memory import HeapTrimmer
from ._remote import CONTROL_STREAM, identifier_key
from ._stats import Stats
from .history.base import pack
from .hub import Hub
from .protocol import DisconnectReason, frames

if TYPE_CHECKING:
    from ._subscription import Subscription
    from .cable import Cable, ErrorHook
    from .config import CableConfig
    from .connection import Connection
    from .history import HistoryStore
    from .longpoll import Polls
    from .pubsub import PubSub
    from .registry import ChannelRegistry
    from .session import Session

__all__ = ["WORKER_THREAD_PREFIX", "Runtime"]

logger = logging.getLogger("cablecar.cable")

#: Names of the worker threads that run plain ``def`` user code start with this.
WORKER_THREAD_PREFIX = "cablecar-worker"

#: Seconds between event-loop lag checks.
_LAG_EVERY = 1.0
#: Tasks can start eagerly (``asyncio.Task(..., eager_start=True)``, Python 3.12+).
_EAGER = sys.version_info >= (3, 12)

#: Seconds ``shutdown`` waits for subscribes in flight before closing the adapter.
_BROKER_GRACE = 1.0


class Runtime:
    """The live state of a started cable (see the module docstring)."""

    def __init__(
        self,
        cable: Cable,
        registry: ChannelRegistry,
        adapter: PubSub,
        store: HistoryStore | None = None,
    ) -> None:
        self.cable = cable
        # What the cable was configured with (fixed while it runs).
        self.config: CableConfig = cable.config
        self.connection_class: type[Connection] = cable.connection_class
        self.error_hooks: list[ErrorHook] = cable.error_hooks
        self.registry = registry
        self.adapter = adapter
        #: Stream history and resumable sessions (``history=True``), else ``None``.
        self.store = store
        self._dirty: dict[Session, bytes | None] = {}
        self._touch_handle: asyncio.TimerHandle | None = None
        #: Presence records of this process's connected sessions: (stream, sid).
        self._present: dict[tuple[str, str], None] = {}
        self._presence_handle: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.pool = ThreadPoolExecutor(
            self.config.worker_pool_size, thread_name_prefix=WORKER_THREAD_PREFIX
        )
        self.hub = Hub(adapter)
        self.sessions: dict[Session, None] = {}
        self.welcomed: dict[Session, None] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.started_at = time.time()
        #: Counters for ``/metrics``.
        self.stats = Stats()
        self._lag_handle: asyncio.TimerHandle | None = None
        self._snapshot_at = 0.0
        self.connections_total = 0
        self.stopping = False
        self._drained: asyncio.Event | None = None
        self._control: asyncio.Task[None] | None = None
        self._ping_handle: asyncio.TimerHandle | None = None
        self._trimmer = HeapTrimmer(self.loop, self._compact)
        #: Long-polling sessions (made on the first poll).
        self.polls: Polls | None = None
        #: Sessions whose ``connect()`` runs now, and the loop time it must end by.
        self._connecting: dict[Session, float] = {}
        self._connect_handle: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        if self.store is not None:
            await self.store.start()
            self._touch_handle = self.loop.call_later(
                self.config.sessions_ttl / 2, self._touch_sessions
            )
            self._presence_handle = self.loop.call_later(self._presence_tick, self._presence)
        await self.adapter.start(self.hub.deliver)
        # In the background: with the broker down, the server still starts and
        # serves; the control stream goes live once the adapter reconnects.
        self._control = self.spawn(self.hub.add_internal(CONTROL_STREAM, self._on_control))
        self._ping_handle = self.loop.call_later(self.config.ping_interval, self._ping)
        self._lag_handle = self.loop.call_later(_LAG_EVERY, self._lag, self.loop.time())

    def _lag(self, scheduled: float) -> None:
        # How late the loop ran a timer due now: busy loops delay every client.
        if self.stopping:
            return
        now = self.loop.time()
        lag = max(0.0, now - scheduled - _LAG_EVERY)
        self.stats.loop_lag = lag
        self.stats.loop_lag_max = max(self.stats.loop_lag_max, lag)
        self._lag_handle = self.loop.call_later(_LAG_EVERY, self._lag, now)
        from .metrics import SNAPSHOT_EVERY, write_snapshot

        directory = os.environ.get("CABLECAR_METRICS_DIR")
        if directory and now - self._snapshot_at >= SNAPSHOT_EVERY:
            self._snapshot_at = now
            try:
                write_snapshot(self.cable, directory)
            except OSError as exc:
                logger.debug("metrics snapshot not written: %s", exc)

    async def control_live(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until remote disconnects can reach this process."""
        control = self._control
        if control is not None and not control.done():
            await asyncio.wait([control], timeout=timeout)

    # -- services ------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], *, eager: bool = False) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the runtime owns (awaited or cancelled on stop).

        ``eager`` (Python 3.12+): the task runs now, in this call, up to its first
        suspension, and is already done if it never suspends (no scheduling at all).
        """
        if eager and _EAGER:
            task: asyncio.Task[Any] = asyncio.Task(coro, loop=self.loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        else:
            task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop: now when on the loop thread, else as soon as
        the loop can. The one thread boundary of the public API: calls from one worker
        thread keep their order, and land before the loop sees the end of the user
        call that made them."""
        if threading.get_ident() == self.loop_thread:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    # -- connect_timeout: one watch for every connect in flight, not a timer each -----------

    def watch_connect(self, session: Session) -> None:
        """``session`` runs ``connect()`` from now on: bound it by ``connect_timeout``."""
        self._connecting[session] = self.loop.time() + self.config.connect_timeout
        if self._connect_handle is None:
            self._connect_handle = self.loop.call_later(self._sweep_every(), self._sweep_connects)

    def unwatch_connect(self, session: Session) -> None:
        self._connecting.pop(session, None)

    def _sweep_every(self) -> float:
        # An overrun is seen at most this late: a tenth of the bound, 0.25 s at most.
        return min(0.25, self.config.connect_timeout / 10)

    def _sweep_connects(self) -> None:
        self._connect_handle = None
        now = self.loop.time()
        overran = [s for s, deadline in self._connecting.items() if deadline <= now]
        for session in overran:
            del self._connecting[session]
            session.connect_overran()
        if self._connecting:
            self._connect_handle = self.loop.call_later(self._sweep_every(), self._sweep_connects)

    def loop_time(self) -> float:
        return self.loop.time()

    def timer_clock(self) -> Any:
        """What ``periodically`` timers are scheduled on (``cable.timer_clock`` or the loop)."""
        return self.cable.timer_clock or self.loop

    def report_error(self, exc: BaseException, context: dict[str, Any]) -> None:
        """Pass an exception from user code to the ``on_error`` hooks."""
        for hook in list(self.error_hooks):
            try:
                hook(exc, context)
            except Exception:
                logger.exception("on_error hook %r raised", hook)

    # -- sessions ------------------------------------------------------------------------

    def opened(self, session: Session) -> None:
        self.sessions[session] = None
        self.connections_total += 1

    def welcomed_session(self, session: Session) -> None:
        self.welcomed[session] = None

    def closed(self, session: Session) -> None:
        self.sessions.pop(session, None)
        self.welcomed.pop(session, None)
        if not self.sessions and self._drained is not None:
            self._drained.set()
        self._trimmer.closed()

    def _compact(self) -> None:
        # Dicts and sets never shrink: after a wave, rebuild the emptied ones at their
        # present size (10,000 connections leave over 1 MB of empty tables).
        self.sessions = dict(self.sessions)
        self.welcomed = dict(self.welcomed)
        self.tasks = set(self.tasks)

    def _ping(self) -> None:
        if self.stopping:
            return
        cfg = self.config
        self._ping_handle = self.loop.call_later(cfg.ping_interval, self._ping)
        self.hub.send_to_all([s.sink for s in self.welcomed], frames.ping(int(time.time())))
        if cfg.pong_timeout is not None:
            # An extended-protocol client must say something (a pong at least) within
            # pong_timeout of each ping.
            silent_since = self.loop.time() - cfg.ping_interval - cfg.pong_timeout
            for session in list(self.welcomed):
                if session.ext and session.pongs and session.last_seen < silent_since:
                    logger.info("%s: no pong in %ss; disconnecting", session, cfg.pong_timeout)
                    session.close(DisconnectReason.NO_PONG, True)

    # -- presence ------------------------------------------------------------------------

    @property
    def _presence_tick(self) -> float:
        # Keepalive at a third of the TTL, sweep as often: a member of a dead node
        # leaves within presence_ttl plus a third of it.
        return max(0.2, self.config.presence_ttl / 3)

    @property
    def presence_records(self) -> int:
        """Presence records this process keeps alive."""
        return len(self._present)

    def presence_joined(self, session: Session, sub: Subscription) -> None:
        if sub.presence_stream is not None:
            self._present[(sub.presence_stream, session.presence_key)] = None

    def presence_left(self, session: Session, sub: Subscription) -> None:
        if sub.presence_stream is not None:
            self._present.pop((sub.presence_stream, session.presence_key), None)

    def presence_detached(self, session: Session) -> None:
        """The socket is gone: keep its members one last TTL (a quick reconnect or
        resume re-joins without churn), then let them expire."""
        records = []
        for sub in session.subscriptions.values():
            if sub.presence_id is not None and sub.presence_stream is not None:
                self.presence_left(session, sub)
                sub.presence_id = None  # unsubscribing at teardown must not leave
                records.append((sub.presence_stream, session.presence_key))
        if records and self.store is not None:
            self.spawn(self.store.presence_touch(records))

    async def presence_event(self, stream: str, message: bytes) -> None:
        """Broadcast a presence event (``join``/``leave``) to ``stream``'s subscribers:
        transient, typed ``presence`` for extended-protocol clients."""
        try:
            await self.adapter.publish(stream, pack(0, frames.PRESENCE_TYPE, None, message))
        except Exception as exc:
            logger.warning("presence event on %r not published: %s", stream, exc)

    def _presence(self) -> None:
        if self.stopping or self.store is None:
            return
        self._presence_handle = self.loop.call_later(self._presence_tick, self._presence)
        self.spawn(self._presence_round(list(self._present)))

    async def _presence_round(self, records: list[tuple[str, str]]) -> None:
        assert self.store is not None
        try:
            await self.store.presence_touch(records)
            for stream, pid in await self.store.presence_expire():
                await self.presence_event(stream, b'{"type":"leave","id":%s}' % _json.dumps(pid))
        except Exception as exc:
            logger.warning("presence keepalive failed: %s", exc)

    # -- resumable sessions ------------------------------------------------------------

    def save_session(self, session: Session, *, final: bool = False) -> None:
        """Save ``session``'s entry soon (changes of one loop iteration are batched);
        ``final``: the socket is closing, take the entry now, before it leaves its
        streams."""
        if self.store is None:
            return
        if not self._dirty:
            self.loop.call_soon(self._flush_sessions)
        self._dirty[session] = session.entry() if final else None

    def _flush_sessions(self) -> None:
        dirty, self._dirty = self._dirty, {}
        items = []
        for session, taken in dirty.items():
            entry = taken if taken is not None else session.entry()
            if session.sid is not None and entry is not None:
                items.append((session.sid, entry))
        if items and self.store is not None:
            self.spawn(self._save(items))

    async def _save(self, items: list[tuple[str, bytes]]) -> None:
        assert self.store is not None
        try:
            await self.store.save_sessions(items)
        except Exception as exc:
            logger.warning("could not save %d resumable sessions: %s", len(items), exc)

    def _touch_sessions(self) -> None:
        # Keep the entries of connected sessions alive (they expire sessions_ttl after
        # the last save).
        if self.stopping:
            return
        self._touch_handle = self.loop.call_later(
            self.config.sessions_ttl / 2, self._touch_sessions
        )
        for session in self.welcomed:
            if session.sid is not None:
                self.save_session(session)

    def _on_control(self, payload: bytes) -> None:
        try:
            command = _json.loads(payload)
            wanted = command["identifiers"]
            reconnect = bool(command.get("reconnect", True))
            if command.get("type") != "disconnect" or not isinstance(wanted, dict):
                raise ValueError("not a disconnect")
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed remote command on %s", CONTROL_STREAM)
            return
        for session in list(self.welcomed):
            connection = session.connection
            if connection is not None and all(
                identifier_key(getattr(connection, name, None)) == value
                for name, value in wanted.items()
            ):
                logger.info("%s: remote disconnect", session)
                session.close(DisconnectReason.REMOTE, reconnect)

    # -- shutdown ------------------------------------------------------------------------

    async def shutdown(self, timeout: float) -> None:
        """Every client gets ``server_restart``; actions in flight get ``timeout``
        seconds; then the adapter closes and the pool shuts down."""
        self.stopping = True
        if self._ping_handle is not None:
            self._ping_handle.cancel()
        if self._control is not None and not self._control.done():
            self._control.cancel()  # the broker never came up: nothing to wait for
        self._trimmer.cancel()
        if self._touch_handle is not None:
            self._touch_handle.cancel()
        if self._presence_handle is not None:
            self._presence_handle.cancel()
        if self._lag_handle is not None:
            self._lag_handle.cancel()
        for session in list(self.sessions):
            session.close(DisconnectReason.SERVER_RESTART, True)
        deadline = time.monotonic() + timeout
        if self.sessions:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                logger.warning("%d connections still open after %ss", len(self.sessions), timeout)
        pending = [t for t in self.tasks if not t.done()]
        adapter_closed = False
        if pending and self.hub.subscribes_in_flight:
            # Every client is gone, but a subscribe may be waiting for a broker that is
            # down, which would hold the shutdown for the whole timeout. Give the broker
            # a moment, then close the adapter: the waiting subscribes end (AdapterError)
            # and their sessions run their callbacks.
            _done, still = await asyncio.wait(
                pending, timeout=min(_BROKER_GRACE, max(0.0, deadline - time.monotonic()))
            )
            if still and self.hub.subscribes_in_flight:
                logger.warning(
                    "closing the pub/sub adapter: %d subscribes still wait for it",
                    self.hub.subscribes_in_flight,
                )
                await self.adapter.close()
                adapter_closed = True
            pending = [t for t in still if not t.done()]
        if pending:
            _done, still = await asyncio.wait(
                pending, timeout=max(0.0, deadline - time.monotonic())
            )
            for task in still:
                task.cancel()
        await self.hub.close()
        if self._dirty:
            self._flush_sessions()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1.0)
        if not adapter_closed:
            await self.adapter.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def abandon(self) -> None:
        """The loop this runtime ran on is gone without a ``stop()``: release the pool."""
        self.stopping = True
        self.pool.shutdown(wait=False, cancel_futures=True)
