"""The cable around a test: the request a test connection opens with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from .._remote import identifier_key
from ..cable import Cable, CableState
from ..http import Request

__all__ = ["build_request", "make_startable"]


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
    """Check that ``cable`` can be started on the running event loop.

    A stopped cable starts again by itself, and so does one left running by an earlier
    test whose event loop is gone (``Cable.start`` handles both).

    Raises:
        RuntimeError: the cable is stopping.
    """
    if cable.state is CableState.STOPPING:
        raise RuntimeError("the cable is stopping")
