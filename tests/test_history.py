"""Reliable delivery over the extended protocol (``Cable(history=True)``), frame by frame:
positions, history replies, resumed sessions, pongs, exclusions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from cablecar import Cable, Channel
from cablecar.errors import AdapterError
from cablecar.history import MemoryStore, StoreSettings, store_from_url

from .conftest import TIMEOUT, WS, ConnectWS
from .core import UserConnection

EXT = ["actioncable-v1-ext-json"]
ROOM = '{"channel":"RoomChannel","room":"1"}'


class AppConnection(UserConnection):
    restored_users: list[str] = []

    async def restored(self) -> None:
        type(self).restored_users.append(self.user)


class RoomChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from(f"room_{self.params['room']}")

    async def speak(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast(f"room_{self.params['room']}", {"n": data["n"]})


def make_cable(**settings: Any) -> Cable:
    return Cable(AppConnection, [RoomChannel], history=True, **settings)


async def ext_connect(connect: ConnectWS, url: str, **kw: Any) -> tuple[WS, dict[str, Any]]:
    ws = await connect(url, welcome=False, subprotocols=EXT, **kw)
    welcome = await ws.recv_data()
    assert welcome["type"] == "welcome"
    return ws, welcome


async def backlog_and_client(
    cablecar_server: Any, ws_connect: ConnectWS, count: int, **settings: Any
) -> tuple[Cable, WS, str]:
    """A history cable (``make_cable(**settings)``) served with ``count`` broadcasts
    ``{"n": 1..count}`` on room_1, an extended-protocol client on it, and the epoch."""
    cable = make_cable(**settings)
    server = await cablecar_server(cable)
    for n in range(1, count + 1):
        await cable.broadcast("room_1", {"n": n})
    ws, _ = await ext_connect(ws_connect, server.url)
    return cable, ws, _epoch(cable)


async def messages(ws: WS, n: int) -> list[Any]:
    got = []
    while len(got) < n:
        frame = await ws.recv_data()
        if "message" in frame:
            got.append(frame)
    return got


async def test_ext_welcome_has_a_sid_and_broadcasts_carry_positions(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """An extended-protocol client gets a sid and positions; a plain client on the same
    stream gets Action Cable's frames unchanged."""
    cable = make_cable()
    server = await cablecar_server(cable)
    ext, welcome = await ext_connect(ws_connect, server.url)
    assert len(welcome["sid"]) >= 22 and welcome["restored_ids"] == []
    assert "restored" not in welcome
    plain = await ws_connect(server.url)
    await ext.subscribe(ROOM)
    await plain.subscribe(ROOM)
    await cable.broadcast("room_1", {"n": 1})
    await cable.broadcast("room_1", {"n": 2})
    got = await messages(ext, 2)
    assert [(m["message"], m["stream_id"], m["offset"]) for m in got] == [
        ({"n": 1}, "room_1", 1),
        ({"n": 2}, "room_1", 2),
    ]
    assert got[0]["epoch"] == got[1]["epoch"]
    assert await messages(plain, 2) == [
        {"identifier": ROOM, "message": {"n": 1}},
        {"identifier": ROOM, "message": {"n": 2}},
    ]


