"""Beyond WebSockets: server-sent events, long polling and the HTTP broadcast API, on
the standalone server, driven by a real HTTP client (httpx) over 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import resource
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from cablecar import Cable, Channel, Connection
from cablecar.connection import Unauthorized

from .conftest import TIMEOUT, ConnectWS

ROOM = '{"channel":"RoomChannel","room":"1"}'
KEY = "test-broadcast-key"


class AppConnection(Connection):
    identified_by = ("user",)

    async def connect(self) -> None:
        self.user = self.request.query.get("user") or self.request.headers.get("x-user")
        if not self.user or self.user == "evil":
            raise Unauthorized()


class RoomChannel(Channel):
    async def subscribed(self) -> None:
        if self.params.get("room") == "closed":
            self.reject()
            return
        self.stream_from(f"room_{self.params['room']}")

    async def speak(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast(
            f"room_{self.params['room']}", {"text": data["text"], "by": self.connection.user}
        )


def make_cable(url: str = "memory://", **settings: Any) -> Cable:
    settings.setdefault("broadcast_key", KEY)
    return Cable(AppConnection, [RoomChannel], url, allowed_origins="*", **settings)


def http_base(server: Any) -> str:
    return server.url.replace("ws://", "http://").removesuffix("/cable")


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        yield client


class Events:
    """An open event stream: parsed events as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, skip_pings: bool = True) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                event: dict[str, Any] = {}
                async for line in self._lines:
                    if not line:
                        break
                    field, _, value = line.partition(": ")
                    if field == "data":
                        event["data"] = event["data"] + "\n" + value if "data" in event else value
                    else:
                        event[field] = value
                else:
                    raise EOFError("the stream ended")
                if skip_pings and event.get("event") == "ping":
                    continue
                return event


async def open_events(
    http: httpx.AsyncClient, url: str, method: str = "GET", **kwargs: Any
) -> tuple[httpx.Response, Events]:
    request = http.build_request(method, url, **kwargs)
    response = await http.send(request, stream=True)
    return response, Events(response)


async def broadcast(
    http: httpx.AsyncClient, base: str, body: Any, key: str = KEY
) -> httpx.Response:
    return await http.post(
        base + "/_broadcast",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {key}"},
    )


# -- the HTTP broadcast API ---------------------------------------------------------------


