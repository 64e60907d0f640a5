"""The chat demo's connection and channels, tested in-process with cablecar.testing
(the same behaviour tests/e2e/test_demo_official_client.py checks over real sockets)."""

from __future__ import annotations

from unittest.mock import ANY

import pytest

from cablecar import Cable, Request
from cablecar.demo.app import MAX_BODY, ROOMS_STREAM, DemoCable
from cablecar.testing import ChannelTester, TestConnection, TestSubscription

LOBBY = "demo:chat:lobby"


@pytest.fixture
def cablecar_cable() -> Cable:
    return DemoCable()


async def join(t: ChannelTester, name: str, room: str = "lobby") -> TestSubscription:
    conn = await t.connect(query={"name": name})
    return await conn.subscribe("ChatChannel", room=room)


# -- the connection ----------------------------------------------------------------------


async def test_a_name_identifies_the_connection_with_a_socket_id(
    cablecar_tester: ChannelTester,
) -> None:
    """The demo connection cleans the name and gives each connection its own short socket id."""
    ada = await cablecar_tester.connect(query={"name": "  Ada\u200b  Lovelace\n"})
    other = await cablecar_tester.connect(query={"name": "Ada Lovelace"})
    assert ada.user_name == "Ada Lovelace"  # invisible characters and spaces cleaned
    assert ada.identifiers == {"user_name": "Ada Lovelace", "sid": ANY}
    assert len(ada.sid) == 8 and ada.sid != other.sid


@pytest.mark.parametrize("query", [{}, {"name": ""}, {"name": "\u200b \t"}, {"name": "x" * 41}])
async def test_connections_without_a_usable_name_are_refused(
    cablecar_tester: ChannelTester, query: dict[str, str]
) -> None:
    """The demo refuses connections whose name is missing, blank or too long."""
    assert await cablecar_tester.assert_reject_connection(query=query) == "unauthorized"


# -- ChatChannel ------------------------------------------------------------------------------


async def test_joining_sends_history_then_announces_the_newcomer(
    cablecar_tester: ChannelTester,
) -> None:
    """Joining a room sends its recent history and members, then the newcomer's own presence join."""
    sub = await join(cablecar_tester, "ada")
    assert sub.confirmed
    sub.assert_has_stream(LOBBY)
    epoch = cablecar_tester.cable.rooms.epoch  # type: ignore[attr-defined]
    # Presence: the channel joins the newcomer right after the confirmation, so it is in
    # the history's members and then sees its own join, like everyone in the room.
    history, own_join = sub.transmissions
    assert history == {
        "type": "history",
        "room": "lobby",
        "epoch": epoch,
        "messages": [],
        "members": ["ada"],
        "you": {"name": "ada", "sid": sub.connection.sid},
    }
    assert own_join == {"type": "join", "id": "ada", "info": {"name": "ada"}}
    cablecar_tester.assert_broadcast_on(LOBBY, own_join)
    cablecar_tester.assert_broadcast_on(ROOMS_STREAM, {"type": "rooms", "rooms": ANY})
    lobby = cablecar_tester.broadcasts(ROOMS_STREAM)[-1]["rooms"][0]
    assert lobby == {"name": "lobby", "members": 1, "messages": 0}


async def test_a_room_name_is_cleaned_and_an_invalid_one_is_rejected(
    cablecar_tester: ChannelTester,
) -> None:
    """A room name is cleaned of control characters; an empty, too long or non-string one is rejected."""
    conn = cablecar_tester.stub_connection(user_name="ada", sid="s1")
    new = await conn.subscribe("ChatChannel", room=" Book\u202e club ")
    new.assert_has_stream("demo:chat:Book club")
    for room in ("", "x" * 41, 7):
        rejected = await conn.subscribe("ChatChannel", room=room)
        assert rejected.rejected
        rejected.assert_no_streams()


async def test_a_message_is_broadcast_to_the_room_and_kept_for_newcomers(
    cablecar_tester: ChannelTester,
) -> None:
    """A spoken message is cleaned, broadcast to the room, and sent to the next newcomer as history."""
    ada = await join(cablecar_tester, "ada")
    with cablecar_tester.capture_broadcasts(LOBBY) as messages:
        await ada.perform("speak", body="  hello\r\nworld\x07 ")
    message = {
        "type": "message",
        "id": 1,
        "room": "lobby",
        "name": "ada",
        "sid": ada.connection.sid,
        "body": "hello\nworld",
        "ts": ANY,
        "epoch": ANY,
    }
    assert messages == [message]
    assert ada.transmissions[-1] == messages[0]
    bob = await join(cablecar_tester, "bob")
    assert bob.transmissions[0]["messages"] == [message]
    assert bob.transmissions[0]["members"] == ["ada", "bob"]


