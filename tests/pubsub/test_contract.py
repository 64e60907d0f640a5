"""The adapter contract (``cablecar.pubsub.base``), one suite for every adapter.

Every test runs against memory, Redis, PostgreSQL and NATS. Apart from memory, the
publishing and the receiving adapter are separate instances with their own
connections, so every message really crosses the service (Rails' shared-suite
pattern, ``actioncable/test/subscription_adapter/common.rb``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import pytest

from cablecar import _json
from cablecar.errors import AdapterError
from cablecar.pubsub import PubSub

from .conftest import QUIET, SERVICE_KINDS, WAIT, Inbox, Pair


def unique(name: str) -> str:
    """A stream name no other test uses (the services are shared by the session)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def publish_in_order(pair: Pair, name: str, sent: list[bytes]) -> list[bytes]:
    """Publish ``sent``, one after another, on a new stream ``rx`` subscribed to; return
    what ``rx`` received on it once ``len(sent)`` messages have arrived."""
    stream = unique(name)
    await pair.rx.subscribe(stream)
    for payload in sent:
        await pair.tx.publish(stream, payload)
    return await pair.inbox.wait_for(stream, len(sent))


async def test_delivers_a_published_message(pair: Pair) -> None:
    """A message published on a subscribed stream arrives as the same bytes."""
    stream = unique("chat")
    await pair.rx.subscribe(stream)
    await pair.tx.publish(stream, b'{"body":"hello"}')
    assert await pair.inbox.wait_for(stream) == [b'{"body":"hello"}']
    assert type(pair.inbox.on(stream)[0]) is bytes


async def test_only_subscribed_streams_are_delivered(pair: Pair) -> None:
    """Messages on streams nobody subscribed to are not delivered."""
    wanted, other = unique("wanted"), unique("other")
    await pair.rx.subscribe(wanted)
    await pair.tx.publish(other, b'"no"')
    await pair.tx.publish(wanted, b'"yes"')
    await pair.inbox.wait_for(wanted)
    assert await pair.inbox.quiet_on(other) == []


async def test_keeps_publish_order_per_stream(pair: Pair) -> None:
    """500 messages published one after another arrive in the same order."""
    sent = [_json.dumps({"n": n}) for n in range(500)]
    assert await publish_in_order(pair, "ordered", sent) == sent


async def test_keeps_order_per_stream_when_streams_interleave(pair: Pair) -> None:
    """Interleaved publishes on two streams arrive in order on each stream."""
    a, b = unique("a"), unique("b")
    await pair.rx.subscribe(a)
    await pair.rx.subscribe(b)
    for n in range(100):
        await pair.tx.publish(a if n % 3 else b, str(n).encode())
    await pair.inbox.wait_until(lambda: len(pair.inbox.messages) >= 100, "100 messages")
    assert pair.inbox.on(a) == [str(n).encode() for n in range(100) if n % 3]
    assert pair.inbox.on(b) == [str(n).encode() for n in range(100) if not n % 3]


async def test_concurrent_publishes_all_arrive(pair: Pair) -> None:
    """200 publishes in flight at once all arrive, each exactly once."""
    stream = unique("burst")
    await pair.rx.subscribe(stream)
    await asyncio.gather(*(pair.tx.publish(stream, str(n).encode()) for n in range(200)))
    received = await pair.inbox.wait_for(stream, 200)
    assert sorted(int(p) for p in await pair.inbox.quiet_on(stream)) == list(range(200))
    assert len(received) == 200


async def test_unsubscribe_stops_delivery(pair: Pair) -> None:
    """After unsubscribe, the stream's messages are no longer delivered; others are."""
    gone, kept = unique("gone"), unique("kept")
    await pair.rx.subscribe(gone)
    await pair.rx.subscribe(kept)
    await pair.tx.publish(gone, b"1")
    await pair.inbox.wait_for(gone)
    await pair.rx.unsubscribe(gone)
    await pair.tx.publish(gone, b"2")
    await pair.tx.publish(kept, b"3")
    await pair.inbox.wait_for(kept)
    assert await pair.inbox.quiet_on(gone) == [b"1"]


async def test_subscribe_again_after_unsubscribe(pair: Pair) -> None:
    """A stream can be subscribed again after unsubscribe, even right away."""
    stream = unique("again")
    await pair.rx.subscribe(stream)
    await pair.rx.unsubscribe(stream)
    await pair.rx.subscribe(stream)
    await pair.tx.publish(stream, b"1")
    assert await pair.inbox.wait_for(stream) == [b"1"]
    assert await pair.inbox.quiet_on(stream) == [b"1"]


