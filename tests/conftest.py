"""Shared fixtures: a real cablecar server on a free port, a WebSocket test client."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from .timing import TIMEOUT

pytest_plugins = (
    ["tests.services_fixtures"]
    if os.path.exists(os.path.join(os.path.dirname(__file__), "services_fixtures.py"))
    else []
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(
    base: str,
    proc: subprocess.Popen[Any] | None = None,
    log: Callable[[], str] | None = None,
    timeout: float = 20.0,
) -> None:
    """Wait until ``GET {base}/health`` answers 200, failing at once if ``proc`` (the
    server's process) exits; the error ends with ``log()``, the server's log."""

    def with_log(message: str) -> str:
        return message if log is None else f"{message}:\n{log()}"

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(with_log(f"the server exited with status {proc.returncode}"))
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(with_log(f"no /health answer from {base} within {timeout:g} s"))


class WS:
    """A raw Action Cable client for tests: JSON frames in and out, bounded waits."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    async def send(self, obj: Any) -> None:
        await self.conn.send(obj if isinstance(obj, str | bytes) else orjson.dumps(obj).decode())

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        return orjson.loads(raw)

    async def recv_until(self, pred: Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
        """The first frame matching ``pred``, skipping pings and others."""
        async with asyncio.timeout(timeout):
            while True:
                msg = orjson.loads(await self.conn.recv())
                if pred(msg):
                    return msg

    async def recv_data(self, timeout: float = TIMEOUT) -> Any:
        """The next data frame (skips pings)."""
        return await self.recv_until(lambda m: m.get("type") != "ping", timeout)

    async def quiet(self, seconds: float) -> list[Any]:
        """Frames (other than pings) received during ``seconds``."""
        got: list[Any] = []
        try:
            async with asyncio.timeout(seconds):
                while True:
                    msg = orjson.loads(await self.conn.recv())
                    if msg.get("type") != "ping":
                        got.append(msg)
        except TimeoutError:
            pass
        return got

    async def subscribe(self, identifier: dict[str, Any] | str) -> Any:
        ident = identifier if isinstance(identifier, str) else orjson.dumps(identifier).decode()
        await self.send({"command": "subscribe", "identifier": ident})
        return await self.recv_until(lambda m: m.get("identifier") == ident and "type" in m)

    async def perform(self, identifier: dict[str, Any] | str, action: str, **data: Any) -> None:
        ident = identifier if isinstance(identifier, str) else orjson.dumps(identifier).decode()
        payload = orjson.dumps({"action": action, **data}).decode()
        await self.send({"command": "message", "identifier": ident, "data": payload})

    async def close(self) -> None:
        await self.conn.close()


ConnectWS = Callable[..., Awaitable[WS]]


@pytest.fixture
async def ws_connect() -> AsyncIterator[ConnectWS]:
    """Open raw Action Cable connections: ``c = await ws_connect(url, welcome=True)``."""
    opened: list[ClientConnection] = []

    async def open_(
        url: str,
        *,
        welcome: bool = True,
        headers: dict[str, str] | None = None,
        subprotocols: list[str] | None = None,
    ) -> WS:
        conn = await connect(
            url,
            subprotocols=subprotocols or ["actioncable-v1-json", "actioncable-unsupported"],  # type: ignore[list-item]
            additional_headers=headers,
            open_timeout=TIMEOUT,
            max_size=None,
        )
        opened.append(conn)
        ws = WS(conn)
        if welcome:
            assert await ws.recv() == {"type": "welcome"}
        return ws

    yield open_
    for conn in opened:
        try:
            await conn.close()
        except websockets.exceptions.WebSocketException:
            pass
