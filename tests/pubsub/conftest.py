"""Adapter fixtures for the pub/sub tests: one parameter per adapter, separate
publishing (``tx``) and receiving (``rx``) instances for every adapter but memory.

The services themselves (``redis_server``, ``postgres_server``, ``nats_server``) come
from ``tests/services_fixtures.py``, loaded by ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from cablecar.pubsub import MemoryPubSub, PubSub, adapter_from_url

from ..timing import FACTOR

#: How long to wait for a message that should arrive.
WAIT = 5.0 * FACTOR
#: How long to wait to be reasonably sure a message will not arrive (Rails uses 0.2 s).
QUIET = 0.2 * FACTOR

SERVICE_KINDS = ["redis", "postgres", "nats"]
ADAPTERS = [
    pytest.param("memory", id="memory"),
    *(pytest.param(kind, id=kind, marks=pytest.mark.services) for kind in SERVICE_KINDS),
]


class Inbox:
    """An ``on_message`` handler that records ``(stream, payload)`` deliveries."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._arrived = asyncio.Event()

    def __call__(self, stream: str, payload: bytes) -> None:
        self.messages.append((stream, payload))
        self._arrived.set()

    def on(self, stream: str) -> list[bytes]:
        """Payloads received on ``stream``, in order."""
        return [payload for s, payload in self.messages if s == stream]

    async def quiet_on(self, stream: str) -> list[bytes]:
        """Payloads received on ``stream`` once QUIET more seconds have passed, so that
        a message that should not arrive has had its chance to."""
        await asyncio.sleep(QUIET)
        return self.on(stream)

    async def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Wait until ``ready()`` holds, failing the test after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                pytest.fail(f"no {what} within {timeout:g} s; received {self.summary()}")
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                pass

    async def wait_for(self, stream: str, count: int = 1, timeout: float = WAIT) -> list[bytes]:
        """Wait for ``count`` payloads on ``stream``; return all payloads on it."""
        await self.wait_until(
            lambda: len(self.on(stream)) >= count, f"{count} message(s) on {stream!r}", timeout
        )
        return self.on(stream)

    def summary(self) -> str:
        shown = [(s[:40], len(p)) for s, p in self.messages[-10:]]
        return f"{len(self.messages)} message(s), last (stream, size): {shown}"


@dataclass
class Pair:
    """A receiving adapter (started, delivering to ``inbox``) and a publishing one."""

    kind: str
    tx: PubSub
    rx: PubSub
    inbox: Inbox


@pytest.fixture(params=ADAPTERS)
def adapter_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_adapter(
    adapter_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., PubSub]]:
    """``make_adapter(channel_prefix=None)``: a new adapter of the current kind, closed
    after the test."""
    url = None
    if adapter_kind != "memory":
        url = request.getfixturevalue(f"{adapter_kind}_server").url
    made: list[PubSub] = []

    def make(channel_prefix: str | None = None) -> PubSub:
        adapter = (
            MemoryPubSub() if url is None else adapter_from_url(url, channel_prefix=channel_prefix)
        )
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.close()


@pytest.fixture
async def pair(adapter_kind: str, make_adapter: Callable[..., PubSub]) -> Pair:
    """Separate tx and rx adapters on one service (one shared instance for memory)."""
    rx = make_adapter()
    inbox = Inbox()
    await rx.start(inbox)
    tx = rx if adapter_kind == "memory" else make_adapter()
    return Pair(adapter_kind, tx, rx, inbox)


def service_url(request: pytest.FixtureRequest, kind: str) -> str:
    """The URL of the session's ``kind`` server."""
    server: Any = request.getfixturevalue(f"{kind}_server")
    return str(server.url)