async def test_repeated_subscribe_and_unsubscribe_are_idempotent(pair: Pair) -> None:
    """Subscribing twice delivers each message once; unsubscribing twice is harmless."""
    stream = unique("twice")
    await pair.rx.subscribe(stream)
    await pair.rx.subscribe(stream)
    await pair.tx.publish(stream, b"1")
    await pair.inbox.wait_for(stream)
    assert await pair.inbox.quiet_on(stream) == [b"1"]
    await pair.rx.unsubscribe(stream)
    await pair.rx.unsubscribe(stream)
    await pair.rx.unsubscribe(unique("never-subscribed"))


async def test_many_streams(pair: Pair) -> None:
    """200 streams subscribed at once each receive their own message."""
    streams = [unique(f"many{n}") for n in range(200)]
    await asyncio.gather(*(pair.rx.subscribe(s) for s in streams))
    for n, stream in enumerate(streams):
        await pair.tx.publish(stream, str(n).encode())
    await pair.inbox.wait_until(lambda: len(pair.inbox.messages) >= 200, "200 messages")
    assert {s: pair.inbox.on(s) for s in streams} == {
        s: [str(n).encode()] for n, s in enumerate(streams)
    }


@pytest.mark.parametrize("size", [7998, 7999, 8000, 8001, 65536, 1_000_000])
async def test_large_payloads(pair: Pair, size: int) -> None:
    """Payloads around PostgreSQL's NOTIFY limit and up to 1 MB arrive intact."""
    stream = unique("large")
    await pair.rx.subscribe(stream)
    body = "x" * (size - len('{"data":""}'))
    payload = _json.dumps({"data": body})
    assert len(payload) == size
    await pair.tx.publish(stream, payload)
    await pair.tx.publish(stream, b'"after"')
    assert await pair.inbox.wait_for(stream, 2, timeout=2 * WAIT) == [payload, b'"after"']


async def test_large_and_small_payloads_keep_their_order(pair: Pair) -> None:
    """Small messages published after a large one arrive after it."""
    sent: list[bytes] = []
    for n in range(10):
        size = 20_000 if n % 3 == 0 else 10
        sent.append(_json.dumps({"n": n, "pad": "p" * size}))
    assert await publish_in_order(pair, "mixed", sent) == sent


async def test_unicode_payloads(pair: Pair) -> None:
    """UTF-8 payloads (accents, CJK, emoji, escapes) arrive byte for byte."""
    sent = [
        _json.dumps({"text": "héllo wörld"}),
        _json.dumps({"text": "日本語のテキスト", "emoji": "😀🎉👍🏽"}),
        _json.dumps({"text": 'line\nbreak\ttab "quote" \\ backslash \u2028'}),
        '{"raw":"\U0001f600"}'.encode(),
    ]
    assert await publish_in_order(pair, "unicode", sent) == sent


async def test_binary_payloads(pair: Pair) -> None:
    """Adapters never decode payloads: arbitrary bytes (NUL, invalid UTF-8) survive."""
    sent = [bytes(range(256)), b"\x00", b"\x01marker-like", b"\xff\xfe", b""]
    assert await publish_in_order(pair, "binary", sent) == sent


ODD_NAMES = [
    "chat.1",
    "chat:1",
    "a b",
    " leading and trailing ",
    "tab\there",
    "*",
    ">",
    "a.*.>",
    "chat.*",
    "%41",
    "A",
    "%",
    "UPPER",
    "upper",
    'quote"d',
    "semi;colon --",
    "x" * 63,
    "x" * 64,
    "é" * 32,
    "n" * 200,
    "😀" * 200,
    "日本語",
    "cablecar#" + "0" * 40,
    "",
]


async def test_odd_stream_names(pair: Pair) -> None:
    """Stream names with separators, wildcards, quotes, unicode or 200 characters
    each get their own messages, under the name they were published with, with no
    collisions between them."""
    for name in ODD_NAMES:
        await pair.rx.subscribe(name)
    for n, name in enumerate(ODD_NAMES):
        await pair.tx.publish(name, str(n).encode())
    count = len(ODD_NAMES)
    await pair.inbox.wait_until(lambda: len(pair.inbox.messages) >= count, f"{count} messages")
    await asyncio.sleep(QUIET)
    received = {name: pair.inbox.on(name) for name in ODD_NAMES}
    assert received == {name: [str(n).encode()] for n, name in enumerate(ODD_NAMES)}


