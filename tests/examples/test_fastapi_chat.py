"""examples/fastapi_chat end to end under uvicorn: log in over HTTP, chat over the cable
with the session cookie (or a token), broadcast from an HTTP endpoint of the same app."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator
from types import ModuleType

import httpx
import orjson
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

import cablecar.client
from cablecar.errors import ConnectionRejected

from ..asgi_servers import InProcessServer
from ..conftest import TIMEOUT
from ..servers import ROOT
from .official_client import needs_node, official_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

LOBBY = {"channel": "ChatChannel", "room": "lobby"}


def load_example() -> ModuleType:
    path = ROOT / "examples" / "fastapi_chat" / "app.py"
    spec = importlib.util.spec_from_file_location("fastapi_chat_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site() -> AsyncIterator[tuple[ModuleType, InProcessServer]]:
    """``uvicorn app:app`` for the example, on this module's event loop."""
    example = load_example()
    server = await InProcessServer.start(example.app, "uvicorn")
    yield example, server
    await server.stop()
    assert example.cable.state.value == "stopped"  # the app's lifespan stopped the cable


@contextlib.asynccontextmanager
async def logged_in(
    server: InProcessServer, user: str, password: str
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that logged in through POST /login (it holds the session cookie)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        response = await http.post("/login", json={"username": user, "password": password})
        assert response.status_code == 200, response.text
        yield http


async def test_log_in_then_chat_with_the_session_cookie(
    site: tuple[ModuleType, InProcessServer],
) -> None:
    """In the FastAPI example a logged-in user's session cookie opens the cable and a message comes back to its sender."""
    example, server = site
    assert example.cable.running  # started by the app's lifespan (CableMiddleware)
    async with logged_in(server, "alice", "wonderland") as http:
        cookie = http.cookies["session"]
        async with cablecar.client.connect(server.url, cookies={"session": cookie}) as consumer:
            sub = await consumer.subscribe("ChatChannel", room="lobby")
            await sub.perform("speak", body="hello everyone")
            assert await sub.receive(timeout=TIMEOUT) == {"from": "alice", "body": "hello everyone"}


async def test_an_http_endpoint_of_the_app_broadcasts_to_subscribers(
    site: tuple[ModuleType, InProcessServer],
) -> None:
    """A POST to the FastAPI app's own endpoint reaches the room's WebSocket subscribers."""
    _, server = site
    async with (
        logged_in(server, "alice", "wonderland") as alice,
        logged_in(server, "bob", "builder") as bob,
    ):
        async with cablecar.client.connect(
            server.url, cookies={"session": alice.cookies["session"]}
        ) as consumer:
            sub = await consumer.subscribe("ChatChannel", room="news")
            response = await bob.post("/rooms/news/messages", json={"body": "posted over HTTP"})
            assert response.status_code == 201
            assert await sub.receive(timeout=TIMEOUT) == {"from": "bob", "body": "posted over HTTP"}
            health = (await bob.get("/cable/health")).json()
            assert health["status"] == "ok" and health["connections"] >= 1


async def test_tokens_in_the_query_string_or_the_subprotocol_list(
    site: tuple[ModuleType, InProcessServer],
) -> None:
    """A token from /token authenticates the cable in the query string or in the subprotocol list."""
    _, server = site
    async with logged_in(server, "bob", "builder") as http:
        token = (await http.get("/token")).json()["token"]
    async with cablecar.client.connect(f"{server.url}?token={token}") as consumer:
        sub = await consumer.subscribe("ChatChannel", room="t")
        await sub.perform("speak", body="by query token")
        assert (await sub.receive(timeout=TIMEOUT))["from"] == "bob"
    async with connect(
        server.url,
        subprotocols=["actioncable-v1-json", f"token.{token}"],  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "actioncable-v1-json"  # the token is never selected
        assert orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) == {"type": "welcome"}


async def test_strangers_are_refused(site: tuple[ModuleType, InProcessServer]) -> None:
    """Wrong passwords and connections without a session or token are refused; the page and cablecar.js still load."""
    _, server = site
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        bad = await http.post("/login", json={"username": "alice", "password": "nope"})
        assert bad.status_code == 401
        assert (await http.get("/token")).status_code == 401
        assert (await http.get("/")).status_code == 200
        assert "createConsumer" in (await http.get("/cablecar.js")).text
    for url, cookies in (
        (server.url, {}),
        (server.url, {"session": "forged.cookie.value"}),
        (server.url + "?token=forged", {}),
    ):
        with pytest.raises(ConnectionRejected) as info:
            async with cablecar.client.connect(url, cookies=cookies, reconnect=False):
                pass
        assert info.value.reason == "unauthorized"


@pytest.mark.node
@needs_node
async def test_the_official_client_with_a_token(site: tuple[ModuleType, InProcessServer]) -> None:
    """The official @rails/actioncable client with a token chats through the FastAPI example."""
    _, server = site
    async with logged_in(server, "alice", "wonderland") as http:
        token = (await http.get("/token")).json()["token"]
    got = await asyncio.to_thread(
        official_client, f"{server.url}?token={token}", LOBBY, "speak", {"body": "from JS"}
    )
    assert got == {
        "received": {"from": "alice", "body": "from JS"},
        "protocol": "actioncable-v1-json",
    }
