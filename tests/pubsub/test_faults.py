"""Broker faults: the service dies and comes back while the adapters stay up.

Redis and NATS get a broker of their own per test (cheap to start); PostgreSQL reuses
the session's cluster and always restarts it. Adapters are built with short reconnect
delays so that the tests stay fast; the defaults only change the timing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from cablecar.errors import AdapterError
from cablecar.pubsub import PubSub

from ..services import NatsServer, RedisServer, Service
from .conftest import SERVICE_KINDS, WAIT, Inbox

pytestmark = pytest.mark.services


def build(kind: str, url: str) -> PubSub:
    """An adapter that retries quickly."""
    if kind == "redis":
        from cablecar.pubsub.redis import RedisPubSub

        return RedisPubSub(url, reconnect_delay=0.05, max_reconnect_delay=0.5)
    if kind == "postgres":
        from cablecar.pubsub.postgres import PostgresPubSub

        return PostgresPubSub(url, reconnect_delay=0.05, max_reconnect_delay=0.5)
    from cablecar.pubsub.nats import NatsPubSub

    return NatsPubSub(url, reconnect_time_wait=0.1)


@pytest.fixture(params=SERVICE_KINDS)
def broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, Service]]:
    """``(kind, server)``: a broker this test may kill; running again afterwards."""
    kind = str(request.param)
    if kind == "postgres":
        server: Service = request.getfixturevalue("postgres_server")
        try:
            yield kind, server
        finally:
            server.start()
        return
    own = RedisServer() if kind == "redis" else NatsServer()
    with own:
        yield kind, own


@pytest.fixture
async def adapters(broker: tuple[str, Service]) -> AsyncIterator[Callable[[], PubSub]]:
    made: list[PubSub] = []

    def make() -> PubSub:
        adapter = build(broker[0], broker[1].url)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.close()


def records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


async def wait_for_log(
    caplog: pytest.LogCaptureFixture, level: int, text: str, count: int = 1
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2 * WAIT
    while len(records(caplog, level, text)) < count:
        if loop.time() > deadline:
            seen = [f"{r.levelname} {r.getMessage()}" for r in caplog.records]
            pytest.fail(f"no {logging.getLevelName(level)} log containing {text!r}; log: {seen}")
        await asyncio.sleep(0.02)


async def publish_when_up(tx: PubSub, stream: str, payload: bytes) -> None:
    """Publish, retrying while the publisher itself has not reconnected yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2 * WAIT
    while True:
        try:
            await tx.publish(stream, payload)
            return
        except AdapterError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def flowing(rx: PubSub, tx: PubSub, stream: str) -> Inbox:
    """Start ``rx``, subscribe it to ``stream`` and wait for ``b"1"`` published by ``tx``:
    messages flow. Returns ``rx``'s inbox."""
    inbox = Inbox()
    await rx.start(inbox)
    await rx.subscribe(stream)
    await tx.publish(stream, b"1")
    await inbox.wait_for(stream)
    return inbox


async def assert_close_ends_a_pending_subscribe(rx: PubSub) -> None:
    """A subscribe left waiting (for the broker), then ``rx`` closed: the subscribe
    ends with AdapterError."""
    pending: asyncio.Task[Any] = asyncio.create_task(rx.subscribe("never"))
    await asyncio.sleep(0.2)
    await asyncio.wait_for(rx.close(), WAIT)
    with pytest.raises(AdapterError):
        await asyncio.wait_for(pending, WAIT)


