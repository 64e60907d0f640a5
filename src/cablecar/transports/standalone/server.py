"""The standalone server: listening sockets, accepted connections, graceful close.

Each accepted socket is a ``_Socket`` (``websocket.py``); ``run.py`` runs a server as
a process (signals, event loop, exit).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ...http import Request, Response
from .websocket import _Socket, _Ticks

if TYPE_CHECKING:
    from ...cable import Cable

__all__ = ["HTTPHandler", "Server", "serve"]

logger = logging.getLogger("cablecar.transports.standalone")

#: ``async def handler(request) -> Response | None`` for plain HTTP requests.
HTTPHandler = Callable[[Request], Awaitable[Response | None]]


class Server:
    """A running standalone server (see :func:`serve`)."""

    def __init__(self, cable: Cable, http_handler: HTTPHandler | None = None) -> None:
        self.cable = cable
        self.http_handler = http_handler
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None
        self._sockets: dict[_Socket, None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._refused_handshakes = 0
        #: Loop iterations with socket writes, for coalescing (websocket.py).
        self.ticks = _Ticks(self.loop)

    async def _start(
        self,
        host: str | None,
        port: int,
        *,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
        backlog: int = 4096,
    ) -> None:
        await self.cable.start()
        try:
            if sock is not None:
                self._server = await self.loop.create_server(
                    lambda: _Socket(self), sock=sock, backlog=backlog
                )
            else:
                self._server = await self.loop.create_server(
                    lambda: _Socket(self),
                    host,
                    port,
                    reuse_port=reuse_port or None,
                    backlog=backlog,
                )
        except BaseException:
            # Could not bind (port taken, no permission): do not leave the adapter
            # connected and the ping timer running behind a server that never was.
            await self.cable.stop()
            raise

    @property
    def port(self) -> int:
        """The bound TCP port."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``ws://host:port/cable``."""
        assert self._server is not None
        host = self._server.sockets[0].getsockname()[0]
        return f"ws://{host}:{self.port}{self.cable.config.mount_path}"

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, *, timeout: float | None = None) -> None:
        """Stop accepting, tell every client ``server_restart`` (``reconnect: true``),
        let actions in flight finish (up to ``timeout``), close the adapter."""
        if self._server is not None:
            self._server.close()
        await self.cable.stop(timeout=timeout)
        # Sockets got their close frame; the transports flush and close (bounded by
        # close_timeout, after which each aborts by itself). Whatever remains is aborted.
        for sock in list(self._sockets):
            if sock.transport is not None:
                sock.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        self._closed.set()

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` is called."""
        await self._closed.wait()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def serve(
    cable: Cable,
    host: str | None = "127.0.0.1",
    port: int = 8080,
    *,
    http_handler: HTTPHandler | None = None,
    sock: socket.socket | None = None,
    reuse_port: bool = False,
    backlog: int = 4096,
) -> Server:
    """Start serving ``cable`` at ``ws://host:port/cable``; returns the running server.

    Example::

        server = await serve(cable, "127.0.0.1", 0)
        print(server.url)
        await server.close()

    Args:
        http_handler: answers plain HTTP requests on other paths (``None``: 404).
        reuse_port: bind with ``SO_REUSEPORT`` (several worker processes on one port).
    """
    server = Server(cable, http_handler)
    await server._start(host, port, sock=sock, reuse_port=reuse_port, backlog=backlog)
    return server
