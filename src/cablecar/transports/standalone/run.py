"""Running a standalone server as a process: signals, the event loop, the exit.

``run`` is what ``cablecar serve`` calls in each worker: uvloop when installed, a
graceful shutdown on the first SIGINT/SIGTERM, an immediate exit on a second one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..._runtime import WORKER_THREAD_PREFIX
from .server import HTTPHandler, Server, serve

if TYPE_CHECKING:
    from ...cable import Cable

__all__ = ["run"]

logger = logging.getLogger("cablecar.transports.standalone")

#: Seconds after a shutdown signal during which another one is the same request.
_SAME_SIGNAL_WINDOW = 1.0


def run(
    cable: Cable,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    http_handler: HTTPHandler | None = None,
    reuse_port: bool = False,
    on_ready: Callable[[Server], None] | None = None,
    use_uvloop: bool = True,
) -> None:
    """Serve until SIGINT/SIGTERM; the first signal shuts down gracefully, a second
    one exits at once.

    A second signal within a second of the first counts as the same request: a
    supervisor that signals every process of a service (systemd's default
    ``KillMode=control-group``) reaches a ``--workers`` child both directly and through
    its parent.
    """

    async def main() -> None:
        server = await serve(cable, host, port, http_handler=http_handler, reuse_port=reuse_port)
        loop = asyncio.get_running_loop()
        stopping_since: float | None = None
        closing: list[asyncio.Task[None]] = []

        def on_signal() -> None:
            nonlocal stopping_since
            now = time.monotonic()
            if stopping_since is not None:
                if now - stopping_since < _SAME_SIGNAL_WINDOW:
                    return  # the same shutdown request, delivered twice
                logger.warning("second signal: exiting now")
                os._exit(1)
            stopping_since = now
            logger.info("shutting down (signal)")
            closing.append(loop.create_task(server.close()))

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        if on_ready is not None:
            on_ready(server)
        await server.serve_forever()

    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    _exit_past_stuck_threads()


def _exit_past_stuck_threads() -> None:
    """After a graceful shutdown, plain ``def`` actions still blocking a worker thread
    past ``shutdown_timeout`` would keep the interpreter from exiting (it joins pool
    threads at exit): log them and exit now."""
    threads = [t for t in threading.enumerate() if t.name.startswith(WORKER_THREAD_PREFIX)]
    deadline = time.monotonic() + 0.5  # idle workers are ending on their own
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in threads if t.is_alive()]
    if stuck:
        logger.warning(
            "exiting with %d plain-def actions still running past shutdown_timeout", len(stuck)
        )
        logging.shutdown()
        os._exit(0)
