"""Reliable delivery: stream history and resumable sessions (``Cable(history=True)``).

A *store* keeps, per stream, the last ``history_limit`` broadcasts for ``history_ttl``
seconds, each with a position (an *epoch* shared by every process of the backend, and
an *offset*: 1, 2, 3... per stream), and the state of disconnected sessions for
``sessions_ttl`` seconds, so that a client that reconnects (to any node) gets back its
subscriptions and what it missed. It is written on the publishing path, so a message
published while no server is up is still recovered.

``memory://`` keeps both in the process (one server); ``redis://`` in Redis Streams and
keys (any node serves a restore; the epoch survives restarts).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Entry, HistoryStore, StoreSettings
from .memory import MemoryStore

__all__ = ["Entry", "HistoryStore", "MemoryStore", "StoreSettings", "store_from_url"]


def store_from_url(url: str, settings: StoreSettings, *, prefix: str | None = None) -> HistoryStore:
    """The store for the pub/sub backend ``url`` names.

    Raises:
        ConfigurationError: the backend has no history store yet (NATS), or its extra
            is not installed.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryStore(settings)
    if scheme in ("redis", "rediss", "unix"):
        try:
            from .redis import RedisStore
        except ImportError as exc:  # pragma: no cover - the redis extra is missing
            raise ConfigurationError(
                f"history on redis:// needs an extra: pip install 'cablecar[redis]' ({exc})"
            ) from None
        return RedisStore(url, settings, prefix=prefix)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - the postgres extra is missing
            raise ConfigurationError(
                f"history on postgresql:// needs an extra: pip install 'cablecar[postgres]' ({exc})"
            ) from None
        return PostgresStore(url, settings, prefix=prefix)
    raise ConfigurationError(
        "history=True is available with memory://, redis:// and postgresql:// pub/sub; "
        f"not yet with {scheme}://"
    )
