"""Scale-out, end to end: real ``cablecar serve`` processes sharing Redis, PostgreSQL or NATS.

Issue 5's must-shows 2 and 3, through server processes and real clients:

* two servers on different ports, a client on each subscribed to the same room; a
  broadcast from a third process (``cablecar broadcast``, ``Broadcaster.broadcast_sync``
  in another process and in a thread) reaches every client exactly once, and a remote
  disconnect from a third process closes the right connection on whichever server
  holds it, and no other;
* the broker is SIGKILLed and restarted on the same port while the clients stay
  connected; new broadcasts reach every subscriber again without restarting cablecar,
  and each server's log says what happened;
* ``--workers 2`` with Redis: the workers share the port, both hold connections, and a
  broadcast made by a client on one worker reaches the clients of both; SIGTERM to the
  parent stops them cleanly; with the memory adapter ``--workers 2`` refuses to start.

Every wait is bounded; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import InvalidMessage
from websockets.protocol import State

from cablecar import Broadcaster
from cablecar.errors import AdapterError

from .conftest import TIMEOUT, WS, ConnectWS, free_port
from .servers import ROOT, CablecarProcess
from .services import NatsServer, PostgresServer, RedisServer, Service, ServiceUnavailable

pytestmark = pytest.mark.services

__all__: list[str] = []

APP = "examples/conformance_app.py:cable"
KINDS = ("redis", "postgres", "nats")
SERVICES: dict[str, type[Service]] = {
    "redis": RedisServer,
    "postgres": PostgresServer,
    "nats": NatsServer,
}
USERS = {"redis": "default", "postgres": "postgres", "nats": "cable"}
#: Generous bound for anything that involves starting a process or a broker coming back.
WAIT = 4 * TIMEOUT
#: How long a client must stay silent to show that nothing arrived twice.
QUIET = 1.0

Launch = Callable[..., Awaitable[CablecarProcess]]

#: ``python -c SYNC_BROADCAST URL STREAM JSON``: a sync producer (a WSGI view, a task).
SYNC_BROADCAST = """
import sys, orjson
from cablecar import Broadcaster
with Broadcaster(sys.argv[1]) as b:
    b.broadcast_sync(sys.argv[2], orjson.loads(sys.argv[3]))
"""

#: ``python -c REMOTE_DISCONNECT URL USER``: close USER's connections on every server.
REMOTE_DISCONNECT = """
import asyncio, sys
from cablecar import Broadcaster
async def main():
    async with Broadcaster(sys.argv[1]) as b:
        await b.remote_connections.where(current_user=sys.argv[2]).disconnect(reconnect=False)
asyncio.run(main())
"""


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start ``cablecar serve APP *extra`` on a free port (log in tmp_path/NAME.log);
    every server started is stopped (SIGTERM) at the end."""
    started: list[CablecarProcess] = []

    async def launch_(*extra: str, name: str) -> CablecarProcess:
        proc = CablecarProcess(free_port(), APP, *extra, log=tmp_path / f"{name}.log")
        started.append(proc)
        # start() blocks until the port answers: keep the event loop (and clients) running.
        await asyncio.to_thread(proc.start)
        return proc

    yield launch_
    await asyncio.gather(*(asyncio.to_thread(p.stop) for p in started))