@pytest.mark.parametrize(
    ("data", "code", "text"),
    [
        ({}, "invalid", "A message needs a text body."),
        ({"body": 5}, "invalid", "A message needs a text body."),
        ({"body": " \x00\u200b "}, "empty", "Your message is empty."),
        (
            {"body": "x" * (MAX_BODY + 1)},
            "too_long",
            f"Your message is {MAX_BODY + 1} characters long; the limit is {MAX_BODY}.",
        ),
    ],
)
async def test_bad_messages_are_refused_to_the_sender_only(
    cablecar_tester: ChannelTester, data: dict[str, object], code: str, text: str
) -> None:
    """An empty, oversized or malformed message gets an error reply to the sender and no broadcast."""
    ada = await join(cablecar_tester, "ada")
    cablecar_tester.clear_broadcasts()
    replies = await ada.perform("speak", data)
    assert replies == [{"type": "error", "code": code, "message": text}]
    cablecar_tester.assert_no_broadcasts(LOBBY)


async def test_speaking_too_fast_is_refused(cablecar_tester: ChannelTester) -> None:
    """The eleventh message within the rate window is refused with a "too fast" error."""
    ada = await join(cablecar_tester, "ada")
    for n in range(10):
        await ada.perform("speak", body=f"message {n}")
    replies = await ada.perform("speak", body="one too many")
    assert replies == [
        {
            "type": "error",
            "code": "too_fast",
            "message": "You are sending messages too fast; wait a few seconds.",
        }
    ]
    cablecar_tester.assert_broadcasts(LOBBY, 11)  # the join and ten messages


async def test_leaving_is_announced_when_a_names_last_socket_goes(
    cablecar_tester: ChannelTester,
) -> None:
    """Two tabs with one name (one presence member): the name leaves with the second.
    (A tab that vanishes without unsubscribing leaves ``presence_ttl`` later: the
    browser test shows it.)"""
    ada1 = await join(cablecar_tester, "ada")
    ada2 = await join(cablecar_tester, "ada")
    cablecar_tester.assert_broadcasts(LOBBY, 1)  # one join
    with cablecar_tester.capture_broadcasts(LOBBY) as messages:
        await ada1.unsubscribe()
        assert messages == []
        await ada2.unsubscribe()
    assert messages == [{"type": "leave", "id": "ada"}]
    rooms = cablecar_tester.broadcasts(ROOMS_STREAM)[-1]["rooms"]
    assert rooms[0] == {"name": "lobby", "members": 0, "messages": 0}


# -- RoomsChannel -----------------------------------------------------------------------------


async def rooms_sub(t: ChannelTester) -> tuple[TestConnection, TestSubscription]:
    conn = await t.connect(query={"name": "ada"})
    return conn, await conn.subscribe("RoomsChannel")


async def test_the_room_list_is_sent_and_new_rooms_are_broadcast(
    cablecar_tester: ChannelTester,
) -> None:
    """The rooms channel sends the room list and broadcasts it again when a room is created."""
    _, sub = await rooms_sub(cablecar_tester)
    sub.assert_has_stream(ROOMS_STREAM)
    assert [r["name"] for r in sub.transmissions[0]["rooms"]] == ["lobby", "python", "random"]
    await sub.perform("create", name="  Chess ")
    cablecar_tester.assert_broadcast_on(
        ROOMS_STREAM,
        {
            "type": "rooms",
            "rooms": [
                {"name": name, "members": 0, "messages": 0}
                for name in ("lobby", "python", "random", "Chess")
            ],
        },
    )
    assert sub.transmissions[-1]["rooms"][-1]["name"] == "Chess"


async def test_creating_a_room_can_be_refused(cablecar_tester: ChannelTester) -> None:
    """Creating a room with an empty name, or past the room limit, is refused with an error and no broadcast."""
    _, sub = await rooms_sub(cablecar_tester)
    assert await sub.perform("create", name="") == [
        {"type": "error", "code": "invalid", "message": "A room name has 1 to 40 characters."}
    ]
    cablecar_tester.cable.rooms.max_rooms = 3  # type: ignore[attr-defined]
    assert await sub.perform("create", name="Chess") == [
        {"type": "error", "code": "full", "message": "There are already 3 rooms."}
    ]
    cablecar_tester.assert_no_broadcasts(ROOMS_STREAM)


async def test_the_json_endpoint_shows_what_was_said(cablecar_tester: ChannelTester) -> None:
    """The HTTP handler reads the same state the channels write."""
    ada = await join(cablecar_tester, "ada")
    await ada.perform("speak", body="for the record")
    cable = cablecar_tester.cable
    response = await cable.http_handler(  # type: ignore[attr-defined]
        Request("GET", "/api/rooms/lobby/messages", "since=0")
    )
    assert response.status == 200
    assert [m["body"] for m in Request("POST", "/", body=response.body).json()["messages"]] == [
        "for the record"
    ]
