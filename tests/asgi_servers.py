"""ASGI servers for the tests: uvicorn and Granian, in-process or as subprocesses.

In-process (the test's own event loop, so tests reach ``cable`` directly)::

    server = await InProcessServer.start(cable.asgi(), "uvicorn")   # or "granian"
    server.url   # ws://127.0.0.1:P/cable
    await server.stop()

Subprocesses, and a command-line tool for shell commands that must stop/start a server
(the conformance suite's restart test)::

    python -m tests.asgi_servers start PORT PIDFILE [uvicorn|granian] [mounted|middleware]
    python -m tests.asgi_servers stop PIDFILE

The subprocess app is ``examples/conformance_app.py``'s cable inside a Starlette app,
either mounted (``app.mount("/cable", cable.asgi())``: clients use ``/cable/``) or behind
``CableMiddleware`` (``/cable``).
"""

from __future__ import annotations

import asyncio
import atexit
import socket
import sys
import time
from pathlib import Path
from typing import Any

from tests.servers import ServerProcess, start_detached, stop_pidfile

SERVERS = ("uvicorn", "granian")

#: When the last embedded Granian stopped (its Rust threads wind down after that).
_granian_stopped: float | None = None


@atexit.register
def _let_granian_threads_finish() -> None:
    # Embedded Granian's runtime threads outlive server.stop() by a moment; if the
    # interpreter finalizes under them, a Rust panic aborts the process (exit 134).
    if _granian_stopped is not None:
        time.sleep(max(0.0, _granian_stopped + 1.0 - time.monotonic()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class InProcessServer:
    """uvicorn (``--ws websockets-sansio``) or embedded Granian on the running loop."""

    def __init__(self, kind: str, port: int, server: Any, task: asyncio.Task[Any]) -> None:
        self.kind = kind
        self.port = port
        self._server = server
        self._task = task

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/cable"

    @classmethod
    async def start(cls, app: Any, kind: str, *, lifespan: str = "on") -> InProcessServer:
        if kind == "uvicorn":
            import uvicorn

            config = uvicorn.Config(
                app,
                host="127.0.0.1",
                port=0,
                ws="websockets-sansio",
                lifespan=lifespan,
                log_level="warning",
            )
            server: Any = uvicorn.Server(config)
            task = asyncio.get_running_loop().create_task(server.serve())
            async with asyncio.timeout(10):
                while not server.started:
                    if task.done():
                        task.result()
                        raise RuntimeError("uvicorn exited during startup")
                    await asyncio.sleep(0.01)
            port = int(server.servers[0].sockets[0].getsockname()[1])
            return cls(kind, port, server, task)
        if kind == "granian":
            from granian.constants import Interfaces
            from granian.server.embed import Server

            port = _free_port()
            interface = Interfaces.ASGI if lifespan == "on" else Interfaces.ASGINL
            server = Server(
                app, address="127.0.0.1", port=port, interface=interface, log_enabled=False
            )
            task = asyncio.get_running_loop().create_task(server.serve())
            async with asyncio.timeout(10):
                while True:
                    if task.done():
                        task.result()
                        raise RuntimeError("granian exited during startup")
                    try:
                        _r, w = await asyncio.open_connection("127.0.0.1", port)
                    except OSError:
                        await asyncio.sleep(0.02)
                        continue
                    w.close()
                    break
            return cls(kind, port, server, task)
        raise ValueError(f"unknown ASGI server {kind!r}")

    async def stop(self) -> None:
        if self._task.done():
            return
        if self.kind == "uvicorn":
            self._server.should_exit = True
        else:
            self._server.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 15)
        except TimeoutError:
            self._task.cancel()
        if self.kind == "granian":
            global _granian_stopped
            _granian_stopped = time.monotonic()


# -- subprocesses -------------------------------------------------------------------------


def conformance_mounted() -> Any:
    """Factory: the conformance cable mounted in Starlette (``ws://host/cable/``)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from cablecar.cli import load_cable

    cable_app = load_cable("examples/conformance_app.py:cable").asgi()
    app = Starlette(
        routes=[Route("/", lambda request: PlainTextResponse("host app"))],
        lifespan=cable_app.lifespan,
    )
    app.mount("/cable", cable_app)
    return app


def conformance_middleware() -> Any:
    """Factory: the conformance cable in front of Starlette (``ws://host/cable``)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from cablecar.cli import load_cable
    from cablecar.transports.asgi import CableMiddleware

    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("host app"))])
    app.add_middleware(CableMiddleware, cable=load_cable("examples/conformance_app.py:cable"))
    return app


def command(port: int, server: str = "uvicorn", app: str = "middleware") -> list[str]:
    """The command line serving a conformance factory under ``server`` on ``port``."""
    target = f"tests.asgi_servers:conformance_{app}"
    where = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    if server == "uvicorn":
        uvicorn = ["uvicorn", "--factory", target, "--ws", "websockets-sansio"]
        return [sys.executable, "-m", *uvicorn, *where]
    if server == "granian":
        granian = ["granian", "--interface", "asgi", "--factory", target]
        return [sys.executable, "-m", *granian, *where]
    raise ValueError(f"unknown ASGI server {server!r}")


class ASGIProcess(ServerProcess):
    """An ASGI server serving the conformance cable in a subprocess."""

    def __init__(
        self, port: int, server: str = "uvicorn", app: str = "middleware", log: Path | None = None
    ) -> None:
        super().__init__(port, log)
        self.server = server
        self.app = app

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/cable" + ("/" if self.app == "mounted" else "")

    def command(self) -> list[str]:
        return command(self.port, self.server, self.app)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "start":
        port, pidfile = int(argv[1]), Path(argv[2])
        server = argv[3] if len(argv) > 3 else "uvicorn"
        app = argv[4] if len(argv) > 4 else "middleware"
        return start_detached(command(port, server, app), port, pidfile)
    if argv and argv[0] == "stop":
        return stop_pidfile(Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
