"""The chat room demo (``cablecar demo``): rooms, presence, typing, history, and a page
that compares request-response, polling and push. See ``docs/demo.md``."""

from __future__ import annotations

from .app import ChatChannel, ChatRooms, DemoCable, DemoConnection, RoomsChannel

__all__ = ["ChatChannel", "ChatRooms", "DemoCable", "DemoConnection", "RoomsChannel"]
