"""cablecar.testing: connections, subscriptions, streams and broadcasts in-process,
and the messages its assertions fail with."""

from __future__ import annotations

import threading
from unittest.mock import ANY

import pytest

from cablecar import ActionNotAllowed, Cable, Connection, ConnectionRejected
from cablecar.testing import ChannelTester, TestSubscription

from .app import ChatChannel, Room, events, make_cable


@pytest.fixture
def cablecar_cable() -> Cable:
    return make_cable()


@pytest.fixture
async def bob_in_room_1(cablecar_tester: ChannelTester) -> TestSubscription:
    """bob's stub connection, subscribed to ChatChannel room 1."""
    conn = cablecar_tester.stub_connection(current_user="bob")
    return await conn.subscribe("ChatChannel", room="1")


# -- connections -------------------------------------------------------------------------


async def test_connect_runs_the_connection_class_with_query_headers_and_cookies() -> None:
    """connect() runs the real Connection.connect with the request it was given."""
    async with ChannelTester(make_cable()) as t:
        by_query = await t.connect(query={"user": "bob"})
        by_header = await t.connect(headers={"X-User": "carol"})
        by_cookie = await t.connect(cookies={"user": "dave"}, headers={"Cookie": "theme=dark"})
        assert by_query.identifiers == {"current_user": "bob"}
        assert by_query.current_user == "bob"
        assert by_header.current_user == "carol"
        assert by_cookie.current_user == "dave"
        assert by_cookie.request.cookies == {"theme": "dark", "user": "dave"}
        assert by_query.request.path == "/cable"
        assert by_query.frames == [{"type": "welcome"}]
        assert not by_query.closed


async def test_a_plain_def_connect_runs_in_the_thread_pool() -> None:
    """A plain def connect() runs on a worker thread under ChannelTester, as it does in the server."""

    class SyncConnection(Connection):
        identified_by = ("current_user", "thread")

        def connect(self) -> None:  # type: ignore[override]
            self.current_user = self.request.query.get("user") or self.reject_unauthorized()
            self.thread = threading.current_thread().name

    async with ChannelTester(Cable(connection=SyncConnection)) as t:
        conn = await t.connect(query={"user": "bob"})
        assert conn.current_user == "bob" and conn.thread.startswith("cablecar")
        assert await t.assert_reject_connection() == "unauthorized"


async def test_a_rejected_connection_raises_with_the_reason() -> None:
    """reject_unauthorized() makes connect() raise ConnectionRejected('unauthorized')."""
    async with ChannelTester(make_cable()) as t:
        with pytest.raises(ConnectionRejected) as info:
            await t.connect(query={"room": "1"})
        assert info.value.reason == "unauthorized"
        assert str(info.value) == (
            "connection rejected: disconnect reason 'unauthorized', reconnect False"
        )
        assert await t.assert_reject_connection() == "unauthorized"


async def test_assert_reject_connection_fails_when_the_connection_is_accepted() -> None:
    """The failure shows who the connection was identified as."""
    async with ChannelTester(make_cable()) as t:
        with pytest.raises(AssertionError) as info:
            await t.assert_reject_connection(query={"user": "bob"})
    assert str(info.value) == (
        "expected the connection to be rejected, but it was accepted "
        "with identifiers {'current_user': 'bob'}"
    )


async def test_browsers_from_other_origins_are_refused_as_by_the_transport() -> None:
    """An Origin header goes through the cable's allowed_origins check."""
    async with ChannelTester(make_cable(allowed_origins=["https://ok.example"])) as t:
        headers = {"Origin": "https://evil.example", "Host": "app.example"}
        with pytest.raises(ConnectionRejected, match=r"origin 'https://evil\.example' not"):
            await t.connect(query={"user": "bob"}, headers=headers)
        headers["Origin"] = "https://ok.example"
        assert (await t.connect(query={"user": "bob"}, headers=headers)).current_user == "bob"


async def test_connections_over_max_connections_are_refused_as_by_the_transport() -> None:
    """ChannelTester refuses a connection past max_connections with the server's reason."""
    async with ChannelTester(make_cable(max_connections=1)) as t:
        await t.connect(query={"user": "bob"})
        with pytest.raises(ConnectionRejected, match="max_connections reached"):
            await t.connect(query={"user": "carol"})


