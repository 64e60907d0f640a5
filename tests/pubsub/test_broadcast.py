"""Broadcasting from outside a server process: ``Broadcaster`` and ``cablecar broadcast``.

A receiving adapter stands in for a cablecar server: it is what every server process
runs, and what it delivers is exactly what the server's hub would fan out.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from cablecar import _json
from cablecar._naming import broadcasting_for, channel_name_for, underscore
from cablecar._remote import CONTROL_STREAM
from cablecar.broadcast import Broadcaster
from cablecar.errors import AdapterError, ConfigurationError, OutboxFull
from cablecar.pubsub import PubSub, adapter_from_url

from ..services import free_port
from .conftest import SERVICE_KINDS, WAIT, Inbox, service_url


@dataclass
class Receiver:
    url: str
    adapter: PubSub
    inbox: Inbox


@pytest.fixture(params=[pytest.param(k, marks=pytest.mark.services) for k in SERVICE_KINDS])
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[Receiver]:
    """A started adapter on a real service, as a server process would run it."""
    url = service_url(request, str(request.param))
    adapter = adapter_from_url(url)
    inbox = Inbox()
    await adapter.start(inbox)
    yield Receiver(url, adapter, inbox)
    await adapter.close()


@pytest.fixture
async def redis_receiver(request: pytest.FixtureRequest) -> AsyncIterator[Receiver]:
    url = service_url(request, "redis")
    adapter = adapter_from_url(url)
    inbox = Inbox()
    await adapter.start(inbox)
    yield Receiver(url, adapter, inbox)
    await adapter.close()


class ChatRoomChannel:
    """Stands for a user's channel class (naming is all Broadcaster needs)."""


class Room:
    def __init__(self, id: int) -> None:
        self.id = id


# -- naming (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ChatChannel", "chat"),
        ("ChatRoomChannel", "chat_room"),
        ("HTMLPreviewChannel", "html_preview"),
        ("Web2PushChannel", "web2_push"),
        ("APIChannel", "api"),
        ("Channel", "channel"),
        ("Notifications", "notifications"),
    ],
)
def test_channel_names_follow_rails(name: str, expected: str) -> None:
    """The broadcasting name is the class name minus ``Channel``, in snake_case."""
    assert channel_name_for(type(name, (), {})) == expected


def test_underscore_matches_active_support() -> None:
    """underscore() turns class names into stream prefixes as ActiveSupport does."""
    assert [underscore(s) for s in ("ChatRoom", "HTMLParser", "already_snake", "ABC")] == [
        "chat_room",
        "html_parser",
        "already_snake",
        "abc",
    ]


def test_broadcasting_for_uses_identifier_keys() -> None:
    """Models serialize like remote identifiers: strings, numbers, objects with an id."""
    assert broadcasting_for(ChatRoomChannel, "lobby") == "chat_room:lobby"
    assert broadcasting_for(ChatRoomChannel, 42) == "chat_room:42"
    assert broadcasting_for(ChatRoomChannel, Room(7)) == "chat_room:Room:7"
    assert broadcasting_for(ChatRoomChannel, ["a", 1]) == "chat_room:a:1"


def test_channel_classes_name_streams_the_same_way() -> None:
    """``Channel.broadcasting_for`` (the server side) agrees with the Broadcaster."""
    channel_module = pytest.importorskip("cablecar.channel")

    class ChatRoomChannel(channel_module.Channel):  # type: ignore[misc,name-defined]
        pass

    for model in ("lobby", 42, Room(7)):
        assert ChatRoomChannel.broadcasting_for(model) == broadcasting_for(ChatRoomChannel, model)


# -- configuration ----------------------------------------------------------------------


def test_memory_url_is_refused() -> None:
    """The memory adapter cannot reach another process; the error says so."""
    with pytest.raises(ConfigurationError, match="cannot reach another process"):
        Broadcaster("memory://")


def test_unknown_scheme_is_refused() -> None:
    """A Broadcaster for an unknown URL scheme raises ConfigurationError saying so."""
    with pytest.raises(ConfigurationError, match="unknown pub/sub URL scheme"):
        Broadcaster("amqp://127.0.0.1/")


