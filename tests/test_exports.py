"""The public surface of the package is exactly the documented one, and light to import."""

from __future__ import annotations

import subprocess
import sys

import cablecar

PUBLIC = {
    "ActionNotAllowed", "AdapterError", "Broadcaster", "Cable", "CableConfig", "CableMiddleware", "CablecarError",
    "Channel", "ConfigurationError", "Connection", "ConnectionRejected", "InvalidCommand",
    "ProtocolViolation", "PublishTimeout", "Request", "Response", "SubscriptionRejected", "Unauthorized",
    "__version__", "after_subscribe", "after_unsubscribe", "before_subscribe",
    "before_unsubscribe", "periodically", "rescue_from",
}  # fmt: skip


def test_all_is_the_documented_api() -> None:
    """cablecar.__all__ is exactly the documented public API and every name resolves."""
    assert set(cablecar.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(cablecar, name) is not None


def test_channel_base_keeps_common_action_names_free() -> None:
    """Users may define actions named broadcast, echo, send, receive, speak...: the base
    class defines none of them."""
    public = {n for n in dir(cablecar.Channel) if not n.startswith("_")}
    assert public == {
        "broadcast_to", "broadcasting_for", "channel_name", "logger", "rejected", "reject", "restored",
        "join_presence", "leave_presence",
        "stop_all_streams", "stop_stream_for", "stop_stream_from", "stream_for", "stream_from",
        "subscribed", "transmit", "unsubscribed",
    }  # fmt: skip


def test_import_loads_no_optional_dependency() -> None:
    """import cablecar loads none of the optional dependencies (redis, psycopg, nats, websockets, django, starlette)."""
    code = (
        "import sys, cablecar; "
        "bad = [m for m in ('redis', 'psycopg', 'nats', 'websockets', 'django', 'starlette') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cable_shows_a_small_face() -> None:
    """Cable's public names are the documented ones: what applications and transports
    call; the runtime's internals are not reachable from it."""
    public = {n for n in dir(cablecar.Cable) if not n.startswith("_")}
    assert public == {
        # configuration
        "register", "channels", "use_pubsub", "wrap_pubsub", "pubsub", "pubsub_url",
        "allowed_origins",
        # lifecycle
        "start", "stop", "state", "running", "wait_live",
        # broadcasting and connections
        "broadcast", "broadcast_to", "broadcast_sync", "broadcast_encoded", "connections",
        "socket_count",
        "statistics", "open_connections_statistics", "streams", "presence", "figures", "metrics",
        "ready",
        # signed streams and Turbo
        "signed_stream_name",
        # for transports (cablecar.transport)
        "admit", "choose_subprotocol", "open_session", "health", "asgi", "serve_http",
        "is_sse", "open_sse",
    }  # fmt: skip


def test_the_error_tree_is_the_documented_one() -> None:
    """Every exception sits where cablecar.errors' docstring draws it: the transport's
    protocol errors are ProtocolViolations, PublishTimeout an AdapterError."""
    from cablecar import errors
    from cablecar.transports.standalone.framing import FrameError
    from cablecar.transports.standalone.http import HandshakeError

    for cls in (errors.InvalidCommand, errors.ActionNotAllowed, FrameError, HandshakeError):
        assert issubclass(cls, errors.ProtocolViolation), cls
    assert issubclass(errors.PublishTimeout, errors.AdapterError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.CablecarError), name
