"""examples/django_chat end to end: Django's session login on the WebSocket, the ORM in
channel actions, broadcasts from a Django view, and ``cablecar serve`` beside the app.

One Django project per test process (Django is configured once): its sqlite database
lives in a temporary directory; ``chatsite.asgi.application`` (Django with
``CableMiddleware``) runs under uvicorn on the module's event loop.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import cablecar.client
from cablecar.errors import ConnectionRejected

from ..asgi_servers import InProcessServer
from ..conftest import TIMEOUT, free_port
from ..servers import ROOT, wait_port
from .official_client import needs_node, official_client

EXAMPLE = ROOT / "examples" / "django_chat"
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def django_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Django set up with the example's settings, migrated, users alice and bob."""
    db = tmp_path_factory.mktemp("django_chat") / "db.sqlite3"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHAT_DB", str(db))
        patch.setenv("DJANGO_SETTINGS_MODULE", "chatsite.settings")
        patch.syspath_prepend(str(EXAMPLE))
        yield from _set_up(db)


def _set_up(db: Path) -> Iterator[Path]:
    import django
    from django.conf import settings

    django.setup()
    if settings.DATABASES["default"]["NAME"] != str(db):
        pytest.skip("Django was already configured by another test module")
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    for name in ("alice", "bob"):
        User.objects.create_user(name, password=PASSWORD)
    connections.close_all()
    yield db
    # Importing cablecar.contrib.django wrapped every plain def call of this process;
    # the other test modules run without Django.
    from cablecar._concurrency import set_sync_wrapper

    set_sync_wrapper(None)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(django_db: Path) -> AsyncIterator[InProcessServer]:
    """``uvicorn chatsite.asgi:application`` on this module's event loop."""
    from chatsite.asgi import application

    server = await InProcessServer.start(application, "uvicorn")
    yield server
    await server.stop()


def login(username: str) -> str:
    """Log in through Django's login view with the test client; the session cookie."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    response = client.post("/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content[:500]
    return str(client.cookies[settings.SESSION_COOKIE_NAME].value)


def post_message(cookie: str, room: str, body: str) -> Any:
    """POST to the example's view as the logged-in user (Django's test client)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = cookie
    response = client.post(f"/rooms/{room}/messages", {"body": body})
    assert response.status_code == 201, response.content[:500]
    return response.json()