async def test_broker_restart(
    broker: tuple[str, Service],
    adapters: Callable[[], PubSub],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker is killed and restarted on the same port: publishes during the outage
    fail fast, a subscribe issued during it returns once the broker is back, and
    afterwards every stream receives new publishes again, without recreating the
    subscriber. The log says what happened."""
    kind, server = broker
    caplog.set_level(logging.DEBUG, logger=f"cablecar.pubsub.{kind}")
    rx, tx = adapters(), adapters()
    inbox = await flowing(rx, tx, "before")

    server.stop(kill=True)
    # NATS's publisher holds a connection too, and notices the loss as well.
    await wait_for_log(caplog, logging.WARNING, "lost connection", 2 if kind == "nats" else 1)
    async with asyncio.timeout(2 * WAIT):  # at most once: fails, and in bounded time
        with pytest.raises(AdapterError):
            await tx.publish("before", b"lost")
    during = asyncio.create_task(rx.subscribe("during"))
    await asyncio.sleep(0.3)
    assert not during.done(), "subscribe returned while the broker was down"

    server.start()
    await asyncio.wait_for(during, 2 * WAIT)
    await wait_for_log(caplog, logging.INFO, "2 streams resubscribed")
    await publish_when_up(tx, "before", b"2")
    await tx.publish("during", b"3")
    assert await inbox.wait_for("before", 2) == [b"1", b"2"]
    assert await inbox.wait_for("during") == [b"3"]

    name = {"redis": "Redis", "postgres": "PostgreSQL", "nats": "NATS"}[kind]
    where = f"://127.0.0.1:{server.port}"
    lost = records(caplog, logging.WARNING, f"lost connection to {name} at ")
    back = records(caplog, logging.INFO, f"reconnected to {name} at ")
    assert lost and all(where in m for m in lost), lost
    assert any(where in m and "2 streams resubscribed" in m for m in back), back


async def test_idle_publisher_survives_restart(
    broker: tuple[str, Service], adapters: Callable[[], PubSub]
) -> None:
    """A publisher idle across a broker restart publishes again without an error once
    the broker is back (stale connections are replaced, not reported)."""
    kind, server = broker
    rx, tx = adapters(), adapters()
    inbox = await flowing(rx, tx, "s")
    server.stop(kill=True)
    server.start()
    await rx.subscribe("t")  # returns once rx is live again
    if kind == "nats":
        # nats-py reconnects the publisher in the background; wait until it has.
        await publish_when_up(tx, "t", b"2")
    else:
        await tx.publish("t", b"2")
    assert await inbox.wait_for("t") == [b"2"]


async def test_start_while_broker_is_down(
    broker: tuple[str, Service],
    adapters: Callable[[], PubSub],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An adapter started while its broker is down starts anyway (logging a WARNING);
    its subscribes wait and complete once the broker comes up."""
    kind, server = broker
    caplog.set_level(logging.INFO, logger=f"cablecar.pubsub.{kind}")
    server.stop()
    rx = adapters()
    inbox = Inbox()
    await asyncio.wait_for(rx.start(inbox), WAIT)
    await wait_for_log(caplog, logging.WARNING, "cannot reach")
    subscribed = asyncio.create_task(rx.subscribe("s"))
    await asyncio.sleep(0.3)
    assert not subscribed.done()
    server.start()
    await asyncio.wait_for(subscribed, 2 * WAIT)
    await publish_when_up(adapters(), "s", b"1")
    assert await inbox.wait_for("s") == [b"1"]


async def test_close_while_waiting_for_the_broker(
    broker: tuple[str, Service], adapters: Callable[[], PubSub]
) -> None:
    """Closing the adapter during an outage ends a pending subscribe with AdapterError."""
    _kind, server = broker
    rx = adapters()
    await rx.start(Inbox())
    server.stop(kill=True)
    await asyncio.sleep(0.2)
    await assert_close_ends_a_pending_subscribe(rx)


async def test_close_while_never_connected(
    broker: tuple[str, Service], adapters: Callable[[], PubSub]
) -> None:
    """Closing an adapter that never reached its broker ends a pending subscribe with
    AdapterError (not a cancellation of the caller)."""
    _kind, server = broker
    server.stop()
    rx = adapters()
    await asyncio.wait_for(rx.start(Inbox()), WAIT)
    await assert_close_ends_a_pending_subscribe(rx)


async def test_a_redis_listener_whose_server_freezes_reconnects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis frozen (SIGSTOP: the socket stays open, nothing answers) under an idle
    listener: within about three health-check intervals the adapter says it lost Redis
    ("no answer to PING") and reports itself not connected; thawed, it resubscribes by
    itself and the stream is delivered again."""
    from cablecar.pubsub.redis import RedisPubSub

    from ..services import frozen

    caplog.set_level(logging.DEBUG, logger="cablecar.pubsub.redis")
    with RedisServer() as server:
        rx = RedisPubSub(server.url, health_check_interval=0.3, reconnect_delay=0.05,
                         max_reconnect_delay=0.3)  # fmt: skip
        tx = RedisPubSub(server.url)
        try:
            inbox = await flowing(rx, tx, "room")
            assert rx.connected
            with frozen([server.proc.pid]):
                await wait_for_log(caplog, logging.WARNING, "lost connection to Redis")
                assert not rx.connected
                assert records(caplog, logging.WARNING, "no answer to PING within 0.3 s")
            await wait_for_log(caplog, logging.INFO, "1 streams resubscribed")
            await publish_when_up(tx, "room", b"2")
            assert await inbox.wait_for("room", 2) == [b"1", b"2"]
        finally:
            await rx.close()
            await tx.close()


async def test_closing_a_redis_adapter_ends_a_publish_still_waiting_for_redis() -> None:
    """Redis frozen with a publish waiting for its answer (a long publish timeout): closing
    the adapter ends that publish at once with AdapterError ("closed"); it does not hang."""
    from cablecar.pubsub.redis import RedisPubSub

    from ..services import frozen

    with RedisServer() as server:
        tx = RedisPubSub(server.url, publish_timeout=30.0)
        await tx.publish("room", b"1")  # the publishing connection is open
        with frozen([server.proc.pid]):
            waiting = asyncio.create_task(tx.publish("room", b"2"))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await asyncio.wait_for(tx.close(), 5)
            with pytest.raises(AdapterError, match="closed"):
                await asyncio.wait_for(waiting, 1)
