"""Bursts: many frames for the same sockets within one event loop iteration.

Two shapes, each run on cablecar and on the Python floor in the same run:

* ``ticks``: N subscribers of one stream; the server broadcasts ``--per-tick`` (10)
  messages per loop iteration, ``--rounds`` x 10 in all (a busy room, or broadcasts
  arriving from a pub/sub service in batches).
* ``streams``: N connections, each with one subscription that streams from ``--streams``
  (50) streams; each loop iteration the server broadcasts one message to every one of
  them (a dashboard of 50 feeds).

The broadcasts are made on the server by a channel action (``burst``), so both servers
do the same work: frame each message once and write it to its stream's subscribers.
The floor writes every frame on its own (one ``transport.write`` per recipient and
message); cablecar's standalone server writes a socket's first frame of an iteration
at once and the frames that follow it in the same iteration together, in one write.

Reported per server and shape: deliveries per second (first to last delivery of a
burst) and the server's CPU time per delivery (from /proc), the median of ``--repeat``
bursts. The client (one Python process of raw sockets on uvloop) counts every delivery
and then checks, per connection and stream, that every message arrived once and in
order; a run with a missing, repeated or reordered message is reported incomplete.

    .venv/bin/python benchmarks/bursts.py --clients 1000 --repeat 3
    .venv/bin/python benchmarks/bursts.py --servers cablecar --shapes ticks --clients 50

The module is also the cablecar app: ``cablecar serve benchmarks/bursts.py:cable``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cablecar import Cable, Channel

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when served by cablecar
from _common import RawSubscriber, client_frame

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARK = b'"n":'
#: Every message, as the client finds it in the raw stream: its stream and its number.
POSITION = re.compile(rb'"s":(\d+),"n":(\d+)')

__all__ = ["SHAPES", "check_order", "main", "run_bursts"]


class BurstChannel(Channel):
    """Streams from ``s0`` .. ``s{streams-1}``; ``burst`` broadcasts to them."""

    async def subscribed(self) -> None:
        for k in range(int(self.params.get("streams", 1))):
            self.stream_from(f"s{k}")

    async def burst(self, data: dict[str, Any]) -> None:
        pad = "x" * int(data.get("size", 64))
        per_tick = int(data["per_tick"])
        count = int(data["streams"])
        done = 0
        for n in range(int(data["rounds"])):
            for s in range(count):
                await self.cable.broadcast(f"s{s}", {"s": s, "n": n, "pad": pad})
                done += 1
                if done % per_tick == 0:
                    await asyncio.sleep(0)  # the next loop iteration


cable = Cable(channels=[BurstChannel], max_connections=100_000, command_burst=10_000)

#: shape -> (streams per connection, broadcasts per loop iteration)
SHAPES: dict[str, tuple[int, int]] = {"ticks": (1, 10), "streams": (50, 50)}


# -- servers ------------------------------------------------------------------------------


def _start(kind: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "cablecar":
        cmd = [str(ROOT / ".venv/bin/cablecar"), "serve", "benchmarks/bursts.py:cable",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    elif kind == "floor":
        from _common import anchors_home

        a = anchors_home()
        cmd = [str(a / ".venv/bin/python"), str(HERE / "servers" / "floor_bursts.py"),
               "--port", str(port), "--floor", str(a / "bench/servers/floor.py")]  # fmt: skip
    else:
        raise ValueError(f"unknown server {kind!r}: cablecar or floor")
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


# -- the client ---------------------------------------------------------------------------


class _Client(RawSubscriber):
    """Keeps what it receives after the confirmation, and counts the deliveries."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.chunks: list[bytes] = []
        self.tail = b""
        self.count = 0

    def received(self, data: bytes) -> None:
        self.chunks.append(data)
        # Deliveries counted in the raw stream; a tail keeps markers cut between reads.
        chunk = self.tail + data
        self.count += chunk.count(MARK) - self.tail.count(MARK)
        self.tail = chunk[-8:]


def check_order(data: bytes, streams: int, rounds: int, first: int = 0) -> str | None:
    """What is wrong with one connection's messages of rounds ``first`` ..
    ``first+rounds-1`` on every stream (missing, repeated, out of order), or None."""
    expected = [first] * streams
    for s_text, n_text in POSITION.findall(data):
        s, n = int(s_text), int(n_text)
        if s >= streams:
            return f"a message of stream s{s}, which it does not stream from"
        if n != expected[s]:
            return f"stream s{s}: message {n} where {expected[s]} was due"
        expected[s] = n + 1
    short = [s for s, n in enumerate(expected) if n != first + rounds]
    if short:
        return f"stream s{short[0]}: {expected[short[0]] - first} of {rounds} messages"
    return None


