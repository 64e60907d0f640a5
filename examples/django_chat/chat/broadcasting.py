"""Broadcast from Django code (views, signals, tasks) to the cable's subscribers.

With ``CABLE_PUBSUB = "memory://"`` the cable lives in this process (asgi.py mounts it)
and ``cable.broadcast_sync`` hands the message over directly. With Redis (or PostgreSQL,
NATS) the cable may run anywhere, in ``cablecar serve`` processes beside the web app:
a :class:`cablecar.Broadcaster` publishes to the same service.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings

from cablecar import Broadcaster

_broadcasters: dict[str, Broadcaster] = {}  # one per process and URL, reused
_lock = threading.Lock()


def _broadcaster(url: str) -> Broadcaster:
    with _lock:
        if url not in _broadcasters:
            _broadcasters[url] = Broadcaster(url)
        return _broadcasters[url]


def close() -> None:
    """Close the broadcasters' connections and their thread (at shutdown, in tests)."""
    with _lock:
        while _broadcasters:
            _broadcasters.popitem()[1].close_sync()


def publish(stream: str, message: Any) -> None:
    """Send ``message`` to every subscriber of ``stream`` (from sync code)."""
    url = settings.CABLE_PUBSUB
    if url.startswith("memory"):
        from chatsite.cable import cable

        cable.broadcast_sync(stream, message)
    else:
        _broadcaster(url).broadcast_sync(stream, message)