async def test_stub_connection_skips_connect_and_still_disconnects() -> None:
    """stub_connection sets identifiers without connect(); disconnect() runs at the end."""
    async with ChannelTester(make_cable()) as t:
        conn = t.stub_connection(current_user="eve")
        assert conn.identifiers == {"current_user": "eve"}
        assert t.cable.connections == [conn.connection]
        sub = await conn.subscribe("ChatChannel", room="1")
        assert sub.confirmed
    assert events == ["unsubscribed eve 1", "disconnect eve"]


async def test_stub_connection_refuses_names_that_are_not_identifiers() -> None:
    """stub_connection() with a name the connection does not identify by raises, naming the identifiers."""
    async with ChannelTester(make_cable()) as t:
        with pytest.raises(ValueError) as info:
            t.stub_connection(user="eve")
    assert str(info.value) == (
        "AppConnection.identified_by is ('current_user',); cannot stub 'user'"
    )


async def test_server_side_close_and_remote_disconnect_are_seen_by_the_client() -> None:
    """connection.close() and remote_connections close the socket with a disconnect frame."""
    async with ChannelTester(make_cable()) as t:
        bob = await t.connect(query={"user": "bob"})
        sub = await bob.subscribe(ChatChannel, room="1")
        await sub.perform("kick")
        assert bob.closed
        assert bob.disconnect_frame == {
            "type": "disconnect",
            "reason": "kicked",
            "reconnect": False,
        }
        assert bob.close_code == 1000
        assert events == ["unsubscribed bob 1", "disconnect bob"]
        with pytest.raises(
            RuntimeError, match="speak': the connection is closed \\(disconnect reason 'kicked'\\)"
        ):
            await sub.perform("speak", body="hi")

        carol = await t.connect(query={"user": "carol"})
        await t.cable.remote_connections.where(current_user="carol").disconnect(reconnect=True)
        await t.settle()
        assert carol.disconnect_frame == {
            "type": "disconnect",
            "reason": "remote",
            "reconnect": True,
        }


# -- subscriptions -----------------------------------------------------------------------


async def test_subscribe_confirms_and_shows_the_streams(cablecar_tester: ChannelTester) -> None:
    """A confirmed subscription lists its streams; stream_for streams are named by model."""
    conn = await cablecar_tester.connect(query={"user": "bob"})
    sub = await conn.subscribe("ChatChannel", room="7")
    assert sub.confirmed and not sub.rejected
    assert sub.params == {"channel": "ChatChannel", "room": "7"}
    assert sub.streams == ["chat_7", "chat:Room:7"]
    sub.assert_has_stream("chat_7")
    sub.assert_has_stream_for(Room(7))
    sub.assert_has_no_stream("chat_8")
    sub.assert_has_no_stream_for(Room(8))
    assert isinstance(sub.channel, ChatChannel)
    assert sub.channel.current_user == "bob"


async def test_a_rejected_subscription_has_no_streams(cablecar_tester: ChannelTester) -> None:
    """A rejected subscription (or one to an unknown channel) is rejected, has no channel and no streams."""
    conn = cablecar_tester.stub_connection(current_user="bob")
    sub = await conn.subscribe("ChatChannel")
    assert sub.rejected and not sub.confirmed
    assert sub.channel is None
    sub.assert_no_streams()
    unknown = await conn.subscribe("NoSuchChannel")
    assert unknown.rejected  # as a real client sees it


async def test_subscribing_with_a_class_that_is_not_registered_is_an_error(
    cablecar_tester: ChannelTester,
) -> None:
    """Subscribing with a channel class the cable does not know raises, listing the registered ones."""

    class OtherChannel(ChatChannel):
        pass

    conn = cablecar_tester.stub_connection(current_user="bob")
    with pytest.raises(ValueError) as info:
        await conn.subscribe(OtherChannel, room="1")
    assert str(info.value) == (
        "OtherChannel is not registered with this cable; registered: "
        "ChatChannel, SyncChannel, ClockChannel, ShoutChannel"
    )


