"""The core over real sockets: connections, channels, streams, broadcasting, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from cablecar import Cable, Channel, periodically, rescue_from
from cablecar.channel import before_subscribe

from .conftest import TIMEOUT, ConnectWS
from .core import SignedInConnection

log_lines: list[str] = []


class AppConnection(SignedInConnection):
    async def disconnect(self) -> None:
        log_lines.append(f"disconnect {self.current_user}")


class ChatChannel(Channel):
    async def subscribed(self) -> None:
        if not self.params.get("room"):
            self.reject()
            return
        self.transmit({"hello": self.current_user})
        self.stream_from(f"chat_{self.params['room']}")

    async def unsubscribed(self) -> None:
        log_lines.append(f"unsubscribed {self.current_user} {self.params['room']}")

    async def speak(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast(
            f"chat_{self.params['room']}", {"from": self.current_user, "body": data["body"]}
        )

    async def slow_echo(self, data: dict[str, Any]) -> None:
        await asyncio.sleep(data["delay"])
        self.transmit({"seq": data["seq"]})

    def blocking(self, data: dict[str, Any]) -> None:
        # plain def: runs in the thread pool, may block
        self.transmit({"thread": threading.current_thread().name, "n": data["n"]})

    async def counter(self) -> None:
        self.count = getattr(self, "count", 0) + 1
        self.transmit({"count": self.count})

    async def boom(self, data: dict[str, Any]) -> None:
        raise RuntimeError("user bug")

    async def leave(self, data: dict[str, Any]) -> None:
        self.stop_stream_from(f"chat_{self.params['room']}")
        self.transmit({"left": True})

    async def receive(self, data: dict[str, Any]) -> None:
        self.transmit({"received": data})

    def _private(self, data: dict[str, Any]) -> None:  # never an action
        raise AssertionError("private method reached")


class RescuedChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("rescued")

    async def fail(self, data: dict[str, Any]) -> None:
        raise KeyError("missing")

    @rescue_from(KeyError)
    async def handle(self, exc: Exception) -> None:
        self.transmit({"rescued": repr(exc)})


class TickChannel(Channel):
    async def subscribed(self) -> None:
        self.n = 0

    @periodically(every=0.05)
    async def tick(self) -> None:
        self.n += 1
        self.transmit({"tick": self.n})


class UpperChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("upper", callback=lambda m: {"upper": m["text"].upper()})


class GuardedChannel(Channel):
    @before_subscribe
    def check(self) -> None:
        if self.current_user != "admin":
            self.reject()

    async def subscribed(self) -> None:
        self.stream_from("admin")


errors: list[tuple[BaseException, dict[str, Any]]] = []


def make_cable(**kw: Any) -> Cable:
    return Cable(
        connection=AppConnection,
        channels=[ChatChannel, RescuedChannel, TickChannel, UpperChannel, GuardedChannel],
        on_error=lambda exc, ctx: errors.append((exc, ctx)),
        **kw,
    )


CHAT1 = orjson.dumps({"channel": "ChatChannel", "room": "1"}).decode()


@pytest.fixture
async def cable_and_url(cablecar_server: Any) -> tuple[Cable, str]:
    """``(cable, url)``: a ``make_cable()`` cable and its server's URL, without a user."""
    cable = make_cable()
    server = await cablecar_server(cable)
    return cable, server.url


@pytest.fixture
async def url(cable_and_url: tuple[Cable, str]) -> str:
    return f"{cable_and_url[1]}?user=alice"


async def test_welcome_subscribe_and_transmit_before_confirmation(
    url: str, ws_connect: ConnectWS
) -> None:
    """Frames transmitted in subscribed() arrive before confirm_subscription."""
    c = await ws_connect(url)
    await c.send({"command": "subscribe", "identifier": CHAT1})
    assert await c.recv_data() == {"identifier": CHAT1, "message": {"hello": "alice"}}
    assert await c.recv_data() == {"identifier": CHAT1, "type": "confirm_subscription"}