async def test_subscribe_with_history_replays_then_confirms(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """subscribe with a position gets confirm, the missed broadcasts in order, then
    confirm_history; an unknown epoch gets reject_history with no backlog."""
    _cable, ws, epoch = await backlog_and_client(cablecar_server, ws_connect, 5)
    await ws.send(
        {
            "command": "subscribe",
            "identifier": ROOM,
            "history": {"since": False, "streams": {"room_1": {"epoch": epoch, "offset": 2}}},
        }
    )
    frames = [await ws.recv_data() for _ in range(5)]
    assert frames[0]["type"] == "confirm_subscription"
    assert [f["message"]["n"] for f in frames[1:4]] == [3, 4, 5]
    assert frames[4] == {"identifier": ROOM, "type": "confirm_history"}
    await ws.send(
        {
            "command": "history",
            "identifier": ROOM,
            "history": {"streams": {"room_1": {"epoch": "other", "offset": "2"}}},
        }
    )
    assert await ws.recv_data() == {"identifier": ROOM, "type": "reject_history"}


async def test_a_gap_beyond_the_limit_is_rejected_and_the_boundary_recovers(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """With history_limit 3, offset 7 of 10 (oldest kept 8) recovers; offset 6 does not."""
    _cable, ws, epoch = await backlog_and_client(cablecar_server, ws_connect, 10, history_limit=3)
    await ws.subscribe(ROOM)
    for offset, expected in ((7, [8, 9, 10]), (10, [])):
        request = {"streams": {"room_1": {"epoch": epoch, "offset": offset}}}
        await ws.send({"command": "history", "identifier": ROOM, "history": request})
        got = [await ws.recv_data() for _ in range(len(expected) + 1)]
        assert [g["message"]["n"] for g in got[:-1]] == expected
        assert got[-1]["type"] == "confirm_history"
    request = {"streams": {"room_1": {"epoch": epoch, "offset": 6}}}
    await ws.send({"command": "history", "identifier": ROOM, "history": request})
    assert (await ws.recv_data())["type"] == "reject_history"


async def test_a_dropped_connection_resumes_once_with_what_it_missed(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """A client that vanished resumes by ?sid=: restored welcome without connect(),
    the missed broadcasts after its history request, a new sid; the old sid is spent."""
    cable = make_cable()
    server = await cablecar_server(cable)
    ws, welcome = await ext_connect(ws_connect, server.url + "?user=ann")
    await ws.subscribe(ROOM)
    await cable.broadcast("room_1", {"n": 1})
    first = (await messages(ws, 1))[0]
    ws.conn.transport.abort()  # type: ignore[attr-defined]  # no close frame
    await asyncio.sleep(0.1)
    for n in range(2, 5):
        await cable.broadcast("room_1", {"n": n})
    AppConnection.restored_users.clear()
    again, restored = await ext_connect(ws_connect, f"{server.url}?sid={welcome['sid']}")
    assert restored["restored"] is True and restored["restored_ids"] == [ROOM]
    assert restored["sid"] != welcome["sid"]
    assert AppConnection.restored_users == ["ann"]
    position = {"epoch": first["epoch"], "offset": first["offset"]}
    await again.send(
        {"command": "history", "identifier": ROOM, "history": {"streams": {"room_1": position}}}
    )
    await cable.broadcast("room_1", {"n": 5})
    got = [await again.recv_data() for _ in range(5)]
    # 5 is in the backlog or after confirm_history, depending on when it was stored.
    assert [g["message"]["n"] for g in got if "message" in g] == [2, 3, 4, 5]
    assert [g.get("type") for g in got].index("confirm_history") >= 3
    _spent, fresh = await ext_connect(ws_connect, f"{server.url}?sid={welcome['sid']}")
    assert "restored" not in fresh


async def test_live_broadcasts_during_a_replay_arrive_once_in_order(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """Broadcasts published while a backlog is read come after it, none twice."""
    cable, ws, epoch = await backlog_and_client(
        cablecar_server, ws_connect, 200, history_limit=1000
    )

    async def burst() -> None:
        for n in range(201, 401):
            await cable.broadcast("room_1", {"n": n})
            if n % 20 == 0:
                await asyncio.sleep(0)

    request = {"since": 0, "streams": {"room_1": {"epoch": epoch, "offset": 0}}}
    await ws.send({"command": "subscribe", "identifier": ROOM, "history": request})
    await burst()
    got = await messages(ws, 400)
    assert [m["offset"] for m in got] == list(range(1, 401))


async def test_pong_and_malformed_history_never_stop_the_connection(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """pong, ping, since:false, wrong types and unknown identifiers get a reply or are
    ignored; the connection goes on."""
    cable = make_cable()
    server = await cablecar_server(cable)
    ws, _ = await ext_connect(ws_connect, server.url)
    await ws.subscribe(ROOM)
    await ws.send({"command": "pong"})
    await ws.send({"command": "ping"})
    assert await ws.recv_data() == {"type": "pong"}
    for history in (
        {"since": False, "streams": {"room_1": {"epoch": 5, "offset": "x"}}},
        {"since": "soon", "streams": []},
        {"streams": {"room_1": "nope"}},
    ):
        await ws.send({"command": "history", "identifier": ROOM, "history": history})
        reply = await ws.recv_data()
        assert reply["type"] in ("confirm_history", "reject_history")
    await ws.send({"command": "history", "identifier": ROOM, "history": 7})
    await ws.send({"command": "history", "identifier": '{"channel":"Nope"}', "history": {}})
    assert (await ws.recv_data())["type"] == "reject_history"
    await cable.broadcast("room_1", {"n": 1})
    assert (await messages(ws, 1))[0]["message"] == {"n": 1}


async def test_a_silent_client_is_cut_with_no_pong(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """With pong_timeout, an extended client that never answers pings is disconnected
    with reason no_pong; one that pongs stays."""
    cable = make_cable(ping_interval=0.2, pong_timeout=0.3)
    server = await cablecar_server(cable)
    silent, _ = await ext_connect(ws_connect, server.url)
    talker, _ = await ext_connect(ws_connect, server.url)
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = await talker.recv()
            if frame.get("type") == "ping":
                await talker.send({"command": "pong"})
            got = await _poll(silent)
            if got is not None and got.get("type") == "disconnect":
                assert got == {"type": "disconnect", "reason": "no_pong", "reconnect": True}
                break
    await talker.send({"command": "ping"})
    assert await talker.recv_until(lambda m: m.get("type") == "pong")


async def test_exclude_socket_skips_the_sender(cablecar_server: Any, ws_connect: ConnectWS) -> None:
    """broadcast(..., exclude_socket=sid) reaches everyone but that connection."""
    cable = make_cable()
    server = await cablecar_server(cable)
    a, welcome_a = await ext_connect(ws_connect, server.url)
    b, _ = await ext_connect(ws_connect, server.url)
    await a.subscribe(ROOM)
    await b.subscribe(ROOM)
    await cable.broadcast("room_1", {"n": 1}, exclude_socket=welcome_a["sid"])
    await cable.broadcast("room_1", {"n": 2})
    assert [m["message"]["n"] for m in await messages(b, 2)] == [1, 2]
    assert [m["message"]["n"] for m in await messages(a, 1)] == [2]


async def test_memory_store_retires_a_taken_session() -> None:
    """A session entry restores once; saving a retired sid again does nothing."""
    store = MemoryStore(StoreSettings(sessions_ttl=60))
    await store.save_sessions([("s1", b"{}")])
    assert await store.take_session("s1") == b"{}"
    await store.save_sessions([("s1", b"{}")])
    assert await store.take_session("s1") is None


@pytest.mark.parametrize("offset", [0, 3])
async def test_memory_store_up_to_date_client_recovers_even_when_expired(offset: int) -> None:
    """A client at the newest offset recovers with nothing to replay, even after the
    messages themselves expired."""
    store = MemoryStore(StoreSettings(history_ttl=0.0))
    for _ in range(offset):
        await store.append("s", b"1", None)
    assert await store.after("s", store.epoch, offset) == []


async def test_memory_store_forgets_streams_nobody_writes_to_any_more() -> None:
    """Streams that come and go (a room per wave, a stream per record) do not pile up:
    the entries of a stream nobody appends to are freed after history_ttl (an up-to-date
    client still recovers from its newest offset), the stream itself after ten times
    that. The soak test found the memory store keeping every one of them forever."""
    store = MemoryStore(StoreSettings(history_ttl=0.05))
    for n in range(200):
        await store.append(f"room-{n}", b'{"m":1}', None)
    assert store.size() == 200
    await asyncio.sleep(0.1)
    await store.append("busy", b"1", None)  # appends drive the sweep
    assert store.size() == 1  # the quiet rooms' messages are gone...
    assert await store.after("room-7", store.epoch, 1) == []  # ...their offsets are not
    await asyncio.sleep(0.5)
    await store.append("busy", b"2", None)
    assert await store.after("room-7", store.epoch, 1) is None  # forgotten entirely
    assert store.size() == 1


def _epoch(cable: Cable) -> str:
    store = cable._store  # white-box: the test needs the epoch before any frame shows it
    assert store is not None
    return store.epoch


async def _poll(ws: WS) -> dict[str, Any] | None:
    try:
        return orjson.loads(await asyncio.wait_for(ws.conn.recv(), 0.05))  # type: ignore[no-any-return]
    except TimeoutError:
        return None


# -- Redis: any node serves a resume; the epoch survives restarts ---------------------------


@pytest.mark.services
@pytest.mark.parametrize("kind", ["redis", "postgres", "nats"])
async def test_network_store_positions_survive_a_new_store(kind: str, request: Any) -> None:
    """Offsets and the epoch live in Redis, PostgreSQL or JetStream: a second store (another node,
    or a restart) continues the series and replays what the first stored; a session is
    taken once; presence is shared, and an expired member leaves on one node only."""
    url = request.getfixturevalue(f"{kind}_server").url
    settings = StoreSettings(history_limit=3, history_ttl=60, sessions_ttl=60, presence_ttl=0.3)
    prefix = f"t{id(settings)}"
    one = store_from_url(url, settings, prefix=prefix)
    await one.start()
    assert [await one.append("s", b'{"n":%d}' % n, None) for n in range(1, 6)] == [1, 2, 3, 4, 5]
    two = store_from_url(url, settings, prefix=prefix)
    await two.start()
    assert two.epoch == one.epoch
    assert [e.offset for e in await two.after("s", two.epoch, 2) or []] == [3, 4, 5]
    assert await two.after("s", two.epoch, 1) is None  # 2 was trimmed (limit 3)
    assert await two.after("s", two.epoch, 5) == []
    assert await two.after("s", "other", 2) is None
    assert [e.offset for e in await two.since("s", 0)] == [3, 4, 5]
    await one.save_sessions([("sid-1", b"entry")])
    assert await two.take_session("sid-1") == b"entry"
    assert await one.take_session("sid-1") is None
    await one.save_sessions([("sid-1", b"entry")])  # retired: not saved again
    assert await two.take_session("sid-1") is None
    # presence: two sessions of one member on two nodes, one leave when the last goes
    assert await one.presence_join("room", "a1", "ann", b'{"x":1}') is True
    assert await two.presence_join("room", "a2", "ann", b'{"x":2}') is False
    assert await one.presence_join("room", "b1", "bob", b"null") is True
    assert sorted(await two.presence_members("room")) == [("ann", b'{"x":2}'), ("bob", b"null")]
    assert await one.presence_leave("room", "a1") is None
    assert await two.presence_leave("room", "a2") == "ann"
    await asyncio.sleep(0.5)  # bob's session was not touched: it expires
    gone = [*await one.presence_expire(), *await two.presence_expire()]
    assert gone == [("room", "bob")]
    assert await one.presence_members("room") == []
    await one.close()
    await two.close()


@pytest.mark.services
@pytest.mark.parametrize("kind", ["redis", "postgres", "nats"])
async def test_a_session_resumes_on_another_node(
    cablecar_server: Any, ws_connect: ConnectWS, kind: str, request: Any
) -> None:
    """A client of node A that reconnects to node B (same Redis, PostgreSQL or NATS) is
    resumed there and gets what was broadcast while it was away, from either node."""
    url = request.getfixturevalue(f"{kind}_server").url
    prefix = f"n{id(ws_connect)}"
    node_a = Cable(AppConnection, [RoomChannel], url, channel_prefix=prefix, history=True)
    node_b = Cable(AppConnection, [RoomChannel], url, channel_prefix=prefix, history=True)
    server_a = await cablecar_server(node_a)
    server_b = await cablecar_server(node_b)
    ws, welcome = await ext_connect(ws_connect, server_a.url + "?user=bo")
    await ws.subscribe(ROOM)
    await node_b.broadcast("room_1", {"n": 1})
    first = (await messages(ws, 1))[0]
    ws.conn.transport.abort()  # type: ignore[attr-defined]
    await asyncio.sleep(0.2)
    await node_a.broadcast("room_1", {"n": 2})
    await node_b.broadcast("room_1", {"n": 3})
    again, restored = await ext_connect(
        ws_connect,
        server_b.url,
        headers={"X-AnyCable-Restore-Sid": welcome["sid"]},
    )
    assert restored["restored"] is True and restored["restored_ids"] == [ROOM]
    position = {"epoch": first["epoch"], "offset": first["offset"]}
    await again.send(
        {"command": "history", "identifier": ROOM, "history": {"streams": {"room_1": position}}}
    )
    await node_a.broadcast("room_1", {"n": 4})
    got = [await again.recv_data() for _ in range(4)]
    assert [g["message"]["n"] for g in got if "message" in g] == [2, 3, 4]
    assert {"identifier": ROOM, "type": "confirm_history"} in got


@pytest.mark.services
def test_cli_broadcast_with_history_is_recovered(redis_server: Any) -> None:
    """`cablecar broadcast --history` from another process stores the message: a
    client that asks for history since its position gets it with its offset."""
    import subprocess
    import sys

    prefix = "cli-history"
    for n in (1, 2):
        result = subprocess.run(
            [sys.executable, "-m", "cablecar", "broadcast", "--pubsub", redis_server.url,
             "--channel-prefix", prefix, "--history", "-q", "room_9", f'{{"n":{n}}}'],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    async def read() -> list[int]:
        from cablecar.history.redis import RedisStore

        store = RedisStore(redis_server.url, StoreSettings(), prefix=prefix)
        await store.start()
        entries = await store.after("room_9", store.epoch, 0) or []
        await store.close()
        return [orjson.loads(e.payload)["n"] for e in entries]

    assert asyncio.run(read())[-2:] == [1, 2]


@pytest.mark.services
def test_history_on_a_nats_without_jetstream_is_a_clear_error(tmp_path: Path) -> None:
    """History on NATS needs JetStream: a cable on a core-only nats-server does not
    start, and the error says how to fix it."""
    from tests.services import NatsServer

    async def start(url: str) -> None:
        cable = Cable(pubsub=url, history=True)
        try:
            await cable.start()
        finally:
            await cable.stop()

    with NatsServer(jetstream=False) as core:
        with pytest.raises(AdapterError, match=r"JetStream is not enabled.*-js"):
            asyncio.run(start(core.url))


async def test_an_ext_only_client_is_served_without_history(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """A client offering only the extended protocol to a cable without history gets it
    (rather than a failed handshake) and is served as a plain client: no sid, broadcasts
    without positions, history requests answered reject_history, presence error."""
    cable = Cable(AppConnection, [RoomChannel])
    server = await cablecar_server(cable)
    ws, welcome = await ext_connect(ws_connect, server.url)
    assert ws.conn.subprotocol == "actioncable-v1-ext-json"
    assert welcome == {"type": "welcome"}
    assert (await ws.subscribe(ROOM))["type"] == "confirm_subscription"
    await cable.broadcast("room_1", {"n": 1})
    assert await ws.recv_data() == {"identifier": ROOM, "message": {"n": 1}}
    await ws.send({"command": "history", "identifier": ROOM, "history": {"since": 0}})
    assert await ws.recv_data() == {"identifier": ROOM, "type": "reject_history"}
    await ws.send({"command": "presence", "identifier": ROOM, "data": {}})
    assert (await ws.recv_data())["message"] == {"type": "error"}
