"""The ``Cable``: channel registry, live connections, broadcasting, lifecycle.

Example::

    from cablecar import Cable, Channel, Connection

    class ChatChannel(Channel):
        async def subscribed(self):
            self.stream_from(f"chat_{self.params['room']}")

    cable = Cable(connection=Connection, channels=[ChatChannel])
    # cablecar serve app:cable            (standalone server)
    # app.add_middleware(CableMiddleware, cable=cable)   (inside FastAPI/Starlette; see docs)
    # await cable.broadcast("chat_1", {"body": "hi"})   (from any code in the process)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import _json, _memory
from ._remote import CONTROL_STREAM, RemoteConnections, identifier_key
from .channel import Channel
from .config import CableConfig
from .connection import Connection
from .errors import ConfigurationError
from .http import Request
from .protocol import DisconnectReason, frames
from .pubsub import PubSub, adapter_from_url
from .session import Session
from .hub import Hub

if TYPE_CHECKING:
    from .transports.asgi import ASGIApp

__all__ = ["Cable", "ErrorHook"]

logger = logging.getLogger("cablecar.cable")

#: ``on_error(exc, context)``: context has ``connection`` and, for channel code,
#: ``channel`` and ``action``.
ErrorHook = Callable[[BaseException, dict[str, Any]], Any]

#: Seconds ``Cable.stop`` waits for subscribes in flight before closing the adapter.
_BROKER_GRACE = 1.0

#: Nesting depth past which ``Cable.filter`` elides a value (a client's JSON may nest
#: deeper than Python's recursion limit).
_FILTER_DEPTH = 32

#: Connections that must close before the heap is trimmed (see ``_memory``), and the
#: seconds without a close after which it is.
_TRIM_AFTER = 512
_TRIM_QUIET = 2.0

Origins = str | re.Pattern[str] | Iterable[str | re.Pattern[str]] | None


class Cable:
    """An Action Cable server: channels, connections and streams.

    Args:
        connection: the application's :class:`~cablecar.Connection` subclass.
        channels: the channel classes clients may subscribe to. A list registers each
            under its class name (what clients send as ``channel``); a mapping
            ``{"Admin::NoticesChannel": NoticesChannel}`` chooses the names.
        pubsub: the adapter, as a URL (``"memory://"``, the default;
            ``"redis://..."``, ``"postgresql://..."``, ``"nats://..."``) or an instance.
        allowed_origins: browsers' ``Origin`` check. ``None`` (default) allows the
            same origin as the request's ``Host`` only; a list of strings and
            compiled regexes allows those too; ``"*"`` turns the check off. Requests
            without an ``Origin`` header (non-browser clients) are always allowed.
        channel_prefix: prefix for stream names in the pub/sub service.
        on_error: hooks called with ``(exception, context)`` when user code raises.
        config: a :class:`~cablecar.CableConfig`; keyword ``settings`` override fields.
    """

    def __init__(
        self,
        connection: type[Connection] = Connection,
        channels: Iterable[type[Channel]] | Mapping[str, type[Channel]] = (),
        pubsub: str | PubSub = "memory://",
        allowed_origins: Origins = None,
        *,
        channel_prefix: str | None = None,
        on_error: ErrorHook | Iterable[ErrorHook] | None = None,
        config: CableConfig | None = None,
        **settings: Any,
    ) -> None:
        if not (isinstance(connection, type) and issubclass(connection, Connection)):
            raise ConfigurationError(f"connection must be a Connection subclass: {connection!r}")
        self.connection_class = connection
        self.config = _make_config(config, settings)
        self._channels: dict[str, type[Channel]] = {}
        items = (
            channels.items()
            if isinstance(channels, Mapping)
            else ((c.__name__, c) for c in channels)
        )
        for name, cls in items:
            self.register(cls, name)
        self.pubsub: PubSub = (
            adapter_from_url(pubsub, channel_prefix=channel_prefix)
            if isinstance(pubsub, str)
            else pubsub
        )
        #: The adapter's URL without user, password or query (it is logged).
        self.pubsub_url = redact_url(pubsub) if isinstance(pubsub, str) else type(pubsub).__name__
        self.allowed_origins = allowed_origins
        self._origin_any, self._origins = _compile_origins(allowed_origins)
        self._error_hooks: list[ErrorHook] = (
            [] if on_error is None else [on_error] if callable(on_error) else list(on_error)
        )
        self.hub = Hub(self.pubsub)
        #: ``remote_connections.where(current_user=u).disconnect(reconnect=False)``:
        #: closes matching connections on every process sharing the adapter.
        self.remote_connections = RemoteConnections(self._publish)
        self.pool: ThreadPoolExecutor | None = None
        self.loop_thread: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "new"
        self._start_lock: asyncio.Lock | None = None
        self._sessions: dict[Session, None] = {}  # every open socket
        self._welcomed: dict[Session, None] = {}  # sockets that got welcome
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ping_handle: asyncio.TimerHandle | None = None
        #: Schedules ``periodically`` timers: anything with the event loop's ``time()``
        #: and ``call_later()``; ``None`` (default) is the running loop. A seam for
        #: ``cablecar.testing``, whose virtual clock advances time without sleeping.
        self.timer_clock: Any = None
        self._drained: asyncio.Event | None = None
        self._control: asyncio.Task[None] | None = None
        self._trim = _memory.trimmer()
        self._closed_since_trim = 0
        self._trim_handle: asyncio.TimerHandle | None = None
        self._last_close = 0.0
        self.started_at: float | None = None
        self.connections_total = 0
        self.broadcasts_total = 0

    # -- registry -----------------------------------------------------------------------

    def register(self, channel: type[Channel], name: str | None = None) -> None:
        """Register a channel class under ``name`` (default: its class name)."""
        if not (isinstance(channel, type) and issubclass(channel, Channel)) or channel is Channel:
            raise ConfigurationError(f"not a Channel subclass: {channel!r}")
        self._channels[name or channel.__name__] = channel
        channel._cable_ref = self

    def channel_class(self, name: str) -> type[Channel] | None:
        """The channel class registered under ``name``; nothing is imported or reflected."""
        return self._channels.get(name)

    @property
    def channels(self) -> dict[str, type[Channel]]:
        """Registered channels by name."""
        return dict(self._channels)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the adapter and start pinging. Idempotent; transports call it."""
        if self._state == "started":
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._state == "started":
                return
            if self._state == "stopped":
                raise RuntimeError("a stopped Cable cannot be started again")
            self._loop = asyncio.get_running_loop()
            self.loop_thread = threading.get_ident()
            self.pool = ThreadPoolExecutor(
                self.config.worker_pool_size, thread_name_prefix="cablecar"
            )
            await self.pubsub.start(self.hub.deliver)
            # In the background: with the broker down, the server still starts and
            # serves; the control stream goes live once the adapter reconnects.
            self._control = self.spawn(self.hub.add_system(CONTROL_STREAM, self._on_control))
            self._ping_handle = self._loop.call_later(self.config.ping_interval, self._ping)
            self.started_at = time.time()
            self._state = "started"
            logger.info(
                "cable started (pub/sub %s, %d channels)", self.pubsub_url, len(self._channels)
            )

    async def stop(self, *, timeout: float | None = None) -> None:
        """Graceful shutdown: every client gets ``disconnect`` reason ``server_restart``
        with ``reconnect: true``; actions in flight get up to ``timeout`` seconds
        (``config.shutdown_timeout``); then the adapter closes.
        """
        if self._state != "started":
            self._state = "stopped"
            return
        self._state = "stopping"
        if self._ping_handle is not None:
            self._ping_handle.cancel()
        if self._control is not None and not self._control.done():
            self._control.cancel()  # the broker never came up: nothing to wait for
        if self._trim_handle is not None:
            self._trim_handle.cancel()
        for session in list(self._sessions):
            session.close(DisconnectReason.SERVER_RESTART, True)
        limit = self.config.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        if self._sessions:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), limit)
            except TimeoutError:
                logger.warning("%d connections still open after %ss", len(self._sessions), limit)
        pending = [t for t in self._tasks if not t.done()]
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
                await self.pubsub.close()
                adapter_closed = True
            pending = [t for t in still if not t.done()]
        if pending:
            _done, still = await asyncio.wait(
                pending, timeout=max(0.0, deadline - time.monotonic())
            )
            for task in still:
                task.cancel()
        await self.hub.close()
        if not adapter_closed:
            await self.pubsub.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self._state = "stopped"
        logger.info("cable stopped")

    @property
    def running(self) -> bool:
        """Whether the cable is started and not stopping."""
        return self._state == "started"

    async def __aenter__(self) -> Cable:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- broadcasting -------------------------------------------------------------------

    async def broadcast(self, stream: str, message: Any) -> None:
        """Send ``message`` to every subscriber of ``stream``, in every process.

        The message is encoded to JSON once; subscribers receive
        ``{"identifier": <theirs>, "message": <message>}``.
        """
        payload = _json.dumps(message)
        self.broadcasts_total += 1
        await self.pubsub.publish(stream, payload)

    async def broadcast_to(self, channel: type[Channel], model: Any, message: Any) -> None:
        """``broadcast(channel.broadcasting_for(model), message)``."""
        await self.broadcast(channel.broadcasting_for(model), message)

    def broadcast_sync(self, stream: str, message: Any, timeout: float = 10.0) -> None:
        """Broadcast from a thread that is not the cable's event loop (plain ``def``
        channel methods, WSGI code in the same process).

        Raises:
            RuntimeError: called on the event loop (use ``await cable.broadcast``), or
                the cable is not running.
        """
        loop = self._loop
        if loop is None or not self.running:
            raise RuntimeError("the cable is not running")
        if threading.get_ident() == self.loop_thread:
            raise RuntimeError("broadcast_sync() on the event loop: use 'await cable.broadcast()'")
        asyncio.run_coroutine_threadsafe(self.broadcast(stream, message), loop).result(timeout)

    async def _publish(self, stream: str, payload: bytes) -> None:
        await self.pubsub.publish(stream, payload)

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
        for session in list(self._welcomed):
            connection = session.connection
            if connection is not None and all(
                identifier_key(getattr(connection, name, None)) == value
                for name, value in wanted.items()
            ):
                logger.info("%s: remote disconnect", session)
                session.close(DisconnectReason.REMOTE, reconnect)

    # -- connections ----------------------------------------------------------------------

    @property
    def connections(self) -> list[Connection]:
        """This process's connections that completed ``connect``."""
        return [s.connection for s in self._welcomed if s.connection is not None]

    def statistics(self) -> dict[str, Any]:
        """Live figures of this process (also served at the health path)."""
        return {
            "status": "ok" if self.running else self._state,
            "connections": len(self._welcomed),
            "sockets": len(self._sessions),
            "connections_total": self.connections_total,
            "subscriptions": sum(len(s.subscriptions) for s in self._welcomed),
            "streams": len(self.hub.streams),
            "broadcasts_total": self.broadcasts_total,
            "deliveries_total": self.hub.deliveries,
            "uptime": 0.0 if self.started_at is None else round(time.time() - self.started_at, 3),
            "pubsub": self.pubsub_url
            if "://" not in self.pubsub_url
            else self.pubsub_url.split("://")[0],
        }

    def open_connections_statistics(self) -> list[dict[str, Any]]:
        """``statistics()`` of every connection, as Rails' method of the same name."""
        return [c.statistics() for c in self.connections]

    def check_origin(self, request: Request) -> bool:
        """Whether a browser's ``Origin`` may open a connection (see ``allowed_origins``)."""
        origin = request.headers.get("origin")
        if origin is None or self._origin_any:
            return True
        host = request.headers.get("host", "")
        if origin in (f"http://{host}", f"https://{host}"):
            return True
        return any(
            o == origin if isinstance(o, str) else o.fullmatch(origin) for o in self._origins
        )

    def can_accept(self) -> bool:
        """Whether one more connection fits under ``max_connections``."""
        return self.running and len(self._sessions) < self.config.max_connections

    def asgi(self) -> ASGIApp:
        """An ASGI application serving this cable (mount it at ``/cable``)."""
        from .transports.asgi import ASGIApp

        return ASGIApp(self)

    # -- used by sessions and transports --------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the cable owns (awaited or cancelled on stop)."""
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)

    def loop_time(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else time.monotonic()

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._loop is None:
            raise RuntimeError("the cable is not running")
        self._loop.call_soon_threadsafe(fn, *args)

    def report_error(self, exc: BaseException, context: dict[str, Any]) -> None:
        """Pass an exception from user code to the ``on_error`` hooks."""
        for hook in self._error_hooks:
            try:
                hook(exc, context)
            except Exception:
                logger.exception("on_error hook %r raised", hook)

    def filter(self, data: Any) -> Any:
        """``data`` with values of sensitive keys masked (``filter_parameters``), long
        strings shortened and nesting past 32 levels elided, for logging."""
        words = self.config.filter_parameters

        def walk(value: Any, depth: int) -> Any:
            if isinstance(value, dict | list) and depth >= _FILTER_DEPTH:
                return "[...]"
            if isinstance(value, dict):
                return {
                    k: "[FILTERED]"
                    if any(w in str(k).lower() for w in words)
                    else walk(v, depth + 1)
                    for k, v in value.items()
                }
            if isinstance(value, list):
                return [walk(v, depth + 1) for v in value]
            if isinstance(value, str) and len(value) > 200:
                return value[:197] + "..."
            return value

        return walk(data, 0)

    def _session_opened(self, session: Session) -> None:
        self._sessions[session] = None
        self.connections_total += 1

    def _session_welcomed(self, session: Session) -> None:
        self._welcomed[session] = None

    def _session_closed(self, session: Session) -> None:
        self._sessions.pop(session, None)
        self._welcomed.pop(session, None)
        if not self._sessions and self._drained is not None:
            self._drained.set()
        # After a wave of disconnects, give the freed memory back to the OS once the
        # wave is over: _TRIM_QUIET seconds after the last close. One timer per wave,
        # not one per close (short-lived objects left behind by a wave keep the
        # allocator from returning its arenas).
        self._closed_since_trim += 1
        loop = self._loop
        if self._trim is not None and loop is not None:
            self._last_close = loop.time()
            if self._closed_since_trim >= _TRIM_AFTER and self._trim_handle is None:
                self._trim_handle = loop.call_later(_TRIM_QUIET, self._trim_due)

    def _trim_due(self) -> None:
        self._trim_handle = None
        loop = self._loop
        if loop is None:
            return
        wait = self._last_close + _TRIM_QUIET - loop.time()
        if wait > 0.01:  # closes went on: wait for the wave to end
            self._trim_handle = loop.call_later(wait, self._trim_due)
            return
        self._closed_since_trim = 0
        # Dicts and sets never shrink: after a wave, rebuild the emptied ones at their
        # present size (10,000 connections leave over 1 MB of empty tables).
        self._sessions = dict(self._sessions)
        self._welcomed = dict(self._welcomed)
        self._tasks = set(self._tasks)
        if self._trim is not None:
            self._trim()

    def _ping(self) -> None:
        loop = self._loop
        if loop is None or self._state != "started":
            return
        self._ping_handle = loop.call_later(self.config.ping_interval, self._ping)
        data = frames.ping(int(time.time()))
        wires: dict[Any, Any] = {}
        # One frame per sink kind per tick, the same bytes to every connection.
        for session in self._welcomed:
            sink = session.sink
            prepare = type(sink).prepare
            wire = wires.get(prepare)
            if wire is None:
                wire = wires[prepare] = prepare(data)
            sink.send_prepared(wire)


def redact_url(url: str) -> str:
    """``url`` (NATS: a comma-separated list) without user, password or query, for logs."""
    return re.sub(r"(//|,)[^/,@]*@", r"\1", url).partition("?")[0]


def _make_config(config: CableConfig | None, settings: dict[str, Any]) -> CableConfig:
    base = config or CableConfig()
    names = {f.name for f in dataclasses.fields(CableConfig)}
    unknown = set(settings) - names
    if unknown:
        raise ConfigurationError(f"unknown Cable settings: {', '.join(sorted(unknown))}")
    return dataclasses.replace(base, **settings) if settings else base


def _compile_origins(origins: Origins) -> tuple[bool, list[str | re.Pattern[str]]]:
    if origins is None:
        return False, []
    if origins == "*":
        return True, []
    if isinstance(origins, str | re.Pattern):
        return False, [origins]
    return False, list(origins)
