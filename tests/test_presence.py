"""Presence: who is subscribed to a stream, across connections and nodes, with join and
leave events once per member, and no churn when a client comes straight back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cablecar import Cable, Channel, Connection

from .conftest import TIMEOUT, WS, ConnectWS
from .test_history import ext_connect

ROOM = '{"channel":"RoomChannel","room":"1"}'
PLAIN = '{"channel":"PlainChannel"}'


class RoomChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from(f"room_{self.params['room']}", presence=True, whisper=True)


class HostChannel(Channel):
    """Joins presence for the client, from the server."""

    async def subscribed(self) -> None:
        self.stream_from("room_1", presence=True)

    async def arrive(self, data: dict[str, Any]) -> None:
        await self.join_presence(data["id"], {"by": "server"})

    async def depart(self) -> None:
        await self.leave_presence()


class PlainChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("plain")


def presence_frames(frames: list[Any]) -> list[Any]:
    return [f["message"] for f in frames if f.get("type") == "presence"]


async def next_presence(ws: WS) -> Any:
    frame = await ws.recv_until(lambda m: m.get("type") == "presence")
    return frame["message"]


async def join(ws: WS, pid: str, info: Any, identifier: str = ROOM) -> None:
    await ws.send(
        {"command": "join", "identifier": identifier, "presence": {"id": pid, "info": info}}
    )


async def info(ws: WS, **data: Any) -> Any:
    await ws.send({"command": "presence", "identifier": ROOM, "data": data})
    return await ws.recv_until(
        lambda m: m.get("type") == "presence" and m["message"]["type"] in ("info", "error")
    )


def make_cable(pubsub: str = "memory://", **settings: Any) -> Cable:
    return Cable(
        Connection, [RoomChannel, PlainChannel, HostChannel], pubsub, history=True, **settings
    )


async def test_join_and_leave_once_per_member(cablecar_server: Any, ws_connect: ConnectWS) -> None:
    """Two tabs of member 42 and one of 7: join events once per member (the joiner sees
    its own), info lists both with their info, leave only when a member's last tab
    leaves; return_records:false gives the total alone."""
    cable = make_cable()
    server = await cablecar_server(cable)
    a1, _ = await ext_connect(ws_connect, server.url)
    a2, _ = await ext_connect(ws_connect, server.url)
    b, _ = await ext_connect(ws_connect, server.url)
    for ws in (a1, a2, b):
        await ws.subscribe(ROOM)
    await join(a1, "42", {"name": "Jack"})
    for ws in (a1, b):
        assert await next_presence(ws) == {"type": "join", "id": "42", "info": {"name": "Jack"}}
    await join(a2, "42", {"name": "Jack"})
    await join(b, 7, None)  # a number becomes a string id
    assert await next_presence(a1) == {"type": "join", "id": "7", "info": None}
    reply = await info(b)
    assert reply["message"]["total"] == 2
    assert sorted(r["id"] for r in reply["message"]["records"]) == ["42", "7"]
    assert (await info(b, return_records=False))["message"] == {"type": "info", "total": 2}
    await a1.send({"command": "leave", "identifier": ROOM})
    await a2.send({"command": "unsubscribe", "identifier": ROOM})
    assert await next_presence(b) == {"type": "leave", "id": "42"}
    assert (await info(b))["message"]["total"] == 1


async def test_presence_unavailable_always_gets_an_answer(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """info or join on a subscription without a presence stream, an unknown identifier,
    or oversized info: an error reply (the client's promise settles), the connection
    goes on."""
    cable = make_cable(max_presence_info=64)
    server = await cablecar_server(cable)
    ws, _ = await ext_connect(ws_connect, server.url)
    await ws.subscribe(PLAIN)
    await ws.subscribe(ROOM)
    await ws.send({"command": "presence", "identifier": PLAIN, "data": {}})
    assert (await next_presence(ws))["type"] == "error"
    await join(ws, "1", {}, PLAIN)
    assert (await next_presence(ws))["type"] == "error"
    await ws.send({"command": "presence", "identifier": '{"channel":"Nope"}', "data": {}})
    assert (await next_presence(ws))["type"] == "error"
    await join(ws, "1", {"blob": "x" * 100})
    assert (await next_presence(ws))["type"] == "error"
    await join(ws, "1", {"ok": True})
    assert (await next_presence(ws))["type"] == "join"


async def test_a_vanished_member_leaves_after_the_ttl_and_a_quick_return_is_quiet(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """A client whose connection dies stays a member for presence_ttl; resuming within
    it and re-joining causes no leave/join; dying for good, it leaves after the TTL."""
    cable = make_cable(presence_ttl=1.0)
    server = await cablecar_server(cable)
    watcher, _ = await ext_connect(ws_connect, server.url)
    await watcher.subscribe(ROOM)
    ws, welcome = await ext_connect(ws_connect, server.url)
    await ws.subscribe(ROOM)
    await join(ws, "9", {"n": 1})
    assert (await next_presence(watcher))["type"] == "join"
    ws.conn.transport.abort()  # type: ignore[attr-defined]
    await asyncio.sleep(0.3)
    again, restored = await ext_connect(ws_connect, f"{server.url}?sid={welcome['sid']}")
    assert restored["restored"] is True
    await join(again, "9", {"n": 1})
    await asyncio.sleep(1.8)  # past the old connection's TTL: it expired quietly
    assert presence_frames(await watcher.quiet(0.1)) == []
    again.conn.transport.abort()  # type: ignore[attr-defined]
    async with asyncio.timeout(TIMEOUT):
        assert await next_presence(watcher) == {"type": "leave", "id": "9"}


@pytest.mark.services
@pytest.mark.parametrize("kind", ["redis", "postgres", "nats"])
async def test_members_are_seen_across_nodes_and_a_dead_nodes_members_leave(
    cablecar_server: Any, ws_connect: ConnectWS, kind: str, request: Any
) -> None:
    """Over Redis, PostgreSQL or NATS, a member joined on node A is listed by a client of node
    B; when node A stops touching its records (it died), they leave within the TTL plus
    a sweep."""
    url = request.getfixturevalue(f"{kind}_server").url
    prefix = f"p{id(ws_connect)}"
    node_a = make_cable(url, channel_prefix=prefix, presence_ttl=1.0)
    node_b = make_cable(url, channel_prefix=prefix, presence_ttl=1.0)
    server_a = await cablecar_server(node_a)
    server_b = await cablecar_server(node_b)
    a, _ = await ext_connect(ws_connect, server_a.url)
    b, _ = await ext_connect(ws_connect, server_b.url)
    await a.subscribe(ROOM)
    await b.subscribe(ROOM)
    await join(a, "alice", {"on": "A"})
    assert await next_presence(b) == {"type": "join", "id": "alice", "info": {"on": "A"}}
    reply = await info(b)
    assert reply["message"]["records"] == [{"id": "alice", "info": {"on": "A"}}]
    await server_a.close()  # node A goes away; its member is not touched any more
    async with asyncio.timeout(TIMEOUT):
        assert await next_presence(b) == {"type": "leave", "id": "alice"}


async def test_server_side_join_and_reading_members_from_anywhere(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """A channel joins presence on the client's behalf; cable.presence(stream) lists the
    members from outside any connection; leaving from the server sends leave."""
    cable = make_cable()
    server = await cablecar_server(cable)
    host, _ = await ext_connect(ws_connect, server.url)
    watcher, _ = await ext_connect(ws_connect, server.url)
    await watcher.subscribe(ROOM)
    await host.subscribe('{"channel":"HostChannel"}')
    await host.perform('{"channel":"HostChannel"}', "arrive", id=5)
    assert await next_presence(watcher) == {"type": "join", "id": "5", "info": {"by": "server"}}
    assert await cable.presence("room_1") == {"5": {"by": "server"}}
    await host.perform('{"channel":"HostChannel"}', "depart")
    assert await next_presence(watcher) == {"type": "leave", "id": "5"}
    assert await cable.presence("room_1") == {}


async def test_floods_are_throttled_and_bounded_and_others_go_on(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """One connection floods 60 joins under new ids, an oversized info and 60 whispers:
    joins and whispers are delayed to the peer-event rate (none dropped: the watcher gets
    every whisper, in order, and one join per id with a leave for the id it replaced),
    the oversized info gets an error reply and no event; meanwhile another client's
    broadcasts arrive at once."""
    cable = make_cable(max_peer_events_per_second=40, peer_event_burst=10, max_presence_info=64)
    server = await cablecar_server(cable)
    flooder, _ = await ext_connect(ws_connect, server.url)
    watcher, _ = await ext_connect(ws_connect, server.url)
    bystander, _ = await ext_connect(ws_connect, server.url)
    for ws in (flooder, watcher):
        await ws.subscribe(ROOM)
    await bystander.subscribe(PLAIN)
    await join(flooder, "x", "y" * 100)  # info over 64 bytes
    reply = await flooder.recv_until(lambda m: m.get("type") == "presence")
    assert reply["message"] == {"type": "error"}
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(60):
        await join(flooder, f"id{i}", None)
        await flooder.send({"command": "whisper", "identifier": ROOM, "data": {"n": i}})
    # the bystander is served while the flood is being worked through
    await cable.broadcast("plain", {"tick": 1})
    assert (await bystander.recv_data())["message"] == {"tick": 1}
    ticked = loop.time()
    whispers: list[int] = []
    events: list[tuple[str, str]] = []
    while len(whispers) < 60:
        frame = await watcher.recv_data(timeout=TIMEOUT)
        if frame.get("type") == "presence":
            events.append((frame["message"]["type"], frame["message"]["id"]))
        elif "n" in frame.get("message", {}):
            whispers.append(frame["message"]["n"])
    elapsed = loop.time() - started
    assert ticked - started < elapsed - 1.0  # the bystander did not wait for the flood
    assert whispers == list(range(60))
    assert ("join", "x") not in events
    joins = [pid for kind, pid in events if kind == "join"]
    assert joins == [f"id{i}" for i in range(len(joins))] and len(joins) >= 59
    # 120 peer events at 40/s after a burst of 10: about 2.75 s at least
    assert elapsed > 2.0, elapsed
    for ws in (flooder, watcher):  # read what is left (a client that stops reading
        await ws.quiet(0.3)  # cannot see the server's close frame)


async def test_plain_clients_joined_by_their_channel_stay_while_connected(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """A plain Action Cable client whose channel joins presence for it (``join_presence``)
    stays a member past the TTL while connected (kept alive like extended sessions;
    AnyCable lets it expire), sees the events as ordinary messages, and leaves when it
    closes its socket."""
    cable = make_cable(presence_ttl=0.6)
    server = await cablecar_server(cable)
    watcher, _ = await ext_connect(ws_connect, server.url)
    await watcher.subscribe(ROOM)
    plain = await ws_connect(server.url)  # actioncable-v1-json
    host = '{"channel":"HostChannel"}'
    await plain.subscribe(host)
    await plain.perform(host, "arrive", id="p1")
    assert await next_presence(watcher) == {"type": "join", "id": "p1", "info": {"by": "server"}}
    got = await plain.recv_data()
    assert got == {
        "identifier": host,
        "message": {"type": "join", "id": "p1", "info": {"by": "server"}},
    }
    await asyncio.sleep(1.5)  # more than two TTLs
    assert (await info(watcher))["message"]["records"] == [{"id": "p1", "info": {"by": "server"}}]
    await plain.close()
    assert await next_presence(watcher) == {"type": "leave", "id": "p1"}


@pytest.mark.services
async def test_a_burst_of_joins_on_redis_all_succeed(
    cablecar_server: Any, ws_connect: ConnectWS, redis_server: Any
) -> None:
    """150 members join at the same moment on a Redis cable: every one is joined (no
    "Too many connections" error from the Redis client's pool: calls wait for a
    connection instead), each member sees all 150 joins, and the count is right."""
    cable = make_cable(redis_server.url, channel_prefix=f"burst{id(ws_connect)}")
    server = await cablecar_server(cable)
    clients = [(await ext_connect(ws_connect, server.url))[0] for _ in range(150)]
    for ws in clients:
        await ws.subscribe(ROOM)
    seen: list[list[str]] = [[] for _ in clients]

    async def read(i: int, ws: WS) -> None:  # every client keeps reading
        while True:
            frame = await ws.recv_until(lambda m: m.get("type") == "presence", timeout=60)
            seen[i].append(frame["message"]["type"])

    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(clients)]
    await asyncio.gather(*(join(ws, f"m{i}", None) for i, ws in enumerate(clients)))
    async with asyncio.timeout(TIMEOUT * 4):
        while not all(len(types) >= 150 for types in seen):
            await asyncio.sleep(0.05)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    assert all(types.count("join") == 150 and "error" not in types for types in seen)
    assert (await info(clients[0], return_records=False))["message"]["total"] == 150
    for ws in clients:  # vanish (no close handshake behind 150 unread leave events each)
        ws.conn.transport.abort()  # type: ignore[attr-defined]