async def test_subscribe_returns_only_once_live(pair: Pair) -> None:
    """A publish made (by another instance) right after subscribe returns is delivered."""
    streams = [unique(f"live{n}") for n in range(30)]
    for n, stream in enumerate(streams):
        await pair.rx.subscribe(stream)
        await pair.tx.publish(stream, str(n).encode())
    await pair.inbox.wait_until(lambda: len(pair.inbox.messages) >= 30, "30 messages")
    assert [pair.inbox.on(s) for s in streams] == [[str(n).encode()] for n in range(30)]


async def test_subscribe_concurrently_with_publishes(pair: Pair) -> None:
    """Subscribing while other streams are busy loses nothing on either side."""
    busy = unique("busy")
    await pair.rx.subscribe(busy)

    async def publish_busy() -> None:
        for n in range(100):
            await pair.tx.publish(busy, str(n).encode())

    async def subscribe_new() -> list[str]:
        fresh = [unique(f"fresh{n}") for n in range(20)]
        for stream in fresh:
            await pair.rx.subscribe(stream)
            await pair.tx.publish(stream, b"hi")
        return fresh

    _, fresh = await asyncio.gather(publish_busy(), subscribe_new())
    await pair.inbox.wait_until(lambda: len(pair.inbox.messages) >= 120, "120 messages")
    assert pair.inbox.on(busy) == [str(n).encode() for n in range(100)]
    assert all(pair.inbox.on(s) == [b"hi"] for s in fresh)


# -- service adapters only --------------------------------------------------------------

services_only = pytest.mark.parametrize(
    "adapter_kind", [pytest.param(k, marks=pytest.mark.services) for k in SERVICE_KINDS]
)


@services_only
async def test_channel_prefix_isolates_applications(make_adapter: Callable[..., PubSub]) -> None:
    """Two prefixes (and no prefix) on one service never see each other's messages."""
    stream = unique("shared")
    inboxes: dict[str | None, Inbox] = {}
    publishers: dict[str | None, PubSub] = {}
    for prefix in ("app_a", "app_b", None):
        rx = make_adapter(channel_prefix=prefix)
        inboxes[prefix] = Inbox()
        await rx.start(inboxes[prefix])
        await rx.subscribe(stream)
        publishers[prefix] = make_adapter(channel_prefix=prefix)
    for prefix, tx in publishers.items():
        await tx.publish(stream, str(prefix).encode())
    for inbox in inboxes.values():
        await inbox.wait_for(stream)
    await asyncio.sleep(QUIET)
    # Each receiver got its own application's message, under the unprefixed name.
    assert {p: i.on(stream) for p, i in inboxes.items()} == {
        "app_a": [b"app_a"],
        "app_b": [b"app_b"],
        None: [b"None"],
    }


@services_only
async def test_publish_works_without_start(make_adapter: Callable[..., PubSub]) -> None:
    """A publish-only adapter (a Broadcaster's) never needs ``start``."""
    rx = make_adapter()
    inbox = Inbox()
    await rx.start(inbox)
    stream = unique("publish-only")
    await rx.subscribe(stream)
    await make_adapter().publish(stream, b"1")
    assert await inbox.wait_for(stream) == [b"1"]


@services_only
async def test_a_failing_handler_does_not_stop_delivery(
    make_adapter: Callable[..., PubSub], caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in ``on_message`` is logged; later messages are still delivered."""
    rx, tx = make_adapter(), make_adapter()
    inbox = Inbox()

    def handler(stream: str, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("handler bug")
        inbox(stream, payload)

    await rx.start(handler)
    stream = unique("fragile")
    await rx.subscribe(stream)
    with caplog.at_level(logging.ERROR, logger="cablecar.pubsub"):
        await tx.publish(stream, b"boom")
        await tx.publish(stream, b"after")
        assert await inbox.wait_for(stream) == [b"after"]
    assert any("handler failed" in r.getMessage() and r.exc_info for r in caplog.records)


@services_only
async def test_closed_adapter_refuses_work(make_adapter: Callable[..., PubSub]) -> None:
    """After close (idempotent), publish and subscribe raise AdapterError."""
    adapter = make_adapter()
    await adapter.start(Inbox())
    await adapter.close()
    await adapter.close()
    with pytest.raises(AdapterError):
        await adapter.publish("x", b"1")
    with pytest.raises(AdapterError):
        await adapter.subscribe("x")