async def test_unreachable_service_raises_adapter_error() -> None:
    """Nothing listening, at most once (``outbox_size=0``): ``broadcast`` fails with
    AdapterError, in bounded time; with an outbox of 2, two wait and the third gets
    OutboxFull, and close() says the two were not sent."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with Broadcaster(url, outbox_size=0) as broadcaster:
        async with asyncio.timeout(WAIT):
            with pytest.raises(AdapterError):
                await broadcaster.broadcast("s", {"a": 1})
    async with Broadcaster(url, outbox_size=2, timeout=0.5) as broadcaster:
        async with asyncio.timeout(WAIT):
            await broadcaster.broadcast("s", {"a": 1})
            await broadcaster.broadcast("s", {"a": 2})
            with pytest.raises(OutboxFull, match="2 broadcasts already wait"):
                await broadcaster.broadcast("s", {"a": 3})


# -- broadcasting -----------------------------------------------------------------------


async def test_broadcast(receiver: Receiver) -> None:
    """``await broadcast`` delivers the message's JSON encoding, byte for byte."""
    message = {"body": "héllo 😀", "n": [1, 2.5, None, True]}
    await receiver.adapter.subscribe("chat_1")
    async with Broadcaster(receiver.url) as broadcaster:
        await broadcaster.broadcast("chat_1", message)
        await broadcaster.broadcast("chat_1", "second")
    assert await receiver.inbox.wait_for("chat_1", 2) == [_json.dumps(message), b'"second"']


async def test_broadcast_sync_from_many_threads(receiver: Receiver) -> None:
    """``broadcast_sync`` is thread-safe and reuses one private loop and connection."""
    await receiver.adapter.subscribe("sync")
    broadcaster = Broadcaster(receiver.url)
    loop_threads: set[str] = set()

    def worker(w: int) -> None:
        for n in range(25):
            broadcaster.broadcast_sync("sync", {"w": w, "n": n})
        loop_threads.update(
            t.name for t in threading.enumerate() if t.name == "cablecar-broadcaster"
        )

    try:
        await asyncio.gather(*(asyncio.to_thread(worker, w) for w in range(4)))
        received = await receiver.inbox.wait_for("sync", 100)
    finally:
        await asyncio.to_thread(broadcaster.close_sync)
    assert loop_threads == {"cablecar-broadcaster"}
    decoded = [_json.loads(p) for p in received]
    for w in range(4):  # each thread's messages arrive in its order
        assert [m["n"] for m in decoded if m["w"] == w] == list(range(25))
    assert not any(t.name == "cablecar-broadcaster" for t in threading.enumerate())


@pytest.mark.services
async def test_broadcast_to_names_the_stream_like_the_channel(redis_receiver: Receiver) -> None:
    """``broadcast_to(ChatRoomChannel, room, ...)`` publishes on ``chat_room:Room:7``."""
    await redis_receiver.adapter.subscribe("chat_room:Room:7")
    broadcaster = Broadcaster(redis_receiver.url)
    try:
        await broadcaster.broadcast_to(ChatRoomChannel, Room(7), {"a": 1})
        await asyncio.to_thread(broadcaster.broadcast_to_sync, ChatRoomChannel, Room(7), {"a": 2})
    finally:
        await broadcaster.close()
    assert await redis_receiver.inbox.wait_for("chat_room:Room:7", 2) == [b'{"a":1}', b'{"a":2}']


@pytest.mark.services
async def test_remote_connections_publish_on_the_control_stream(redis_receiver: Receiver) -> None:
    """``remote_connections.where(...).disconnect()`` reaches every server's control stream."""
    await redis_receiver.adapter.subscribe(CONTROL_STREAM)
    broadcaster = Broadcaster(redis_receiver.url)
    try:
        await broadcaster.remote_connections.where(current_user="bob").disconnect(reconnect=False)
        await asyncio.to_thread(broadcaster.disconnect_sync, current_user=Room(3), reconnect=True)
    finally:
        await broadcaster.close()
    received = await redis_receiver.inbox.wait_for(CONTROL_STREAM, 2)
    assert [_json.loads(p) for p in received] == [
        {"type": "disconnect", "identifiers": {"current_user": "bob"}, "reconnect": False},
        {"type": "disconnect", "identifiers": {"current_user": "Room:3"}, "reconnect": True},
    ]


