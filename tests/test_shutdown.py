"""Graceful shutdown of ``cablecar serve`` on SIGTERM and SIGINT, as a real subprocess.

The first signal: stop accepting, every client gets ``disconnect`` reason
``server_restart`` with ``reconnect: true``, actions in flight finish (up to
``shutdown_timeout``), channels and connections get their callbacks, the pub/sub
adapter is closed, and the process exits 0. A second signal (a second or more after the
first) exits at once.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from cablecar import Cable, Channel, Connection
from cablecar.transports.standalone import serve

from .conftest import free_port
from .rawws import RawWS
from .servers import CablecarProcess
from .services import RedisServer, frozen, process_tree

APP = """
import asyncio, os, time

from cablecar import Cable, Channel, Connection
from cablecar.pubsub.memory import MemoryPubSub

JOURNAL = {journal!r}


def note(line):
    with open(JOURNAL, "a") as f:
        f.write(line + "\\n")


class JournaledPubSub(MemoryPubSub):
    async def close(self):
        note("adapter closed")
        await super().close()


class AppConnection(Connection):
    identified_by = ("current_user",)

    async def connect(self):
        self.current_user = self.request.query.get("user", "anon")

    async def disconnect(self):
        note(f"disconnect {{self.current_user}}")


class WorkChannel(Channel):
    async def subscribed(self):
        self.stream_from("work")

    async def unsubscribed(self):
        note(f"unsubscribed {{self.current_user}}")

    async def work(self, data):
        note(f"work started {{data['n']}}")
        self.transmit({{"started": data["n"]}})
        await asyncio.sleep(data["seconds"])
        note(f"work done {{data['n']}}")

    def blocking_work(self, data):
        note(f"blocking work started {{data['n']}}")
        self.transmit({{"started": data["n"]}})
        time.sleep(data["seconds"])
        note(f"blocking work done {{data['n']}}")