async def test_broadcast_api_publishes_in_order_and_refuses_bad_keys_and_bodies(
    cablecar_server: Any, ws_connect: ConnectWS, http_client: httpx.AsyncClient
) -> None:
    """POST /_broadcast with the bearer key reaches WebSocket subscribers, an array in
    order; a wrong key is 401, a malformed body 422, and neither publishes anything;
    exclude_socket skips that connection."""
    http = http_client
    server = await cablecar_server(make_cable(history=True))
    base = http_base(server)
    ws = await ws_connect(server.url + "?user=ann")
    await ws.subscribe(ROOM)
    first = await broadcast(http, base, {"stream": "room_1", "data": '{"n":1}'})
    assert first.status_code == 201
    batch = [{"stream": "room_1", "data": f'{{"n":{n}}}'} for n in (2, 3, 4)]
    assert (await broadcast(http, base, batch)).status_code == 201
    assert [(await ws.recv_data())["message"]["n"] for _ in range(4)] == [1, 2, 3, 4]
    wrong = await broadcast(http, base, {"stream": "room_1", "data": '{"n":9}'}, key="nope")
    assert wrong.status_code == 401
    for bad in (b"not json", b"[]", b'{"stream":"room_1"}', b'{"stream":"","data":"1"}'):
        answer = await http.post(
            base + "/_broadcast", content=bad, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert answer.status_code == 422, bad
        assert "error" in answer.json()
    mixed = [{"stream": "room_1", "data": '{"n":9}'}, {"stream": 5, "data": "x"}]
    assert (await broadcast(http, base, mixed)).status_code == 422
    assert (await http.get(base + "/_broadcast")).status_code == 405
    assert await ws.quiet(0.3) == []  # nothing of the refused ones was published
    # a text that is not JSON travels as a JSON string (Turbo's HTML)
    html = '<turbo-stream action="append"></turbo-stream>'
    assert (await broadcast(http, base, {"stream": "room_1", "data": html})).status_code == 201
    assert (await ws.recv_data())["message"] == html


async def test_broadcast_api_is_off_without_a_key_and_derives_anycables_key(
    cablecar_server: Any, http_client: httpx.AsyncClient
) -> None:
    """With no key the endpoint does not exist (404); with ``secret`` the key is
    AnyCable's HMAC-SHA256(secret, "broadcast-cable")."""
    http = http_client
    off = await cablecar_server(make_cable(broadcast_key=None))
    body = {"stream": "room_1", "data": "1"}
    assert (await broadcast(http, http_base(off), body)).status_code == 404
    derived = hmac.new(b"s3cret", b"broadcast-cable", hashlib.sha256).hexdigest()
    on = await cablecar_server(make_cable(broadcast_key=None, secret="s3cret"))
    assert (await broadcast(http, http_base(on), body, key=derived)).status_code == 201
    assert (await broadcast(http, http_base(on), body, key="s3cret")).status_code == 401


@pytest.mark.services
async def test_broadcast_api_reaches_websocket_sse_and_poll_subscribers_on_another_node(
    cablecar_server: Any, ws_connect: ConnectWS, http_client: httpx.AsyncClient, redis_server: Any
) -> None:
    """Two nodes on Redis: a POST to node A reaches a WebSocket, an event stream and a
    long-polling session, all on node B."""
    http = http_client
    prefix = f"api{id(http)}"
    node_a = await cablecar_server(make_cable(redis_server.url, channel_prefix=prefix))
    node_b = await cablecar_server(make_cable(redis_server.url, channel_prefix=prefix))
    b = http_base(node_b)
    ws = await ws_connect(node_b.url + "?user=ws")
    await ws.subscribe(ROOM)
    response, events = await open_events(http, f"{b}/events?user=sse&identifier={ROOM}")
    assert response.status_code == 200
    assert (await events.next())["event"] == "welcome"
    assert (await events.next())["event"] == "confirm_subscription"
    poll = await http.post(f"{b}/lp?user=lp", content=b"")
    pid = poll.headers["X-AnyCable-Poll-ID"]
    subscribe = orjson.dumps({"command": "subscribe", "identifier": ROOM})
    confirm = await http.post(f"{b}/lp", content=subscribe, headers={"X-AnyCable-Poll-ID": pid})
    assert b"confirm_subscription" in confirm.content
    waiting = asyncio.create_task(http.post(f"{b}/lp", headers={"X-AnyCable-Poll-ID": pid}))
    await asyncio.sleep(0.1)
    sent = await broadcast(http, http_base(node_a), {"stream": "room_1", "data": '{"hi":1}'})
    assert sent.status_code == 201
    assert (await ws.recv_data())["message"] == {"hi": 1}
    assert orjson.loads((await events.next())["data"]) == {"hi": 1}
    polled = await waiting
    assert orjson.loads(polled.content.splitlines()[0])["message"] == {"hi": 1}
    await response.aclose()


# -- server-sent events ---------------------------------------------------------------------


async def test_an_event_stream_runs_connect_and_channels_like_a_websocket(
    cablecar_server: Any, ws_connect: ConnectWS, http_client: httpx.AsyncClient
) -> None:
    """GET /events?channel=...: 200 text/event-stream, welcome, confirmation, then the
    messages of the channel's streams (only the message); a WebSocket user's action
    reaches it. connect() rejecting is 401, a rejected subscription 400, no
    subscription named 400."""
    http = http_client
    server = await cablecar_server(make_cable())
    base = http_base(server)
    response, events = await open_events(
        http, f"{base}/events", params={"identifier": ROOM}, headers={"X-User": "sse"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"].startswith("private, no-cache")
    welcome = await events.next()
    assert welcome["event"] == "welcome" and orjson.loads(welcome["data"])["type"] == "welcome"
    assert (await events.next())["event"] == "confirm_subscription"
    ws = await ws_connect(server.url + "?user=bob")
    await ws.subscribe(ROOM)
    await ws.perform(ROOM, "speak", text="line one\nline two")
    event = await events.next()
    assert "event" not in event and orjson.loads(event["data"]) == {
        "text": "line one\nline two",
        "by": "bob",
    }
    await response.aclose()
    assert (await http.get(f"{base}/events?user=evil&identifier={ROOM}")).status_code == 401
    closed = '{"channel":"RoomChannel","room":"closed"}'
    assert (await http.get(f"{base}/events?user=a&identifier={closed}")).status_code == 400
    assert (await http.get(f"{base}/events?user=a")).status_code == 400
    assert (await http.get(f"{base}/events?user=a&identifier=nope")).status_code == 400
    assert (await http.delete(f"{base}/events?user=a")).status_code == 405


async def test_last_event_id_resumes_from_history_and_raw_sends_data_only(
    cablecar_server: Any, http_client: httpx.AsyncClient
) -> None:
    """With history=True each data event has ``id: offset/epoch/stream``; a new request
    with ``Last-Event-ID`` gets what came after it, once, then confirm_history; raw=1
    leaves out every typed event; a POST body subscribes with whole frames."""
    http = http_client
    server = await cablecar_server(make_cable(history=True))
    base = http_base(server)
    url = f"{base}/events?user=a&identifier={ROOM}"
    response, events = await open_events(http, url)
    await events.next()
    await events.next()
    for n in (1, 2):
        await broadcast(http, base, {"stream": "room_1", "data": f'{{"n":{n}}}'})
    first, second = await events.next(), await events.next()
    assert orjson.loads(first["data"]) == {"n": 1}
    offset, epoch, stream = first["id"].split("/", 2)
    assert (offset, stream) == ("1", "room_1") and epoch
    await response.aclose()
    for n in (3, 4):
        await broadcast(http, base, {"stream": "room_1", "data": f'{{"n":{n}}}'})
    response, events = await open_events(http, url, headers={"Last-Event-ID": second["id"]})
    got = [await events.next() for _ in range(5)]
    assert [e.get("event") for e in got] == [
        "welcome",
        "confirm_subscription",
        None,
        None,
        "confirm_history",
    ]
    assert [orjson.loads(e["data"])["n"] for e in got[2:4]] == [3, 4]
    await response.aclose()
    response, events = await open_events(http, url + "&raw=1&history_since=1")
    raw = [await events.next(skip_pings=False) for _ in range(4)]
    assert all("event" not in e for e in raw)
    assert [orjson.loads(e["data"])["n"] for e in raw] == [1, 2, 3, 4]
    await response.aclose()
    body = orjson.dumps({"command": "subscribe", "identifier": ROOM}) + b"\n"
    response, events = await open_events(http, f"{base}/events?user=p", "POST", content=body)
    await events.next()
    await events.next()
    await broadcast(http, base, {"stream": "room_1", "data": '{"n":5}'})
    frame = orjson.loads((await events.next())["data"])
    assert frame["identifier"] == ROOM and frame["message"] == {"n": 5} and frame["offset"] == 5
    await response.aclose()


async def test_a_slow_event_stream_reader_is_cut_while_others_keep_receiving(
    cablecar_server: Any, http_client: httpx.AsyncClient
) -> None:
    """A client that opens a stream and never reads is cut as too slow once its output
    passes max_pending_output; a reading client gets every message."""
    http = http_client
    cable = make_cable(max_pending_output=64 * 1024, socket_send_buffer=16 * 1024)
    server = await cablecar_server(cable)
    base = http_base(server)
    host, port = server.url.removeprefix("ws://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /events?user=slow&identifier={ROOM} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 200")
    response, events = await open_events(http, f"{base}/events?user=fast&identifier={ROOM}")
    await events.next()
    await events.next()
    big = orjson.dumps("x" * 4000).decode()
    async with asyncio.timeout(TIMEOUT * 2):
        n = 0
        while cable.statistics()["connections"] > 1:
            await broadcast(http, base, [{"stream": "room_1", "data": big}] * 10)
            n += 10
            for _ in range(10):
                assert (await events.next())["data"] == big[1:-1]
            await asyncio.sleep(0)
    assert cable.figures()["slow_consumers"] >= 1
    await broadcast(http, base, {"stream": "room_1", "data": '"after"'})
    assert (await events.next())["data"] == "after"
    writer.close()
    await response.aclose()


async def test_thousands_of_idle_streams_and_polls_are_bounded_by_the_connection_limit(
    cablecar_server: Any, http_client: httpx.AsyncClient
) -> None:
    """max_connections bounds idle event streams and poll sessions as it bounds
    WebSockets: 1,000 of them (600 streams, 400 poll sessions) fill a limit of 1,000; the
    next stream and the next poll session get 503 and the server goes on; a closed stream
    frees its place."""
    http = http_client
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # both ends of 1,000 sockets live in this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    cable = make_cable(max_connections=1000, poll_keepalive_timeout=60.0)
    server = await cablecar_server(cable)
    base = http_base(server)
    host, port = server.url.removeprefix("ws://").split("/")[0].split(":")
    request = f"GET /events?user=idle&identifier={ROOM} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    async def stream() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        head = await reader.readuntil(b"confirm_subscription")
        assert head.startswith(b"HTTP/1.1 200")
        return writer

    streams: list[asyncio.StreamWriter] = []
    for _ in range(6):
        streams += await asyncio.gather(*(stream() for _ in range(100)))
    for _ in range(8):
        polls = await asyncio.gather(*(http.post(f"{base}/lp?user=p") for _ in range(50)))
        assert {p.status_code for p in polls} == {200}
    assert cable.socket_count == 1000
    assert (await http.get(f"{base}/events?user=x&identifier={ROOM}")).status_code == 503
    assert (await http.post(f"{base}/lp?user=x")).status_code == 503
    assert (await http.get(f"{base}/health")).status_code == 200
    streams.pop().close()
    async with asyncio.timeout(TIMEOUT):
        while cable.socket_count == 1000:
            await asyncio.sleep(0.02)
    assert (await http.post(f"{base}/lp?user=y")).status_code == 200
    for writer in streams:
        writer.close()


# -- long polling ---------------------------------------------------------------------------


async def test_long_polling_chats_with_a_websocket_and_loses_nothing_with_a_lost_response(
    cablecar_server: Any, ws_connect: ConnectWS, http_client: httpx.AsyncClient
) -> None:
    """A poll session subscribes and performs like a WebSocket; a response the client
    never got (it acknowledges an older frame) is sent again; frames are numbered."""
    http = http_client
    server = await cablecar_server(make_cable())
    base = http_base(server)
    opened = await http.post(f"{base}/lp?user=polly")
    assert opened.status_code == 200
    pid = opened.headers["X-AnyCable-Poll-ID"]
    assert orjson.loads(opened.content) == {"type": "welcome"}
    assert opened.headers["X-Cablecar-Poll-Seq"] == "1"

    async def poll(body: bytes = b"", ack: int | None = None) -> httpx.Response:
        headers = {"X-AnyCable-Poll-ID": pid}
        if ack is not None:
            headers["X-Cablecar-Poll-Ack"] = str(ack)
        return await http.post(f"{base}/lp", content=body, headers=headers)

    subscribe = orjson.dumps({"command": "subscribe", "identifier": ROOM})
    assert b"confirm_subscription" in (await poll(subscribe, ack=1)).content
    ws = await ws_connect(server.url + "?user=bob")
    await ws.subscribe(ROOM)
    speak = {"action": "speak", "text": "from the poll"}
    perform = {"command": "message", "identifier": ROOM, "data": orjson.dumps(speak).decode()}
    answer = await poll(orjson.dumps(perform), ack=2)
    assert (await ws.recv_data())["message"] == {"text": "from the poll", "by": "polly"}
    assert orjson.loads(answer.content)["message"]["by"] == "polly"
    assert answer.headers["X-Cablecar-Poll-Seq"] == "3"
    await ws.perform(ROOM, "speak", text="from the socket")
    lost = await poll(ack=3)  # the client never sees this answer...
    assert b"from the socket" in lost.content
    again = await poll(ack=3)  # ...and says so: it comes again, with the same number
    assert again.content == lost.content
    assert again.headers["X-Cablecar-Poll-Seq"] == lost.headers["X-Cablecar-Poll-Seq"] == "4"
    waiting = asyncio.create_task(poll(ack=4))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # held open until there is output
    await ws.perform(ROOM, "speak", text="later")
    assert b"later" in (await waiting).content


async def test_unauthorized_and_expired_poll_sessions_get_401_and_free_their_memory(
    cablecar_server: Any, http_client: httpx.AsyncClient
) -> None:
    """connect() rejecting is a 401 with the disconnect frame; 100 sessions abandoned
    mid-flight (one poll, never another) expire after poll_keepalive_timeout: they
    leave the cable, their next poll is 401, and the memory they held is returned."""
    http = http_client
    cable = make_cable(poll_keepalive_timeout=6.0, max_connections=2000)
    server = await cablecar_server(cable)
    base = http_base(server)
    refused = await http.post(f"{base}/lp?user=evil")
    assert refused.status_code == 401
    assert orjson.loads(refused.content)["reason"] == "unauthorized"
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    subscribe = orjson.dumps({"command": "subscribe", "identifier": ROOM})

    async def open_one(i: int) -> str:
        opened = await http.post(f"{base}/lp?user=u{i}")
        pid = opened.headers["X-AnyCable-Poll-ID"]
        await http.post(f"{base}/lp", content=subscribe, headers={"X-AnyCable-Poll-ID": pid})
        return pid

    pids = []
    for batch in range(2):
        pids += await asyncio.gather(*(open_one(batch * 50 + i) for i in range(50)))
    assert cable.socket_count == 100
    await broadcast(http, base, {"stream": "room_1", "data": orjson.dumps("y" * 1000).decode()})
    held = tracemalloc.get_traced_memory()[0] - before
    async with asyncio.timeout(TIMEOUT * 4):
        while cable.socket_count:
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    gc.collect()
    left = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(
        f"100 abandoned poll sessions held {held / 1024:.0f} KiB; after expiry {left / 1024:.0f} KiB"
    )
    assert held > 100 * 1000  # each held its session, subscription and output
    assert left < held / 5
    late = await http.post(f"{base}/lp", headers={"X-AnyCable-Poll-ID": pids[0]})
    assert late.status_code == 401
    assert orjson.loads(late.content)["reason"] == "session_expired"


async def test_a_turbo_stream_is_read_without_javascript_as_html_events(
    cablecar_server: Any, http_client: httpx.AsyncClient
) -> None:
    """``?turbo_signed_stream_name=`` (what turbo_stream_from renders) subscribes through
    Turbo::StreamsChannel; Turbo Stream elements arrive as the event's data, HTML as it
    is, one data line per line; a forged name is refused with 400."""
    from cablecar import turbo
    from cablecar.signing import StreamSigner

    http = http_client
    server = await cablecar_server(make_cable(turbo_streams_secret="turbo-key"))
    base = http_base(server)
    signed = StreamSigner("turbo-key").sign("board_7")
    query = {"turbo_signed_stream_name": signed, "user": "t"}
    response, events = await open_events(http, f"{base}/events", params=query)
    assert response.status_code == 200
    assert (await events.next())["event"] == "welcome"
    assert (await events.next())["event"] == "confirm_subscription"
    await turbo.broadcast(server.cable, "board_7", turbo.append("cards", "<b>new</b>\ncard"))
    event = await events.next()
    assert event["data"] == (
        '<turbo-stream action="append" target="cards"><template>&lt;b&gt;new&lt;/b&gt;\n'
        "card</template></turbo-stream>"
    )
    await response.aclose()
    forged = {"turbo_signed_stream_name": signed[:-2] + "00", "user": "t"}
    assert (await http.get(f"{base}/events", params=forged)).status_code == 400