async def run(*argv: str) -> tuple[int, str]:
    """Run a command (a third process) to completion; returns (exit status, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), WAIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


def log_of(server: CablecarProcess) -> str:
    assert server.log is not None
    return server.log.read_text(errors="replace")


async def wait_for_log(server: CablecarProcess, text: str) -> None:
    deadline = time.monotonic() + WAIT
    while text not in log_of(server):
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} never appeared in the server log:\n{log_of(server)[-3000:]}")
        await asyncio.sleep(0.05)


async def chat_client(ws_connect: ConnectWS, server: CablecarProcess, user: str, room: str) -> WS:
    ws = await ws_connect(f"{server.url}?user={user}")
    confirm = await ws.subscribe(chat(room))
    assert confirm["type"] == "confirm_subscription", confirm
    return ws


def chat(room: str) -> str:
    return orjson.dumps({"channel": "ChatChannel", "room": room}).decode()


async def messages(ws: WS, ident: str, count: int) -> list[Any]:
    """The next ``count`` broadcasts on ``ident``, then a quiet period: nothing more
    (no duplicate, nothing else) may arrive."""
    got = []
    for _ in range(count):
        frame = await ws.recv_data(WAIT)
        assert frame.get("identifier") == ident, frame
        got.append(frame["message"])
    extra = await ws.quiet(QUIET)
    assert extra == [], f"unexpected frames after {got}: {extra}"
    return got


async def closed_by_remote(ws: WS) -> None:
    """The server says ``disconnect``/``remote``/no reconnect, then closes the socket."""
    frame = await ws.recv_data(WAIT)
    assert frame == {"type": "disconnect", "reason": "remote", "reconnect": False}
    await asyncio.wait_for(ws.conn.wait_closed(), WAIT)


def own_service(kind: str) -> Service:
    try:
        return SERVICES[kind]()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


# -- 1. two servers, a third process broadcasts and disconnects --------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_two_servers_third_process_broadcast_and_remote_disconnect(
    kind: str, request: pytest.FixtureRequest, launch: Launch, ws_connect: ConnectWS
) -> None:
    """Two server processes and a third broadcasting one share messages and remote disconnects through the broker; credentials never reach the log."""
    url = request.getfixturevalue(f"{kind}_server").url
    # The servers get credentials in their URL (the throwaway brokers accept any): they
    # must work, and never show up in the log.
    secret_url = re.sub(r"//([^/@]*@)?", f"//{USERS[kind]}:s3cret@", url, count=1)
    a, b = await asyncio.gather(
        launch("--pubsub", secret_url, name="a"), launch("--pubsub", secret_url, name="b")
    )
    room = f"scale-{secrets.token_hex(4)}"  # the broker is shared by the session
    stream, ident = f"chat_{room}", chat(room)
    alice = await chat_client(ws_connect, a, "alice", room)
    carol = await chat_client(ws_connect, a, "carol", room)
    bob = await chat_client(ws_connect, b, "bob", room)

    # A shell producer, a sync producer in another process, a sync call in a thread.
    status, err = await run(
        sys.executable, "-m", "cablecar", "broadcast", stream, '{"via": "cli"}', "--pubsub", url
    )
    assert status == 0, err
    assert f"broadcast 13 bytes to {stream!r}" in err
    status, err = await run(sys.executable, "-c", SYNC_BROADCAST, url, stream, '{"via": "sync"}')
    assert status == 0, err
    with Broadcaster(url) as broadcaster:
        await asyncio.to_thread(broadcaster.broadcast_sync, stream, {"via": "thread"})

        expected = sorted([{"via": "cli"}, {"via": "sync"}, {"via": "thread"}], key=str)
        # every client, on both servers, exactly once
        for got in await asyncio.gather(*(messages(ws, ident, 3) for ws in (alice, carol, bob))):
            assert sorted(got, key=str) == expected

        # bob is on server b: only his connection closes.
        status, err = await run(sys.executable, "-c", REMOTE_DISCONNECT, url, "bob")
        assert status == 0, err
        await closed_by_remote(bob)
        await asyncio.to_thread(broadcaster.broadcast_sync, stream, {"after": "bob"})
        for got in await asyncio.gather(messages(alice, ident, 1), messages(carol, ident, 1)):
            assert got == [{"after": "bob"}]

        # alice is on server a, next to carol: only alice's connection closes.
        status, err = await run(sys.executable, "-c", REMOTE_DISCONNECT, url, "alice")
        assert status == 0, err
        await closed_by_remote(alice)
        await asyncio.to_thread(broadcaster.broadcast_sync, stream, {"after": "alice"})
        assert await messages(carol, ident, 1) == [{"after": "alice"}]
    assert carol.conn.state is State.OPEN
    assert "remote disconnect" in log_of(a) and "remote disconnect" in log_of(b)
    for server in (a, b):
        assert "cable started (pub/sub" in log_of(server)
        assert "s3cret" not in log_of(server)


# -- 2. the broker dies and comes back ----------------------------------------------------


class Inbox:
    """Everything (but pings) a client receives, read in the background."""

    def __init__(self, ws: WS) -> None:
        self.ws = ws
        self.frames: list[Any] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            frame = orjson.loads(await self.ws.conn.recv())
            if frame.get("type") != "ping":
                self.frames.append(frame)

    def broadcasts(self) -> list[Any]:
        return [f["message"] for f in self.frames if "identifier" in f and "message" in f]


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", KINDS)
async def test_broker_killed_and_restarted_while_clients_stay(
    kind: str, launch: Launch, ws_connect: ConnectWS
) -> None:
    """The broker killed and restarted under two servers: clients stay connected and get broadcasts again."""
    broker = own_service(kind)
    await asyncio.to_thread(broker.start)
    try:
        await broker_restart(kind, broker, launch, ws_connect)
    finally:
        await asyncio.to_thread(broker.close)


async def broker_restart(kind: str, broker: Service, launch: Launch, ws_connect: ConnectWS) -> None:
    name = {"redis": "Redis", "postgres": "PostgreSQL", "nats": "NATS"}[kind]
    servers = await asyncio.gather(
        launch("--pubsub", broker.url, name="a"), launch("--pubsub", broker.url, name="b")
    )
    room = "fault"
    stream = f"chat_{room}"
    clients = [
        await chat_client(ws_connect, server, f"user{i}", room) for i, server in enumerate(servers)
    ]
    inboxes = [Inbox(ws) for ws in clients]
    pids = [s.proc.pid for s in servers if s.proc is not None]
    try:
        async with Broadcaster(broker.url, timeout=WAIT) as broadcaster:

            async def broadcast(message: Any) -> bool:
                try:
                    await asyncio.wait_for(broadcaster.broadcast(stream, message), WAIT)
                except AdapterError:
                    return False
                return True

            assert await broadcast({"n": "before"})
            await wait_until(
                lambda: all({"n": "before"} in i.broadcasts() for i in inboxes), "delivered"
            )

            await asyncio.to_thread(broker.stop, kill=True)
            for server in servers:
                await wait_for_log(server, f"lost connection to {name} at")
            await asyncio.to_thread(broker.start)

            # Poll: broadcast until every client has received one sent after the restart.
            sent = 0
            deadline = time.monotonic() + WAIT
            while not all(
                any(isinstance(m.get("n"), int) for m in i.broadcasts()) for i in inboxes
            ):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"no broadcast reached every client again within {WAIT} s: "
                        f"{[i.frames for i in inboxes]}\n" + "\n".join(map(log_of, servers))
                    )
                if await broadcast({"n": sent}):
                    sent += 1
                await asyncio.sleep(0.25)

            # Recovered: one more broadcast arrives exactly once everywhere.
            assert await broadcast({"n": "after"})
            await wait_until(
                lambda: all({"n": "after"} in i.broadcasts() for i in inboxes), "delivered"
            )
            await asyncio.sleep(QUIET)
        for inbox in inboxes:
            got = inbox.broadcasts()
            assert got.count({"n": "after"}) == 1, got
            ints = [m["n"] for m in got if isinstance(m["n"], int)]
            assert len(ints) == len(set(ints)), f"a broadcast arrived twice: {got}"
            assert not [f for f in inbox.frames if f.get("type") == "disconnect"], inbox.frames
    finally:
        for inbox in inboxes:
            inbox.task.cancel()
    # Same server processes, same client connections, and the logs tell the story.
    assert [s.proc.pid for s in servers if s.proc is not None and s.proc.poll() is None] == pids
    assert all(ws.conn.state is State.OPEN for ws in clients)
    for server in servers:
        await wait_for_log(server, f"reconnected to {name} at")
        log = log_of(server)
        assert log.index(f"lost connection to {name} at") < log.index(f"reconnected to {name} at")
        assert re.search(r"streams? resubscribed", log), log
    # Stop cablecar before the broker goes away for good (a quieter log to read).
    for ws in clients:
        await ws.close()
    await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))


# -- 3. several workers on one port --------------------------------------------------------


def tcp_sockets(pid: int, port: int) -> tuple[int, int]:
    """(listening, established) TCP sockets on 127.0.0.1:port held by process ``pid``."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = established = 0
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode in inodes and int(local.split(":")[1], 16) == port:
                listening += state == "0A"
                established += state == "01"
    return listening, established