cable = Cable(
    connection=AppConnection,
    channels=[WorkChannel],
    pubsub=JournaledPubSub(),
    shutdown_timeout={shutdown_timeout},
)
"""

WORK = '{"channel":"WorkChannel"}'


def start(tmp_path: Path, shutdown_timeout: float = 10.0) -> tuple[CablecarProcess, Path]:
    journal = tmp_path / "journal.txt"
    journal.write_text("")
    app = tmp_path / "work_app.py"
    app.write_text(APP.format(journal=str(journal), shutdown_timeout=shutdown_timeout))
    proc = CablecarProcess(free_port(), f"{app}:cable", log=tmp_path / "server.log").start()
    return proc, journal


async def client(proc: CablecarProcess, user: str) -> RawWS:
    ws = await RawWS.open(proc.port, f"/cable?user={user}")
    ws.subscribe(WORK)
    assert (await ws.recv_json())["type"] == "confirm_subscription"
    return ws


async def wait_exit(proc: CablecarProcess, timeout: float) -> int:
    assert proc.proc is not None
    deadline = time.monotonic() + timeout
    while proc.proc.poll() is None:
        assert time.monotonic() < deadline, "the server did not exit in time"
        await asyncio.sleep(0.05)
    return proc.proc.returncode


async def refused(port: int) -> bool:
    try:
        _r, w = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionError:
        return True
    w.close()
    return False


@pytest.fixture
def server(tmp_path: Path) -> Any:
    started: list[CablecarProcess] = []

    def make(shutdown_timeout: float = 10.0) -> tuple[CablecarProcess, Path]:
        proc, journal = start(tmp_path, shutdown_timeout)
        started.append(proc)
        return proc, journal

    yield make
    for proc in started:
        proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_clients_finishes_actions_and_exits_0(
    server: Any, sig: signal.Signals
) -> None:
    """SIGTERM or SIGINT tells every client server_restart, lets a running action finish, and exits 0."""
    proc, journal = server()
    clients = [await client(proc, f"u{i}") for i in range(3)]
    worker = clients[0]
    worker.perform(WORK, "work", n=1, seconds=1.0)
    assert (await worker.recv_json())["message"] == {"started": 1}
    proc.proc.send_signal(sig)
    # Every client is told to come back later, then the socket closes.
    for ws in clients:
        code, texts = await ws.expect_close(timeout=10)
        assert texts[-1] == {"type": "disconnect", "reason": "server_restart", "reconnect": True}
        assert code == 1000
    assert await refused(proc.port)  # no longer accepting
    assert await wait_exit(proc, 15) == 0
    lines = journal.read_text().splitlines()
    assert "work done 1" in lines  # the action in flight finished
    assert {f"disconnect u{i}" for i in range(3)} <= set(lines)
    assert {f"unsubscribed u{i}" for i in range(3)} <= set(lines)
    assert lines[-1] == "adapter closed"
    assert lines.index("work done 1") < lines.index("disconnect u0")


@pytest.mark.parametrize("action", ["work", "blocking_work"])
async def test_actions_past_the_shutdown_timeout_do_not_hold_the_exit(
    server: Any, action: str
) -> None:
    """An action running past shutdown_timeout does not hold the exit: the process ends 0 soon after."""
    proc, journal = server(shutdown_timeout=1.0)
    ws = await client(proc, "stuck")
    ws.perform(WORK, action, n=2, seconds=30)
    assert (await ws.recv_json())["message"] == {"started": 2}
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    _code, texts = await ws.expect_close(timeout=10)
    assert texts[-1]["reason"] == "server_restart"
    assert await wait_exit(proc, 10) == 0
    assert time.monotonic() - started < 8
    lines = journal.read_text().splitlines()
    assert "adapter closed" in lines and "work done 2" not in lines


async def test_a_second_signal_exits_at_once(server: Any) -> None:
    """A second SIGTERM during a long drain exits at once."""
    proc, _journal = server(shutdown_timeout=60.0)
    ws = await client(proc, "stuck")
    ws.perform(WORK, "work", n=3, seconds=60)
    assert (await ws.recv_json())["message"] == {"started": 3}
    first = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    await ws.expect_close(timeout=10)
    # Past the window in which a repeated signal counts as the same request.
    await asyncio.sleep(max(0.3, 1.3 - (time.monotonic() - first)))
    assert proc.proc.poll() is None  # still waiting for the action (up to 60 s)
    assert await refused(proc.port)
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc, 5) != 0
    assert time.monotonic() - started < 3


async def test_two_signals_at_once_are_one_graceful_shutdown(server: Any) -> None:
    """A supervisor that signals every process of the service reaches a --workers child
    directly and through its parent: two signals at once are one graceful shutdown."""
    proc, journal = server()
    ws = await client(proc, "u0")
    ws.perform(WORK, "work", n=1, seconds=1.0)
    assert (await ws.recv_json())["message"] == {"started": 1}
    proc.proc.send_signal(signal.SIGINT)
    proc.proc.send_signal(signal.SIGTERM)
    _code, texts = await ws.expect_close(timeout=10)
    assert texts[-1]["reason"] == "server_restart"
    assert await wait_exit(proc, 15) == 0
    assert "work done 1" in journal.read_text().splitlines()


async def test_serve_that_cannot_bind_stops_the_cable_it_started() -> None:
    """serve() on a taken port raises, leaves the cable stopped, and it can start again."""
    cable = Cable()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            await serve(cable, "127.0.0.1", taken.getsockname()[1])
    assert not cable.running
    await cable.start()  # a stopped cable can run again
    assert cable.running
    await cable.stop()


class RoomChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from(f"room_{self.params['room']}")


@pytest.mark.services
async def test_stop_does_not_wait_out_a_subscribe_stuck_on_a_dead_broker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stopping the cable while a subscribe waits for a dead Redis does not wait for shutdown_timeout."""
    with RedisServer() as redis:
        cable = Cable(channels=[RoomChannel], pubsub=redis.url, shutdown_timeout=30.0)
        server = await serve(cable, "127.0.0.1", 0)
        try:
            ws = await RawWS.open(server.port, "/cable")
            ws.subscribe('{"channel":"RoomChannel","room":"1"}')
            assert (await ws.recv_json())["type"] == "confirm_subscription"
            redis.stop(kill=True)
            ws.subscribe('{"channel":"RoomChannel","room":"2"}')  # waits for Redis
            await asyncio.sleep(0.5)
            started = time.monotonic()
            closed = asyncio.create_task(ws.expect_close())  # answers the close frame
            await asyncio.wait_for(server.close(), 10)
            assert time.monotonic() - started < 5  # not shutdown_timeout (30 s)
            _code, texts = await closed
            assert texts[-1] == {
                "type": "disconnect",
                "reason": "server_restart",
                "reconnect": True,
            }
        finally:
            await server.close()
    assert "subscribes still wait for it" in caplog.text
    assert not cable.running


