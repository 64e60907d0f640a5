"""The ASGI transport under uvicorn (``--ws websockets-sansio``) and Granian.

The protocol scenarios of ``tests/test_server.py`` run here unchanged against
``cable.asgi()`` served by each ASGI server (the ``cablecar_server`` fixture is
overridden); then what only the ASGI path has: mounts, the middleware, the lifespan,
and limits. The official client's scenarios (``tests/e2e/test_official_client.py``)
and the shared conformance suite (``tests/e2e/test_conformance.py``) run against
ASGI servers too.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from cablecar import Cable, Channel, Connection
from cablecar.pubsub import MemoryPubSub
from cablecar.transports.asgi import CableMiddleware

from ..asgi_servers import SERVERS, InProcessServer
from ..conftest import TIMEOUT, ConnectWS
from ..test_http_transports import (  # noqa: F401  (the HTTP transports over ASGI too)
    http_client,
    test_an_event_stream_runs_connect_and_channels_like_a_websocket,
    test_broadcast_api_is_off_without_a_key_and_derives_anycables_key,
    test_broadcast_api_publishes_in_order_and_refuses_bad_keys_and_bodies,
    test_last_event_id_resumes_from_history_and_raw_sends_data_only,
    test_long_polling_chats_with_a_websocket_and_loses_nothing_with_a_lost_response,
)
from ..test_server import (  # noqa: F401  (collected here: the same scenarios over ASGI)
    CHAT1,
    cable_and_url,
    test_before_subscribe_can_reject,
    test_broadcast_reaches_every_subscriber_of_the_room_only,
    test_commands_before_welcome_run_after_it_in_order,
    test_commands_of_one_connection_run_strictly_in_order,
    test_duplicate_subscribe_is_confirmed_again,
    test_graceful_stop_tells_clients_server_restart,
    test_identifier_is_echoed_byte_for_byte,
    test_instance_state_persists_across_actions_and_no_arg_actions,
    test_missing_action_calls_receive,
    test_origin_check,
    test_periodically_ticks_until_unsubscribed,
    test_pings_every_interval_with_unix_seconds,
    test_plain_def_actions_run_in_the_thread_pool,
    test_private_and_base_methods_are_not_actions,
    test_reject_unknown_channel_and_bad_identifiers,
    test_remote_disconnect_closes_the_matching_connection,
    test_rescue_from_handles_the_exception,
    test_stop_stream_from_stops_delivery,
    test_stream_callback_transforms_per_subscription,
    test_unauthorized_connection_is_told_and_closed,
    test_unsubscribe_and_disconnect_run_callbacks,
    test_user_exception_is_logged_reported_and_the_connection_goes_on,
    test_welcome_subscribe_and_transmit_before_confirmation,
    url,
)


class _Served:
    """What ``tests/test_server.py`` expects of a server: ``url``, ``port``, ``close``."""

    def __init__(self, cable: Cable, server: InProcessServer) -> None:
        self.cable = cable
        self.server = server
        self.port = server.port
        self.url = server.url

    async def close(self, *, timeout: float | None = None) -> None:
        # What a graceful restart does: clients hear server_restart, then the server goes.
        await self.cable.stop(timeout=timeout)
        await self.server.stop()


@pytest.fixture(params=SERVERS)
async def cablecar_server(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[_Served]]]:
    """``cable.asgi()`` served by uvicorn or Granian on this test's event loop."""
    started: list[_Served] = []

    async def start(cable: Cable, **_: Any) -> _Served:
        served = _Served(cable, await InProcessServer.start(cable.asgi(), request.param))
        started.append(served)
        return served

    yield start
    for served in started:
        await served.close(timeout=1.0)


# -- the ASGI path only ---------------------------------------------------------------------


class EchoConnection(Connection):
    identified_by = ("current_user",)

    async def connect(self) -> None:
        self.current_user = self.request.query.get("user", "anon")


class EchoChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("echo")

    async def echo(self, data: dict[str, Any]) -> None:
        self.transmit(data)

    async def slow(self, data: dict[str, Any]) -> None:
        await asyncio.sleep(0.002)
        self.transmit({"n": data["n"]})


ECHO = '{"channel":"EchoChannel"}'


