"""``cablecar listen`` and ``cablecar perform`` as subprocesses.

Listening, performing and refusals run against both servers; the rest against cablecar
only (each subprocess costs about half a second).
"""

from __future__ import annotations

import asyncio
import json
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

import cablecar.client

from ..conftest import free_port
from ..proxy import CuttableProxy
from ..servers import CablecarProcess
from .client_support import PYTHON, ROOT, Server, unique

CABLECAR = [PYTHON, "-m", "cablecar"]


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CABLECAR, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def _default_sigint() -> None:
    # A shell's background job (``make test &``) starts with SIGINT ignored, and a
    # child inherits that; the Ctrl-C test sends SIGINT on purpose.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_listen(*args: str) -> subprocess.Popen[str]:
    """Start ``cablecar listen`` and wait until it says it is subscribed."""
    proc = subprocess.Popen(
        [*CABLECAR, "listen", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=_default_sigint,
    )
    assert proc.stderr is not None
    line = _readline(proc.stderr, 15)
    assert "subscribed to" in line, line
    return proc


def _readline(stream: IO[str], timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError("no output")
    return stream.readline()


def test_listen_prints_json_lines_until_count(server: Server) -> None:
    """listen --count 2 prints the two broadcasts as JSON lines, then exits 0."""
    room = unique("room")
    listen = start_listen(server.url, "ChatChannel", f"room={room}", "--count", "2")
    try:
        for body in ("one", "two"):
            done = run("perform", f"{server.url}?user=cli", "ChatChannel", f"room={room}",
                       "speak", f"body={body}", "--wait-reply")  # fmt: skip
            assert done.returncode == 0, done.stderr
        out, err = listen.communicate(timeout=15)
    finally:
        listen.kill()
    assert listen.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(m["body"] for m in lines) == ["one", "two"]
    assert {m["from"] for m in lines} == {"cli"}


@pytest.mark.parametrize("server", ["cablecar"], indirect=True)
def test_listen_exits_0_on_ctrl_c(server: Server) -> None:
    """Ctrl-C (SIGINT) ends listen quietly with status 0."""
    listen = start_listen(server.url, "ChatChannel", f"room={unique('room')}")
    listen.send_signal(signal.SIGINT)
    _out, err = listen.communicate(timeout=15)
    assert listen.returncode == 0, err
    assert "Traceback" not in err


def test_perform_wait_reply_prints_the_reply(server: Server) -> None:
    """perform --wait-reply prints the transmitted reply; values are JSON when they parse."""
    tag = unique("echo")
    done = run("perform", server.url, "BenchmarkChannel", "echo", f"payload={tag}", "n=1",
               "flags=[true,null]", "--wait-reply")  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply == {"payload": tag, "n": 1, "flags": [True, None], "action": "echo"}


@pytest.mark.parametrize("server", ["cablecar"], indirect=True)
def test_perform_without_reply_reaches_the_channel(server: Server) -> None:
    """A fire-and-forget perform is delivered (it lingers before closing; Rails needs it)."""
    room = unique("room")
    listen = start_listen(server.url, "ChatChannel", f"room={room}", "--count", "1")
    try:
        done = run("perform", server.url, "ChatChannel", f"room={room}", "speak", "body=bye")
        assert done.returncode == 0 and done.stdout == "", done.stderr
        out, _err = listen.communicate(timeout=15)
    finally:
        listen.kill()
    assert json.loads(out)["body"] == "bye"


@pytest.mark.parametrize(
    ("query", "args", "expected"),
    [
        ("?user=reject", ["perform", "ChatChannel", "room=1", "speak", "body=x"], "unauthorized"),
        ("", ["listen", "RejectChannel"], "rejected"),
        ("", ["perform", "RejectChannel", "anything"], "rejected"),
    ],
)
def test_refusals_exit_1_with_a_message(
    server: Server, query: str, args: list[str], expected: str
) -> None:
    """Unauthorized connections and rejected subscriptions: a line on stderr, status 1."""
    command, *rest = args
    done = run(command, server.url + query, *rest)
    assert done.returncode == 1
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("server", ["cablecar"], indirect=True)
def test_listen_timeout_without_enough_messages_fails(server: Server) -> None:
    """--timeout with --count: too few messages is status 1; --timeout alone is status 0."""
    room = unique("room")
    short = run("listen", server.url, "ChatChannel", f"room={room}", "--count", "1",
                "--timeout", "0.3")  # fmt: skip
    assert short.returncode == 1 and "timed out" in short.stderr
    quiet = run("listen", server.url, "ChatChannel", f"room={room}", "--timeout", "0.3")
    assert quiet.returncode == 0 and quiet.stdout == ""


@pytest.mark.parametrize("server", ["cablecar"], indirect=True)
def test_module_main_and_bad_arguments(server: Server) -> None:
    """``python -m cablecar.client.cli`` works on its own; a bad key=value is status 2."""
    tag = unique("main")
    done = subprocess.run(
        [sys.executable, "-m", "cablecar.client.cli", "perform", server.url, "BenchmarkChannel",
         "echo", f"payload={tag}", "--wait-reply"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["payload"] == tag
    bad = run("listen", server.url, "ChatChannel", "=1")
    assert bad.returncode == 2 and "key=value" in bad.stderr
    missing = run("perform", server.url, "ChatChannel", "room=1")
    assert missing.returncode == 2 and "action" in missing.stderr


def test_listen_resumes_after_a_cut_and_misses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cablecar listen`` against a cable with history: its TCP connection is cut for
    2 s while 10 messages are sent; it resumes its session and prints all of them once,
    in order, then a live one."""
    monkeypatch.setenv("CABLE_HISTORY", "1")
    server = CablecarProcess(free_port(), log=tmp_path / "server.log").start()
    proxy = CuttableProxy(server.port)
    room = unique("tunnel")
    listen = start_listen(f"ws://127.0.0.1:{proxy.port}/cable?user=l", "ChatChannel",
                          f"room={room}", "--count", "12")  # fmt: skip
    try:
        asyncio.run(speak(server.url, room, ["0"]))
        assert listen.stdout is not None
        assert json.loads(_readline(listen.stdout, 15))["body"] == "0"
        proxy.cut()
        time.sleep(0.3)
        asyncio.run(speak(server.url, room, [str(n) for n in range(1, 11)]))
        time.sleep(2)
        proxy.open = True
        first = _readline(listen.stdout, 30)  # "1", once it is back
        asyncio.run(speak(server.url, room, ["11"]))
        listen.wait(30)
        out = first + listen.stdout.read()  # the file object has buffered past the line
        err = listen.stderr.read() if listen.stderr else ""
    finally:
        listen.kill()
        proxy.close()
        server.stop()
    assert listen.returncode == 0, err
    bodies = [json.loads(line)["body"] for line in out.splitlines()]
    assert bodies == [str(n) for n in range(1, 12)], bodies


async def speak(url: str, room: str, bodies: list[str]) -> None:
    async with cablecar.client.connect(f"{url}?user=speaker") as consumer:
        sub = await consumer.subscribe("ChatChannel", room=room)
        for body in bodies:
            await sub.perform("speak", body=body)
        for _ in bodies:  # our own copies: the server has them all
            await sub.receive(timeout=10)