@pytest.mark.services
async def test_a_cable_on_redis_runs_again_after_stop(redis_server: Any) -> None:
    """stop() then start() on a cable built from a Redis URL (and with history): the
    second run subscribes and delivers like the first; history continues its offsets."""
    from cablecar.testing import ChannelTester

    cable = Cable(Connection, [RoomChannel], redis_server.url, channel_prefix="again", history=True)
    for run in range(2):
        async with ChannelTester(cable) as t:
            conn = await t.connect()
            sub = await conn.subscribe(RoomChannel, room="9")
            await cable.broadcast("room_9", {"run": run})
            expected = {"run": run}
            await t.wait_until(lambda s=sub, e=expected: e in s.transmissions)
        assert not cable.running


@pytest.mark.services
@pytest.mark.parametrize("interval", [0.5, 1.0])
async def test_shutdown_does_not_hang_on_a_redis_health_check(interval: float) -> None:
    """The Redis listener's health-check read timing out as the shutdown cancels it (the
    client does not answer the close frame, so the stop comes one close_timeout later):
    redis-py can lose that cancellation; stop() still ends in bounded time."""
    from cablecar.pubsub.redis import RedisPubSub

    with RedisServer() as redis:
        adapter = RedisPubSub(redis.url, health_check_interval=interval)
        cable = Cable(channels=[RoomChannel], pubsub=adapter, close_timeout=interval)
        server = await serve(cable, "127.0.0.1", 0)
        ws = await RawWS.open(server.port, "/cable")
        ws.subscribe('{"channel":"RoomChannel","room":"1"}')
        assert (await ws.recv_json())["type"] == "confirm_subscription"
        await asyncio.wait_for(server.close(), 10)
        assert not cable.running


def _postmaster(server: Any) -> int:
    return int((server.data / "postmaster.pid").read_text().split()[0])


@pytest.mark.services
@pytest.mark.parametrize("kind", ["redis", "nats", "postgres"])
async def test_a_stalled_broker_is_not_ready_and_its_timeouts_say_unknown(kind: str) -> None:
    """Redis, NATS or the whole PostgreSQL cluster frozen (SIGSTOP: sockets open, nothing
    answers): a broadcast raises PublishTimeout within the publish timeout (its outcome is
    unknown, not "failed": it is not queued for a retry that could repeat it), /ready
    answers 503 from then on while /health stays 200; thawed (SIGCONT), /ready is 200
    again within seconds, broadcasts flow, and the timed-out one arrived at most once."""
    from cablecar import PublishTimeout
    from cablecar.pubsub.nats import NatsPubSub
    from cablecar.pubsub.postgres import PostgresPubSub
    from cablecar.pubsub.redis import RedisPubSub

    from .services import NatsServer, PostgresServer

    kinds = {"redis": (RedisServer, RedisPubSub), "nats": (NatsServer, NatsPubSub),
             "postgres": (PostgresServer, PostgresPubSub)}  # fmt: skip
    service, adapter_class = kinds[kind]
    broker: Any = service()
    with broker:
        adapter = adapter_class(broker.url, publish_timeout=1.0)
        cable = Cable(channels=[RoomChannel], pubsub=adapter)
        server = await serve(cable, "127.0.0.1", 0)
        try:
            ws = await RawWS.open(server.port, "/cable")
            ws.subscribe('{"channel":"RoomChannel","room":"1"}')
            assert (await ws.recv_json())["type"] == "confirm_subscription"
            await cable.broadcast("room_1", {"n": 0})  # the publishing connection is up
            assert (await ws.recv_until(lambda m: "message" in m))["message"]["n"] == 0
            assert cable.ready().status == 200
            pids = process_tree(_postmaster(broker) if kind == "postgres" else broker.proc.pid)
            with frozen(pids):
                started = time.monotonic()
                with pytest.raises(PublishTimeout, match="outcome is unknown"):
                    await cable.broadcast("room_1", {"n": 1})
                assert time.monotonic() - started < 3
                ready = cable.ready()
                assert ready.status == 503 and b"pub/sub unreachable" in ready.body
                assert cable.health("GET").status == 200  # alive, not ready
                assert cable.statistics()["outbox"]["waiting"] == 0  # not queued
            deadline = time.monotonic() + 15
            while cable.ready().status != 200:
                assert time.monotonic() < deadline, cable.ready().body
                await asyncio.sleep(0.1)
            await cable.broadcast("room_1", {"n": 2})
            got: list[int] = []
            while 2 not in got:
                got.append((await ws.recv_until(lambda m: "message" in m))["message"]["n"])
            assert got in ([2], [1, 2])  # the unknown one: at most once, in order
        finally:
            await server.close()