def echo_cable(**kw: Any) -> Cable:
    return Cable(connection=EchoConnection, channels=[EchoChannel], **kw)


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Awaitable[InProcessServer]]]:
    """Serve any ASGI app under uvicorn: ``server = await served(app)``."""
    servers: list[InProcessServer] = []

    async def start(app: Any, kind: str = "uvicorn", **kw: Any) -> InProcessServer:
        server = await InProcessServer.start(app, kind, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


async def test_starlette_mount_serves_the_cable_below_the_prefix_and_starts_on_first_use(
    served: Any, ws_connect: ConnectWS
) -> None:
    """``app.mount("/cable", cable.asgi())`` and nothing else: ws at /cable/, health at
    /cable/health; the host's lifespan never reaches the cable, so it starts on first use.
    The bare /cable needs a WebSocket route to the same app."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    cable = echo_cable()
    cable_app = cable.asgi()
    app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("home"))])
    app.mount("/cable", cable_app)
    server = await served(app)
    assert not cable.running
    with pytest.raises(InvalidStatus):  # Starlette's Mount does not route the bare prefix
        await ws_connect(server.url)
    c = await ws_connect(server.url + "/?user=ann")
    assert (await c.subscribe(ECHO))["type"] == "confirm_subscription"
    await c.perform(ECHO, "echo", n=1)
    assert (await c.recv_data())["message"] == {"action": "echo", "n": 1}
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient() as http:
        health = await http.get(base + "/cable/health")
        assert health.status_code == 200 and health.json()["connections"] == 1
        assert (await http.get(base + "/cable/")).status_code == 426
        assert (await http.get(base + "/")).text == "home"
    app.router.add_websocket_route("/cable", cable_app)  # ...a WebSocket route does
    assert (await (await ws_connect(server.url)).subscribe(ECHO))["type"] == "confirm_subscription"
    await cable.stop(timeout=1.0)


async def test_middleware_serves_cable_at_its_path_broadcasts_from_a_route_and_follows_lifespan(
    served: Any, ws_connect: ConnectWS
) -> None:
    """FastAPI + ``CableMiddleware``: ws at /cable exactly, an HTTP route broadcasts to
    subscribers, the cable starts and stops with the app's lifespan."""
    from fastapi import FastAPI

    cable = echo_cable()
    app = FastAPI()
    app.add_middleware(CableMiddleware, cable=cable)

    @app.post("/notify")
    async def notify(body: dict[str, Any]) -> dict[str, bool]:
        await cable.broadcast("echo", body)
        return {"ok": True}

    server = await served(app)
    assert cable.running  # started by the lifespan, before any connection
    c = await ws_connect(server.url + "?user=bo")
    assert (await c.subscribe(ECHO))["type"] == "confirm_subscription"
    async with httpx.AsyncClient() as http:
        r = await http.post(f"http://127.0.0.1:{server.port}/notify", json={"news": "hi"})
        assert r.json() == {"ok": True}
        assert (await http.get(f"http://127.0.0.1:{server.port}/cable/health")).status_code == 200
        assert (await http.get(f"http://127.0.0.1:{server.port}/nope")).status_code == 404
    assert (await c.recv_data()) == {"identifier": ECHO, "message": {"news": "hi"}}
    await server.stop()
    assert cable.state.value == "stopped"


async def test_middleware_runs_the_cables_lifespan_when_the_host_app_has_none(
    served: Any, ws_connect: ConnectWS
) -> None:
    """Django's ASGI handler refuses lifespan scopes; the middleware starts the cable itself."""

    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError("only HTTP")  # what Django's ASGIHandler does
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"django"})

    cable = echo_cable()
    server = await served(CableMiddleware(http_only, cable))
    assert cable.running
    c = await ws_connect(server.url)
    assert (await c.subscribe(ECHO))["type"] == "confirm_subscription"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{server.port}/x")).text == "django"
    await server.stop()
    assert cable.state.value == "stopped"


async def test_lifespan_answers_startup_and_shutdown_and_reports_a_failed_start(
    caplog: Any,
) -> None:
    """The cable app answers the ASGI lifespan events: complete for a cable that starts
    and stops, ``lifespan.startup.failed`` with the error (logged) for one whose pub/sub
    service refuses, so the ASGI server exits instead of serving."""

    async def lifespan(app: Any, *events: str) -> list[dict[str, Any]]:
        incoming = [{"type": f"lifespan.{event}"} for event in events]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(app({"type": "lifespan"}, receive, send), TIMEOUT)
        return sent

    cable = echo_cable()
    assert await lifespan(cable.asgi(), "startup", "shutdown") == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    assert cable.state.value == "stopped"

    class Unreachable(MemoryPubSub):
        async def start(self, on_message: Any) -> None:
            raise ConnectionRefusedError("the broker refused")

    with caplog.at_level(logging.ERROR, logger="cablecar"):
        sent = await lifespan(echo_cable(pubsub=Unreachable()).asgi(), "startup")
    assert sent == [
        {
            "type": "lifespan.startup.failed",
            "message": "ConnectionRefusedError('the broker refused')",
        }
    ]
    assert "the cable failed to start" in caplog.text


