"""Soak test: thousands of clients connecting, subscribing, chatting and leaving in waves.

    .venv/bin/python benchmarks/soak.py                    # 5,000 clients, 10 minutes
    .venv/bin/python benchmarks/soak.py --duration 60 --clients 500 --out soak.json
    .venv/bin/python benchmarks/soak.py --duration 1800 --clients 2000 --history  # make bench

Starts ``cablecar serve examples/conformance_app.py:cable`` on a free loopback port (or
drives ``--port`` of a server already running on 127.0.0.1), then runs the clients in
``--cohorts`` groups. Each cohort repeats a wave until the duration is up:

1. connect its clients (a bounded number of handshakes in flight), subscribe each to a
   ``ChatChannel`` room of ``--room-size`` members that exists only for this wave;
2. chat: every client performs ``speak`` ``--messages`` times at random moments of a
   ``--chat`` second window; the server broadcasts each message to the room;
3. drain: wait until every member has received every message of its room;
4. leave: half the clients close with a close frame, half just drop the TCP connection;
5. pause a moment, then start again with fresh connections and fresh rooms.

With ``--history`` the server runs with ``history=True`` and the clients speak AnyCable's
extended protocol; during each chat window ``--reconnects`` of the clients (10 %) drop
their TCP connection without a close frame, reconnect with ``?sid=`` a moment later, and
ask for what they missed since their last position: they must still receive every
message of their room exactly once.

Cohorts start staggered, so connects, chats and disconnects overlap all the time, and at
the busiest moments all ``--clients`` are connected at once.

Every message is accounted for: a room's members were all subscribed before anyone in
it spoke, and nobody leaves before the drain, so each member must receive exactly the
messages sent in its room. The report counts messages sent, deliveries expected and
received, deliveries lost, duplicated or misrouted, errors by kind, and the server's RSS
at the start, at its peak and at the end (after every client left). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from _common import REPO, event_loop_runner, free_port, raise_nofile_limit

APP = "examples/conformance_app.py:cable"


# -- the server -----------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
        return dict(json.loads(r.read()))


def start_server(port: int, log: Path, history: bool = False) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # kept open for the server's lifetime
    env = {**os.environ, "CABLE_HISTORY": "1" if history else "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cablecar", "serve", APP, "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            health(port)
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: see {log}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not come up")


# -- one client -----------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.sent = 0
        self.expected = 0
        self.received = 0
        self.lost = 0
        self.duplicated = 0
        self.misrouted = 0
        self.connects = 0
        self.subscribes = 0
        self.pings = 0
        self.waves = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.connected = 0
        self.peak_connected = 0
        self.reconnects = 0
        self.restored = 0
        self.recovered = 0
        self.skipped_speaks = 0


class Client(asyncio.Protocol):
    """One Action Cable client over a raw socket (cheap enough for thousands)."""

    def __init__(
        self,
        stats: Stats,
        user: str,
        identifier: str,
        *,
        ext: bool = False,
        resume: str | None = None,
        got: set[str] | None = None,
    ) -> None:
        self.stats = stats
        self.user = user
        self.identifier = identifier
        self.ext = ext  # AnyCable's extended protocol (history=True)
        self.resume = resume  # the sid of the session to resume
        self.sid: str | None = None
        self.restored = False
        self.position: tuple[str, str, int] | None = None  # stream, epoch, offset
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.welcomed = asyncio.get_running_loop().create_future()
        self.confirmed = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.history = asyncio.get_running_loop().create_future()
        self.got: set[str] = got if got is not None else set()
        self.room_sent: set[str] = set()
        self.unexpected_disconnect: str | None = None
        self.leaving = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connected += 1
        self.stats.peak_connected = max(self.stats.peak_connected, self.stats.connected)
        key = base64.b64encode(os.urandom(16)).decode()
        query = f"user={self.user}" + (f"&sid={self.resume}" if self.resume else "")
        protocol = "actioncable-v1-ext-json" if self.ext else "actioncable-v1-json"
        transport.write(  # type: ignore[attr-defined]
            (
                f"GET /cable?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._fail(f"http_{bytes(buf[9:12]).decode(errors='replace')}")
                return
            del buf[: end + 4]
            self.upgraded = True
        pos = 0
        n_buf = len(buf)
        while n_buf - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if n_buf - pos < 4:
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if n_buf - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if n_buf - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            op = b0 & 0x0F
            if op == 0x1:
                self._frame(orjson.loads(payload))
            elif op == 0x8 and not self.leaving:
                self.stats.errors["closed_by_server"] += 1
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.connected -= 1
        for fut in (self.welcomed, self.confirmed):
            if not fut.done():
                fut.set_exception(ConnectionError("closed"))
                fut.exception()  # a client that left on purpose never awaits it
        if not self.history.done():  # awaited only by a resume: it failed
            self.history.set_result(False)
        if not self.closed.done():
            self.closed.set_result(None)

    # Action Cable
    def _frame(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "ping":
            self.stats.pings += 1
        elif kind == "welcome":
            self.sid = msg.get("sid")
            self.restored = msg.get("restored") is True
            self.welcomed.set_result(None)
        elif kind in ("confirm_history", "reject_history"):
            if not self.history.done():
                self.history.set_result(kind == "confirm_history")
        elif kind == "confirm_subscription":
            self.confirmed.set_result(None)
        elif kind == "reject_subscription":
            self.confirmed.set_exception(ConnectionError("rejected"))
        elif kind == "disconnect":
            self.unexpected_disconnect = str(msg.get("reason"))
        elif "message" in msg:
            body = msg["message"].get("body")
            if msg.get("identifier") != self.identifier or body not in self.room_sent:
                self.stats.misrouted += 1
            elif body in self.got:
                self.stats.duplicated += 1
            else:
                self.got.add(body)
                self.stats.received += 1
            if "offset" in msg:
                self.position = (msg["stream_id"], msg["epoch"], msg["offset"])

    def _fail(self, kind: str) -> None:
        self.stats.errors[kind] += 1
        if self.transport is not None:
            self.transport.abort()

    def send_json(self, obj: Any) -> None:
        payload = orjson.dumps(obj)
        n = len(payload)
        head = bytes((0x81, 0x80 | n)) if n < 126 else b"\x81\xfe" + struct.pack("!H", n)
        assert self.transport is not None
        self.transport.write(head + b"\0\0\0\0" + payload)  # zero mask: payload as is

    def close(self, graceful: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.leaving = True
        if graceful:
            self.transport.write(b"\x88\x82\0\0\0\0\x03\xe8")  # close 1000
            asyncio.get_running_loop().call_later(2.0, self.transport.close)
        else:
            self.transport.close()


# -- a cohort ------------------------------------------------------------------------------


async def run_cohort(
    index: int, args: argparse.Namespace, stats: Stats, stop_at: float, gate: asyncio.Semaphore
) -> None:
    loop = asyncio.get_running_loop()
    size = args.clients // args.cohorts
    wave = 0
    rng = random.Random(index)
    await asyncio.sleep(index * args.stagger)
    while loop.time() < stop_at:
        wave += 1
        rooms = max(1, size // args.room_size)
        clients: list[Client] = []

        async def join(i: int, wave: int = wave, rooms: int = rooms) -> Client | None:
            room = f"soak-c{index}-w{wave}-r{i % rooms}"
            ident = orjson.dumps({"channel": "ChatChannel", "room": room}).decode()
            async with gate:  # bounds the handshakes in flight
                try:
                    _t, client = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: Client(stats, f"c{index}u{i}", ident, ext=args.history),
                            "127.0.0.1",
                            args.port,
                        ),
                        30,
                    )
                except (OSError, TimeoutError) as exc:
                    stats.errors[f"connect_{type(exc).__name__}"] += 1
                    return None
                try:
                    await asyncio.wait_for(client.welcomed, 30)
                    stats.connects += 1
                    client.send_json({"command": "subscribe", "identifier": ident})
                    await asyncio.wait_for(client.confirmed, 30)
                    stats.subscribes += 1
                except (ConnectionError, TimeoutError) as exc:
                    stats.errors[f"subscribe_{type(exc).__name__}"] += 1
                    client.close(False)
                    return None
            return client

        joined = await asyncio.gather(*(join(i) for i in range(size)))
        clients = [c for c in joined if c is not None]
        by_room: dict[str, list[Client]] = collections.defaultdict(list)
        for c in clients:
            by_room[c.identifier].append(c)
        sent_in_room: dict[str, set[str]] = collections.defaultdict(set)
        for ident, members in by_room.items():
            shared = sent_in_room[ident]
            for c in members:
                c.room_sent = shared  # filled before each send

        # Chat: every member speaks --messages times at random moments of the window;
        # meanwhile (history=True) some drop their TCP connection and resume.
        plan = sorted(
            (rng.uniform(0, args.chat), n, m)
            for n in range(len(clients))
            for m in range(args.messages)
        )
        away: set[int] = set()
        share = args.reconnects if args.history else 0.0
        chosen = rng.sample(range(len(clients)), int(len(clients) * share))
        resumes = [
            loop.create_task(resume(n, clients, away, stats, args, rng, loop)) for n in chosen
        ]
        started = loop.time()
        for at, n, m in plan:
            delay = started + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            c = clients[n]
            if n in away:
                stats.skipped_speaks += 1  # it is reconnecting: it speaks later
                continue
            if c.transport is None or c.transport.is_closing():
                stats.errors["speaker_gone"] += 1
                continue
            body = f"{c.user}-w{wave}-m{m}"
            sent_in_room[c.identifier].add(body)
            stats.expected += len(by_room[c.identifier])
            c.send_json(
                {
                    "command": "message",
                    "identifier": c.identifier,
                    "data": orjson.dumps({"action": "speak", "body": body}).decode(),
                }
            )
            stats.sent += 1

        await asyncio.gather(*resumes)
        # Drain: everyone must get every message of its room.
        deadline = loop.time() + args.drain_timeout
        while loop.time() < deadline:
            if all(len(c.got) >= len(sent_in_room[c.identifier]) for c in clients):
                break
            await asyncio.sleep(0.1)
        for c in clients:
            missing = len(sent_in_room[c.identifier]) - len(c.got)
            if missing > 0:
                stats.lost += missing
                stats.errors[f"lost_{c.unexpected_disconnect or 'in_flight'}"] += missing
            if c.unexpected_disconnect:
                stats.errors[f"disconnect_{c.unexpected_disconnect}"] += 1

        # Leave: half with a close frame, half dropping TCP.
        for n, c in enumerate(clients):
            c.close(graceful=n % 2 == 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients)), 15)
        stats.waves += 1
        await asyncio.sleep(rng.uniform(0.5, 2.0))


async def resume(
    n: int,
    clients: list[Client],
    away: set[int],
    stats: Stats,
    args: argparse.Namespace,
    rng: random.Random,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Drop client ``n``'s TCP connection mid-chat, reconnect with its sid, ask for what
    it missed since its last position; it must end up with every message once."""
    await asyncio.sleep(rng.uniform(0.1, args.chat * 0.7))
    old = clients[n]
    for _ in range(50):  # wait for a first position (a message received)
        if old.position is not None:
            break
        await asyncio.sleep(0.1)
    if old.position is None or old.sid is None or old.transport is None:
        return
    away.add(n)
    stream, epoch, offset = old.position
    old.leaving = True
    old.transport.abort()  # no close frame: the session stays resumable
    stats.reconnects += 1
    await asyncio.sleep(rng.uniform(0.2, 1.0))
    try:
        _t, new = await asyncio.wait_for(
            loop.create_connection(
                lambda: Client(
                    stats, old.user, old.identifier, ext=True, resume=old.sid, got=old.got
                ),
                "127.0.0.1",
                args.port,
            ),
            30,
        )
        new.room_sent = old.room_sent
        await asyncio.wait_for(new.welcomed, 30)
        position = {stream: {"epoch": epoch, "offset": offset}}
        if new.restored:
            stats.restored += 1
            command = "history"
        else:  # the session is gone: subscribe again, with the position
            stats.errors["not_restored"] += 1
            command = "subscribe"
        new.send_json(
            {"command": command, "identifier": old.identifier, "history": {"streams": position}}
        )
        if await asyncio.wait_for(new.history, 30):
            stats.recovered += 1
        else:
            stats.errors["history_rejected"] += 1
        clients[n] = new
    except (OSError, ConnectionError, TimeoutError) as exc:
        stats.errors[f"resume_{type(exc).__name__}"] += 1
    finally:
        away.discard(n)


