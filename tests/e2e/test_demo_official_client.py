"""The chat demo's server side, seen by clients other than its own page.

- the official ``@rails/actioncable`` client (its ESM build, under Node): history, messages,
  presence, typing, the room list, refusals of bad input and of nameless connections
  (tests/js/demo_official_client.test.mjs);
- plain HTTP: the page, its files, the JSON endpoints the how-it-works panel polls, and
  requests that try to read other files;
- browsers from another site, which may not connect.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from cablecar.demo.app import DemoCable
from cablecar.transports.standalone import Server

from ..timing import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
JS_TEST = ROOT / "tests" / "js" / "demo_official_client.test.mjs"

StartServer = Callable[..., Awaitable[Server]]


async def _demo(cablecar_server: StartServer) -> tuple[DemoCable, Server]:
    cable = DemoCable()
    server = await cablecar_server(cable, http_handler=cable.http_handler)
    return cable, server


async def _get(port: int, target: str) -> tuple[int, dict[str, str], bytes]:
    """A raw ``GET target`` (sent as written: no client-side path clean-up)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.node
async def test_the_official_actioncable_client_works_against_the_demo(
    cablecar_server: StartServer,
) -> None:
    """The official client's tests against the demo all pass."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (make test installs it)")
    if not (ROOT / "tests" / "js" / "node_modules" / "@rails" / "actioncable").is_dir():
        pytest.skip("tests/js/node_modules is missing (make test runs npm ci)")
    _, server = await _demo(cablecar_server)
    proc = await asyncio.create_subprocess_exec(
        node,
        "--test",
        "--test-reporter=tap",
        str(JS_TEST),
        cwd=ROOT,
        env={**os.environ, "DEMO_URL": f"http://127.0.0.1:{server.port}"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    report = out.decode()
    failed = re.search(r"^# fail (\d+)", report, re.M)
    passed = re.search(r"^# pass (\d+)", report, re.M)
    assert proc.returncode == 0 and failed and failed[1] == "0", (
        report[-6000:] + err.decode()[-2000:]
    )
    assert passed and int(passed[1]) >= 5


async def test_the_page_its_files_and_the_json_endpoints(cablecar_server: StartServer) -> None:
    """`/` is the page, `/static/` its files (cablecar.js included), and the message
    endpoint answers what was said after a given id, with the server's clock."""
    cable, server = await _demo(cablecar_server)
    port = server.port
    status, headers, body = await _get(port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'src="/static/app.js"' in body
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for name, kind in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("cablecar.js", "text/javascript"),
    ]:
        status, headers, body = await _get(port, f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith(kind), name
    assert b"export function createConsumer" in body

    status, _, body = await _get(port, "/api/rooms")
    rooms = orjson.loads(body)
    assert status == 200
    assert [r["name"] for r in rooms["rooms"]] == ["lobby", "python", "random"]
    assert isinstance(rooms["server_time"], float)

    room = cable.rooms.get_or_create("tea and cake")
    assert room is not None
    for body_text in ["one", "two", "three"]:
        room.add("alice", "sid", body_text)
    status, _, body = await _get(port, "/api/rooms/tea%20and%20cake/messages?since=1")
    page = orjson.loads(body)
    assert status == 200
    assert [m["body"] for m in page["messages"]] == ["two", "three"]
    assert page["room"] == "tea and cake" and page["epoch"] == cable.rooms.epoch
    status, _, body = await _get(port, "/api/rooms/tea%20and%20cake/messages")
    assert len(orjson.loads(body)["messages"]) == 3

    assert (await _get(port, "/api/rooms/nowhere/messages"))[0] == 404
    assert (await _get(port, "/api/rooms/lobby/messages?since=-1"))[0] == 400
    assert (await _get(port, "/api/rooms/lobby/messages?since=abc"))[0] == 400
    assert (await _get(port, "/health"))[0] == 200


@pytest.mark.parametrize(
    "target",
    [
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2f..%2f..%2fpyproject.toml",
        "/static//etc/passwd",
        "/static/%2Fetc%2Fpasswd",
        "/static/",
        "/static/__init__.py",
        "/../../../../etc/passwd",
        "/api/rooms/..%2F..%2Fetc/messages",
        "/app.py",
    ],
)
async def test_no_request_reads_a_file_outside_the_page(
    cablecar_server: StartServer, target: str
) -> None:
    """Only the page's own files are served: traversal attempts get 404 (or 400)."""
    _, server = await _demo(cablecar_server)
    status, _, body = await _get(server.port, target)
    assert status in (400, 404), (target, status)
    assert b"root:" not in body and b"import" not in body


async def test_a_page_from_another_site_cannot_connect(cablecar_server: StartServer) -> None:
    """Browsers send Origin: the demo accepts its own origin only."""
    _, server = await _demo(cablecar_server)
    url = f"ws://127.0.0.1:{server.port}/cable?name=eve"
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    async with websockets.connect(
        url,
        origin=f"http://127.0.0.1:{server.port}",  # type: ignore[arg-type]
        subprotocols=["actioncable-v1-json"],  # type: ignore[list-item]
    ) as ws:
        welcome: Any = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert welcome == {"type": "welcome"}
