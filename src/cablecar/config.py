"""Every limit and setting of a cable, with its default, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from .protocol.constants import DEFAULT_MOUNT_PATH, PING_INTERVAL

__all__ = ["CableConfig"]

KiB = 1024
MiB = 1024 * KiB


@dataclass(slots=True)
class CableConfig:
    """Settings of a :class:`~cablecar.Cable`; pass any of them to ``Cable(...)`` as keywords.

    Example::

        cable = Cable(connection=AppConnection, channels=[ChatChannel],
                      max_message_size=256 * 1024, max_subscriptions=50)
    """

    mount_path: str = DEFAULT_MOUNT_PATH
    """URL path of the WebSocket endpoint."""
    health_path: str | None = "/health"
    """Path answering ``200 {"status":"ok",...}`` to plain GETs (``None`` to turn it off)."""
    ready_path: str | None = "/ready"
    """Readiness for load balancers and Kubernetes: 200 while the cable runs and its
    pub/sub listener is connected, 503 otherwise (``None`` to turn it off)."""
    metrics_path: str | None = "/metrics"
    """Path serving Prometheus metrics (``None`` to turn it off); needs the
    ``prometheus_client`` package (``pip install 'cablecar-py[metrics]'``)."""
    ping_interval: float = PING_INTERVAL
    """Seconds between pings to every client (Action Cable: 3)."""
    max_message_size: int = 1 * MiB
    """Largest message a client may send (one frame or a reassembled fragmented
    message); a larger one closes the socket with code 1009 as soon as its header
    is read. Also the input a connection may have waiting for its command queue:
    past it the server stops reading that socket until its actions catch up."""
    max_subscriptions: int = 256
    """Subscriptions one connection may hold; more are answered ``reject_subscription``."""
    max_commands_per_second: float = 100.0
    """Sustained commands per second per connection (token bucket refill rate)."""
    command_burst: int = 500
    """Commands a connection may send in one burst (token bucket size). Over the
    limit commands wait for their turn (logged once): nothing is refused, and the
    input waiting counts against ``max_message_size``, past which the server stops
    reading the socket, so TCP slows the client down."""
    max_peer_events_per_second: float = 10.0
    """Sustained whispers and presence joins/leaves per second per connection: commands
    that reach other clients directly. Over it they wait their turn, like commands."""
    peer_event_burst: int = 20
    """Whispers and presence changes a connection may send in one burst."""
    max_pending_output: int = 1 * MiB
    """Output a connection may have pending (unsent) before it counts as a slow
    consumer and is cut with ``disconnect`` reason ``too_slow``, ``reconnect: true``."""
    socket_send_buffer: int | None = 256 * KiB
    """The kernel's send buffer of each client socket (standalone server; ``None`` keeps
    the OS's autotuning, which on Linux grows to ``tcp_wmem``'s maximum, 4 MiB by
    default). Output a client does not read fills it before ``max_pending_output``
    counts, so the two together bound what one slow client holds in the server."""
    max_connections: int = 50_000
    """Connections one process accepts; more are refused with HTTP 503. Sockets still
    in their handshake are capped at the same number: past it new ones are closed
    at once, unanswered."""
    handshake_timeout: float = 10.0
    """Seconds a new socket has to send a complete upgrade request (HTTP 408 after)."""
    connect_timeout: float = 10.0
    """Seconds ``Connection.connect`` may take before the socket is closed."""
    max_header_size: int = 16 * KiB
    """Largest HTTP request head (request line plus headers); more gets HTTP 431."""
    max_http_body: int = 1 * MiB
    """Largest plain-HTTP request body an ``http_handler`` is given; more gets 413."""
    close_timeout: float = 5.0
    """Seconds to wait for a client's close frame, and for a closing socket to flush;
    then the socket is aborted."""
    shutdown_timeout: float = 10.0
    """Seconds a graceful shutdown waits for actions in flight."""
    outbox_size: int = 10_000
    """Broadcasts that may wait while the pub/sub service is down (``cable.broadcast``
    returns once one is queued); published in order when it is back. Past it,
    ``broadcast`` raises ``OutboxFull``. ``0``: at most once (``AdapterError`` at once)."""
    outbox_age: float = 60.0
    """Seconds a waiting broadcast is kept; older ones are dropped and logged at ERROR."""
    worker_pool_size: int = 8
    """Threads that run plain ``def`` channel and connection methods."""
    history: bool = False
    """Reliable delivery (AnyCable's extended protocol ``actioncable-v1-ext-json``):
    stream history with positions on every broadcast, and sessions a reconnecting
    client resumes. Plain Action Cable clients are served as before."""
    history_limit: int = 100
    """Broadcasts kept per stream for recovery (with ``history``)."""
    history_ttl: float = 300.0
    """Seconds a broadcast is kept for recovery (with ``history``)."""
    sessions_ttl: float = 300.0
    """Seconds a disconnected session can be resumed (with ``history``)."""
    pong_timeout: float | None = None
    """Seconds an extended-protocol client may stay silent after a ping before it is
    disconnected with reason ``no_pong`` (``None``: never). Clients answer pings
    with ``{"command":"pong"}`` (``@anycable/core``: ``protocolOptions.pongs``)."""
    presence_ttl: float = 15.0
    """Seconds a presence member stays after its connection died without leaving
    (refreshed while connected; a reconnect within it causes no leave/join)."""
    max_presence_info: int = 4 * KiB
    """Largest presence ``info`` (encoded JSON bytes); a larger join gets an error reply."""
    streams_secret: str | None = field(default=None, repr=False)
    """Secret that signs ``$pubsub`` stream names (``cable.signed_stream_name``); setting
    it enables the built-in ``$pubsub`` channel (``streamFromSigned`` in
    ``@anycable/web``). Never shown in ``repr``."""
    public_streams: bool = False
    """``$pubsub`` also accepts unsigned ``stream_name``: any client may read any stream
    by name. Only for public data."""
    streams_whisper: bool = False
    """Signed ``$pubsub`` streams accept whisper (public streams always do)."""
    turbo_streams_secret: str | None = field(default=None, repr=False)
    """turbo-rails' ``config.turbo.signed_stream_verifier_key``, when the Rails app sets
    one; enables ``Turbo::StreamsChannel``."""
    secret_key_base: str | None = field(default=None, repr=False)
    """A Rails app's ``secret_key_base``: ``Turbo::StreamsChannel`` verifies names signed
    with turbo-rails' default keys derived from it (Rails 7+ and older defaults)."""
    sse_path: str | None = "/events"
    """Server-sent events endpoint (``GET``/``POST``, AnyCable-compatible; ``None`` to turn
    it off): a client without WebSocket subscribes and reads a ``text/event-stream``."""
    poll_path: str | None = "/lp"
    """Long-polling endpoint (``POST``; ``None`` to turn it off): the fallback transport of
    ``cablecar.js`` when WebSockets are blocked."""
    poll_interval: float = 15.0
    """Seconds a poll is held open waiting for output before it is answered empty."""
    poll_keepalive_timeout: float = 5.0
    """Seconds a long-polling session lives without a poll; then it is closed (its next
    poll gets 401 and the client starts a new session)."""
    broadcast_path: str | None = "/_broadcast"
    """HTTP broadcast API (``POST``, AnyCable-compatible body), served only when a
    ``broadcast_key`` (or ``secret``) is set; ``None`` to turn it off."""
    broadcast_key: str | None = field(default=None, repr=False)
    """Bearer key of the broadcast API (``Authorization: Bearer <key>``). Never shown."""
    secret: str | None = field(default=None, repr=False)
    """AnyCable's application secret (``--secret``): without ``broadcast_key``, the key is
    ``HMAC-SHA256-hex(secret, "broadcast-cable")``, as AnyCable derives it. Never shown."""
    filter_parameters: tuple[str, ...] = field(
        default=("password", "passwd", "secret", "token", "api_key", "authorization", "session")
    )
    """Parameter names whose values are masked in logs (substring match, case-insensitive)."""
