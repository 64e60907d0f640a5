"""Hostile input over real sockets: every malformed case has a defined outcome.

Each test opens a well-behaved client first, throws one family of bad input at the
server from a raw socket, checks the answer (a frame, a close code, an HTTP status,
or nothing at all), then checks that the offending connection still works when it
was meant to stay open, and that the well-behaved client never noticed.

The ``log`` fixture checks every test's log: refused input is logged at WARNING at
most once per connection per kind, and nothing a client sends ever produces an ERROR
line or a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from cablecar import Cable, Channel, Connection, periodically, rescue_from
from cablecar._logging import redact
from cablecar.channel import before_subscribe
from cablecar.transports.standalone import Server

from .core import SignedInConnection
from .rawws import BINARY, CLOSE, PING, PONG, TEXT, Closed, RawWS, http_request

CHAT1 = '{"channel":"ChatChannel","room":"1"}'
ECHO = '{"channel":"ChatChannel","room":"echo"}'

subscribed_runs: list[str] = []


class AppConnection(SignedInConnection):
    async def connect(self) -> None:
        await super().connect()
        if self.current_user == "slow":
            await asyncio.sleep(30)


class ChatChannel(Channel):
    async def subscribed(self) -> None:
        subscribed_runs.append(self.current_user)
        if not self.params.get("room"):
            self.reject()
            return
        self.stream_from(f"chat_{self.params['room']}")

    async def speak(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast(
            f"chat_{self.params['room']}", {"from": self.current_user, "body": data.get("body")}
        )

    async def echo(self, data: dict[str, Any]) -> None:
        self.transmit({"echo": data.get("n")})

    async def nap(self, data: dict[str, Any]) -> None:
        await asyncio.sleep(data["seconds"])
        self.transmit({"napped": data["seconds"]})

    @before_subscribe
    def guard(self) -> None:
        pass

    @periodically(every=3600)
    async def hourly(self) -> None:
        raise AssertionError("a timer is not an action")

    @rescue_from(LookupError)
    async def handler(self, exc: Exception) -> None:
        raise AssertionError("a rescue handler is not an action")

    def _secret(self, data: dict[str, Any]) -> None:
        raise AssertionError("private method reached")


def make_cable(**settings: Any) -> Cable:
    settings.setdefault("handshake_timeout", 1.0)
    return Cable(connection=AppConnection, channels=[ChatChannel], **settings)


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> Any:
    """Capture cablecar's log; after the test, check the rules for refused input."""
    caplog.set_level(logging.WARNING, logger="cablecar")
    yield caplog
    records = [r for r in caplog.records if r.name.startswith("cablecar")]
    bad = [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]
    seen = collections.Counter(
        (id(r.args[0]) if isinstance(r.args, tuple) and r.args else r.getMessage(), kind)
        for r in records
        if r.levelno == logging.WARNING and (kind := getattr(r, "cablecar_kind", None))
    )
    repeated = {key: n for key, n in seen.items() if n > 1}
    assert not repeated, repeated


@dataclass
class Env:
    server: Server
    cable: Cable
    good: RawWS
    opened: list[RawWS]

    @property
    def port(self) -> int:
        return self.server.port

    async def raw(self, user: str = "mallory", subscribe: str | None = ECHO) -> RawWS:
        ws = await RawWS.open(self.port, f"/cable?user={user}")
        self.opened.append(ws)
        if subscribe:
            ws.subscribe(subscribe)
            msg = await ws.recv_json()
            assert msg == {"identifier": subscribe, "type": "confirm_subscription"}
        return ws

    async def good_still_works(self) -> None:
        """The well-behaved client on the same server is unaffected."""
        body = os.urandom(4).hex()
        self.good.perform(CHAT1, "speak", body=body)
        msg = await self.good.recv_until(lambda m: "message" in m)
        assert msg == {"identifier": CHAT1, "message": {"from": "alice", "body": body}}


async def still_open(ws: RawWS) -> None:
    """A connection without subscriptions still answers (a subscribe is confirmed)."""
    ws.subscribe(ECHO)
    assert (await ws.recv_json())["type"] == "confirm_subscription"


async def still_works(ws: RawWS, n: int = 1) -> None:
    """The (hostile) connection itself still answers commands."""
    ws.perform(ECHO, "echo", n=n)
    msg = await ws.recv_until(lambda m: "message" in m)
    assert msg == {"identifier": ECHO, "message": {"echo": n}}


async def start_env(cablecar_server: Any, **settings: Any) -> Env:
    cable = make_cable(**settings)
    server = await cablecar_server(cable)
    good = await RawWS.open(server.port, "/cable?user=alice")
    good.subscribe(CHAT1)
    assert (await good.recv_json())["type"] == "confirm_subscription"
    return Env(server, cable, good, [good])


@pytest.fixture
async def env(cablecar_server: Any, log: Any) -> AsyncIterator[Env]:
    e = await start_env(cablecar_server)
    yield e
    await e.good_still_works()
    for ws in e.opened:
        ws.close()


# -- WebSocket framing ------------------------------------------------------------------


async def test_fragmented_command_with_a_ping_in_between_is_reassembled(env: Env) -> None:
    """A command split into fragments (inside a multi-byte character) with a ping between them: the ping is answered at once and the command runs whole."""
    ws = await env.raw()
    text = orjson.dumps(
        {
            "command": "message",
            "identifier": ECHO,
            "data": orjson.dumps({"action": "echo", "n": "é🚋"}).decode(),
        }
    )
    cut = text.index("🚋".encode()) + 2  # split inside a multi-byte character
    ws.send_frame(TEXT, text[:10], fin=False)
    ws.send_frame(0x0, text[10:cut], fin=False)
    ws.send_frame(PING, b"between")
    ws.send_frame(0x0, text[cut:], fin=True)
    assert await ws.recv_frame() == (PONG, b"between")
    msg = await ws.recv_until(lambda m: "message" in m)
    assert msg["message"] == {"echo": "é🚋"}
    await still_works(ws)


