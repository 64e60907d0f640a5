"""The client examples (``examples/client_*.py``, shown in docs/client.md), run as programs."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator

import cablecar.client

from .client_support import PYTHON, ROOT, Server, unique


@contextlib.asynccontextmanager
async def running(example: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``examples/<example>``; kill it if the test ends before it does."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        str(ROOT / "examples" / example),
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def read_line(proc: asyncio.subprocess.Process, timeout: float = 15) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    return line.decode().rstrip("\n")


async def finish(proc: asyncio.subprocess.Process, timeout: float = 15) -> tuple[str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def test_client_listen_prints_the_room(server: Server) -> None:
    """client_listen.py prints each line said in the room, then stops after --count."""
    room = unique("room")
    async with (
        running("client_listen.py", server.url, "--room", room, "--count", "2",
                "--timeout", "15") as proc,
        cablecar.client.connect(f"{server.url}?user=alice") as consumer,
    ):  # fmt: skip
        assert (await read_line(proc)).startswith(f"listening to room {room!r}")
        chat = await consumer.subscribe("ChatChannel", room=room)
        await chat.perform("speak", body="hello")
        assert await chat.receive(timeout=5) == {"from": "alice", "body": "hello"}
        await chat.perform("speak", body="anyone?")
        out, _err = await finish(proc)
    assert out.splitlines() == ["alice: hello", "alice: anyone?", "done"]


async def test_client_chat_bot_answers(server: Server) -> None:
    """client_chat_bot.py joins, answers !ping and !echo, and leaves after --max-replies."""
    room = unique("room")
    async with cablecar.client.connect(f"{server.url}?user=alice") as consumer:
        chat = await consumer.subscribe("ChatChannel", room=room)
        async with running("client_chat_bot.py", server.url, "--room", room,
                           "--max-replies", "2", "--timeout", "15") as proc:  # fmt: skip
            assert await read_line(proc) == f"joined room {room!r} as 'bot'"
            intro = await chat.receive(timeout=10)
            assert intro["from"] == "bot" and "!ping" in intro["body"]

            await chat.perform("speak", body="!ping")
            assert await next_from_bot(chat) == "pong"
            await chat.perform("speak", body="!echo round trip")
            last_two = {await next_from_bot(chat), await next_from_bot(chat)}
            assert last_two == {"round trip", "bot is leaving"}  # Rails may reorder them
            out, _err = await finish(proc)
    assert out.splitlines()[-3:] == [
        "answered alice: '!ping' -> 'pong'",
        "answered alice: '!echo round trip' -> 'round trip'",
        "left after 2 replies",
    ]


async def next_from_bot(chat: cablecar.client.Subscription) -> str:
    while True:
        message = await chat.receive(timeout=10)
        if message["from"] == "bot":
            return str(message["body"])


def test_docs_show_the_examples_as_they_are() -> None:
    """docs/client.md shows each client example verbatim, so the docs can't drift."""
    doc = (ROOT / "docs" / "client.md").read_text()
    for name in ("client_listen.py", "client_chat_bot.py"):
        code = (ROOT / "examples" / name).read_text().rstrip()
        assert f"```python\n{code}\n```" in doc, f"docs/client.md is out of date for {name}"
        assert f"(../examples/{name})" in doc
