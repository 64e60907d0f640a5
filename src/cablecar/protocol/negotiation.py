"""Subprotocol choice, as Rails' websocket-driver does it."""

from __future__ import annotations

from collections.abc import Iterable

from .constants import SUBPROTOCOLS

__all__ = ["choose_subprotocol", "parse_subprotocols"]


def parse_subprotocols(header: str | None) -> list[str]:
    """Split a ``Sec-WebSocket-Protocol`` header value."""
    if not header:
        return []
    return [p.strip() for p in header.split(",") if p.strip()]


def choose_subprotocol(
    offered: Iterable[str], supported: Iterable[str] = SUBPROTOCOLS
) -> str | None:
    """The first offered subprotocol that we support, or ``None``.

    With ``None`` the handshake still succeeds without a ``Sec-WebSocket-Protocol``
    header (what Rails does); the official client then gives up by itself.
    """
    wanted = set(supported)
    for proto in offered:
        if proto in wanted:
            return proto
    return None