async def test_perform_returns_what_the_subscription_received(
    cablecar_tester: ChannelTester,
) -> None:
    """perform() waits for the action; transmissions hold transmits and stream messages."""
    bob = await cablecar_tester.connect(query={"user": "bob"})
    alice = await cablecar_tester.connect(query={"user": "alice"})
    bob_sub = await bob.subscribe("ChatChannel", room="1")
    alice_sub = await alice.subscribe("ChatChannel", room="1")
    replies = await bob_sub.perform("speak", body="hi")
    assert replies == [{"from": "bob", "body": "hi"}, {"ok": True}]
    assert alice_sub.transmissions == [{"from": "bob", "body": "hi"}]
    assert await bob_sub.send({"x": 1}) == [{"received": {"x": 1}}]
    await bob_sub.perform("leave")
    assert bob_sub.streams == ["chat:Room:1"]
    await alice_sub.perform("speak", body="still there?")
    assert bob_sub.transmissions[-1] == {"received": {"x": 1}}


async def test_perform_refuses_actions_the_channel_does_not_have(
    bob_in_room_1: TestSubscription,
) -> None:
    """perform() of a misspelt action raises ActionNotAllowed listing the channel's actions."""
    with pytest.raises(ActionNotAllowed) as info:
        await bob_in_room_1.perform("spek", body="hi")
    assert str(info.value) == (
        "ChatChannel has no action 'spek'; its actions: "
        "boom, kick, leave, lookup, receive, speak, wait"
    )
    with pytest.raises(ActionNotAllowed):
        await bob_in_room_1.perform("_missing")


async def test_unsubscribe_runs_unsubscribed_and_leaves_the_streams(
    cablecar_tester: ChannelTester,
) -> None:
    """unsubscribe() runs unsubscribed(), drops the streams, and a later perform raises."""
    conn = await cablecar_tester.connect(query={"user": "bob"})
    sub = await conn.subscribe("ChatChannel", room="1")
    await sub.unsubscribe()
    assert events == ["unsubscribed bob 1"]
    assert sub.channel is None and sub.streams == []
    assert "chat_1" not in cablecar_tester.cable.streams()
    with pytest.raises(RuntimeError) as info:
        await sub.perform("speak", body="hi")
    assert str(info.value) == (
        """cannot perform 'speak': subscription {"channel":"ChatChannel","room":"1"} """
        "(unsubscribed) is not active"
    )


async def test_plain_def_channel_code_runs_in_the_thread_pool(
    cablecar_tester: ChannelTester,
) -> None:
    """Sync subscribed/actions, transmit from a thread, broadcast_sync: all seen."""
    sub = await cablecar_tester.stub_connection(current_user="bob").subscribe("SyncChannel")
    assert sub.streams == ["sync"]
    assert await sub.perform("shout", text="hey") == [{"shout": "HEY"}, {"shouted": True}]
    cablecar_tester.assert_broadcast_on("sync", {"shout": "HEY"})


async def test_custom_stream_callbacks_transform_broadcasts(
    cablecar_tester: ChannelTester,
) -> None:
    """A stream callback's transformed message is what the subscription's transmissions show."""
    sub = await cablecar_tester.stub_connection(current_user="bob").subscribe("ShoutChannel")
    await cablecar_tester.cable.broadcast("news", {"title": "tests are fast"})
    await cablecar_tester.settle()
    assert sub.transmissions == [{"headline": "TESTS ARE FAST"}]


# -- stream assertions fail with what was found ------------------------------------------


async def test_stream_assertions_show_the_streams_found(cablecar_tester: ChannelTester) -> None:
    """Failed stream assertions name the subscription and list the streams it has."""
    conn = cablecar_tester.stub_connection(current_user="bob")
    sub = await conn.subscribe("ChatChannel", room="1")
    label = 'subscription {"channel":"ChatChannel","room":"1"}'
    with pytest.raises(AssertionError) as info:
        sub.assert_has_stream("chat_2")
    assert str(info.value) == (
        f"{label} does not stream from 'chat_2'; its streams: ['chat_1', 'chat:Room:1']"
    )
    with pytest.raises(AssertionError) as info:
        sub.assert_has_no_stream_for(Room(1))
    assert str(info.value) == (
        f"{label} streams from 'chat:Room:1'; its streams: ['chat_1', 'chat:Room:1']"
    )
    with pytest.raises(AssertionError) as info:
        sub.assert_no_streams()
    assert str(info.value) == f"{label} has streams: ['chat_1', 'chat:Room:1']"
    rejected = await conn.subscribe("ChatChannel")
    with pytest.raises(AssertionError) as info:
        rejected.assert_has_stream("chat_1")
    assert str(info.value) == (
        'subscription {"channel":"ChatChannel"} (rejected) does not stream from '
        "'chat_1'; its streams: []"
    )