async def test_broadcast_reaches_every_subscriber_of_the_room_only(
    url: str, ws_connect: ConnectWS
) -> None:
    """A message spoken in room 1 reaches every subscriber of room 1 (the speaker too) and nobody in room 2."""
    a, b, other = (
        await ws_connect(url),
        await ws_connect(url.replace("alice", "bob")),
        await ws_connect(url),
    )
    for c in (a, b):
        assert (await c.subscribe(CHAT1))["type"] == "confirm_subscription"
    room2 = '{"channel":"ChatChannel","room":"2"}'
    assert (await other.subscribe(room2))["type"] == "confirm_subscription"
    await a.perform(CHAT1, "speak", body="hi all")
    for c in (a, b):
        msg = await c.recv_until(lambda m: "message" in m and "from" in m["message"])
        assert msg == {"identifier": CHAT1, "message": {"from": "alice", "body": "hi all"}}
    assert await other.quiet(0.3) == []


async def test_identifier_is_echoed_byte_for_byte(url: str, ws_connect: ConnectWS) -> None:
    """The confirmation echoes the identifier exactly as the client sent it (spacing and key order kept)."""
    c = await ws_connect(url)
    odd = '{ "room":"1" ,"channel":"ChatChannel" }'
    assert (await c.subscribe(odd)) == {"identifier": odd, "type": "confirm_subscription"}


async def test_reject_unknown_channel_and_bad_identifiers(url: str, ws_connect: ConnectWS) -> None:
    """Unknown channels and blank rooms get reject_subscription (Rails stays silent)."""
    c = await ws_connect(url)
    for ident in (
        '{"channel":"NopeChannel"}',
        '{"channel":"ChatChannel"}',
        "not json",
        '{"no":"channel"}',
    ):
        assert (await c.subscribe(ident)) == {"identifier": ident, "type": "reject_subscription"}
    assert (await c.subscribe(CHAT1))["type"] == "confirm_subscription"


async def test_duplicate_subscribe_is_confirmed_again(url: str, ws_connect: ConnectWS) -> None:
    """Subscribing twice to the same identifier is confirmed again and messages still arrive once."""
    c = await ws_connect(url)
    assert (await c.subscribe(CHAT1))["type"] == "confirm_subscription"
    assert (await c.subscribe(CHAT1))["type"] == "confirm_subscription"
    await c.perform(CHAT1, "speak", body="once")
    got = await c.quiet(0.3)
    assert [m["message"]["body"] for m in got if "body" in m.get("message", {})] == ["once"]


async def test_unauthorized_connection_is_told_and_closed(cablecar_server: Any) -> None:
    """A connection refused by connect() gets {"type":"disconnect","reason":"unauthorized"} and is closed."""
    server = await cablecar_server(make_cable())
    async with connect(server.url, subprotocols=["actioncable-v1-json"]) as conn:  # type: ignore[list-item]
        assert orjson.loads(await conn.recv()) == {
            "type": "disconnect",
            "reason": "unauthorized",
            "reconnect": False,
        }
        await asyncio.wait_for(conn.wait_closed(), TIMEOUT)


async def test_commands_before_welcome_run_after_it_in_order(cablecar_server: Any) -> None:
    """Commands sent before the welcome are run after it, in order."""
    server = await cablecar_server(make_cable())
    async with connect(server.url + "?user=eve", subprotocols=["actioncable-v1-json"]) as conn:  # type: ignore[list-item]
        await conn.send(orjson.dumps({"command": "subscribe", "identifier": CHAT1}).decode())
        first = orjson.loads(await conn.recv())
        assert first == {"type": "welcome"}


async def test_commands_of_one_connection_run_strictly_in_order(
    url: str, ws_connect: ConnectWS
) -> None:
    """A slow action does not let the next one overtake it (Rails reorders them)."""
    c = await ws_connect(url)
    await c.subscribe(CHAT1)
    for seq, delay in enumerate([0.2, 0.0, 0.1, 0.0]):
        await c.perform(CHAT1, "slow_echo", seq=seq, delay=delay)
    seqs = [(await c.recv_data())["message"]["seq"] for _ in range(4)]
    assert seqs == [0, 1, 2, 3]