# -- main ----------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, server_pid: int | None) -> dict[str, Any]:
    stats = Stats()
    loop = asyncio.get_running_loop()
    started = time.time()
    rss_start = rss_kib(server_pid) if server_pid else 0
    rss_peak = rss_start
    health_start = health(args.port)
    samples: list[tuple[float, int, int]] = []

    async def monitor() -> None:
        nonlocal rss_peak
        last = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            if server_pid:
                rss = rss_kib(server_pid)
                rss_peak = max(rss_peak, rss)
                samples.append((round(time.time() - started, 1), rss, stats.connected))
            if time.monotonic() - last >= args.progress:
                last = time.monotonic()
                print(
                    f"[{time.time() - started:6.0f}s] connected {stats.connected:5d} "
                    f"waves {stats.waves:4d} sent {stats.sent:7d} received {stats.received:8d}/"
                    f"{stats.expected:8d} lost {stats.lost} errors {dict(stats.errors)} "
                    f"rss {samples[-1][1] // 1024 if samples else 0} MiB",
                    flush=True,
                )

    mon = loop.create_task(monitor())
    gate = asyncio.Semaphore(args.handshakes)
    stop_at = loop.time() + args.duration
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(run_cohort(i, args, stats, stop_at, gate) for i in range(args.cohorts))
            ),
            args.duration + 300,
        )
    finally:
        mon.cancel()
    # Every client has left: let the server settle, then measure it.
    await asyncio.sleep(5)
    rss_end = rss_kib(server_pid) if server_pid else 0
    health_end = health(args.port)
    return {
        "scenario": "soak",
        "duration_s": round(time.time() - started, 1),
        "clients": args.clients,
        "cohorts": args.cohorts,
        "room_size": args.room_size,
        "waves": stats.waves,
        "connections": stats.connects,
        "subscriptions": stats.subscribes,
        "peak_connected": stats.peak_connected,
        "messages_sent": stats.sent,
        "deliveries_expected": stats.expected,
        "deliveries_received": stats.received,
        "deliveries_lost": stats.lost,
        "deliveries_duplicated": stats.duplicated,
        "deliveries_misrouted": stats.misrouted,
        "all_accounted_for": stats.expected == stats.received and not stats.lost,
        "server_deliveries": health_end["deliveries_total"] - health_start["deliveries_total"],
        "pings_received": stats.pings,
        "history": args.history,
        "reconnects": stats.reconnects,
        "sessions_restored": stats.restored,
        "histories_recovered": stats.recovered,
        "speaks_skipped_while_away": stats.skipped_speaks,
        "errors": dict(stats.errors),
        "server_rss_kib": {"start": rss_start, "peak": rss_peak, "end": rss_end},
        "server_health_start": health_start,
        "server_health_end": health_end,
        "rss_samples": samples[:: max(1, len(samples) // 120)],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    p.add_argument("--clients", type=int, default=5000)
    p.add_argument("--cohorts", type=int, default=10)
    p.add_argument("--room-size", type=int, default=25)
    p.add_argument("--messages", type=int, default=3, help="messages per client per wave")
    p.add_argument("--chat", type=float, default=30.0, help="seconds of chatting per wave")
    p.add_argument("--stagger", type=float, default=3.5, help="seconds between cohort starts")
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--handshakes", type=int, default=200, help="handshakes in flight at most")
    p.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument("--port", type=int, default=0, help="a cablecar server already on 127.0.0.1")
    p.add_argument(
        "--history",
        action="store_true",
        help="history=True: extended protocol; some clients drop and resume mid-chat",
    )
    p.add_argument(
        "--reconnects", type=float, default=0.1, help="share of clients that resume per wave"
    )
    p.add_argument("--out", help="write the JSON report here too")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 3600:
        p.error("--duration must be within (0, 3600] seconds")
    if args.clients > 15_000:
        p.error("--clients is bounded to 15,000 (one loopback port range)")
    limit = raise_nofile_limit()
    if limit < args.clients + 100:
        p.error(f"open-file limit {limit} is below --clients")
    proc = None
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"cablecar-soak-{os.getpid()}.log"
    if not args.port:
        args.port = free_port()
        proc = start_server(args.port, log, args.history)
    try:
        with event_loop_runner() as runner:
            report = runner.run(soak(args, proc.pid if proc else None))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                report_exit = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                report_exit = -9
    report["server_exit_code"] = report_exit if proc is not None else None
    report["server_log"] = str(log) if proc is not None else None
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    ok = report["all_accounted_for"] and not report["deliveries_misrouted"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
