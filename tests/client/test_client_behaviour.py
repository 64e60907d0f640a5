"""The JS client's behaviour, each case against a server that produces it.

An in-process cablecar server (pings every 0.2 s so stale detection is quick to observe)
does remote disconnects; a TCP relay that stops forwarding makes a connection half-open;
plain ``websockets`` servers play servers that don't speak ``actioncable-v1-json``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

import cablecar.client
from cablecar import Cable, Channel
from cablecar.client import Backoff, ConnectionRejected, SubscriptionClosed
from cablecar.transports.standalone import serve

from ..conftest import free_port
from ..core import ChatChannel, CurrentUserConnection
from .client_support import unique

FAST = Backoff(initial=0.05, factor=2.0, maximum=0.25, jitter=0.2)


class WhoAmIChannel(Channel):
    """Tells the subscriber what the server saw of its handshake."""

    async def subscribed(self) -> None:
        request = self.connection.request
        self.transmit(
            {
                "user": self.current_user,
                "cookie": request.cookies.get("session"),
                "header": request.headers.get("x-client-test"),
                "origin": request.headers.get("origin"),
            }
        )


@pytest.fixture
async def cable() -> AsyncIterator[tuple[Cable, str]]:
    """An in-process cablecar server pinging every 0.2 s; yields (cable, url)."""
    app = Cable(
        connection=CurrentUserConnection, channels=[ChatChannel, WhoAmIChannel], ping_interval=0.2
    )
    server = await serve(app, "127.0.0.1", 0)
    yield app, f"ws://127.0.0.1:{server.port}/cable"
    await server.close()


class Relay:
    """A TCP relay; :meth:`freeze` makes its current connections silently drop all bytes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self._frozen: set[int] = set()
        self._live: set[int] = set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self._frozen |= self._live

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = self.accepted
        self._live.add(conn)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if conn not in self._frozen:
                        dst.write(data)
                        await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._live.discard(conn)


async def test_stale_connection_is_reopened(cable: tuple[Cable, str]) -> None:
    """No frame for stale_threshold seconds (a half-open socket): reconnect and re-subscribe."""
    _app, url = cable
    relay = Relay(int(url.split(":")[2].split("/")[0]))
    await relay.start()
    room = unique("room")
    relay_url = f"ws://127.0.0.1:{relay.port}/cable"
    try:
        async with (
            cablecar.client.connect(relay_url, stale_threshold=0.8, backoff=FAST) as consumer,
            cablecar.client.connect(url) as speaker,
        ):
            sub = await consumer.subscribe("ChatChannel", room=room)
            await asyncio.sleep(1.2)  # pings every 0.2 s keep a live connection fresh
            assert consumer.connections == 1 and sub.connected

            relay.freeze()
            async with asyncio.timeout(5):
                while consumer.connections < 2 or not sub.connected:
                    await sub.wait_connected()
                    await asyncio.sleep(0.05)
            assert sub.reconnected and relay.accepted == 2
            talk = await speaker.subscribe("ChatChannel", room=room)
            await talk.perform("speak", body="fresh")
            assert await sub.receive(timeout=5) == {"body": "fresh"}
    finally:
        await relay.close()


async def test_remote_disconnect_without_reconnect_stops_for_good(cable: tuple[Cable, str]) -> None:
    """disconnect(reconnect=False) after welcome: iteration ends, the reason is kept."""
    app, url = cable
    async with cablecar.client.connect(f"{url}?user=bob", backoff=FAST) as consumer:
        sub = await consumer.subscribe("ChatChannel", room=unique("room"))
        await app.remote_connections.where(current_user="bob").disconnect(reconnect=False)
        async with asyncio.timeout(5):
            received = [message async for message in sub]
        assert received == []
        await consumer.wait_closed(timeout=5)
        assert consumer.disconnect_reason == "remote" and consumer.connections == 1
        with pytest.raises(SubscriptionClosed) as info:
            await sub.receive(timeout=1)
        assert info.value.reason == "remote"
        with pytest.raises(SubscriptionClosed):
            await consumer.subscribe("ChatChannel", room="x")


