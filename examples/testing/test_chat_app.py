"""Tests of chat_app.py, shown in docs/testing.md.

Run them with ``pytest examples/testing``; they work with pytest-asyncio in ``strict``
mode (hence the ``asyncio`` marks) and in ``auto`` mode.
"""

from __future__ import annotations

import pytest
from chat_app import ChatChannel, NotificationsChannel, make_cable

import cablecar.client
from cablecar import Cable, ConnectionRejected
from cablecar.testing import ChannelTester
from cablecar.testing.pytest_plugin import StartServer

pytestmark = pytest.mark.asyncio


@pytest.fixture
def cablecar_cable() -> Cable:
    """The cable the ``cablecar_tester`` fixture tests (put it in conftest.py to share it)."""
    return make_cable()


# -- connections ---------------------------------------------------------------------------


async def test_connects_with_a_session_cookie(cablecar_tester: ChannelTester) -> None:
    conn = await cablecar_tester.connect(cookies={"session": "s-alice"})
    assert conn.current_user == "alice"


async def test_rejects_a_connection_without_a_session(cablecar_tester: ChannelTester) -> None:
    assert await cablecar_tester.assert_reject_connection() == "unauthorized"
    with pytest.raises(ConnectionRejected):
        await cablecar_tester.connect(cookies={"session": "stolen"})


# -- channels ------------------------------------------------------------------------------


async def test_subscribes_to_a_room(cablecar_tester: ChannelTester) -> None:
    conn = cablecar_tester.stub_connection(current_user="alice")  # connect() does not run
    sub = await conn.subscribe("ChatChannel", room="lobby")
    assert sub.confirmed
    sub.assert_has_stream("chat:lobby")
    sub.assert_has_stream_for("lobby")  # ChatChannel.broadcasting_for("lobby")


async def test_rejects_an_unknown_room(cablecar_tester: ChannelTester) -> None:
    sub = await cablecar_tester.stub_connection(current_user="alice").subscribe(
        ChatChannel, room="nowhere"
    )
    assert sub.rejected
    sub.assert_no_streams()


async def test_speak_broadcasts_to_the_room(cablecar_tester: ChannelTester) -> None:
    alice = cablecar_tester.stub_connection(current_user="alice")
    bob = cablecar_tester.stub_connection(current_user="bob")
    alice_sub = await alice.subscribe("ChatChannel", room="lobby")
    bob_sub = await bob.subscribe("ChatChannel", room="lobby")

    with cablecar_tester.capture_broadcasts("chat:lobby") as messages:
        await alice_sub.perform("speak", body="  hi bob ")

    assert messages == [{"user": "alice", "body": "hi bob"}]
    assert bob_sub.transmissions == [{"user": "alice", "body": "hi bob"}]  # delivered too
    cablecar_tester.assert_broadcast_on(
        ChatChannel.broadcasting_for("lobby"), {"user": "alice", "body": "hi bob"}
    )


async def test_an_empty_message_is_refused_to_its_sender_only(
    cablecar_tester: ChannelTester,
) -> None:
    sub = await cablecar_tester.stub_connection(current_user="alice").subscribe(
        "ChatChannel", room="lobby"
    )
    replies = await sub.perform("speak", body="   ")
    assert replies == [{"error": "empty message"}]
    cablecar_tester.assert_no_broadcasts("chat:lobby")


async def test_notifications_reach_their_user(cablecar_tester: ChannelTester) -> None:
    sub = await cablecar_tester.stub_connection(current_user="bob").subscribe(
        "NotificationsChannel"
    )
    sub.assert_has_stream("notifications:bob")
    await NotificationsChannel.broadcast_to("bob", {"id": 7, "text": "you have mail"})
    await cablecar_tester.settle()
    assert sub.transmissions == [{"id": 7, "text": "you have mail"}]
    assert await sub.perform("mark_read", id=7) == [{"read": 7}]


async def test_heartbeats_without_waiting(cablecar_tester: ChannelTester) -> None:
    sub = await cablecar_tester.stub_connection(current_user="bob").subscribe("StatusChannel")
    await cablecar_tester.advance(65)  # virtual seconds: returns at once
    assert sub.transmissions == [{"heartbeat": 1}, {"heartbeat": 2}]


async def test_without_the_fixtures() -> None:
    async with ChannelTester(make_cable()) as t:
        conn = await t.connect(cookies={"session": "s-bob"})
        sub = await conn.subscribe("ChatChannel", room="python")
        await sub.perform("speak", body="hello")
        t.assert_broadcasts("chat:python", 1)


# -- end to end: a real server, a real client ----------------------------------------------


async def test_over_a_real_socket(cablecar_server: StartServer) -> None:
    server = await cablecar_server(make_cable())
    async with cablecar.client.connect(server.url, cookies={"session": "s-alice"}) as consumer:
        sub = await consumer.subscribe("ChatChannel", room="lobby")
        await sub.perform("speak", body="over the wire")
        assert await sub.receive(timeout=5) == {"user": "alice", "body": "over the wire"}