# -- broadcasts ----------------------------------------------------------------------------


async def test_capture_broadcasts_collects_only_inside_the_block(
    cablecar_tester: ChannelTester, bob_in_room_1: TestSubscription
) -> None:
    """capture_broadcasts() holds only what was broadcast inside its block; broadcasts() holds all."""
    await bob_in_room_1.perform("speak", body="before")
    with cablecar_tester.capture_broadcasts("chat_1") as messages:
        await bob_in_room_1.perform("speak", body="inside")
    await bob_in_room_1.perform("speak", body="after")
    assert messages == [{"from": "bob", "body": "inside"}]
    assert [m["body"] for m in cablecar_tester.broadcasts("chat_1")] == [
        "before",
        "inside",
        "after",
    ]
    cablecar_tester.assert_broadcasts("chat_1", 3)
    cablecar_tester.clear_broadcasts("chat_1")
    cablecar_tester.assert_no_broadcasts("chat_1")


async def test_broadcasts_without_subscribers_and_from_broadcast_to_are_recorded(
    cablecar_tester: ChannelTester,
) -> None:
    """Capture sits on the adapter: broadcasts count even if nobody listens (as in Rails)."""
    await cablecar_tester.cable.broadcast("nobody_listens", ("a", 1))
    await ChatChannel.broadcast_to(Room(3), {"n": 3})
    cablecar_tester.assert_broadcast_on("nobody_listens", ["a", 1])
    cablecar_tester.assert_broadcast_on(ChatChannel.broadcasting_for(Room(3)), {"n": 3})
    cablecar_tester.assert_broadcast_on("nobody_listens", ANY)


async def test_assert_broadcast_on_lists_the_messages_it_found(
    cablecar_tester: ChannelTester, bob_in_room_1: TestSubscription
) -> None:
    """As Rails 7.1: the failure shows what was broadcast on the stream instead."""
    await bob_in_room_1.perform("speak", body="hello")
    await bob_in_room_1.perform("speak", body="bye")
    cablecar_tester.assert_broadcast_on("chat_1", {"from": ANY, "body": "bye"})
    with pytest.raises(AssertionError) as info:
        cablecar_tester.assert_broadcast_on("chat_1", {"from": "bob", "body": "hi"})
    assert str(info.value) == (
        "no broadcast on 'chat_1' matched {'from': 'bob', 'body': 'hi'}\n"
        "broadcasts on 'chat_1' (2):\n"
        "  {'from': 'bob', 'body': 'hello'}\n"
        "  {'from': 'bob', 'body': 'bye'}"
    )
    with pytest.raises(AssertionError) as info:
        cablecar_tester.assert_broadcast_on("chat_2", {"body": "hi"})
    assert str(info.value) == (
        "no broadcast on 'chat_2' matched {'body': 'hi'}\n"
        "nothing was broadcast on 'chat_2'; broadcasts went to: 'chat_1' (2)"
    )


async def test_broadcast_count_assertions_list_what_was_found(
    cablecar_tester: ChannelTester,
) -> None:
    """Failed broadcast-count assertions say how many were found and list them."""
    with pytest.raises(AssertionError) as info:
        cablecar_tester.assert_broadcasts("chat_1", 1)
    assert str(info.value) == (
        "expected 1 broadcast on 'chat_1', found 0\nnothing was broadcast on any stream"
    )
    await cablecar_tester.cable.broadcast("chat_1", {"n": 1})
    await cablecar_tester.cable.broadcast("chat_1", {"n": 2})
    with pytest.raises(AssertionError) as info:
        cablecar_tester.assert_broadcasts("chat_1", 3)
    assert str(info.value) == (
        "expected 3 broadcasts on 'chat_1', found 2\n"
        "broadcasts on 'chat_1' (2):\n  {'n': 1}\n  {'n': 2}"
    )
    with pytest.raises(AssertionError) as info:
        cablecar_tester.assert_no_broadcasts("chat_1")
    assert str(info.value) == (
        "expected no broadcasts on 'chat_1', found 2\n"
        "broadcasts on 'chat_1' (2):\n  {'n': 1}\n  {'n': 2}"
    )