@pytest.mark.services
async def test_channel_prefix_is_applied(request: pytest.FixtureRequest) -> None:
    """A Broadcaster with the servers' prefix reaches them; without it, it does not."""
    url = service_url(request, "redis")
    rx = adapter_from_url(url, channel_prefix="shop")
    inbox = Inbox()
    await rx.start(inbox)
    try:
        await rx.subscribe("orders")
        async with (
            Broadcaster(url) as unprefixed,
            Broadcaster(url, channel_prefix="shop") as prefixed,
        ):
            await unprefixed.broadcast("orders", "wrong app")
            await prefixed.broadcast("orders", "right app")
        assert await inbox.wait_for("orders") == [b'"right app"']
    finally:
        await rx.close()


@pytest.mark.services
def test_async_methods_are_bound_to_one_loop(request: pytest.FixtureRequest) -> None:
    """Using the async API from a second event loop is refused with a clear message."""
    broadcaster = Broadcaster(service_url(request, "redis"))

    async def send() -> None:
        await broadcaster.broadcast("s", 1)

    asyncio.run(send())
    with pytest.raises(RuntimeError, match="bound to the event loop"):
        asyncio.run(send())


# -- the command line -------------------------------------------------------------------


async def run_cli(*args: str, stdin: bytes = b"") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cablecar",
        "broadcast",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(4 * WAIT):
        out, err = await proc.communicate(stdin)
    assert out == b"", "cablecar broadcast prints nothing on stdout"
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.services
async def test_cli_broadcast(request: pytest.FixtureRequest) -> None:
    """``cablecar broadcast STREAM JSON --pubsub URL`` publishes the compact JSON and
    confirms on stderr; ``--adapter``, ``--channel-prefix``, ``-`` (stdin) and ``-q``
    work too."""
    url = service_url(request, "redis")
    rx, prefixed_rx = adapter_from_url(url), adapter_from_url(url, channel_prefix="app")
    inbox, prefixed_inbox = Inbox(), Inbox()
    await rx.start(inbox)
    await prefixed_rx.start(prefixed_inbox)
    try:
        await rx.subscribe("cli")
        await prefixed_rx.subscribe("cli")
        code, err = await run_cli("cli", '{"body": "héllo", "n": 1}', "--pubsub", url)
        assert code == 0, err
        compact = '{"body":"héllo","n":1}'.encode()
        assert f"broadcast {len(compact)} bytes to 'cli'" in err
        code, err = await run_cli("cli", "-", "--adapter", url, "-q", stdin=b'["from stdin"]\n')
        assert (code, err) == (0, "")
        code, err = await run_cli("cli", "42", "--pubsub", url, "--channel-prefix", "app", "-q")
        assert (code, err) == (0, "")
        assert await inbox.wait_for("cli", 2) == [compact, b'["from stdin"]']
        assert await prefixed_inbox.wait_for("cli") == [b"42"]
    finally:
        await rx.close()
        await prefixed_rx.close()


async def test_cli_broadcast_errors() -> None:
    """Usage errors exit with 2, an unreachable service with 1, each with a message."""
    code, err = await run_cli("s", "{}", "--pubsub", "memory://")
    assert code == 2 and "cannot reach another process" in err
    code, err = await run_cli("s", "{not json", "--pubsub", "redis://127.0.0.1:1/0")
    assert code == 2 and "not valid JSON" in err
    code, err = await run_cli("s", "{}")
    assert code == 2 and "--pubsub" in err
    code, err = await run_cli("s", "{}", "--pubsub", f"redis://127.0.0.1:{free_port()}/0")
    assert code == 1 and "publish to Redis" in err
