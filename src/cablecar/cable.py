"""The ``Cable``: the application's face of an Action Cable server.

Example::

    from cablecar import Cable, Channel, Connection

    class ChatChannel(Channel):
        async def subscribed(self):
            self.stream_from(f"chat_{self.params['room']}")

    cable = Cable(connection=Connection, channels=[ChatChannel])
    # cablecar serve app:cable            (standalone server)
    # app.add_middleware(CableMiddleware, cable=cable)   (inside FastAPI/Starlette; see docs)
    # await cable.broadcast("chat_1", {"body": "hi"})   (from any code in the process)

What the cable owns and what it hands on:

- the configuration (:class:`~cablecar.CableConfig`), the channel registry
  (:mod:`cablecar.registry`), the pub/sub adapter and the origin policy;
- its lifecycle: ``start()`` builds a :class:`~cablecar._runtime.Runtime` (the loop,
  the worker pool, the hub, the live sessions), ``stop()`` shuts it down; a stopped
  cable can be started again;
- admission and health for transports (``admit``, ``health``, ``open_session``: the
  contract in :mod:`cablecar.transport`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from . import _json, instrumentation
from ._outbox import Outbox
from ._remote import RemoteConnections
from ._runtime import Runtime
from ._stats import ACTION_BUCKETS, LATENCY_BUCKETS, ActionStats
from ._urls import redact_url
from .channel import Channel
from .config import CableConfig
from .connection import Connection
from .errors import ConfigurationError
from .history import HistoryStore, MemoryStore, StoreSettings, store_from_url
from .history.base import stamp
from .http import Request, Response
from .protocol import EXT_SUBPROTOCOL, SUBPROTOCOLS, choose_subprotocol
from .pubsub import PubSub, adapter_from_url
from .registry import ChannelRegistry
from .session import Session
from .signed_streams import PUBSUB_CHANNEL, TURBO_CHANNEL, PubSubChannel, TurboStreamsChannel
from .signing import StreamSigners
from .transport import Refusal

if TYPE_CHECKING:
    from .sse import HTTPStream
    from .transport import Sink
    from .transports.asgi import ASGIApp

__all__ = ["Cable", "CableSettings", "CableState", "ErrorHook"]

logger = logging.getLogger("cablecar.cable")

#: ``on_error(exc, context)``: context has ``connection`` and, for channel code,
#: ``channel`` and ``action``.
ErrorHook = Callable[[BaseException, dict[str, Any]], Any]

#: One broadcast in this many carries its send time, for the latency histogram.
_SAMPLE_EVERY = 64

Origins = str | re.Pattern[str] | Iterable[str | re.Pattern[str]] | None


class CableState(enum.Enum):
    """Where a cable is in its lifecycle."""

    NEW = "new"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"


class CableSettings(TypedDict, total=False):
    """The keyword settings of ``Cable(...)``: every field of :class:`CableConfig`.

    Passing them as keywords is type-checked (a misspelt name is a mypy error and a
    ``TypeError`` at run time).
    """

    mount_path: str
    health_path: str | None
    ready_path: str | None
    metrics_path: str | None
    ping_interval: float
    max_message_size: int
    max_subscriptions: int
    max_commands_per_second: float
    command_burst: int
    max_peer_events_per_second: float
    peer_event_burst: int
    max_pending_output: int
    socket_send_buffer: int | None
    max_connections: int
    handshake_timeout: float
    connect_timeout: float
    max_header_size: int
    max_http_body: int
    close_timeout: float
    shutdown_timeout: float
    outbox_size: int
    outbox_age: float
    worker_pool_size: int
    history: bool
    history_limit: int
    history_ttl: float
    sessions_ttl: float
    pong_timeout: float | None
    presence_ttl: float
    max_presence_info: int
    streams_secret: str | None
    public_streams: bool
    streams_whisper: bool
    turbo_streams_secret: str | None
    secret_key_base: str | None
    sse_path: str | None
    poll_path: str | None
    poll_interval: float
    poll_keepalive_timeout: float
    broadcast_path: str | None
    broadcast_key: str | None
    secret: str | None
    filter_parameters: tuple[str, ...]


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
        settings: any field of :class:`~cablecar.CableConfig` (see :class:`CableSettings`).

    Raises:
        TypeError: an unknown setting (the message lists the valid ones).
        ConfigurationError: ``connection`` or a channel is not a subclass of the base
            class, or the pub/sub URL is not supported.
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
        **settings: Unpack[CableSettings],
    ) -> None:
        if not (isinstance(connection, type) and issubclass(connection, Connection)):
            raise ConfigurationError(f"connection must be a Connection subclass: {connection!r}")
        self.connection_class = connection
        self.config = _make_config(config, dict(settings))
        self._registry = ChannelRegistry(self, channels)
        cfg = self.config
        #: The signers of ``$pubsub`` and ``Turbo::StreamsChannel`` stream names, from
        #: ``streams_secret``, ``turbo_streams_secret`` and ``secret_key_base``.
        self.stream_signers = StreamSigners.from_secrets(
            cfg.streams_secret, cfg.turbo_streams_secret, cfg.secret_key_base
        )
        registered = self._registry.as_dict()
        if (self.stream_signers.pubsub or cfg.public_streams) and PUBSUB_CHANNEL not in registered:
            self._registry.register(PubSubChannel, PUBSUB_CHANNEL)
        if self.stream_signers.turbo and TURBO_CHANNEL not in registered:
            self._registry.register(TurboStreamsChannel, TURBO_CHANNEL)
        self._runtime: Runtime | None = None
        self._pubsub: PubSub = adapter_from_url("memory://")
        self._pubsub_url = "memory://"
        self._store: HistoryStore | None = None
        self.use_pubsub(pubsub, channel_prefix=channel_prefix)
        self._origin_any = False
        self._origins: list[str | re.Pattern[str]] = []
        self.allowed_origins = allowed_origins
        #: Hooks called with ``(exception, context)`` when user code raises.
        self.error_hooks: list[ErrorHook] = (
            [] if on_error is None else [on_error] if callable(on_error) else list(on_error)
        )
        #: ``remote_connections.where(current_user=u).disconnect(reconnect=False)``:
        #: closes matching connections on every process sharing the adapter.
        self.remote_connections = RemoteConnections(self._publish)
        #: Schedules ``periodically`` timers: anything with the event loop's ``time()``
        #: and ``call_later()``; ``None`` (default) is the running loop. A seam for
        #: ``cablecar.testing``, whose virtual clock advances time without sleeping.
        self.timer_clock: Any = None
        self._state = CableState.NEW
        self._start_lock: asyncio.Lock | None = None
        self._broadcasts_total = 0
        #: How long publishing (history write included) took.
        self._publish_stats = ActionStats()
        self._sample = 1
        #: Broadcasts waiting while the pub/sub service is down (``outbox_size``).
        self._outbox = Outbox(
            self._publish_now,
            self.config.outbox_size,
            self.config.outbox_age,
            ready=lambda: self._pubsub.connected,
        )

    # -- configuration ------------------------------------------------------------------

    def register(self, channel: type[Channel], name: str | None = None) -> None:
        """Register a channel class under ``name`` (default: its class name)."""
        self._registry.register(channel, name)

    @property
    def channels(self) -> dict[str, type[Channel]]:
        """Registered channels by name."""
        return self._registry.as_dict()

    def use_pubsub(self, pubsub: str | PubSub, *, channel_prefix: str | None = None) -> None:
        """Use another pub/sub adapter (a URL or an instance) from the next ``start()``.

        Raises:
            RuntimeError: the cable is running.
            ConfigurationError: the URL's scheme is not supported.
        """
        if self._runtime is not None:
            raise RuntimeError("the pub/sub adapter can only change while the cable is stopped")
        self._pubsub_source = (pubsub, channel_prefix) if isinstance(pubsub, str) else None
        if isinstance(pubsub, str):
            self._pubsub = adapter_from_url(pubsub, channel_prefix=channel_prefix)
            self._pubsub_url = redact_url(pubsub)
        else:
            self._pubsub = pubsub
            self._pubsub_url = type(pubsub).__name__
        if self.config.history:
            url = pubsub if isinstance(pubsub, str) else _url_of(pubsub)
            cfg = self.config
            settings = StoreSettings(
                cfg.history_limit, cfg.history_ttl, cfg.sessions_ttl, cfg.presence_ttl
            )
            self._store = store_from_url(url, settings, prefix=channel_prefix)

    def wrap_pubsub(self, wrap: Callable[[PubSub], PubSub]) -> PubSub:
        """Put ``wrap(adapter)`` in the adapter's place, also while running: for a
        wrapper that forwards every call to the adapter it wraps (a recorder, a meter;
        ``cablecar.testing`` records broadcasts this way). Returns the adapter replaced,
        so that ``cable.wrap_pubsub(lambda _: previous)`` undoes it."""
        previous = self._pubsub
        self._pubsub = wrap(previous)
        runtime = self._runtime
        if runtime is not None:
            runtime.adapter = runtime.hub.adapter = self._pubsub
        return previous

    @property
    def pubsub(self) -> PubSub:
        """The pub/sub adapter."""
        return self._pubsub

    @property
    def pubsub_url(self) -> str:
        """The adapter's URL without user, password or query (it is logged)."""
        return self._pubsub_url

    @property
    def allowed_origins(self) -> Origins:
        """Browsers' ``Origin`` check (see the class docstring); assigning recompiles it."""
        return self._allowed_origins

    @allowed_origins.setter
    def allowed_origins(self, origins: Origins) -> None:
        self._allowed_origins = origins
        if origins is None:
            self._origin_any, self._origins = False, []
        elif origins == "*":
            self._origin_any, self._origins = True, []
        elif isinstance(origins, str | re.Pattern):
            self._origin_any, self._origins = False, [origins]
        else:
            self._origin_any, self._origins = False, list(origins)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the adapter and start pinging. Idempotent; transports call it.

        A stopped cable starts again with fresh runtime state; so does one whose event
        loop was closed while it ran (one test after another).

        Raises:
            RuntimeError: the cable runs (or is stopping) on another live event loop.
        """
        loop = asyncio.get_running_loop()
        runtime = self._runtime
        if runtime is not None and runtime.loop is not loop:
            if not runtime.loop.is_closed():
                raise RuntimeError("the cable is running on another event loop")
            runtime.abandon()  # its loop is gone: start afresh
            self._runtime = None
            self._state = CableState.STOPPED
            self._start_lock = None
        if self._state is CableState.STARTED:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.running:  # another start() finished while this one waited
                return
            if self._state is CableState.STOPPING:
                raise RuntimeError("the cable is stopping")
            runtime = Runtime(self, self._registry, self._pubsub, self._store)
            try:
                await runtime.start()
            except BaseException:
                runtime.abandon()  # its worker pool must not outlive the failed start
                raise
            self._runtime = runtime
            self._state = CableState.STARTED
            n = len(self._registry)
            logger.info(
                "cable started (pub/sub %s, %d channel%s)",
                self._pubsub_url,
                n,
                "" if n == 1 else "s",
            )

    async def stop(self, *, timeout: float | None = None) -> None:
        """Graceful shutdown: every client gets ``disconnect`` reason ``server_restart``
        with ``reconnect: true``; actions in flight get up to ``timeout`` seconds
        (``config.shutdown_timeout``); then the adapter closes.
        """
        runtime = self._runtime
        if runtime is None or self._state is not CableState.STARTED:
            if self._state is not CableState.STOPPING:
                self._state = CableState.STOPPED if runtime is None else self._state
            return
        self._state = CableState.STOPPING
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        try:
            if len(self._outbox):  # broadcasts wait for the pub/sub service: a last chance
                await self._outbox.flush(min(timeout, 5.0))
            await runtime.shutdown(timeout)
        finally:
            self._outbox.close()  # what still waits was logged by flush()
            self._runtime = None
            self._start_lock = None
            self._state = CableState.STOPPED
            await self._renew()
        logger.info("cable stopped")

    async def _renew(self) -> None:
        """A stopped adapter cannot be used again: build a fresh one from the same URL (and
        a fresh network store), so ``start()`` works again. An in-process store is kept:
        its history outlives a restart of the cable. An adapter given as an instance is
        the caller's to replace (``use_pubsub``)."""
        if self._pubsub_source is None:
            return
        url, prefix = self._pubsub_source
        self._pubsub = adapter_from_url(url, channel_prefix=prefix)
        store = self._store
        if store is not None and not isinstance(store, MemoryStore):
            await store.close()
            cfg = self.config
            settings = StoreSettings(
                cfg.history_limit, cfg.history_ttl, cfg.sessions_ttl, cfg.presence_ttl
            )
            self._store = store_from_url(url, settings, prefix=prefix)

    @property
    def state(self) -> CableState:
        """Where the cable is in its lifecycle."""
        return self._state

    @property
    def running(self) -> bool:
        """Whether the cable is started and not stopping (on an event loop that is open)."""
        runtime = self._runtime
        return (
            self._state is CableState.STARTED
            and runtime is not None
            and not runtime.loop.is_closed()
        )

    async def wait_live(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until remote disconnects reach this
        process: its control stream is live in the adapter."""
        if self._runtime is not None:
            await self._runtime.control_live(timeout)

    async def __aenter__(self) -> Cable:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- broadcasting -------------------------------------------------------------------

    async def broadcast(
        self, stream: str, message: Any, *, exclude_socket: str | None = None
    ) -> None:
        """Send ``message`` to every subscriber of ``stream``, in every process.

        The message is encoded to JSON once; subscribers receive
        ``{"identifier": <theirs>, "message": <message>}``. With ``history=True`` it is
        stored first and carries its position (``stream_id``, ``epoch``, ``offset``) to
        extended-protocol clients.

        Args:
            exclude_socket: the ``sid`` of a connection that must not receive it (the
                sender: an HTTP handler reads it from the client's ``X-Socket-ID``).

        Raises:
            AdapterError: the pub/sub service (or the history store) failed.
        """
        if instrumentation.active("broadcast"):
            instrumentation.emit("broadcast", {"stream": stream, "message": message, "cable": self})
        await self.broadcast_encoded(stream, _json.dumps(message), exclude_socket=exclude_socket)

    async def broadcast_encoded(
        self, stream: str, payload: bytes, *, exclude_socket: str | None = None
    ) -> None:
        """:meth:`broadcast` of a message already encoded as JSON (``payload`` must be
        one valid JSON value: it is sent as is). The HTTP broadcast API uses it.

        Raises:
            AdapterError: the pub/sub service (or the history store) failed.
        """
        self._broadcasts_total += 1
        started = time.perf_counter()
        self._sample -= 1
        sent = 0.0
        if not self._sample:  # one broadcast in _SAMPLE_EVERY carries its send time
            self._sample = _SAMPLE_EVERY
            sent = time.time()
        await self._outbox.send(stream, payload, exclude_socket, sent)
        self._publish_stats.observe(time.perf_counter() - started)

    async def _publish_now(
        self, stream: str, payload: bytes, exclude: str | None, sent: float
    ) -> None:
        # One attempt: stored (history) and positioned, then published.
        await self._pubsub.publish(stream, await stamp(self._store, stream, payload, exclude, sent))

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
        runtime = self._runtime
        if runtime is None or not self.running:
            raise RuntimeError("the cable is not running")
        if threading.get_ident() == runtime.loop_thread:
            raise RuntimeError("broadcast_sync() on the event loop: use 'await cable.broadcast()'")
        asyncio.run_coroutine_threadsafe(self.broadcast(stream, message), runtime.loop).result(
            timeout
        )

    def signed_stream_name(self, name: str) -> str:
        """``name`` signed with ``streams_secret`` for the ``$pubsub`` channel:
        ``Base64(JSON(name)) + "--" + hex HMAC-SHA256``, byte-identical to AnyCable's and
        Rails' ``MessageVerifier``. Render it into a page; the client subscribes with
        ``cable.streamFromSigned(signed)`` (``@anycable/web``) or
        ``{"channel": "$pubsub", "signed_stream_name": signed}``.

        Raises:
            ConfigurationError: the cable has no ``streams_secret``.
        """
        signer = self.stream_signers.pubsub
        if signer is None:
            raise ConfigurationError("signed_stream_name() needs Cable(..., streams_secret=...)")
        return signer.sign(name)

    async def _publish(self, stream: str, payload: bytes) -> None:
        await self._pubsub.publish(stream, payload)

    # -- connections --------------------------------------------------------------------

    async def presence(self, stream: str) -> dict[str, Any]:
        """The members of ``stream``'s presence, across every node: ``{id: info}``
        (``history=True``; from any code, e.g. an HTTP handler).

        Raises:
            ConfigurationError: the cable has no ``history=True``.
            AdapterError: the store failed.
        """
        store = self._store
        if store is None:
            raise ConfigurationError("presence needs Cable(..., history=True)")
        await store.start()
        return {pid: _json.loads(info) for pid, info in await store.presence_members(stream)}

    @property
    def connections(self) -> list[Connection]:
        """This process's connections that completed ``connect``."""
        runtime = self._runtime
        if runtime is None:
            return []
        return [s.connection for s in runtime.welcomed if s.connection is not None]

    @property
    def socket_count(self) -> int:
        """Sockets open now (welcomed or still running ``connect``)."""
        return 0 if self._runtime is None else len(self._runtime.sessions)

    def statistics(self) -> dict[str, Any]:
        """Live figures of this process (also served at the health path)."""
        runtime = self._runtime
        welcomed = runtime.welcomed if runtime is not None else {}
        return {
            "status": "ok" if self.running else self._state.value,
            "connections": len(welcomed),
            "sockets": self.socket_count,
            "connections_total": 0 if runtime is None else runtime.connections_total,
            "subscriptions": sum(len(s.subscriptions) for s in welcomed),
            "streams": 0 if runtime is None else len(runtime.hub.streams),
            "broadcasts_total": self._broadcasts_total,
            "deliveries_total": 0 if runtime is None else runtime.hub.deliveries,
            "uptime": 0.0 if runtime is None else round(time.time() - runtime.started_at, 3),
            "pubsub": self._pubsub_url.split("://")[0],
            "outbox": self._outbox.figures(),
        }

    def figures(self) -> dict[str, Any]:
        """Counters of this process since start, for ``/metrics`` (JSON values)."""
        runtime = self._runtime
        if runtime is None:
            return _EMPTY_FIGURES
        stats = runtime.stats
        by_channel: dict[str, int] = {}
        for session in runtime.welcomed:
            for sub in session.subscriptions.values():
                name = type(sub.channel).__name__
                by_channel[name] = by_channel.get(name, 0) + 1
        return {
            "closed": dict(stats.closed),
            "rejected_connections": {str(k): v for k, v in stats.rejected_connections.items()},
            "rejected_subscriptions": stats.rejected_subscriptions,
            "subscriptions_by_channel": by_channel,
            "bytes_out": runtime.hub.bytes_out,
            "slow_consumers": stats.slow_consumers,
            "throttled_commands": stats.throttled_commands,
            "resumed_sessions": stats.resumed_sessions,
            "history_recoveries": dict(stats.history_recoveries),
            "presence_records": runtime.presence_records,
            "subscribes_in_flight": runtime.hub.subscribes_in_flight,
            "pubsub_connected": int(self._pubsub.connected),
            "pubsub_reconnects": self._pubsub.reconnects,
            "publish": [
                self._publish_stats.count,
                self._publish_stats.total,
                list(self._publish_stats.buckets),
            ],
            "delivery_latency": [
                runtime.hub.latency.count,
                runtime.hub.latency.total,
                list(runtime.hub.latency.buckets),
            ],
            "history_entries": self._store.size() if self._store is not None else 0,
            "loop_lag": stats.loop_lag,
            "loop_lag_max": stats.loop_lag_max,
            "actions": {
                f"{channel}#{action}": [a.count, a.total, list(a.buckets)]
                for (channel, action), a in stats.actions.items()
            },
        }

    def metrics(self) -> Response:
        """The answer at ``metrics_path``: Prometheus text (501 with the install hint
        when ``prometheus_client`` is missing)."""
        try:
            from .metrics import CONTENT_TYPE, render

            return Response(render(self), 200, CONTENT_TYPE)
        except ImportError:
            return Response(
                "metrics need prometheus_client: pip install 'cablecar-py[metrics]'\n", 501
            )

    def open_connections_statistics(self) -> list[dict[str, Any]]:
        """``statistics()`` of every connection, as Rails' method of the same name."""
        return [c.statistics() for c in self.connections]

    def streams(self) -> dict[str, int]:
        """Streams with subscribers in this process, and how many each has."""
        runtime = self._runtime
        if runtime is None:
            return {}
        hub = runtime.hub
        return {stream: hub.subscriber_count(stream) for stream in hub.streams}

    # -- for transports (the contract in cablecar.transport) ------------------------------

    def admit(self, request: Request) -> Refusal | None:
        """Whether a WebSocket upgrade may open a connection: ``None``, or the refusal
        to answer (logged here once, in one wording for every transport)."""
        if not self._origin_allowed(request):
            logger.warning(
                "refused a connection from origin %r (allowed_origins)",
                request.origin,
                extra={"cablecar_kind": "origin"},
            )
            return self._refuse(Refusal(403, "origin not allowed"))
        if not self.running:
            return self._refuse(Refusal(503, "shutting down", (("Retry-After", "1"),)))
        if self.socket_count >= self.config.max_connections:
            logger.warning(
                "refused a connection: %d connections open (max_connections)",
                self.socket_count,
                extra={"cablecar_kind": "max_connections"},
            )
            return self._refuse(Refusal(503, "server busy", (("Retry-After", "5"),)))
        return None

    def choose_subprotocol(self, offered: Iterable[str]) -> str | None:
        """The subprotocol to answer an upgrade offering ``offered`` with: the first
        one this cable speaks (``actioncable-v1-ext-json`` too with ``history=True``; a
        client offering only that one gets it anyway, served without history)."""
        offered = list(offered)
        supported = (*SUBPROTOCOLS, EXT_SUBPROTOCOL) if self._store is not None else SUBPROTOCOLS
        chosen = choose_subprotocol(offered, supported)
        if chosen is None and EXT_SUBPROTOCOL in offered:
            # A client that offers only the extended protocol (@anycable/web configured
            # with it) is served without history: no sid, history requests answered
            # reject_history, presence answered error; refusing would fail its handshake.
            return EXT_SUBPROTOCOL
        return chosen

    def _refuse(self, refusal: Refusal) -> Refusal:
        if self._runtime is not None:
            self._runtime.stats.rejected_connections[refusal.status] += 1
        return refusal

    def open_session(self, sink: Sink, request: Request, subprotocol: str | None) -> Session:
        """The session of an admitted socket; the transport calls its ``start()``.

        Raises:
            RuntimeError: the cable is not running.
        """
        if self._runtime is None:
            raise RuntimeError("the cable is not running")
        return Session(self._runtime, sink, request, subprotocol)

    def health(self, method: str) -> Response:
        """The answer at ``health_path``: ``statistics()``, 200 while running, else 503;
        405 for methods other than GET and HEAD."""
        if method not in ("GET", "HEAD"):
            return Response.json(
                {"error": "method not allowed"}, 405, headers=(("Allow", "GET, HEAD"),)
            )
        return Response.json(self.statistics(), 200 if self.running else 503)

    def ready(self) -> Response:
        """The answer at ``ready_path``: 200 while running with the pub/sub listener
        connected and no subscribe stuck on it; else 503 with the reason. A server whose
        broker is down is alive (``/health``) but not ready."""
        runtime = self._runtime
        if runtime is None or not self.running:
            return Response.json({"ready": False, "reason": self._state.value}, 503)
        if not self._pubsub.connected:
            return Response.json({"ready": False, "reason": "pub/sub unreachable"}, 503)
        return Response.json({"ready": True}, 200)

    def _at(self, path: str, endpoint: str | None) -> bool:
        # An endpoint answers at its path, and below the mount path (ASGI middleware
        # routes only /cable/... to the cable).
        return endpoint is not None and path in (endpoint, self.config.mount_path + endpoint)

    async def serve_http(self, request: Request) -> Response | None:
        """Answer a plain HTTP request at one of the cable's endpoints: health, ready,
        metrics, the broadcast API (``broadcast_path``), long polling (``poll_path``);
        ``None`` when the path is none of them. Transports call it for every plain
        request (the SSE path excepted: :meth:`open_sse`)."""
        cfg = self.config
        path = request.path
        if self._at(path, cfg.health_path):
            return self.health(request.method)
        if self._at(path, cfg.ready_path):
            return self.ready()
        if self._at(path, cfg.metrics_path):
            return self.metrics()
        if self._at(path, cfg.broadcast_path):
            from . import broadcast_api

            return await broadcast_api.handle(self, request)
        if self._at(path, cfg.poll_path):
            runtime = self._runtime
            if runtime is None or not self.running:
                return Response.json({"error": "shutting down"}, 503, (("Retry-After", "1"),))
            if runtime.polls is None:
                from .longpoll import Polls

                runtime.polls = Polls(self)
            return await runtime.polls.handle(request)
        return None

    def is_sse(self, path: str) -> bool:
        """Whether ``path`` is the server-sent events endpoint (``sse_path``)."""
        return self._at(path, self.config.sse_path)

    def open_sse(self, stream: HTTPStream, request: Request) -> Session | Response:
        """Start an event stream for ``request`` (at ``sse_path``): the session, which
        answers through ``stream`` once ``connect`` and the subscriptions have run (the
        transport calls its ``transport_closed()`` when the client goes), or the
        response to send instead (400 for a request naming no subscription, the
        :meth:`admit` refusals)."""
        from .sse import SSESink

        if request.method not in ("GET", "POST"):
            return Response.json({"error": "use GET or POST"}, 405, (("Allow", "GET, POST"),))
        refusal = self.admit(request)
        if refusal is not None:
            return Response.json({"error": refusal.reason}, refusal.status, refusal.headers)
        try:
            sink = SSESink.for_request(stream, request)
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)
        subprotocol = self.choose_subprotocol((EXT_SUBPROTOCOL, *SUBPROTOCOLS))
        session = self.open_session(sink, request, subprotocol)
        session.pongs = False
        sink.session = session
        session.start()
        return session

    def asgi(self) -> ASGIApp:
        """An ASGI application serving this cable (mount it at ``/cable``)."""
        from .transports.asgi import ASGIApp

        return ASGIApp(self)

    def _origin_allowed(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or self._origin_any:
            return True
        host = request.headers.get("host", "")
        if origin in (f"http://{host}", f"https://{host}"):
            return True
        return any(
            o == origin if isinstance(o, str) else o.fullmatch(origin) for o in self._origins
        )


_EMPTY_FIGURES: dict[str, Any] = {
    "closed": {},
    "rejected_connections": {},
    "rejected_subscriptions": 0,
    "subscriptions_by_channel": {},
    "bytes_out": 0,
    "slow_consumers": 0,
    "throttled_commands": 0,
    "resumed_sessions": 0,
    "history_recoveries": {},
    "presence_records": 0,
    "subscribes_in_flight": 0,
    "pubsub_connected": 0,
    "pubsub_reconnects": 0,
    "publish": [0, 0.0, [0] * len(ACTION_BUCKETS)],
    "delivery_latency": [0, 0.0, [0] * len(LATENCY_BUCKETS)],
    "history_entries": 0,
    "loop_lag": 0.0,
    "loop_lag_max": 0.0,
    "actions": {},
}


def _make_config(config: CableConfig | None, settings: dict[str, Any]) -> CableConfig:
    base = config or CableConfig()
    names = {f.name for f in dataclasses.fields(CableConfig)}
    unknown = set(settings) - names
    if unknown:
        raise TypeError(
            f"unknown Cable setting{'s' if len(unknown) > 1 else ''}: "
            f"{', '.join(sorted(unknown))}; the settings are: {', '.join(sorted(names))}"
        )
    return dataclasses.replace(base, **settings) if settings else base


def _url_of(adapter: PubSub) -> str:
    """The backend URL of an adapter instance (for its history store)."""
    from .pubsub.memory import MemoryPubSub

    if isinstance(adapter, MemoryPubSub):
        return "memory://"
    url = getattr(adapter, "url", None)
    if not isinstance(url, str):
        raise ConfigurationError(
            "history=True needs the pub/sub adapter as a URL (or an adapter with a .url)"
        )
    return url