async def test_remote_disconnect_with_reconnect_comes_back(cable: tuple[Cable, str]) -> None:
    """disconnect(reconnect=True): the client reconnects and re-subscribes."""
    app, url = cable
    reconnected = asyncio.Event()

    def on_connected(again: bool) -> None:
        if again:
            reconnected.set()

    async with cablecar.client.connect(f"{url}?user=eve", backoff=FAST) as consumer:
        sub = await consumer.subscribe(
            "ChatChannel",
            room=unique("room"),
            on_connected=on_connected,
        )
        await app.remote_connections.where(current_user="eve").disconnect(reconnect=True)
        await asyncio.wait_for(reconnected.wait(), 5)
        assert sub.connected and sub.reconnected and consumer.connections == 2
        assert consumer.disconnect_reason is None
        await sub.perform("speak", body="back")
        assert await sub.receive(timeout=5) == {"body": "back"}


@pytest.mark.parametrize("offered", [None, ["actioncable-unsupported"]])
async def test_server_without_actioncable_protocol_is_refused(offered: list[str] | None) -> None:
    """A server that doesn't pick actioncable-v1-json: the client gives up, like the JS one."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"type":"welcome"}')
        await ws.wait_closed()

    async with ws_serve(handler, "127.0.0.1", 0, subprotocols=offered) as server:  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ConnectionRejected, match="actioncable-v1-json"):
            async with cablecar.client.connect(f"ws://127.0.0.1:{port}/cable"):
                pytest.fail("connected")


async def test_unreachable_server_raises_oserror() -> None:
    """Nothing listening: connect() raises at once instead of retrying in the dark."""
    consumer = cablecar.client.connect(f"ws://127.0.0.1:{free_port()}/cable")
    with pytest.raises(RuntimeError, match="open the consumer first"):
        await consumer.subscribe("ChatChannel", room="1")
    with pytest.raises(OSError):
        async with consumer:
            pytest.fail("connected")
    assert consumer.closed


async def test_handshake_headers_cookies_and_origin(cable: tuple[Cable, str]) -> None:
    """headers=, cookies= and origin= reach the server; http:// becomes ws://; await works."""
    _app, url = cable
    port = url.split(":")[2].split("/")[0]
    consumer = cablecar.client.connect(
        url.replace("ws://", "http://") + "?user=ann",
        headers={"X-Client-Test": "yes"},
        cookies={"session": "abc"},
        origin=f"http://127.0.0.1:{port}",  # same origin as the Host: allowed
    )
    assert consumer.url.startswith("ws://")
    assert await consumer is consumer  # ``consumer = await connect(url)`` opens it
    try:
        sub = await consumer.subscribe("WhoAmIChannel")
        assert await sub.receive(timeout=5) == {
            "user": "ann",
            "cookie": "abc",
            "header": "yes",
            "origin": f"http://127.0.0.1:{port}",
        }
    finally:
        await consumer.close()
    assert consumer.closed and consumer.disconnect_reason is None

    with pytest.raises(ConnectionRejected, match="HTTP 403"):
        async with cablecar.client.connect(url, origin="http://evil.example"):
            pytest.fail("connected")


async def test_disconnect_without_reconnect_key_stops() -> None:
    """A disconnect frame without ``reconnect`` counts as false (the JS client's reading)."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"type":"welcome"}')
        await ws.recv()  # the subscribe
        await ws.send('{"type":"disconnect","reason":"custom"}')
        await ws.wait_closed()

    async with ws_serve(handler, "127.0.0.1", 0, subprotocols=["actioncable-v1-json"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        async with cablecar.client.connect(
            f"ws://127.0.0.1:{port}/cable", backoff=FAST
        ) as consumer:
            subscribing = asyncio.create_task(consumer.subscribe("AnyChannel"))
            await consumer.wait_closed(timeout=5)
            assert consumer.disconnect_reason == "custom" and consumer.connections == 1
            with pytest.raises(SubscriptionClosed):
                await subscribing


def test_backoff_grows_exponentially_with_jitter() -> None:
    """Delays: initial * factor**n, capped, times 1 + [0, jitter)."""
    backoff = Backoff(initial=1.0, factor=2.0, maximum=5.0, jitter=0.1)
    for attempt, base in enumerate([1.0, 2.0, 4.0, 5.0, 5.0]):
        assert base <= backoff.delay(attempt) < base * 1.1
    assert Backoff(jitter=0).delay(0) == 0.5
    with pytest.raises(ValueError):
        Backoff(factor=0.5)
