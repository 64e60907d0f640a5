"""The Python client on a cable with history=True: after a cut connection it resumes
its session and gets what it missed, each message once and in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from cablecar import Cable, Channel, Connection
from cablecar.client import Backoff, Consumer, connect

from ..conftest import TIMEOUT


class ChatChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from(f"chat_{self.params['room']}")


class CuttableProxy:
    """A TCP proxy whose connections can be cut (no close frame: the socket just dies)
    and that refuses new ones until resumed."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.open = True
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.pairs.append((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.open = False
        for a, b in self.pairs:
            a.transport.abort()
            b.transport.abort()
        self.pairs.clear()

    def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


@contextlib.asynccontextmanager
async def consumer_behind_proxy(
    cablecar_server: Any, cable: Cable
) -> AsyncIterator[tuple[CuttableProxy, Consumer]]:
    """``cable`` served, and a consumer reaching it through a ``CuttableProxy`` that
    retries fast (0.1 s, at most 0.3 s apart)."""
    server = await cablecar_server(cable)
    proxy = CuttableProxy(server.port)
    port = await proxy.start()
    backoff = Backoff(initial=0.1, factor=1.5, maximum=0.3, jitter=0.0)
    try:
        async with connect(f"ws://127.0.0.1:{port}/cable", backoff=backoff) as consumer:
            yield proxy, consumer
    finally:
        proxy.close()


async def test_a_cut_connection_resumes_and_misses_nothing(cablecar_server: Any) -> None:
    """Scenario 1a with the Python client: 10 broadcasts while the TCP connection is cut
    for 2 s arrive after the resume, once, in order, then a live one; positions show."""
    cable = Cable(Connection, [ChatChannel], history=True)
    async with consumer_behind_proxy(cablecar_server, cable) as (proxy, consumer):
        sub = await consumer.subscribe("ChatChannel", room="1")
        await cable.broadcast("chat_1", {"n": 0})
        assert await sub.receive(TIMEOUT) == {"n": 0}
        assert sub.position is not None and sub.position[0] == "chat_1"
        proxy.cut()
        for n in range(1, 11):
            await cable.broadcast("chat_1", {"n": n})
        await asyncio.sleep(2)
        proxy.open = True
        got = [await sub.receive(TIMEOUT * 2) for _ in range(10)]
        await cable.broadcast("chat_1", {"n": 11})
        got.append(await sub.receive(TIMEOUT))
        assert got == [{"n": n} for n in range(1, 12)]
        assert sub.position is not None and sub.position[2] == 12  # offsets 1..12
        assert sub.history_lost == 0
        assert consumer.connections == 2


async def test_a_gap_past_the_history_is_reported(cablecar_server: Any) -> None:
    """With history_limit 3 and 10 missed, the client learns the gap is lost
    (history_lost) and goes on receiving live messages."""
    cable = Cable(Connection, [ChatChannel], history=True, history_limit=3)
    async with consumer_behind_proxy(cablecar_server, cable) as (proxy, consumer):
        sub = await consumer.subscribe("ChatChannel", room="2")
        await cable.broadcast("chat_2", {"n": 0})
        assert await sub.receive(TIMEOUT) == {"n": 0}
        proxy.cut()
        for n in range(1, 11):
            await cable.broadcast("chat_2", {"n": n})
        proxy.open = True
        async with asyncio.timeout(TIMEOUT * 2):
            while sub.history_lost == 0:
                await asyncio.sleep(0.02)
        await cable.broadcast("chat_2", {"n": 11})
        assert await sub.receive(TIMEOUT) == {"n": 11}
