"""The cable around a test: the request a test connection opens with, and making a
cable startable again under a new event loop (one test after another)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from .._remote import identifier_key
from ..http import Request
from ..cable import Cable
from ..hub import Hub

__all__ = ["build_request", "make_startable", "rewind"]


def build_request(
    cable: Cable,
    path: str | None,
    query: Mapping[str, Any] | str | None,
    headers: Mapping[str, str] | None,
    cookies: Mapping[str, str] | None,
    client: tuple[str, int],
) -> Request:
    """The :class:`~cablecar.Request` of a WebSocket upgrade with these parts."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    if cookies:
        jar = "; ".join(f"{k}={v}" for k, v in cookies.items())
        lowered["cookie"] = f"{lowered['cookie']}; {jar}" if "cookie" in lowered else jar
    if isinstance(query, str):
        query_string = query.lstrip("?")
    else:
        query_string = urlencode(
            {k: v if isinstance(v, str) else identifier_key(v) for k, v in (query or {}).items()}
        )
    return Request("GET", path or cable.config.mount_path, query_string, lowered, client)


def make_startable(cable: Cable) -> None:
    """Let ``cable`` be started on the running event loop, even if an earlier test
    stopped it or left it running on an event loop that is now closed.

    Raises:
        RuntimeError: the cable runs (or is stopping) on another live event loop.
    """
    loop = asyncio.get_running_loop()
    if cable._state == "stopped":
        rewind(cable)
    elif cable._state in ("started", "stopping") and cable._loop is not loop:
        if cable._loop is not None and not cable._loop.is_closed():
            raise RuntimeError("the cable is running on another event loop")
        rewind(cable)  # left running by an earlier test whose loop is gone
    elif cable._state == "stopping":
        raise RuntimeError("the cable is stopping")


def rewind(cable: Cable) -> None:
    """Make a stopped cable (or one whose event loop is gone) startable again."""
    if cable.pool is not None:
        cable.pool.shutdown(wait=False, cancel_futures=True)
    if cable._ping_handle is not None:
        cable._ping_handle.cancel()
    cable._state = "new"
    cable._loop = None
    cable.loop_thread = None
    cable.pool = None
    cable._start_lock = None
    cable._drained = None
    cable._ping_handle = None
    cable._sessions.clear()
    cable._welcomed.clear()
    cable._tasks.clear()
    cable._control = None
    cable.started_at = None
    cable.hub = Hub(cable.pubsub)
