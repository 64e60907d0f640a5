"""Reliable delivery: stream history and resumable sessions (``Cable(history=True)``).

A *store* keeps, per stream, the last ``history_limit`` broadcasts for ``history_ttl``
seconds, each with a position (an *epoch* shared by every process of the backend, and
an *offset*: 1, 2, 3... per stream), and the state of disconnected sessions for
``sessions_ttl`` seconds, so that a client that reconnects (to any node) gets back its
subscriptions and what it missed. It is written on the publishing path, so a message
published while no server is up is still recovered.

``memory://`` keeps both in the process (one server); ``redis://`` in Redis Streams and
keys, ``postgresql://`` in tables, ``nats://`` in JetStream (any node serves a restore;
the epoch survives restarts).
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Entry, HistoryStore, StoreSettings
from .memory import MemoryStore

__all__ = ["Entry", "HistoryStore", "MemoryStore", "StoreSettings", "store_from_url"]


#: The stores kept in a network service: scheme -> (module, class, pip extra).
_NETWORK_STORES = {
    "redis": (".redis", "RedisStore", "redis"),
    "rediss": (".redis", "RedisStore", "redis"),
    "unix": (".redis", "RedisStore", "redis"),
    "postgresql": (".postgres", "PostgresStore", "postgres"),
    "postgres": (".postgres", "PostgresStore", "postgres"),
    "nats": (".nats", "NatsStore", "nats"),
    "tls": (".nats", "NatsStore", "nats"),
}


def store_from_url(url: str, settings: StoreSettings, *, prefix: str | None = None) -> HistoryStore:
    """The store for the pub/sub backend ``url`` names.

    Raises:
        ConfigurationError: the backend has no history store, or its extra is not
            installed.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryStore(settings)
    found = _NETWORK_STORES.get(scheme)
    if found is not None:
        module, name, extra = found
        try:
            cls = getattr(importlib.import_module(module, __name__), name)
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise ConfigurationError(
                f"history on {scheme}:// needs an extra: pip install 'cablecar-py[{extra}]' ({exc})"
            ) from None
        store: HistoryStore = cls(url, settings, prefix=prefix)
        return store
    raise ConfigurationError(
        "history=True is available with memory://, redis://, postgresql:// and nats:// "
        f"pub/sub; not with {scheme}://"
    )