async def test_plain_def_actions_run_in_the_thread_pool(url: str, ws_connect: ConnectWS) -> None:
    """A plain def action runs on a cablecar worker thread and its transmit arrives."""
    c = await ws_connect(url)
    await c.subscribe(CHAT1)
    await c.perform(CHAT1, "blocking", n=7)
    msg = (await c.recv_data())["message"]
    assert msg["n"] == 7 and msg["thread"].startswith("cablecar")


async def test_instance_state_persists_across_actions_and_no_arg_actions(
    url: str, ws_connect: ConnectWS
) -> None:
    """A channel instance keeps its attributes between actions; actions without arguments work."""
    c = await ws_connect(url)
    await c.subscribe(CHAT1)
    for expected in (1, 2, 3):
        await c.perform(CHAT1, "counter")
        assert (await c.recv_data())["message"] == {"count": expected}


async def test_missing_action_calls_receive(url: str, ws_connect: ConnectWS) -> None:
    """Data without an action goes to the channel's receive()."""
    c = await ws_connect(url)
    await c.subscribe(CHAT1)
    await c.send({"command": "message", "identifier": CHAT1, "data": '{"x":1}'})
    assert (await c.recv_data())["message"] == {"received": {"x": 1}}


async def test_private_and_base_methods_are_not_actions(
    url: str, ws_connect: ConnectWS, caplog: Any
) -> None:
    """Private methods, callbacks and Channel's own methods cannot be performed by a client."""
    c = await ws_connect(url)
    await c.subscribe(CHAT1)
    for action in (
        "_private",
        "subscribed",
        "unsubscribed",
        "transmit",
        "stream_from",
        "reject",
        "__init__",
        "broadcast_to",
        "stop_all_streams",
        "nope",
    ):
        await c.perform(CHAT1, action)
    await c.perform(CHAT1, "counter")
    assert (await c.recv_data())["message"] == {"count": 1}  # nothing else came first
    assert "unable to process ChatChannel#" in caplog.text


async def test_user_exception_is_logged_reported_and_the_connection_goes_on(
    url: str, ws_connect: ConnectWS, caplog: Any
) -> None:
    """An exception in an action is logged, passed to the error hook, and the connection goes on."""
    errors.clear()
    c = await ws_connect(url)
    await c.subscribe(CHAT1)
    with caplog.at_level(logging.ERROR, logger="cablecar"):
        await c.perform(CHAT1, "boom")
        await c.perform(CHAT1, "counter")
        assert (await c.recv_data())["message"] == {"count": 1}
    assert "ChatChannel#boom raised RuntimeError" in caplog.text
    assert isinstance(errors[-1][0], RuntimeError) and errors[-1][1]["action"] == "boom"


async def test_rescue_from_handles_the_exception(url: str, ws_connect: ConnectWS) -> None:
    """An exception handled by rescue_from turns into the channel's reply instead of an error."""
    c = await ws_connect(url)
    ident = '{"channel":"RescuedChannel"}'
    await c.subscribe(ident)
    await c.perform(ident, "fail")
    assert (await c.recv_data())["message"] == {"rescued": "KeyError('missing')"}


async def test_periodically_ticks_until_unsubscribed(url: str, ws_connect: ConnectWS) -> None:
    """A periodically timer ticks for the subscription and stops when it is unsubscribed."""
    c = await ws_connect(url)
    ident = '{"channel":"TickChannel"}'
    await c.subscribe(ident)
    ticks = [(await c.recv_data())["message"]["tick"] for _ in range(3)]
    assert ticks == [1, 2, 3]
    await c.send({"command": "unsubscribe", "identifier": ident})
    await asyncio.sleep(0.1)
    await c.quiet(0.05)
    assert await c.quiet(0.25) == []


async def test_stream_callback_transforms_per_subscription(
    cable_and_url: tuple[Cable, str], ws_connect: ConnectWS
) -> None:
    """A stream callback turns each broadcast into what this subscription transmits."""
    cable, base = cable_and_url
    c = await ws_connect(base + "?user=u")
    ident = '{"channel":"UpperChannel"}'
    await c.subscribe(ident)
    await cable.broadcast("upper", {"text": "shout"})
    assert (await c.recv_data()) == {"identifier": ident, "message": {"upper": "SHOUT"}}


