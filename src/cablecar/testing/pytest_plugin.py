"""pytest fixtures for applications built on cablecar (registered through ``pytest11``).

``cablecar_server``: start a real standalone server for a cable on a free port::

    async def test_chat(cablecar_server):
        server = await cablecar_server(cable)
        async with cablecar.client.connect(server.url + "?user=bob") as consumer:
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from ..server import Cable
from ..transports.standalone import Server, serve

__all__ = ["cablecar_server"]


@pytest.fixture
async def cablecar_server() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """A factory: ``server = await cablecar_server(cable, http_handler=None)``; every
    server it started is closed after the test."""
    servers: list[Server] = []

    async def start(cable: Cable, **kwargs: Any) -> Server:
        server = await serve(cable, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close(timeout=1.0)