@pytest.mark.parametrize("kind", SERVERS)
async def test_endpoint_http_answers(served: Any, ws_connect: ConnectWS, kind: str) -> None:
    """A plain GET at the endpoint is 426, other paths 404, the health check reports
    the statistics (as the standalone server's /health)."""
    server = await served(echo_cable().asgi(), kind)
    c = await ws_connect(server.url)
    await c.subscribe(ECHO)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        r = await http.get("/cable")
        assert r.status_code == 426 and r.headers["upgrade"] == "websocket"
        assert (await http.get("/elsewhere")).status_code == 404
        health = await http.get("/health")
        stats = health.json()
        assert health.status_code == 200 and stats["status"] == "ok"
        assert stats["connections"] == 1 and stats["subscriptions"] == 1


@pytest.mark.parametrize("kind", SERVERS)
async def test_oversized_message_closes_1009_and_binary_is_ignored(
    served: Any, ws_connect: ConnectWS, kind: str, caplog: Any
) -> None:
    """Under an ASGI server a binary frame is ignored and logged, and an oversized message closes with 1009."""
    server = await served(echo_cable(max_message_size=1000).asgi(), kind)
    c = await ws_connect(server.url)
    await c.subscribe(ECHO)
    with caplog.at_level(logging.WARNING, logger="cablecar"):
        await c.conn.send(b"\x00\x01")
        await c.perform(ECHO, "echo", n=2)
        assert (await c.recv_data())["message"] == {"action": "echo", "n": 2}
        assert "binary frame ignored" in caplog.text
        await c.perform(ECHO, "echo", pad="x" * 2000)
        assert (await c.recv_data()) == {
            "type": "disconnect",
            "reason": "message_too_big",
            "reconnect": True,
        }
        await asyncio.wait_for(c.conn.wait_closed(), TIMEOUT)
    assert c.conn.close_code == 1009


@pytest.mark.parametrize("kind", SERVERS)
async def test_input_backpressure_pauses_reading_and_loses_nothing(
    served: Any, ws_connect: ConnectWS, kind: str
) -> None:
    """Commands arriving faster than actions run: past max_message_size queued bytes the
    session stops reading (no receive()), then resumes; every command runs, in order."""
    cable = echo_cable(max_message_size=16 * 1024)
    server = await served(cable.asgi(), kind)
    c = await ws_connect(server.url)
    await c.subscribe(ECHO)
    pad = "p" * 4000
    for n in range(60):
        await c.perform(ECHO, "slow", n=n, pad=pad)
    got = [(await c.recv_data())["message"]["n"] for _ in range(60)]
    assert got == list(range(60))


@pytest.mark.parametrize("kind", SERVERS)
async def test_connection_limit_refuses_with_503(
    served: Any, ws_connect: ConnectWS, kind: str
) -> None:
    """Under an ASGI server the connection past max_connections is refused with 503."""
    server = await served(echo_cable(max_connections=1).asgi(), kind)
    await ws_connect(server.url)
    with pytest.raises(InvalidStatus) as info:
        await ws_connect(server.url)
    assert info.value.response.status_code == 503


@pytest.mark.parametrize("kind", SERVERS)
async def test_slow_consumer_is_cut_and_others_keep_receiving(
    served: Any, ws_connect: ConnectWS, caplog: Any, kind: str
) -> None:
    """A client that stops reading is disconnected once its pending output passes
    max_pending_output (the ASGI server's send() blocks, our outbox grows); a reading
    client gets every broadcast."""
    cable = echo_cable(max_pending_output=256 * 1024)
    server = await served(cable.asgi(), kind)
    reader = await ws_connect(server.url + "?user=reader")
    await reader.subscribe(ECHO)
    # A tiny receive window and max_queue=1: the stalled client's kernel and library
    # soon stop taking data.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    stalled = await connect(
        server.url + "?user=stalled",
        sock=sock,
        subprotocols=["actioncable-v1-json"],  # type: ignore[list-item]
        max_queue=1,
        max_size=None,
    )
    try:
        await stalled.send(orjson.dumps({"command": "subscribe", "identifier": ECHO}).decode())
        async with asyncio.timeout(TIMEOUT):
            while cable.streams().get("echo", 0) < 2:
                await asyncio.sleep(0.01)
        # Incompressible: uvicorn negotiates permessage-deflate with the client.
        blob = base64.b64encode(os.urandom(45_000)).decode()
        with caplog.at_level(logging.WARNING, logger="cablecar"):
            for i in range(400):
                await cable.broadcast("echo", {"i": i, "blob": blob})
                msg = await reader.recv_until(lambda m: "i" in m.get("message", {}))
                assert msg["message"]["i"] == i
                if "slow consumer" in caplog.text:
                    break
            assert "stalled" in caplog.text and "slow consumer" in caplog.text
        assert cable.streams().get("echo", 0) == 1
        await cable.broadcast("echo", {"i": "after"})
        assert (await reader.recv_data())["message"] == {"i": "after"}
    finally:
        stalled.transport.abort()