@pytest.mark.parametrize(
    ("frames", "why"),
    [
        ([(0x0, b"x", {})], "continuation without a start"),
        ([(TEXT, b"{", {"fin": False}), (TEXT, b"}", {})], "new message inside a fragmented one"),
        ([(TEXT, b"{}", {"mask": False})], "unmasked client frame"),
        ([(TEXT, b"{}", {"rsv": 1})], "RSV1 without an extension"),
        ([(TEXT, b"{}", {"rsv": 2})], "RSV2"),
        ([(TEXT, b"{}", {"rsv": 4})], "RSV3"),
        ([(0x3, b"", {})], "reserved data opcode"),
        ([(0xB, b"", {})], "reserved control opcode"),
        ([(PING, b"x" * 126, {})], "control frame over 125 bytes"),
        ([(PING, b"x", {"fin": False})], "fragmented control frame"),
        ([(CLOSE, b"\x03", {})], "close with a 1-byte payload"),
        ([(CLOSE, struct.pack("!H", 999), {})], "close code below 1000"),
        ([(CLOSE, struct.pack("!H", 1005), {})], "close code 1005 is never sent"),
        ([(CLOSE, struct.pack("!H", 1006), {})], "close code 1006 is never sent"),
        ([(CLOSE, struct.pack("!H", 2000), {})], "unassigned close code"),
        ([(CLOSE, struct.pack("!H", 5000), {})], "close code over 4999"),
        ([(CLOSE, struct.pack("!H", 1000) + b"\xff\xfe", {})], "close reason not UTF-8"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_protocol_violations_close_with_1002(
    env: Env, frames: list[tuple[int, bytes, dict[str, Any]]], why: str
) -> None:
    """A WebSocket protocol violation fails the connection as RFC 6455 says: a close
    frame with 1002 and nothing before it (no Action Cable disconnect)."""
    ws = await env.raw()
    for opcode, payload, kw in frames:
        ws.send_frame(opcode, payload, **kw)
    code, texts = await ws.expect_close()
    assert code == 1002, why
    assert texts == []


async def test_invalid_utf8_text_closes_with_1007(env: Env) -> None:
    """A text frame that is not UTF-8 closes the connection with 1007."""
    ws = await env.raw()
    ws.send_frame(TEXT, b'{"command":"\xc3\x28"}')
    code, _ = await ws.expect_close()
    assert code == 1007


async def test_invalid_utf8_split_over_fragments_closes_with_1007(env: Env) -> None:
    """Invalid UTF-8 spread over two fragments also closes with 1007."""
    ws = await env.raw()
    ws.send_frame(TEXT, b'{"a":"\xe2\x82', fin=False)
    ws.send_frame(0x0, b'\x28"}')
    code, _ = await ws.expect_close()
    assert code == 1007


async def test_oversized_frame_closes_with_1009_before_the_payload_arrives(
    cablecar_server: Any, log: Any
) -> None:
    """A frame header declaring more than the message limit closes with 1009 at once, without waiting for the payload; the largest allowed message still works."""
    env = await start_env(cablecar_server, max_message_size=64 * 1024)
    ws = await env.raw()
    # Declare 64 KiB + 1 and send only the header: the server must not wait for it.
    ws.send_raw(b"\x81\xff" + struct.pack("!Q", 64 * 1024 + 1) + b"\x00\x00\x00\x00")
    code, texts = await ws.expect_close()
    assert code == 1009
    assert texts == [{"type": "disconnect", "reason": "message_too_big", "reconnect": True}]
    # The biggest allowed frame still goes through on another connection.
    ok = await env.raw()
    big = b" " * (64 * 1024 - 200)
    frame = b'{"command":"message","identifier":%s,"data":"{\\"action\\":\\"echo\\",\\"n\\":1}"%s}'
    ok.send_frame(TEXT, frame % (orjson.dumps(ECHO), big))
    assert (await ok.recv_until(lambda m: "message" in m))["message"] == {"echo": 1}
    await env.good_still_works()


async def test_huge_declared_length_closes_with_1009(env: Env) -> None:
    """A frame declaring a 2**63-byte length closes with 1009 (no allocation, no crash)."""
    ws = await env.raw()
    ws.send_raw(b"\x81\xff" + struct.pack("!Q", 1 << 63) + b"\x00\x00\x00\x00")
    code, _ = await ws.expect_close()
    assert code == 1009


async def test_oversized_fragmented_message_closes_with_1009(
    cablecar_server: Any, log: Any
) -> None:
    """Fragments that together exceed the message limit close with 1009; other clients go on."""
    env = await start_env(cablecar_server, max_message_size=4096)
    ws = await env.raw()
    for _ in range(4):
        ws.send_frame(TEXT if _ == 0 else 0x0, b"x" * 1000, fin=False)
    ws.send_frame(0x0, b"x" * 1000, fin=True)
    code, _texts = await ws.expect_close()
    assert code == 1009
    await env.good_still_works()


async def test_binary_frames_are_ignored_and_logged_once(env: Env, log: Any) -> None:
    """Binary frames are ignored, logged once, and the connection goes on."""
    ws = await env.raw()
    for _ in range(5):
        ws.send_frame(BINARY, b"\x00\x01\x02")
    await still_works(ws)
    assert sum("binary frame ignored" in r.getMessage() for r in log.records) == 1


async def test_pings_are_answered_with_their_payload_and_pongs_ignored(env: Env) -> None:
    """Pings get pongs with the same payload (empty too); unsolicited pongs are ignored."""
    ws = await env.raw()
    payload = os.urandom(125)
    ws.send_frame(PING, payload)
    assert await ws.recv_frame() == (PONG, payload)
    ws.send_frame(PING, b"")
    assert await ws.recv_frame() == (PONG, b"")
    ws.send_frame(PONG, b"unsolicited")
    await still_works(ws)


async def test_every_ping_of_a_flood_is_answered_in_order(env: Env) -> None:
    """2,000 pings in one burst get 2,000 pongs with their payloads, in order (RFC 6455
    5.5.2), and the connection goes on; the server writes them a read at a time."""
    ws = await env.raw()
    ws.send_raw(b"".join(b"\x89\x81\x00\x00\x00\x00" + bytes((i % 256,)) for i in range(2000)))
    ws.perform(ECHO, "echo", n=1)
    pongs: list[bytes] = []
    while True:
        op, payload = await ws.recv_frame()
        if op == PONG:
            pongs.append(payload)
        elif op == TEXT and b"echo" in payload:
            break
    assert pongs == [bytes((i % 256,)) for i in range(2000)]
    await still_works(ws)


async def test_a_ping_before_a_close_in_the_same_read_is_answered(env: Env) -> None:
    """A ping and a close arriving together: the pong goes out before the close reply."""
    ws = await env.raw()
    ws.send_raw(
        b"\x89\x82\x00\x00\x00\x00hi" + b"\x88\x82\x00\x00\x00\x00" + struct.pack("!H", 1000)
    )
    op, payload = await ws.recv_frame()
    assert (op, payload) == (PONG, b"hi")
    op, payload = await ws.recv_frame()
    assert op == CLOSE and struct.unpack("!H", payload[:2])[0] == 1000


async def test_close_handshake_is_answered_with_the_same_code(env: Env) -> None:
    """A client's close frame is answered with the same code (1000 when it had none) and the socket ends."""
    for payload, expected in ((b"", 1000), (struct.pack("!H", 1001) + b"bye", 1001)):
        ws = await env.raw()
        ws.send_frame(CLOSE, payload)
        op, answer = await ws.recv_frame()
        assert op == CLOSE and struct.unpack("!H", answer[:2])[0] == expected
        assert await ws.reader.read() == b""


async def test_garbage_after_the_close_frame_is_not_read(env: Env) -> None:
    """Bytes sent after a close frame are not read: the answer is still a clean close."""
    ws = await env.raw()
    ws.send_frame(CLOSE, struct.pack("!H", 1000))
    ws.send_raw(b"\xff" * 64)
    op, _ = await ws.recv_frame()
    assert op == CLOSE


# -- commands -------------------------------------------------------------------------

BAD_COMMANDS: list[tuple[str, bytes]] = [
    ("not_json", b""),
    ("not_json", b"hello"),
    ("not_json", b'{"command":"subscribe"'),
    ("not_json", b'{"n": NaN}'),
    ("not_json", b'{"n": 123456789012345678901234567890}'),
    ("not_json", b'"\\ud800"'),
    ("not_json", b"[" * 2000 + b"]" * 2000),
    ("not_object", b"[]"),
    ("not_object", b"1"),
    ("not_object", b'"subscribe"'),
    ("not_object", b"null"),
    ("not_object", b"true"),
    ("bad_command", b'{"identifier":"x"}'),
    ("bad_command", b'{"command":1,"identifier":"x"}'),
    ("bad_command", b'{"command":null,"identifier":"x"}'),
    ("bad_command", b'{"command":["subscribe"],"identifier":"x"}'),
    ("bad_identifier", b'{"command":"subscribe"}'),
    ("bad_identifier", b'{"command":"subscribe","identifier":""}'),
    ("bad_identifier", b'{"command":"subscribe","identifier":{"channel":"ChatChannel"}}'),
    ("bad_identifier", b'{"command":"message","identifier":7,"data":"{}"}'),
    ("unknown_command", b'{"command":"shout","identifier":"x"}'),
    ("unknown_command", b'{"command":"SUBSCRIBE","identifier":"x"}'),
]


def bad_messages() -> list[tuple[str, bytes]]:
    ident = orjson.dumps(ECHO)
    out = []
    for kind, data in (
        ("bad_data", b"null"),
        ("bad_data", b'{"action":"echo"}'),
        ("bad_data", b"[1]"),
        ("bad_data", b'"not json"'),
        ("bad_data", b'"[1,2]"'),
        ("bad_data", b'"7"'),
        ("bad_action", b'"{\\"action\\":7}"'),
        ("bad_action", b'"{\\"action\\":[\\"echo\\"]}"'),
    ):
        out.append((kind, b'{"command":"message","identifier":%s,"data":%s}' % (ident, data)))
    out.append(("bad_data", b'{"command":"message","identifier":%s}' % ident))
    return out


async def test_malformed_commands_are_ignored_logged_once_and_the_connection_goes_on(
    env: Env, log: Any
) -> None:
    """Every kind of malformed command gets no answer and one WARNING per kind, and the connection goes on working."""
    ws = await env.raw()
    cases = BAD_COMMANDS + bad_messages()
    for _round in range(3):  # every kind three times: still one WARNING per kind
        for _kind, payload in cases:
            ws.send_frame(TEXT, payload)
    await still_works(ws, 42)
    assert [f for f in await ws.quiet(0.2)] == []  # no answer to any of them
    kinds = {getattr(r, "cablecar_kind", None) for r in log.records}
    assert {k for k, _ in cases} <= kinds
    await env.good_still_works()


@pytest.mark.parametrize(
    "identifier",
    [
        "not json",
        "[1,2]",
        '"ChatChannel"',
        "{}",
        '{"room":"1"}',
        '{"channel":7}',
        '{"channel":""}',
        '{"channel":null}',
        '{"channel":"NoSuchChannel"}',
        '{"channel":"Channel"}',
        '{"channel":"cablecar.channel.Channel"}',
        '{"channel":"chat_1"}',
        '{"channel":"ChatChannel"}',
        '{"channel":"ChatChannel","room":""}',
    ],
)
async def test_bad_identifiers_are_rejected(env: Env, identifier: str) -> None:
    """A subscribe with a bad identifier gets reject_subscription and the connection goes on."""
    ws = await env.raw()
    ws.subscribe(identifier)
    assert await ws.recv_json() == {"identifier": identifier, "type": "reject_subscription"}
    await still_works(ws)


async def test_commands_for_unknown_subscriptions_are_ignored(env: Env) -> None:
    """Messages and unsubscribes for subscriptions the client does not hold are ignored, connection intact."""
    ws = await env.raw()
    other = '{"channel":"ChatChannel","room":"2"}'
    ws.perform(other, "echo", n=1)
    ws.send_json({"command": "unsubscribe", "identifier": other})
    ws.send_json({"command": "unsubscribe", "identifier": "garbage"})
    await still_works(ws)


NOT_ACTIONS = [
    "_secret",
    "__init__",
    "__class__",
    "__getattr__",
    "__dict__",
    "_rescuer_for",
    "_hook_methods",
    "_session",
    "subscribed",
    "unsubscribed",
    "transmit",
    "stream_from",
    "stream_for",
    "stop_stream_from",
    "stop_all_streams",
    "reject",
    "rejected",
    "broadcast_to",
    "broadcasting_for",
    "channel_name",
    "logger",
    "params",
    "connection",
    "cable",
    "identifier",
    "current_user",
    "guard",  # a before_subscribe hook
    "hourly",  # a periodically timer
    "handler",  # a rescue_from handler
    "receive",  # not defined on this channel
    "nope",
    "echo ",
    "ECHO",
]


async def test_only_public_methods_of_the_users_class_are_actions(env: Env, log: Any) -> None:
    """Private, inherited and framework methods cannot be performed: nothing runs, nothing is answered, one log line."""
    ws = await env.raw()
    for action in NOT_ACTIONS:
        ws.perform(ECHO, action, n=0)
    await still_works(ws, 5)
    assert await ws.quiet(0.2) == []
    assert ws.writer.transport is not None
    assert sum(getattr(r, "cablecar_kind", "") == "action_not_allowed" for r in log.records) == 1


async def test_refused_action_with_deeply_nested_data_logs_without_error(env: Env) -> None:
    """A refused action with 1,000-deep data is logged without a recursion error; the connection goes on."""
    ws = await env.raw()
    deep = '{"a":' * 1000 + '{"password":"hunter2"}' + "}" * 1000
    data = '{"action":"nope","nested":' + deep + "}"
    ws.send_json({"command": "message", "identifier": ECHO, "data": data})
    await still_works(ws)


def test_filter_elides_nesting_deeper_than_it_walks() -> None:
    """Log redaction walks a client's data: nesting as deep as a JSON parser allows
    must not reach Python's recursion limit."""
    deep: Any = {"password": "hunter2"}
    for _ in range(5000):
        deep = {"a": [deep]}
    data = {"nested": deep, "token": "t-1", "list": [{"secret": 1}]}
    shown = repr(redact(data, Cable().config.filter_parameters))
    assert "[...]" in shown
    assert "hunter2" not in shown and "t-1" not in shown and "[FILTERED]" in shown


async def test_refused_action_log_line_filters_parameters(env: Env, log: Any) -> None:
    """The log line for a refused action shows its parameters with passwords and keys filtered."""
    ws = await env.raw()
    ws.perform(ECHO, "nope", password="hunter2", api_key="k-123", note="visible")
    await still_works(ws)
    text = log.text
    assert "unable to process ChatChannel#'nope'" in text
    assert "hunter2" not in text and "k-123" not in text
    assert "visible" in text and "[FILTERED]" in text


async def test_a_client_only_receives_streams_its_channel_chose(env: Env) -> None:
    """Identifier params cannot name a stream: the channel decides what it streams."""
    ws = await env.raw(subscribe=None)
    sneaky = '{"channel":"ChatChannel","room":"9","stream":"secret","stream_from":"secret"}'
    ws.subscribe(sneaky)
    assert (await ws.recv_json())["type"] == "confirm_subscription"
    for stream in ("secret", "chat_secret", "_cablecar_control", "all"):
        await env.cable.broadcast(stream, {"leak": stream})
    await env.cable.broadcast("chat_9", {"ok": 1})
    msg = await ws.recv_until(lambda m: "message" in m)
    assert msg == {"identifier": sneaky, "message": {"ok": 1}}
    assert await ws.quiet(0.2) == []


async def test_unauthorized_closes_before_any_channel_code_runs(env: Env) -> None:
    """A connection refused by connect() is told "unauthorized" and closed; a subscribe pipelined behind the upgrade never runs."""
    subscribed_runs.clear()
    ws = await RawWS.connect(env.port)
    # The upgrade and a subscribe in the same packet: the subscribe must never run.
    ws.send_raw(http_request("/cable") + b"")
    status, _ = await ws.read_response()
    assert status == 101
    ws.subscribe(ECHO)
    code, texts = await ws.expect_close()
    assert texts == [{"type": "disconnect", "reason": "unauthorized", "reconnect": False}]
    assert code == 1000
    assert subscribed_runs == []


async def test_connect_timeout_closes_the_socket(cablecar_server: Any, log: Any) -> None:
    """A connect() that overruns connect_timeout closes the socket with invalid_request; others go on."""
    env = await start_env(cablecar_server, connect_timeout=0.3)
    ws = await RawWS.open(env.port, "/cable?user=slow", welcome=False)
    _code, texts = await ws.expect_close()
    assert texts == [{"type": "disconnect", "reason": "invalid_request", "reconnect": True}]
    log.records.clear()  # connect() overran: logged at ERROR as a user-code problem
    await env.good_still_works()


# -- limits ---------------------------------------------------------------------------


async def test_max_subscriptions_rejects_the_one_over(cablecar_server: Any, log: Any) -> None:
    """Subscriptions beyond max_subscriptions are rejected; after an unsubscribe a new one is confirmed."""
    env = await start_env(cablecar_server, max_subscriptions=3)
    ws = await env.raw(subscribe=None)
    idents = [f'{{"channel":"ChatChannel","room":"r{i}"}}' for i in range(5)]
    answers = []
    for ident in idents:
        ws.subscribe(ident)
        answers.append((await ws.recv_json())["type"])
    assert answers == ["confirm_subscription"] * 3 + ["reject_subscription"] * 2
    ws.send_json({"command": "unsubscribe", "identifier": idents[0]})
    ws.subscribe(idents[4])
    assert (await ws.recv_json())["type"] == "confirm_subscription"
    await env.good_still_works()


async def test_commands_over_the_rate_are_throttled_not_lost(
    cablecar_server: Any, log: Any
) -> None:
    """Rounds of commands over the rate limit are all answered, in order: the server
    slows the client down (it stops reading) instead of refusing commands."""
    env = await start_env(cablecar_server, max_commands_per_second=400, command_burst=50)
    ws = await env.raw()
    for round_ in range(5):
        for n in range(200):
            ws.perform(ECHO, "echo", n=round_ * 1000 + n)
        got = [
            (await ws.recv_until(lambda m: "message" in m, 10))["message"]["echo"]
            for _ in range(200)
        ]
        assert got == [round_ * 1000 + n for n in range(200)]
    kinds = [getattr(r, "cablecar_kind", None) for r in log.records]
    assert kinds.count("rate_limited") == 1  # said once, at WARNING
    await env.good_still_works()


async def test_a_client_within_the_rate_is_never_refused(cablecar_server: Any, log: Any) -> None:
    """A client that stays within the command rate gets every reply and no rate-limit log line."""
    env = await start_env(cablecar_server, max_commands_per_second=50, command_burst=5)
    ws = await env.raw()
    for n in range(20):
        ws.perform(ECHO, "echo", n=n)
        assert (await ws.recv_until(lambda m: "message" in m))["message"] == {"echo": n}
        await asyncio.sleep(0.025)
    assert not any(getattr(r, "cablecar_kind", None) == "rate_limited" for r in log.records)


async def test_input_queued_behind_a_slow_action_pauses_reading(
    cablecar_server: Any, log: Any
) -> None:
    """A client cannot pile up max_message_size x command_burst bytes behind a slow action."""
    env = await start_env(cablecar_server, max_message_size=64 * 1024)
    ws = await env.raw()
    ws.perform(ECHO, "nap", seconds=1.0)
    pad = "x" * 60_000
    for n in range(40):  # 2.4 MB of commands while the action sleeps
        ws.perform(ECHO, "echo", n=n, pad=pad)
    await asyncio.sleep(0.5)
    queued = [c.statistics() for c in env.cable.connections if c.current_user == "mallory"]
    assert queued
    assert queued[0]["queued_input"] <= 4 * 64 * 1024  # the rest waits in TCP buffers
    assert (await ws.recv_until(lambda m: "message" in m, 10))["message"] == {"napped": 1.0}
    got = [(await ws.recv_until(lambda m: "message" in m, 10))["message"] for _ in range(40)]
    assert [g["echo"] for g in got] == list(range(40))
    await env.good_still_works()


async def test_max_connections_answers_503_until_one_leaves(cablecar_server: Any, log: Any) -> None:
    """Past max_connections an upgrade gets 503 with Retry-After; once a client leaves, the next one is let in."""
    env = await start_env(cablecar_server, max_connections=3)
    a = await env.raw("a", None)
    b = await env.raw("b", None)  # (kept referenced: a collected writer closes its socket)
    ws = await RawWS.connect(env.port)
    status, answer = await ws.http_exchange(http_request("/cable?user=c"))
    assert status == 503 and b"Retry-After: 5" in answer
    a.send_frame(CLOSE, struct.pack("!H", 1000))
    await a.expect_close()
    await still_open(b)
    async with asyncio.timeout(5):
        while env.cable.socket_count >= 3:
            await asyncio.sleep(0.01)
    await env.raw("c", None)
    await env.good_still_works()


async def test_sockets_that_never_upgrade_are_capped(cablecar_server: Any, log: Any) -> None:
    """Sockets that open and never send a request count against max_connections: the extra ones are dropped at once."""
    env = await start_env(cablecar_server, max_connections=5, handshake_timeout=5.0)
    idle = [await RawWS.connect(env.port) for _ in range(8)]
    await asyncio.sleep(0.2)
    # Beyond max_connections sockets in their handshake, new ones are dropped at once.
    dropped = 0
    for ws in idle:
        try:
            data = await asyncio.wait_for(ws.reader.read(), 0.1)
            dropped += data == b""
        except (TimeoutError, ConnectionError):
            pass
    assert dropped >= 3
    for ws in idle:
        ws.close()
    await env.good_still_works()


# -- HTTP ------------------------------------------------------------------------------

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def head(request_line: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [request_line, "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


HTTP_CASES = [
    ("GET /cable HTTP/1.1", {}, 426, "plain GET on the cable path"),
    ("GET /cable HTTP/1.1", {"Upgrade": "h2c", "Connection": "Upgrade"}, 426, "other upgrade"),
    ("POST /cable HTTP/1.1", {**UPGRADE, "Content-Length": "0"}, 405, "upgrade with POST"),
    ("GET /cable HTTP/1.1", {**UPGRADE, "Sec-WebSocket-Key": ""}, 400, "empty key"),
    ("GET /cable HTTP/1.1", {**UPGRADE, "Sec-WebSocket-Key": "not base64!"}, 400, "bad key"),
    ("GET /cable HTTP/1.1", {**UPGRADE, "Sec-WebSocket-Key": "c2hvcnQ="}, 400, "short key"),
    ("GET /cable HTTP/1.1", {k: v for k, v in UPGRADE.items() if "Key" not in k}, 400, "no key"),
    ("GET /cable HTTP/1.1", {**UPGRADE, "Sec-WebSocket-Version": "8"}, 426, "version 8"),
    ("GET /cable HTTP/1.1", {k: v for k, v in UPGRADE.items() if "Vers" not in k}, 426, "no ver"),
    ("GET /elsewhere HTTP/1.1", {}, 404, "unknown path"),
    ("GET /elsewhere HTTP/1.1", UPGRADE, 404, "upgrade on another path"),
    ("POST /x HTTP/1.1", {"Transfer-Encoding": "chunked"}, 411, "chunked body"),
    ("POST /x HTTP/1.1", {"Content-Length": "-1"}, 400, "negative length"),
    ("POST /x HTTP/1.1", {"Content-Length": "ten"}, 400, "garbage length"),
    ("POST /x HTTP/1.1", {"Content-Length": str(2 << 20)}, 413, "body over max_http_body"),
    ("GET cable HTTP/1.1", {}, 400, "target not a path"),
    ("GET /cable HTTP/2.0", {}, 400, "HTTP/2 request line"),
    ("G(T /cable HTTP/1.1", {}, 400, "bad method token"),
    ("GET /cable HTTP/1.1", {"Bad Header": "x"}, 400, "space in a header name"),
    ("GET /cable HTTP/1.1", {f"X-{i}": "y" for i in range(150)}, 431, "too many headers"),
    ("GET /cable HTTP/1.1", {"X-Big": "y" * 20_000}, 431, "header over max_header_size"),
]


@pytest.mark.parametrize(
    ("line", "headers", "status", "why"), HTTP_CASES, ids=[c[3] for c in HTTP_CASES]
)
async def test_bad_http_requests_get_a_status_and_are_closed(
    env: Env, line: str, headers: dict[str, str], status: int, why: str
) -> None:
    """Each malformed or refused HTTP request gets its 4xx/5xx status and Connection: close."""
    ws = await RawWS.connect(env.port)
    got, answer = await ws.http_exchange(head(line, headers))
    assert got == status, (why, answer[:300])
    assert b"Connection: close" in answer


@pytest.mark.parametrize(
    "garbage",
    [
        b"\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        bytes(range(256)) * 4 + b"\r\n\r\n",
    ],
    ids=["empty", "word", "tls-hello", "h2-preface", "binary"],
)
async def test_garbage_instead_of_http_gets_400(env: Env, garbage: bytes) -> None:
    """Bytes that are not HTTP get 400."""
    ws = await RawWS.connect(env.port)
    status, _ = await ws.http_exchange(garbage)
    assert status == 400


async def test_oversized_head_without_an_end_gets_431(env: Env) -> None:
    """A request head over the size limit with no end in sight gets 431."""
    ws = await RawWS.connect(env.port)
    ws.send_raw(b"GET /cable HTTP/1.1\r\nX-Filler: " + b"a" * 40_000)
    status, _ = await ws.http_exchange(b"")
    assert status == 431


async def test_health_and_plain_requests_still_answer(env: Env) -> None:
    """/health answers 200 with {"status":"ok"} beside the WebSocket endpoint."""
    ws = await RawWS.connect(env.port)
    status, answer = await ws.http_exchange(head("GET /health HTTP/1.1", {}))
    assert status == 200 and b'"status":"ok"' in answer


@pytest.mark.parametrize("mode", ["silent", "trickle", "body"])
async def test_slowloris_sockets_are_closed_after_the_handshake_timeout(
    cablecar_server: Any, log: Any, mode: str
) -> None:
    """A request trickled byte by byte (or a body that never comes) is closed after handshake_timeout."""
    env = await start_env(cablecar_server, handshake_timeout=0.5)
    ws = await RawWS.connect(env.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    if mode == "trickle":
        request = http_request("/cable?user=slow")
        try:
            for byte in request[:60]:  # 0.9 s of trickling, past the 0.5 s timeout
                ws.send_raw(bytes((byte,)))
                await asyncio.sleep(0.015)
                if ws.reader.at_eof():
                    break
        except ConnectionError:
            pass
    elif mode == "body":
        ws.send_raw(head("POST /x HTTP/1.1", {"Content-Length": "1000"}, b"x" * 10))
    try:
        data = await asyncio.wait_for(ws.reader.read(), 5)
    except ConnectionError:
        data = b""
    assert data.startswith(b"HTTP/1.1 408") or data == b""
    assert loop.time() - started < 4
    await env.good_still_works()


# -- origin ----------------------------------------------------------------------------


async def test_origin_check_refuses_foreign_browsers(env: Env) -> None:
    """A browser from a foreign origin gets 403; the same origin and non-browser clients (no Origin) are let in."""
    host = f"127.0.0.1:{env.port}"
    ws = await RawWS.connect(env.port)
    status, _ = await ws.http_exchange(
        http_request("/cable?user=x", {"Origin": "https://evil.test", "Host": host})
    )
    assert status == 403
    same = await RawWS.open(
        env.port, "/cable?user=x", headers={"Origin": f"http://{host}", "Host": host}
    )
    same.close()
    noorigin = await RawWS.open(env.port, "/cable?user=x")
    noorigin.close()


async def test_frames_pipelined_with_the_upgrade_are_handled(env: Env) -> None:
    """A subscribe sent in the same packet as the upgrade request is welcomed and confirmed."""
    ws = await RawWS.connect(env.port)
    sub = orjson.dumps({"command": "subscribe", "identifier": ECHO})
    from .rawws import build_frame

    ws.send_raw(http_request("/cable?user=pipelined") + build_frame(TEXT, sub))
    status, _ = await ws.read_response()
    assert status == 101
    assert await ws.recv_json() == {"type": "welcome"}
    assert (await ws.recv_json())["type"] == "confirm_subscription"
    await still_works(ws)


async def test_eof_in_the_middle_of_a_frame_is_a_clean_disconnect(env: Env) -> None:
    """A client that ends its socket mid-frame is disconnected cleanly, the server goes on."""
    ws = await env.raw()
    ws.send_raw(b"\x81\xfe\x10\x00\x00\x00\x00\x00" + b"x" * 100)
    ws.writer.write_eof()
    try:
        await asyncio.wait_for(ws.reader.read(), 5)
    except ConnectionError:
        pass
    with pytest.raises((Closed, ConnectionError, TimeoutError)):
        await ws.recv_frame(0.5)


# -- exceptions in user code ------------------------------------------------------------

BOOM = '{"channel":"BoomChannel"}'


class BoomError(Exception):
    pass


class CrashConnection(Connection):
    identified_by = ("current_user",)

    async def connect(self) -> None:
        user = self.request.query.get("user", "")
        if user == "crash":
            raise BoomError("connect failed")
        self.current_user = user

    def disconnect(self) -> None:
        if self.current_user == "crash-on-leave":
            raise BoomError("disconnect failed")


class BoomChannel(Channel):
    async def subscribed(self) -> None:
        if self.params.get("fail"):
            raise BoomError("subscribed failed")
        self.stream_from("boom_stream", callback=self.on_message)
        if self.params.get("tick"):
            self.stream_from("tick_on")

    async def unsubscribed(self) -> None:
        raise BoomError("unsubscribed failed")

    def on_message(self, message: Any) -> Any:
        if message.get("fail"):
            raise BoomError("stream callback failed")
        if message.get("unserializable"):
            return {"value": object()}
        return {"got": message}

    async def explode(self, data: dict[str, Any]) -> None:
        raise BoomError("async action failed")

    def explode_in_thread(self, data: dict[str, Any]) -> None:
        raise BoomError("thread action failed")

    async def exit(self, data: dict[str, Any]) -> None:
        raise SystemExit(3)

    def interrupt(self, data: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    async def cancel(self, data: dict[str, Any]) -> None:
        raise asyncio.CancelledError

    async def ping(self, data: dict[str, Any]) -> None:
        self.transmit({"pong": data.get("n")})

    @periodically(every=0.05)
    async def tick(self) -> None:
        if self.params.get("tick"):
            raise BoomError("timer failed")


@dataclass
class ErrorEnv:
    port: int
    cable: Cable
    errors: list[tuple[BaseException, dict[str, Any]]]
    caplog: pytest.LogCaptureFixture

    async def client(self, user: str = "u", identifier: str = BOOM) -> RawWS:
        ws = await RawWS.open(self.port, f"/cable?user={user}")
        ws.subscribe(identifier)
        assert (await ws.recv_json())["type"] == "confirm_subscription"
        return ws

    def reported(self, kind: type[BaseException] = BoomError) -> dict[str, Any]:
        """The context of the one error of ``kind`` the on_error hooks received."""
        found = [ctx for exc, ctx in self.errors if isinstance(exc, kind)]
        assert len(found) >= 1, self.errors
        return found[-1]

    def logged(self, text: str) -> logging.LogRecord:
        records = [r for r in self.caplog.records if text in r.getMessage()]
        assert records, [r.getMessage() for r in self.caplog.records]
        assert records[0].levelno == logging.ERROR and records[0].exc_info
        return records[0]

    async def others_fine(self) -> None:
        ws = await self.client("bystander")
        ws.perform(BOOM, "ping", n=9)
        assert (await ws.recv_until(lambda m: "message" in m))["message"] == {"pong": 9}
        ws.close()


async def alive(ws: RawWS, n: int = 1) -> None:
    ws.perform(BOOM, "ping", n=n)
    assert (await ws.recv_until(lambda m: "message" in m))["message"] == {"pong": n}


@pytest.fixture
async def errenv(cablecar_server: Any, caplog: pytest.LogCaptureFixture) -> AsyncIterator[ErrorEnv]:
    caplog.set_level(logging.WARNING, logger="cablecar")
    errors: list[tuple[BaseException, dict[str, Any]]] = []

    def broken_hook(exc: BaseException, ctx: dict[str, Any]) -> None:
        raise RuntimeError("the hook itself is broken")

    cable = Cable(
        connection=CrashConnection,
        channels=[BoomChannel],
        on_error=[lambda exc, ctx: errors.append((exc, ctx)), broken_hook],
    )
    server = await cablecar_server(cable)
    e = ErrorEnv(server.port, cable, errors, caplog)
    yield e
    await e.others_fine()


async def test_connect_raising_closes_that_socket_only(errenv: ErrorEnv) -> None:
    """connect() raising closes that socket with invalid_request, reports the error to on_error and logs it."""
    ws = await RawWS.open(errenv.port, "/cable?user=crash", welcome=False)
    _code, texts = await ws.expect_close()
    assert texts == [{"type": "disconnect", "reason": "invalid_request", "reconnect": True}]
    assert errenv.reported()["callback"] == "connect"
    errenv.logged("CrashConnection#connect raised BoomError")


async def test_subscribed_raising_rejects_the_subscription(errenv: ErrorEnv) -> None:
    """subscribed() raising rejects that subscription, reports and logs the error; the connection goes on."""
    ws = await errenv.client()
    ident = '{"channel":"BoomChannel","fail":true}'
    ws.subscribe(ident)
    assert await ws.recv_json() == {"identifier": ident, "type": "reject_subscription"}
    ctx = errenv.reported()
    assert ctx["action"] == "subscribed" and isinstance(ctx["channel"], BoomChannel)
    errenv.logged("BoomChannel#subscribed raised BoomError")
    await alive(ws)


@pytest.mark.parametrize("action", ["explode", "explode_in_thread"])
async def test_action_raising_is_reported_and_the_connection_goes_on(
    errenv: ErrorEnv, action: str
) -> None:
    """An action raising is reported with its channel and connection, logged, and the connection goes on (a broken error hook too)."""
    ws = await errenv.client()
    ws.perform(BOOM, action)
    await alive(ws)
    ctx = errenv.reported()
    assert ctx["action"] == action and ctx["channel"].identifier == BOOM
    assert ctx["connection"].current_user == "u"
    errenv.logged(f"BoomChannel#{action} raised BoomError")
    errenv.logged("on_error hook")  # a broken hook is logged, the others still ran


@pytest.mark.parametrize(
    ("action", "kind"),
    [("exit", SystemExit), ("interrupt", KeyboardInterrupt), ("cancel", asyncio.CancelledError)],
)
async def test_actions_raising_base_exceptions_do_not_stop_the_server(
    errenv: ErrorEnv, action: str, kind: type[BaseException]
) -> None:
    """Actions raising SystemExit or KeyboardInterrupt are reported like any error and the server keeps running."""
    ws = await errenv.client()
    ws.perform(BOOM, action)
    await alive(ws)
    assert errenv.reported(kind)["action"] == action
    errenv.logged(f"BoomChannel#{action} raised {kind.__name__}")


async def test_timer_raising_keeps_ticking_and_the_connection_goes_on(errenv: ErrorEnv) -> None:
    """A periodic timer that raises keeps ticking, each error reported; the channel still answers."""
    ws = await errenv.client(identifier='{"channel":"BoomChannel","tick":1}')
    async with asyncio.timeout(5):
        while sum(isinstance(e, BoomError) for e, _ in errenv.errors) < 3:
            await asyncio.sleep(0.02)
    assert errenv.reported()["action"] == "tick"
    errenv.logged("BoomChannel#tick raised BoomError")
    ws.perform('{"channel":"BoomChannel","tick":1}', "ping", n=2)
    msg = await ws.recv_until(lambda m: "message" in m)
    assert msg["message"] == {"pong": 2}


async def test_stream_callback_raising_is_reported_with_its_stream(errenv: ErrorEnv) -> None:
    """A stream callback raising (or returning something unserializable) is reported with its stream; later broadcasts still arrive."""
    ws = await errenv.client()
    await errenv.cable.broadcast("boom_stream", {"fail": True})
    await errenv.cable.broadcast("boom_stream", {"unserializable": True})
    await errenv.cable.broadcast("boom_stream", {"n": 1})
    msg = await ws.recv_until(lambda m: "message" in m)
    assert msg["message"] == {"got": {"n": 1}}
    assert errenv.reported()["action"] == "stream callback for 'boom_stream'"
    errenv.logged("BoomChannel#stream callback for 'boom_stream' raised BoomError")
    errenv.logged("BoomChannel#stream callback for 'boom_stream' raised TypeError")
    await alive(ws)


async def test_unsubscribed_and_disconnect_raising_are_reported(errenv: ErrorEnv) -> None:
    """unsubscribed() and disconnect() raising are reported and logged; the connection could still subscribe again."""
    ws = await errenv.client("crash-on-leave")
    ws.send_json({"command": "unsubscribe", "identifier": BOOM})
    ws.subscribe(BOOM)
    assert (await ws.recv_json())["type"] == "confirm_subscription"  # still usable
    ws.send_frame(CLOSE, struct.pack("!H", 1000))
    await ws.expect_close()
    async with asyncio.timeout(5):
        while not any(c.get("callback") == "disconnect" for _, c in errenv.errors):
            await asyncio.sleep(0.02)
    assert any(c.get("action") == "unsubscribed" for _, c in errenv.errors)
    errenv.logged("BoomChannel#unsubscribed raised BoomError")
    errenv.logged("CrashConnection#disconnect raised BoomError")