def running(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def live(pid: int) -> bool:
    """Whether ``pid`` still exists as more than a zombie (its sockets are gone then)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


async def worker_pids(server: CablecarProcess, count: int) -> list[int]:
    await wait_for_log(server, f"{count} workers on port {server.port}: pids [")
    found = re.search(r"pids \[([\d, ]+)\]", log_of(server))
    assert found is not None
    pids = [int(p) for p in found.group(1).split(",")]
    assert len(pids) == count
    return pids


@pytest.mark.skipif(not os.path.exists("/proc/self/net/tcp"), reason="needs Linux /proc")
async def test_workers_share_the_port_and_deliver_across_workers(
    redis_server: Service, launch: Launch, ws_connect: ConnectWS
) -> None:
    """Two --workers share one port and a broadcast reaches clients on both."""
    prefix = f"scale-{secrets.token_hex(4)}"  # BenchmarkChannel's stream "all" stays ours
    server = await launch(
        "--workers", "2", "--pubsub", redis_server.url, "--channel-prefix", prefix, name="workers"
    )
    parent = server.proc
    assert parent is not None
    pids = await worker_pids(server, 2)
    await wait_until(
        lambda: all(tcp_sockets(pid, server.port)[0] == 1 for pid in pids), "both workers listen"
    )

    ident = orjson.dumps({"channel": "BenchmarkChannel"}).decode()
    clients = []
    for i in range(20):
        ws = await ws_connect(f"{server.url}?user=u{i}")
        confirm = await ws.subscribe(ident)
        assert confirm["type"] == "confirm_subscription", confirm
        clients.append(ws)
    # The kernel spread the connections over both workers (all 20 on one: odds 2**-19).
    per_worker = {pid: tcp_sockets(pid, server.port)[1] for pid in pids}
    assert sum(per_worker.values()) == 20, per_worker
    assert all(n > 0 for n in per_worker.values()), per_worker

    # A broadcast made inside one worker reaches the clients of both.
    await clients[0].perform(ident, "broadcast", body="to everyone")
    everyone = {"action": "broadcast", "body": "to everyone"}
    for ws in clients:
        # the sender also gets its own result, usually before the broadcast comes back
        count = 2 if ws is clients[0] else 1
        got = [await ws.recv_data(WAIT) for _ in range(count)]
        assert all(frame["identifier"] == ident for frame in got), got
        assert [frame["message"] for frame in got].count(everyone) == 1, got
    for ws in clients:
        assert await ws.quiet(0.05 if ws is not clients[-1] else QUIET) == []

    # SIGTERM to the parent: every worker closes its connections gracefully and exits.
    await asyncio.to_thread(server.stop)
    assert parent.returncode == 0, log_of(server)
    for ws in clients:
        frame = await ws.recv_data(WAIT)
        assert frame == {"type": "disconnect", "reason": "server_restart", "reconnect": True}
        await asyncio.wait_for(ws.conn.wait_closed(), WAIT)
    assert not [pid for pid in pids if running(pid)]
    assert log_of(server).count("shutting down (signal)") == 2, log_of(server)
    assert log_of(server).count("cable stopped") == 2, log_of(server)


@pytest.mark.parametrize("pubsub", [None, "memory://"])
async def test_workers_refuse_the_memory_adapter(pubsub: str | None) -> None:
    """--workers 2 without a cross-process adapter exits 2, naming the --pubsub fix."""
    argv = [sys.executable, "-m", "cablecar", "serve", APP, "--port", str(free_port())]
    argv += ["--workers", "2", *(["--pubsub", pubsub] if pubsub else [])]
    status, err = await run(*argv)
    assert status == 2, err
    assert "--workers N > 1 needs a cross-process pub/sub adapter" in err
    assert "--pubsub redis://" in err


@pytest.mark.skipif(not os.path.exists("/proc/self/net/tcp"), reason="needs Linux /proc")
async def test_workers_stop_gracefully_on_ctrl_c(
    redis_server: Service, launch: Launch, ws_connect: ConnectWS
) -> None:
    """A terminal's Ctrl-C sends SIGINT to the whole foreground process group: each
    worker must still see one signal (a graceful shutdown), not two ("exit now")."""
    server = await launch("--workers", "2", "--pubsub", redis_server.url, name="workers")
    parent = server.proc
    assert parent is not None
    pids = await worker_pids(server, 2)
    await wait_until(
        lambda: all(tcp_sockets(pid, server.port)[0] == 1 for pid in pids), "both workers listen"
    )
    clients = [await ws_connect(server.url) for _ in range(8)]  # a shutdown with work to do
    os.killpg(parent.pid, signal.SIGINT)  # the server runs in a session of its own
    for ws in clients:
        frame = await ws.recv_data(WAIT)
        assert frame == {"type": "disconnect", "reason": "server_restart", "reconnect": True}
    assert await asyncio.to_thread(parent.wait, WAIT) == 0, log_of(server)
    log = log_of(server)
    assert "second signal" not in log, log
    assert log.count("cable stopped") == 2, log


@pytest.mark.skipif(not os.path.exists("/proc/self/net/tcp"), reason="needs Linux /proc")
async def test_a_dead_worker_leaves_the_others_serving_and_is_replaced(
    redis_server: Service, launch: Launch, ws_connect: ConnectWS
) -> None:
    """A worker that dies (OOM killer, say) is not hidden: the others keep serving, the
    parent logs it and starts a new worker in its place; a stop then ends both with 0."""
    server = await launch("--workers", "2", "--pubsub", redis_server.url, name="workers")
    parent = server.proc
    assert parent is not None
    dead, alive = await worker_pids(server, 2)
    await wait_until(
        lambda: all(tcp_sockets(pid, server.port)[0] == 1 for pid in (dead, alive)),
        "both workers listen",
    )
    os.kill(dead, signal.SIGKILL)
    await wait_until(
        lambda: tcp_sockets(alive, server.port)[0] == 1 and not live(dead),
        "the worker is dead",
    )
    for attempt in range(5):
        try:
            ws = await ws_connect(f"{server.url}?user=survivor")
            break
        except (EOFError, InvalidMessage):  # routed to the killed worker's socket as the
            assert attempt < 4  # kernel closed it (websockets wraps the EOF, or not)
            await asyncio.sleep(0.1)
    ident = orjson.dumps({"channel": "BenchmarkChannel"}).decode()
    assert (await ws.subscribe(ident))["type"] == "confirm_subscription"
    await ws.perform(ident, "echo", body="still here")
    assert (await ws.recv_data(WAIT))["message"] == {"action": "echo", "body": "still here"}
    await wait_until(
        lambda: f"worker {dead} exited with status -9; started worker" in log_of(server),
        "the replacement",
    )
    await wait_until(lambda: log_of(server).count("cable started") == 3, "it serves")

    parent.terminate()
    assert await asyncio.to_thread(parent.wait, WAIT) == 0, log_of(server)
    assert log_of(server).count("cable stopped") == 2, log_of(server)