async def test_stop_stream_from_stops_delivery(
    cable_and_url: tuple[Cable, str], ws_connect: ConnectWS
) -> None:
    """After stop_stream_from the subscriber gets no more broadcasts and the stream is gone from the cable."""
    cable, base = cable_and_url
    c = await ws_connect(base + "?user=u")
    await c.subscribe(CHAT1)
    await c.perform(CHAT1, "leave")
    assert (await c.recv_data())["message"] == {"left": True}
    await cable.broadcast("chat_1", {"x": 1})
    assert await c.quiet(0.3) == []
    assert "chat_1" not in cable.streams()


async def test_unsubscribe_and_disconnect_run_callbacks(
    cable_and_url: tuple[Cable, str], ws_connect: ConnectWS
) -> None:
    """Closing the socket runs unsubscribed() then disconnect(), and leaves no stream or connection behind."""
    log_lines.clear()
    cable, base = cable_and_url
    c = await ws_connect(base + "?user=zed")
    await c.subscribe(CHAT1)
    await c.close()
    async with asyncio.timeout(TIMEOUT):
        while "disconnect zed" not in log_lines:
            await asyncio.sleep(0.01)
    assert log_lines == ["unsubscribed zed 1", "disconnect zed"]
    assert "chat_1" not in cable.streams()
    assert cable.statistics()["connections"] == 0


async def test_before_subscribe_can_reject(url: str, ws_connect: ConnectWS) -> None:
    """A before_subscribe hook rejects a user who may not subscribe and lets an admin in."""
    c = await ws_connect(url)
    ident = '{"channel":"GuardedChannel"}'
    assert (await c.subscribe(ident))["type"] == "reject_subscription"
    admin = await ws_connect(url.replace("alice", "admin"))
    assert (await admin.subscribe(ident))["type"] == "confirm_subscription"


async def test_remote_disconnect_closes_the_matching_connection(
    cable_and_url: tuple[Cable, str], ws_connect: ConnectWS
) -> None:
    """remote_connections.where(current_user=...).disconnect() closes that user's connection only."""
    cable, base = cable_and_url
    bob = await ws_connect(base + "?user=bob")
    carol = await ws_connect(base + "?user=carol")
    await cable.remote_connections.where(current_user="bob").disconnect(reconnect=False)
    assert (await bob.recv_data()) == {"type": "disconnect", "reason": "remote", "reconnect": False}
    await carol.subscribe(CHAT1)  # carol is untouched


async def test_graceful_stop_tells_clients_server_restart(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """Stopping the server tells each client server_restart with reconnect true."""
    server = await cablecar_server(make_cable())
    c = await ws_connect(server.url + "?user=u")
    await server.close(timeout=1.0)
    assert (await c.recv_data()) == {
        "type": "disconnect",
        "reason": "server_restart",
        "reconnect": True,
    }


async def test_pings_every_interval_with_unix_seconds(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """Clients get a ping every ping_interval carrying the Unix time in seconds."""
    server = await cablecar_server(make_cable(ping_interval=0.1))
    c = await ws_connect(server.url + "?user=u")
    ping = await c.recv()
    assert ping["type"] == "ping" and isinstance(ping["message"], int)


async def test_origin_check(cablecar_server: Any, ws_connect: ConnectWS) -> None:
    """Browsers must come from the same origin or allowed_origins; non-browsers pass."""
    import re

    server = await cablecar_server(
        make_cable(allowed_origins=[re.compile(r"https://.*\.example\.com")])
    )
    host = server.url.split("/")[2]
    await ws_connect(server.url + "?user=u")  # no Origin
    await ws_connect(server.url + "?user=u", headers={"Origin": f"http://{host}"})
    await ws_connect(server.url + "?user=u", headers={"Origin": "https://app.example.com"})
    with pytest.raises(Exception, match="403"):
        await ws_connect(server.url + "?user=u", headers={"Origin": "https://evil.test"})


async def test_health_endpoint_reports_statistics(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """GET /health answers 200 with the live connection and subscription counts."""
    server = await cablecar_server(make_cable())
    c = await ws_connect(server.url + "?user=u")
    await c.subscribe(CHAT1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    stats = orjson.loads(body)
    assert stats["status"] == "ok" and stats["connections"] == 1 and stats["subscriptions"] == 1