async def _measure(kind: str, port: int, pid: int, shape: str, args: argparse.Namespace
                   ) -> dict[str, Any]:  # fmt: skip
    from _common import cpu_seconds, proc_tree

    streams, per_tick = SHAPES[shape]
    ident = json.dumps({"channel": "BurstChannel", "streams": streams})
    sem = asyncio.Semaphore(100)

    async def one() -> _Client:
        async with sem:
            client: _Client = await _Client.open(port, ident)
            return client

    clients = await asyncio.gather(*(one() for _ in range(args.clients)))
    control = clients[0]
    rounds_per_burst = max(1, args.broadcasts // streams)
    rates: list[float] = []
    cpu: list[float] = []
    problems: list[str] = []
    sent_rounds = 0
    for i in range(args.repeat + 1):  # the first burst warms up
        for c in clients:
            c.chunks.clear()
        base = sum(c.count for c in clients)
        want = base + rounds_per_burst * streams * len(clients)
        pids = proc_tree([pid])
        cpu0 = cpu_seconds(pids)
        data = json.dumps({"action": "burst", "rounds": rounds_per_burst, "streams": streams,
                           "per_tick": per_tick, "size": args.size})  # fmt: skip
        assert control.transport is not None
        control.transport.write(client_frame(json.dumps(
            {"command": "message", "identifier": ident, "data": data})))  # fmt: skip
        first = last = None
        got = base
        deadline = time.monotonic() + args.max_seconds
        while got < want and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
            now = sum(c.count for c in clients)
            if now != got:
                if first is None:
                    first = time.perf_counter()
                last = time.perf_counter()
                got = now
        used = cpu_seconds(pids) - cpu0
        if got < want:
            problems.append(f"burst {i}: {got - base} of {want - base} deliveries arrived")
            break
        for c in clients:
            wrong = check_order(b"".join(c.chunks), streams, rounds_per_burst)
            if wrong:
                problems.append(f"burst {i}: {wrong}")
                break
        sent_rounds += rounds_per_burst
        if i and first is not None and last is not None:
            rates.append((want - base) / max(last - first, 1e-9))
            cpu.append(used / (want - base))
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    return {
        "scenario": "bursts",
        "shape": shape,
        "server": kind,
        "clients": args.clients,
        "streams_per_connection": streams,
        "broadcasts_per_tick": per_tick,
        "deliveries_per_burst": rounds_per_burst * streams * args.clients,
        "deliveries_per_s": round(statistics.median(rates)) if rates else None,
        "server_cpu_us_per_delivery": round(statistics.median(cpu) * 1e6, 2) if cpu else None,
        "complete": not problems,
        "problems": problems,
    }


def run_bursts(kind: str, shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """One server, one shape: start the server, measure, stop it."""
    import uvloop
    from _common import _wait_port, free_port, raise_nofile_limit

    raise_nofile_limit()
    port = free_port()
    proc = _start(kind, port)
    try:
        _wait_port(port, 30, proc)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_measure(kind, port, proc.pid, shape, args))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (also the defaults the harness tests start from)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--broadcasts", type=int, default=1000, help="broadcasts per burst")
    ap.add_argument("--repeat", type=int, default=3, help="measured bursts (after a warm-up)")
    ap.add_argument("--size", type=int, default=64, help="padding bytes per message")
    ap.add_argument("--servers", default="cablecar,floor")
    ap.add_argument("--shapes", default="ticks,streams")
    ap.add_argument("--max-seconds", type=float, default=120, help="per burst")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every shape on every server (interleaved), print JSON lines and a table."""
    args = parse_args(argv)
    results = []
    for shape in args.shapes.split(","):
        for kind in args.servers.split(","):
            result = run_bursts(kind, shape, args)
            print(json.dumps(result), flush=True)
            results.append(result)
    print(f"\n{'shape':<8} {'server':<9} {'deliveries/s':>13} {'÷ floor':>8} "
          f"{'CPU us/delivery':>16} {'÷ floor':>8}  complete")  # fmt: skip
    for r in results:
        floor = next((f for f in results if f["shape"] == r["shape"] and f["server"] == "floor"
                      and f["deliveries_per_s"]), None)  # fmt: skip
        rate_ratio = cpu_ratio = "-"
        if floor and r["deliveries_per_s"]:
            rate_ratio = f"{r['deliveries_per_s'] / floor['deliveries_per_s']:.2f}x"
            cpu_ratio = (
                f"{r['server_cpu_us_per_delivery'] / floor['server_cpu_us_per_delivery']:.2f}x"
            )
        print(f"{r['shape']:<8} {r['server']:<9} {r['deliveries_per_s'] or 0:>13,} "
              f"{rate_ratio:>8} {r['server_cpu_us_per_delivery'] or 0:>16} {cpu_ratio:>8}  "
              f"{r['complete']}")  # fmt: skip
    return 0 if all(r["complete"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
