"""The client against real servers: cablecar and Rails Action Cable, same scenarios."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import cablecar.client
from cablecar.client import Backoff, ConnectionRejected, SubscriptionClosed, SubscriptionRejected

from .client_support import Server, unique

FAST = Backoff(initial=0.05, factor=2.0, maximum=0.25, jitter=0.2)


async def next_matching(sub: cablecar.client.Subscription, tag: str, timeout: float = 5.0) -> Any:
    """The next message whose ``payload`` is ``tag`` (BenchmarkChannel's stream is shared)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await sub.receive()
            if isinstance(message, dict) and message.get("payload") == tag:
                return message


async def test_subscribe_is_confirmed_with_the_js_identifier(server: Server) -> None:
    """subscribe() returns once confirmed; the identifier is JSON.stringify({channel, ...})."""
    room = unique("room")
    async with cablecar.client.connect(server.url) as consumer:
        assert consumer.connected
        sub = await consumer.subscribe("ChatChannel", room=room)
        assert sub.connected and not sub.reconnected
        assert sub.identifier == '{"channel":"ChatChannel","room":"' + room + '"}'
        assert consumer.subscriptions == [sub]


async def test_perform_gets_the_transmitted_reply(server: Server) -> None:
    """perform("echo") reaches the action; the channel's transmit comes back on receive()."""
    tag = unique("echo")
    async with cablecar.client.connect(server.url) as consumer:
        sub = await consumer.subscribe("BenchmarkChannel")
        await sub.perform("echo", payload=tag, n=1)
        assert await next_matching(sub, tag) == {"payload": tag, "n": 1, "action": "echo"}
        await sub.send({"action": "echo", "payload": tag + "-sent"})  # send() = raw data
        assert (await next_matching(sub, tag + "-sent"))["action"] == "echo"


async def test_broadcast_from_another_client_is_received(server: Server) -> None:
    """A speak from a second client reaches every subscriber of the room, in order."""
    room = unique("room")
    alice_url, bob_url = f"{server.url}?user=alice", f"{server.url}?user=bob"
    async with (
        cablecar.client.connect(alice_url) as alice,
        cablecar.client.connect(bob_url) as bob,
    ):
        alice_sub = await alice.subscribe("ChatChannel", room=room)
        bob_sub = await bob.subscribe("ChatChannel", room=room)
        for body in ("one", "two", "three"):
            await bob_sub.perform("speak", body=body)
        got = [await alice_sub.receive(timeout=5) for _ in range(3)]
        assert sorted(m["body"] for m in got) == ["one", "three", "two"]  # Rails may reorder
        assert {m["from"] for m in got} == {"bob"}
        assert (await bob_sub.receive(timeout=5))["from"] == "bob"


async def test_async_for_iterates_messages(server: Server) -> None:
    """``async for message in sub`` yields the message values, and stops at unsubscribe."""
    room = unique("room")
    async with cablecar.client.connect(server.url) as consumer:
        sub = await consumer.subscribe("ChatChannel", room=room)
        await sub.perform("speak", body="a")
        await sub.perform("speak", body="b")
        seen: list[str] = []
        async with asyncio.timeout(5):
            async for message in sub:
                seen.append(message["body"])
                if len(seen) == 2:
                    await sub.unsubscribe()
        assert sorted(seen) == ["a", "b"]
        assert sub.closed and consumer.subscriptions == []
        with pytest.raises(SubscriptionClosed):
            await sub.receive(timeout=1)
        with pytest.raises(SubscriptionClosed):
            await sub.perform("speak", body="late")


async def test_callbacks_instead_of_iteration(server: Server) -> None:
    """on_connected / on_message are called in order; async callbacks are awaited."""
    room = unique("room")
    events: list[Any] = []
    got = asyncio.Event()

    async def on_message(message: Any) -> None:
        events.append(("message", message["body"]))
        got.set()

    async with cablecar.client.connect(server.url) as consumer:
        sub = await consumer.subscribe(
            "ChatChannel",
            room=room,
            on_connected=lambda reconnected: events.append(("connected", reconnected)),
            on_message=on_message,
        )
        await sub.perform("speak", body="hi")
        await asyncio.wait_for(got.wait(), 5)
        with pytest.raises(RuntimeError):
            await sub.receive()
    assert events == [("connected", False), ("message", "hi")]


async def test_rejected_subscription_raises(server: Server) -> None:
    """reject_subscription raises SubscriptionRejected (and calls on_rejected); the rest goes on."""
    rejected: list[bool] = []
    async with cablecar.client.connect(server.url) as consumer:
        with pytest.raises(SubscriptionRejected):
            await consumer.subscribe("RejectChannel", on_rejected=lambda: rejected.append(True))
        with pytest.raises(SubscriptionRejected):
            await consumer.subscribe("ChatChannel")  # a blank room is rejected
        assert consumer.subscriptions == []
        sub = await consumer.subscribe("ChatChannel", room=unique("room"))
        assert sub.connected and consumer.connected
    await asyncio.sleep(0)
    assert rejected == [True]


async def test_unauthorized_connection_raises(server: Server) -> None:
    """``?user=reject`` is refused: connect() raises ConnectionRejected("unauthorized")."""
    consumer = cablecar.client.connect(f"{server.url}?user=reject")
    with pytest.raises(ConnectionRejected) as info:
        async with consumer:
            pytest.fail("connected")
    assert info.value.reason == "unauthorized"
    assert consumer.disconnect_reason == "unauthorized" and consumer.closed


async def test_two_subscriptions_with_one_identifier(server: Server) -> None:
    """Like the JS client: both get messages; the server hears unsubscribe after the last."""
    room = unique("room")
    async with (
        cablecar.client.connect(server.url) as consumer,
        cablecar.client.connect(server.url) as speaker,
    ):
        first = await consumer.subscribe("ChatChannel", room=room)
        second = await consumer.subscribe("ChatChannel", room=room)
        talk = await speaker.subscribe("ChatChannel", room=room)
        await talk.perform("speak", body="both")
        assert (await first.receive(timeout=5))["body"] == "both"
        assert (await second.receive(timeout=5))["body"] == "both"
        await first.unsubscribe()
        await talk.perform("speak", body="still")
        assert (await second.receive(timeout=5))["body"] == "still"


async def test_reconnects_and_resubscribes_after_restart(fresh_server: Server) -> None:
    """Server stops and starts on the same port: the client reconnects, re-subscribes and
    messages flow again through the same iterator; an action sent while down is delivered."""
    server = fresh_server
    room = unique("room")
    connected: list[bool] = []
    disconnected: list[bool] = []
    down = asyncio.Event()

    def on_disconnected(will_reconnect: bool) -> None:
        disconnected.append(will_reconnect)
        down.set()

    async with cablecar.client.connect(f"{server.url}?user=carol", backoff=FAST) as consumer:
        chat = await consumer.subscribe(
            "ChatChannel",
            room=room,
            on_connected=connected.append,
            on_disconnected=on_disconnected,
        )
        bench = await consumer.subscribe("BenchmarkChannel")
        await chat.perform("speak", body="before")
        assert (await chat.receive(timeout=5))["body"] == "before"

        await asyncio.to_thread(server.stop)
        await asyncio.wait_for(down.wait(), 10)
        assert not chat.connected
        tag = unique("while-down")
        pending = asyncio.create_task(bench.perform("echo", payload=tag))  # waits for reconnect
        await asyncio.to_thread(server.start)

        await chat.wait_connected(timeout=15)
        await bench.wait_connected(timeout=15)
        assert chat.reconnected and bench.reconnected
        assert consumer.connections == 2 and consumer.disconnect_reason is None
        await asyncio.wait_for(pending, 10)
        assert (await next_matching(bench, tag))["action"] == "echo"

        async with cablecar.client.connect(f"{server.url}?user=dave") as other:
            talk = await other.subscribe("ChatChannel", room=room)
            await talk.perform("speak", body="after")
            assert (await chat.receive(timeout=5)) == {"from": "dave", "body": "after"}
    await asyncio.sleep(0.05)  # let the callback task run
    assert connected[:2] == [False, True]
    assert disconnected[0] is True


def test_sync_facade(server: Server) -> None:
    """cablecar.client.sync: the same client, blocking, for scripts without asyncio."""
    from cablecar.client.sync import connect

    tag = unique("sync")
    with connect(server.url) as consumer:
        assert (consumer.connected, consumer.connections, consumer.closed) == (True, 1, False)
        sub = consumer.subscribe("BenchmarkChannel")
        assert sub.connected and not sub.reconnected
        assert sub.identifier == '{"channel":"BenchmarkChannel"}'
        sub.perform("echo", payload=tag)
        while (message := sub.receive(timeout=5))["payload"] != tag:
            pass
        assert message == {"payload": tag, "action": "echo"}
        with pytest.raises(SubscriptionRejected):
            consumer.subscribe("RejectChannel")
    assert consumer.closed and not consumer.connected
    with pytest.raises(ConnectionRejected):
        connect(f"{server.url}?user=reject")