def start_serve(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``cablecar serve chatsite.cable:cable`` from the example's directory."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "cablecar", "serve", "chatsite.cable:cable"),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            cwd=EXAMPLE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def db_files_open(db: Path) -> int:
    """File descriptors of this process open on the sqlite file: one per DB connection."""
    target = str(db.resolve())
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:
            pass
    return count


async def test_the_channel_sees_the_user_logged_in_through_django(site: InProcessServer) -> None:
    """Log in with Django's test client; the WebSocket with that session cookie is that
    user, a real django.contrib.auth User."""
    from chatsite.cable import cable
    from django.contrib.auth.models import User

    cookie = await asyncio.to_thread(login, "alice")
    alice = await User.objects.aget(username="alice")
    async with cablecar.client.connect(site.url, cookies={"sessionid": cookie}) as consumer:
        sub = await consumer.subscribe("ChatChannel", room="lobby")
        await sub.perform("whoami")
        assert await sub.receive(timeout=TIMEOUT) == {"id": alice.pk, "username": "alice"}
        (connection,) = cable.connections
        assert isinstance(connection.current_user, User) and connection.current_user == alice
        assert connection.connection_identifier == f"auth.user:{alice.pk}"


async def test_anonymous_and_invalid_cookies_are_rejected_unauthorized(
    site: InProcessServer,
) -> None:
    """In the Django example an anonymous, logged-out or forged session cookie is refused as unauthorized."""
    from django.contrib.sessions.backends.db import SessionStore

    def anonymous_session() -> str:
        store = SessionStore()
        store["visited"] = True  # a real session, but nobody logged in
        store.save()
        return str(store.session_key)

    def logged_out_session() -> str:
        from django.conf import settings
        from django.test import Client

        client = Client()
        client.post("/login/", {"username": "bob", "password": PASSWORD})
        cookie = str(client.cookies[settings.SESSION_COOKIE_NAME].value)
        client.post("/logout/")
        return cookie

    cookies: list[dict[str, str]] = [
        {"sessionid": await asyncio.to_thread(anonymous_session)},
        {"sessionid": await asyncio.to_thread(logged_out_session)},
        {"sessionid": "forged-or-expired"},
        {},
    ]
    for jar in cookies:
        with pytest.raises(ConnectionRejected) as info:
            async with cablecar.client.connect(site.url, cookies=jar, reconnect=False):
                pass
        assert info.value.reason == "unauthorized", jar


async def test_plain_def_actions_write_through_the_orm_and_leak_no_connections(
    site: InProcessServer, django_db: Path
) -> None:
    """200 ``speak`` actions (plain def, thread pool) each insert a row and broadcast it;
    afterwards no more database connections are open than before."""
    from chat.models import Message

    cookie = await asyncio.to_thread(login, "bob")
    async with cablecar.client.connect(site.url, cookies={"sessionid": cookie}) as consumer:
        sub = await consumer.subscribe("ChatChannel", room="orm")
        before = db_files_open(django_db)
        for i in range(200):
            await sub.perform("speak", body=f"line {i}")
        received = [await sub.receive(timeout=TIMEOUT) for _ in range(200)]
        assert [m["body"] for m in received] == [f"line {i}" for i in range(200)]
        assert {m["author"] for m in received} == {"bob"}
        assert await Message.objects.filter(room="orm").acount() == 200
        assert db_files_open(django_db) <= before

        # An async action with Django's async ORM, in order with the rest.
        await sub.perform("history", limit=3)
        history = (await sub.receive(timeout=TIMEOUT))["history"]
        assert [m["body"] for m in history] == ["line 197", "line 198", "line 199"]


async def test_a_django_view_broadcasts_to_the_room(site: InProcessServer) -> None:
    """A Django view's broadcast reaches the room's subscribers; the page and cablecar.js are served."""
    cookie = await asyncio.to_thread(login, "alice")

    def pages() -> tuple[int, bytes, int, bytes]:
        from django.test import Client

        client = Client()
        client.cookies["sessionid"] = cookie
        index, js = client.get("/"), client.get("/cablecar.js")
        return index.status_code, index.content, js.status_code, js.content

    status, page, js_status, js = await asyncio.to_thread(pages)
    assert status == 200 and b'createConsumer("/cable")' in page
    assert js_status == 200 and b"export function createConsumer" in js
    async with cablecar.client.connect(site.url, cookies={"sessionid": cookie}) as consumer:
        sub = await consumer.subscribe("ChatChannel", room="news")
        sent = await asyncio.to_thread(post_message, cookie, "news", "from a view")
        got = await sub.receive(timeout=TIMEOUT)
        assert got == sent and got["author"] == "alice" and got["body"] == "from a view"


@pytest.mark.node
@needs_node
async def test_the_official_client_with_the_session_cookie(site: InProcessServer) -> None:
    """@rails/actioncable with Django's session cookie (as a browser sends it): speak
    writes through the ORM and comes back as the logged-in user; no cookie, unauthorized."""
    cookie = await asyncio.to_thread(login, "bob")
    ident = {"channel": "ChatChannel", "room": "js"}
    got = await asyncio.to_thread(
        official_client, site.url, ident, "speak", {"body": "hi from JS"}, f"sessionid={cookie}"
    )
    assert got["protocol"] == "actioncable-v1-json"
    assert got["received"]["author"] == "bob" and got["received"]["body"] == "hi from JS"
    refused = await asyncio.to_thread(official_client, site.url, ident, "speak", {"body": "x"})
    assert refused == {"disconnected": {"willAttemptReconnect": False}}


@pytest.mark.services
async def test_cablecar_serve_beside_django_with_redis(
    django_db: Path, redis_server: Any, tmp_path: Path
) -> None:
    """``cablecar serve chatsite.cable:cable`` with DJANGO_SETTINGS_MODULE set: Django's
    session login works there; a Django view in another process broadcasts through
    Redis with cablecar.Broadcaster."""
    from django.test import override_settings

    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "CHAT_DB": str(django_db),
        "CABLE_PUBSUB": redis_server.url,
        "PYTHONPATH": str(ROOT / "src"),
    }
    proc = await asyncio.to_thread(start_serve, port, env, tmp_path / "serve.log")
    try:
        await asyncio.to_thread(wait_port, port)
        cookie = await asyncio.to_thread(login, "alice")
        url = f"ws://127.0.0.1:{port}/cable"
        async with cablecar.client.connect(url, cookies={"sessionid": cookie}) as consumer:
            sub = await consumer.subscribe("ChatChannel", room="beside")
            await sub.perform("whoami")
            assert (await sub.receive(timeout=TIMEOUT))["username"] == "alice"

            def post_via_redis() -> Any:
                with override_settings(CABLE_PUBSUB=redis_server.url):
                    return post_message(cookie, "beside", "through redis")

            try:
                sent = await asyncio.to_thread(post_via_redis)
            finally:
                from chat import broadcasting

                await asyncio.to_thread(broadcasting.close)  # its thread and connection
            assert await sub.receive(timeout=TIMEOUT) == sent
            await sub.perform("speak", body="from the standalone server")
            assert (await sub.receive(timeout=TIMEOUT))["body"] == "from the standalone server"
        with pytest.raises(ConnectionRejected):
            async with cablecar.client.connect(url, reconnect=False):
                pass
    finally:
        await asyncio.to_thread(stop, proc)
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
