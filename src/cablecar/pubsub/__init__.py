"""Pub/sub adapters, chosen by URL.

==========================  =============================================
URL                         adapter
==========================  =============================================
``memory://``               in-process (the default; one process only)
``redis://host:port/db``    Redis PUBLISH/SUBSCRIBE (``pip install 'cablecar-py[redis]'``)
``postgresql://...``        PostgreSQL LISTEN/NOTIFY (``cablecar[postgres]``)
``nats://host:port``        NATS core subjects (``cablecar[nats]``)
==========================  =============================================
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import MessageHandler, PubSub
from .memory import MemoryPubSub

__all__ = ["MemoryPubSub", "MessageHandler", "PubSub", "adapter_from_url"]


def adapter_from_url(url: str, *, channel_prefix: str | None = None) -> PubSub:
    """Build the adapter that ``url`` names.

    Args:
        url: ``memory://``, ``redis://...``/``rediss://...``, ``postgresql://...``
            (or ``postgres://``), ``nats://...``.
        channel_prefix: prepended to every stream name in the service, so that several
            applications can share one Redis, PostgreSQL or NATS.

    Raises:
        ConfigurationError: unknown scheme, or the adapter's extra is not installed.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryPubSub()
    try:
        if scheme in ("redis", "rediss", "unix"):
            from .redis import RedisPubSub

            return RedisPubSub(url, channel_prefix=channel_prefix)
        if scheme in ("postgresql", "postgres"):
            from .postgres import PostgresPubSub

            return PostgresPubSub(url, channel_prefix=channel_prefix)
        if scheme in ("nats", "tls"):
            from .nats import NatsPubSub

            return NatsPubSub(url, channel_prefix=channel_prefix)
    except ImportError as exc:
        extra = {"postgresql": "postgres", "postgres": "postgres", "tls": "nats"}.get(
            scheme, scheme
        )
        extra = "redis" if extra in ("rediss", "unix") else extra
        raise ConfigurationError(
            f"the {scheme}:// adapter needs an extra: pip install 'cablecar-py[{extra}]' ({exc})"
        ) from None
    raise ConfigurationError(f"unknown pub/sub URL scheme {scheme!r} in {url!r}")
