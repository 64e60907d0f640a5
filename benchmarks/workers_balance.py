"""Multi-core balance: how ``cablecar serve --workers 2`` spreads connections and fan-out work.

Starts ``cablecar serve examples/conformance_app.py:cable --workers 2 --pubsub redis://...``
(a throwaway ``redis-server`` on a free port: the ``cablecar-workers2-redis`` kind of
``_common.Server``). The supervisor starts two worker processes that each listen on the port
with ``SO_REUSEPORT``; the kernel picks a worker for every new connection.

1. **Balance.** N clients (``--clients``, 10,000 by default) connect and subscribe to
   ``BenchmarkChannel`` (stream ``all``). Then every established connection on the server port
   is matched to the worker that holds its socket (the socket inodes of
   ``/proc/<worker>/fd`` against the ESTABLISHED entries of ``/proc/net/tcp{,6}``), and each
   client is matched to its worker by its local port. Reported: connections per worker and
   the max/min ratio.
2. **Fan-out burst.** One client performs ``broadcast`` B times back to back (``--broadcasts``;
   the worker holding it publishes each message to Redis, and both workers deliver it to their
   subscribers); or, with ``--source broadcaster``, the load client publishes the B messages
   straight to Redis with ``cablecar.Broadcaster`` (both workers then do the same work);
   ``--rounds`` bursts after a warm-up one. The clients count every delivery;
   for each worker: the deliveries its clients counted (must equal its connections x B), its
   time on CPU during the burst (``/proc/<pid>/task/*/schedstat``, in ns: a worker's burst is
   a few tens of 10 ms ticks of ``/proc/<pid>/stat``) and CPU µs per delivery. Redis's CPU per
   delivery is shown apart. Any missing delivery makes the run incomplete (reported, with
   the count).

The load client is one Python process of raw sockets on uvloop (``_common.RawSubscriber``:
handshake by hand, deliveries counted with ``bytes.count`` on the raw stream). Prints one
JSON line (``--out`` appends it to a file too), then a short table.

    .venv/bin/python benchmarks/workers_balance.py                      # 10,000 clients
    .venv/bin/python benchmarks/workers_balance.py --quick              # 2,000 clients
    .venv/bin/python benchmarks/workers_balance.py --source broadcaster # publish via Redis
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from _common import (
    RawSubscriber,
    Server,
    client_frame,
    emit,
    machine_info,
    raise_nofile_limit,
)

__all__ = [
    "cpu_ns",
    "established_inodes",
    "main",
    "run_balance",
    "socket_inodes",
    "worker_pids",
]

KIND = "cablecar-workers2-redis"
IDENT = '{"channel":"BenchmarkChannel"}'
#: In every delivery of a burst broadcast, and in the control client's broadcastResult.
MARK = b'"wbal":'
RESULT = b"broadcastResult"


# ---------------------------------------------------------------------------------------------
# Which worker holds which connection (from /proc)
# ---------------------------------------------------------------------------------------------


def worker_pids(root: int) -> list[int]:
    """The children of the supervisor process ``root`` (its worker processes), sorted."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{root}/task"):
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{root}/task/{tid}/children").read_text().split()
                out += [int(c) for c in children]
    return sorted(set(out))


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open (``socket:[inode]`` in its fds)."""
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    return inodes


def _tcp_entries(port: int, states: Iterable[str]) -> Iterable[tuple[int, int]]:
    """(inode, remote port) of every ``/proc/net/tcp{,6}`` entry with local port ``port``
    in one of ``states`` (hex, as the kernel writes them: 01 ESTABLISHED, 0A LISTEN)."""
    wanted = set(states)
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) < 10 or parts[3] not in wanted:
                    continue
                if int(parts[1].rsplit(":", 1)[1], 16) != port:
                    continue
                yield int(parts[9]), int(parts[2].rsplit(":", 1)[1], 16)


def established_inodes(port: int) -> dict[int, int]:
    """inode -> remote (client) port of every ESTABLISHED connection accepted on ``port``."""
    return dict(_tcp_entries(port, ("01",)))


def listening_workers(port: int, workers: list[int]) -> list[int]:
    """The workers that hold a listening socket on ``port``."""
    listening = {inode for inode, _ in _tcp_entries(port, ("0A",))}
    return [w for w in workers if socket_inodes(w) & listening]


def connections_by_worker(port: int, workers: list[int]) -> dict[int, set[int]]:
    """worker pid -> the client ports of the connections it holds on ``port``
    (``-1``: connections no worker holds)."""
    est = established_inodes(port)
    out: dict[int, set[int]] = {w: set() for w in workers}
    seen: set[int] = set()
    for w in workers:
        for inode in socket_inodes(w) & est.keys():
            out[w].add(est[inode])
            seen.add(inode)
    out[-1] = {est[i] for i in est.keys() - seen}
    return out


def cpu_ns(pids: Iterable[int]) -> int:
    """Time on CPU (ns) of the given processes, all their threads (``/proc/<pid>/task/*/
    schedstat``: nanoseconds, where ``/proc/<pid>/stat`` counts 10 ms ticks; a worker's
    CPU in a short burst is tens of ticks)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total


def pubsub_url(pid: int) -> str:
    """The ``--pubsub`` URL on the command line of process ``pid``."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return args[args.index("--pubsub") + 1]


# ---------------------------------------------------------------------------------------------
# The load client
# ---------------------------------------------------------------------------------------------


class Tally:
    """Deliveries counted by all clients together (one number to poll, not N)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


class Subscriber(RawSubscriber):
    """Counts burst deliveries (``MARK``), minus the control client's broadcastResults."""

    tally: Tally

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.count = 0
        self.results = 0
        self.tail = b""

    def received(self, data: bytes) -> None:
        chunk = self.tail + data
        # A marker cut between two reads is counted once: in the read that completes it.
        n = chunk.count(MARK) - self.tail.count(MARK)
        r = chunk.count(RESULT) - self.tail.count(RESULT)
        self.tail = chunk[-16:]
        self.results += r
        self.count += n - r
        self.tally.total += n - r


async def _drive(srv: Server, workers: list[int], a: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    Subscriber.tally = tally
    sem = asyncio.Semaphore(a.concurrency)
    errors: list[str] = []

    async def one() -> Subscriber | None:
        async with sem:
            try:
                return await Subscriber.open(srv.port, IDENT)  # type: ignore[no-any-return]
            except Exception as e:  # counted and reported, never hidden
                errors.append(repr(e)[:200])
                return None

    t0 = time.monotonic()
    opened = await asyncio.gather(*(one() for _ in range(a.clients)))
    connect_s = time.monotonic() - t0
    clients = [c for c in opened if c is not None]
    await asyncio.sleep(0.5)  # let the last subscriptions settle in the kernel's tables
    by_worker = connections_by_worker(srv.port, workers)
    port_worker = {p: w for w, ports in by_worker.items() for p in ports}
    client_worker: list[int | None] = []
    for c in clients:
        assert c.transport is not None
        client_worker.append(port_worker.get(c.transport.get_extra_info("sockname")[1]))
    result: dict[str, Any] = {
        "connect_s": round(connect_s, 2),
        "connect_errors": len(errors),
        "connect_error_samples": errors[:3],
        "subscribed": len(clients),
        "connections_per_worker": [len(by_worker[w]) for w in workers],
        "connections_no_worker": len(by_worker[-1]),
        "clients_unmatched": sum(1 for w in client_worker if w is None),
        # The worker that takes the broadcast commands and publishes them to Redis.
        "control_worker": client_worker[0] if client_worker else None,
    }
    if not clients:
        return result
    control = clients[0]
    assert control.transport is not None
    expected = {w: 0 for w in workers}
    broadcaster: Any = None

    async def burst(n: int) -> dict[str, Any]:
        base = tally.total
        want = base + n * len(clients)
        for w in workers:
            expected[w] += n * len(by_worker[w])
        tree, redis = srv.pids(), srv.redis_pids()
        tree0, redis0 = cpu_ns(tree), cpu_ns(redis)
        cpu0 = {w: cpu_ns([w]) for w in workers}
        if broadcaster is not None:
            # One at a time, each after Redis took the one before (as the action path's
            # publishes go): published all at once, the workers would read them in one
            # batch and write all of them to each socket in one write.
            pad = "x" * a.size
            for i in range(n):
                await broadcaster.broadcast("all", {"wbal": i, "pad": pad})
        else:
            for i in range(n):
                data = json.dumps({"action": "broadcast", "wbal": i, "pad": "x" * a.size})
                msg = {"command": "message", "identifier": IDENT, "data": data}
                control.transport.write(client_frame(json.dumps(msg)))  # type: ignore[union-attr]
        first = None
        deadline = time.monotonic() + a.burst_timeout
        while True:
            got = tally.total
            if first is None and got > base:
                first = time.perf_counter()
            if got >= want or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.002)
        end = time.perf_counter()
        cpu1 = {w: cpu_ns([w]) for w in workers}
        tree1, redis1 = cpu_ns(tree), cpu_ns(redis)
        await asyncio.sleep(0.2)  # duplicates, if any, arrive now and show in the totals
        delivered = tally.total - base
        per_worker = []
        for w in workers:
            deliveries = n * len(by_worker[w])
            cpu = (cpu1[w] - cpu0[w]) / 1e9
            per_worker.append(
                {
                    "pid": w,
                    "deliveries": deliveries,
                    "cpu_s": round(cpu, 4),
                    "cpu_us_per_delivery": round(cpu / deliveries * 1e6, 2) if deliveries else None,
                }
            )
        total_cpu = (tree1 - tree0) / 1e9
        return {
            "broadcasts": n,
            "expected": want - base,
            "delivered": delivered,
            "deliveries_per_s": round(delivered / max(end - (first or end), 1e-9)),
            "server_cpu_us_per_delivery": round(total_cpu / max(delivered, 1) * 1e6, 2),
            "redis_cpu_us_per_delivery": round(
                (redis1 - redis0) / 1e9 / max(delivered, 1) * 1e6, 3
            ),
            "workers": per_worker,
        }

    if a.source == "broadcaster":
        from cablecar import Broadcaster

        broadcaster = Broadcaster(pubsub_url(srv.pids()[0]))
        result["control_worker"] = None
    try:
        warm = await burst(a.warmup)
        rounds = [await burst(a.broadcasts) for _ in range(a.rounds)]
    finally:
        if broadcaster is not None:
            await broadcaster.close()
    # Per worker: what its own clients counted against what it should have delivered.
    counted = {w: 0 for w in workers}
    for c, w in zip(clients, client_worker, strict=True):
        if w is not None and w != -1:
            counted[w] += c.count
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    result.update(
        {
            "warmup": warm,
            "rounds": rounds,
            "deliveries_counted_per_worker": [counted[w] for w in workers],
            "deliveries_expected_per_worker": [expected[w] for w in workers],
        }
    )
    return result


def _ratio(counts: list[int] | list[float]) -> float | None:
    return round(max(counts) / min(counts), 3) if counts and min(counts) > 0 else None


def run_balance(
    clients: int,
    *,
    broadcasts: int = 50,
    rounds: int = 3,
    warmup: int = 5,
    size: int = 64,
    concurrency: int = 200,
    burst_timeout: float = 120.0,
    source: str = "action",
) -> dict[str, Any]:
    """Balance and fan-out cost per worker, on a fresh ``--workers 2`` server with Redis."""
    raise_nofile_limit()
    a = argparse.Namespace(
        clients=clients,
        broadcasts=broadcasts,
        rounds=rounds,
        warmup=warmup,
        size=size,
        concurrency=concurrency,
        burst_timeout=burst_timeout,
        source=source,
    )
    info = machine_info()
    with Server(KIND) as srv:
        workers = worker_pids(srv.pids()[0])
        deadline = time.monotonic() + 30
        while len(workers) < 2 or len(listening_workers(srv.port, workers)) < len(workers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {workers} not all listening on {srv.port}")
            time.sleep(0.2)
            workers = worker_pids(srv.pids()[0])
        try:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:  # pragma: no cover
            runner = asyncio.Runner()
        with runner:
            r = runner.run(_drive(srv, workers, a))
        supervisor_pid = srv.pids()[0]
    r = {
        "scenario": "workers_balance",
        "server": KIND,
        "clients": clients,
        "source": source,
        "worker_pids": workers,
        "supervisor_pid": supervisor_pid,
        **r,
        "machine": info,
    }
    conns = r["connections_per_worker"]
    r["balance_max_min"] = _ratio(conns)
    problems: list[str] = []
    if r["subscribed"] != clients:
        problems.append(f"subscribed {r['subscribed']}/{clients}")
    if sum(conns) != r["subscribed"] or r["connections_no_worker"] or r["clients_unmatched"]:
        problems.append(
            f"connections matched to a worker {sum(conns)}/{r['subscribed']} "
            f"(no worker: {r['connections_no_worker']}, clients unmatched: "
            f"{r['clients_unmatched']})"
        )
    for name, b in [("warm-up", r.get("warmup")), *(("round", x) for x in r.get("rounds", []))]:
        if b and b["delivered"] != b["expected"]:
            problems.append(f"{name} deliveries {b['delivered']}/{b['expected']}")
    if r.get("deliveries_counted_per_worker") != r.get("deliveries_expected_per_worker"):
        problems.append(
            f"deliveries per worker {r.get('deliveries_counted_per_worker')} "
            f"!= expected {r.get('deliveries_expected_per_worker')}"
        )
    rounds_ = r.get("rounds") or []
    if rounds_:
        r["cpu_us_per_delivery_per_worker"] = [
            statistics.median(x["workers"][i]["cpu_us_per_delivery"] or 0 for x in rounds_)
            for i in range(len(workers))
        ]
        r["cpu_per_delivery_max_min"] = _ratio(r["cpu_us_per_delivery_per_worker"])
        r["server_cpu_us_per_delivery"] = statistics.median(
            x["server_cpu_us_per_delivery"] for x in rounds_
        )
        r["deliveries_per_s"] = round(statistics.median(x["deliveries_per_s"] for x in rounds_))
    r["problems"] = problems
    r["complete"] = not problems
    return r


def table(r: dict[str, Any]) -> str:
    """A short human table of one result."""
    lines = [
        f"workers balance: {r['subscribed']:,}/{r['clients']:,} clients subscribed in "
        f"{r['connect_s']} s, {r.get('deliveries_per_s', 0):,} deliveries/s in the bursts",
        "",
        f"{'worker pid':>10} {'connections':>12} {'share':>7} {'deliveries/round':>17} "
        f"{'CPU us/delivery':>16}",
    ]
    total = sum(r["connections_per_worker"]) or 1
    per = r.get("cpu_us_per_delivery_per_worker") or [None] * len(r["worker_pids"])
    bcasts = r["rounds"][0]["broadcasts"] if r.get("rounds") else 0
    for pid, n, cpu in zip(r["worker_pids"], r["connections_per_worker"], per, strict=True):
        lines.append(
            f"{pid:>10} {n:>12,} {100 * n / total:>6.1f}% {n * bcasts:>17,} "
            f"{'-' if cpu is None else f'{cpu:.2f}':>16}"
            + ("  (takes the broadcast commands)" if pid == r.get("control_worker") else "")
        )
    cpu_ratio = r.get("cpu_per_delivery_max_min")
    redis = r["rounds"][0]["redis_cpu_us_per_delivery"] if r.get("rounds") else "-"
    lines.append(
        f"max/min: connections {r['balance_max_min']}x, CPU per delivery "
        f"{'-' if cpu_ratio is None else f'{cpu_ratio}x'}; whole tree "
        f"{r.get('server_cpu_us_per_delivery')} us/delivery; Redis {redis} us/delivery"
    )
    lines.append("complete" if r["complete"] else f"INCOMPLETE: {'; '.join(r['problems'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--quick", action="store_true", help="2,000 clients")
    ap.add_argument("--broadcasts", type=int, default=50, help="broadcasts per burst")
    ap.add_argument("--rounds", type=int, default=3, help="bursts after the warm-up")
    ap.add_argument("--size", type=int, default=64, help="padding bytes per message")
    ap.add_argument("--concurrency", type=int, default=200, help="handshakes in flight")
    ap.add_argument(
        "--source",
        choices=("action", "broadcaster"),
        default="action",
        help="who broadcasts: one client performing `broadcast` (its worker publishes to\n"
        "Redis), or cablecar.Broadcaster in the load client (straight to Redis)",
    )
    ap.add_argument("--out", help="also append the JSON line to this file")
    a = ap.parse_args(argv)
    # Every other option is the keyword argument of its name, as in _common.scenario_main.
    options = {k: v for k, v in vars(a).items() if k not in ("quick", "out")}
    if a.quick:
        options["clients"] = 2000
    r = run_balance(**options)
    emit(r, a.out)
    print("\n" + table(r), flush=True)
    return 0 if r["complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
