"""Fan-out: N subscribers on one stream; paced latency, burst throughput, server CPU per delivery.

Drives a fresh server with the anchors' Node load client (``$A/bench/run.sh``): connect and
subscribe N clients to ``BenchmarkChannel`` (stream ``all``), send ``--broadcasts`` paced
broadcasts (one every ``--interval`` ms, never overlapping) for delivery latency, then a
back-to-back burst for throughput. Server CPU during the burst is read here from
``/proc/<pid>/stat`` over the server's process tree, between the client's "latency:" progress
line (the burst starts 300 ms later) and its "throughput:" line (every burst delivery counted).

    .venv/bin/python benchmarks/fanout.py --server floor --clients 1000

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from _common import (
    ALL_KINDS,
    CABLECAR_KINDS,
    CpuSnapshot,
    Server,
    anchors_home,
    harness_command,
    last_json_line,
    machine_info,
    node_env,
    raise_nofile_limit,
    run_load_client,
    scenario_main,
)

__all__ = ["SLOW_KINDS", "default_burst", "main", "run_fanout"]

# Servers that deliver fewer than ~10 k messages/s: their burst stays at 10 broadcasts so a run
# finishes in minutes; the fast ones get enough broadcasts for ~200 k deliveries per burst, so
# CPU ticks (10 ms) and the 3-second pings are small against the burst.
SLOW_KINDS = ("rails-async", "rails-redis", "django-memory", "django-redis")
# CableConfig.command_burst: commands one connection may send at once before cablecar refuses
CABLECAR_COMMAND_BURST = 500


def default_burst(kind: str, clients: int) -> int:
    """Broadcasts in the throughput burst for this kind and size."""
    if kind in SLOW_KINDS:
        return 10
    return max(10, min(200, math.ceil(200_000 / max(clients, 1))))


def run_fanout(
    kind: str,
    clients: int,
    *,
    broadcasts: int = 10,
    burst: int | None = None,
    interval: int = 100,
    concurrency: int = 50,
    sources: int = 8,
    settle: int = 2000,
    bcast_timeout: int = 60,
    max_seconds: int = 1200,
    echo: bool = True,
) -> dict[str, Any]:
    """Run one fan-out measurement against a fresh server of ``kind``.

    Returns:
        The result record (see the module docstring); ``complete`` is true only when every
        expected delivery arrived and every client connected.
    """
    raise_nofile_limit()
    a = anchors_home()
    burst = default_burst(kind, clients) if burst is None else burst
    if kind in CABLECAR_KINDS and 1 + broadcasts + burst > CABLECAR_COMMAND_BURST:
        # the sender performs every broadcast; past the burst cablecar refuses commands
        raise ValueError(
            f"{1 + broadcasts + burst} broadcasts from one sender exceed cablecar's default "
            f"command burst ({CABLECAR_COMMAND_BURST}); use fewer"
        )
    info = machine_info()
    with Server(kind) as srv:
        time.sleep(1)
        cmd = harness_command(
            a,
            srv,
            clients=clients,
            broadcasts=broadcasts,
            burst=burst,
            interval=interval,
            concurrency=concurrency,
            sources=sources,
            settle=settle,
            bcast_timeout=bcast_timeout,
            max_seconds=max_seconds,
        )

        aborted: list[str] = []

        def stop(line: str) -> bool:
            if "warmup broadcast INCOMPLETE" in line:
                # every later broadcast would wait out its timeout too: minutes for nothing
                aborted.append(line.split("] ", 1)[-1].strip())
                return True
            return False

        out, snaps = run_load_client(
            srv,
            cmd,
            {"] latency:": "burst_start", "] throughput:": "burst_end"},
            timeout=max_seconds + 60,
            env=node_env(history="history" in kind),
            prefix=f"[fanout {kind} N={clients}] " if echo else None,
            stop=stop,
        )
        pids = srv.pids()
    if aborted:
        h = {"aborted": True, "subscribed": None, "abort_reason": aborted[0]}
    else:
        h = last_json_line(out)
    r = summarize(kind, clients, broadcasts, burst, h, snaps, len(pids), info)
    if aborted:
        r["problems"].insert(0, f"stopped after {aborted[0]}")
    return r


def summarize(
    kind: str,
    clients: int,
    broadcasts: int,
    burst: int,
    h: dict[str, Any],
    snaps: dict[str, CpuSnapshot],
    nprocs: int,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Turn the harness's JSON and our CPU snapshots into the scenario's result record."""
    lat = h.get("latency") or {}
    thr = h.get("throughput") or {}
    subscribed = int(h.get("subscribed") or 0)
    delivered = int(thr.get("delivered") or 0)
    cpu_us = redis_us = cpu_s = cpu_pct = None
    if "burst_start" in snaps and "burst_end" in snaps and delivered:
        s0, s1 = snaps["burst_start"], snaps["burst_end"]
        cpu_s = s1.server_cpu - s0.server_cpu
        cpu_us = cpu_s / delivered * 1e6
        elapsed = thr.get("elapsed_s")
        if elapsed:
            # Share of one core over the burst (200 = both cores of this box).
            cpu_pct = cpu_s / float(elapsed) * 100
        if s0.has_redis:
            redis_us = (s1.redis_cpu - s0.redis_cpu) / delivered * 1e6
    problems = []
    if h.get("aborted"):
        problems.append("aborted")
    if h.get("connect_errors"):
        problems.append(f"{h['connect_errors']} connect errors")
    if subscribed != clients:
        problems.append(f"subscribed {subscribed}/{clients}")
    if lat.get("deliveries") != subscribed * broadcasts:
        problems.append(f"latency deliveries {lat.get('deliveries')}/{subscribed * broadcasts}")
    if delivered != subscribed * burst:
        problems.append(f"burst deliveries {delivered}/{subscribed * burst}")
    if h.get("closed_early"):
        problems.append(f"{h['closed_early']} clients dropped")
    if h.get("unknown_msgs"):
        problems.append(f"{h['unknown_msgs']} unexpected messages")
    r2 = _r
    return {
        "scenario": "fanout",
        "server": kind,
        "clients": clients,
        "subscribed": subscribed,
        "broadcasts": broadcasts,
        "burst": burst,
        "p50_ms": lat.get("p50_ms"),
        "p95_ms": lat.get("p95_ms"),
        "p99_ms": lat.get("p99_ms"),
        "max_ms": lat.get("max_ms"),
        "last_client_p50_ms": (lat.get("last_client_ms") or {}).get("p50"),
        "latency_deliveries": lat.get("deliveries"),
        "latency_expected": subscribed * broadcasts,
        "deliveries": delivered,
        "expected": subscribed * burst,
        "deliveries_per_s": thr.get("deliveries_per_s"),
        "server_cpu_s": r2(cpu_s, 3),
        "server_cpu_us_per_delivery": r2(cpu_us, 2),
        "redis_cpu_us_per_delivery": r2(redis_us, 2),
        "server_cpu_pct": r2(cpu_pct, 0),
        "client_cpu_pct": thr.get("client_cpu_pct"),
        "server_processes": nprocs,
        "kb_per_conn": h.get("kb_per_conn"),
        "connect_per_s": h.get("connect_per_s"),
        "complete": not problems,
        "problems": problems,
        "machine": info,
        "harness": h,
    }


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""

    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--clients", type=int, default=1000)
        ap.add_argument("--broadcasts", type=int, default=10, help="paced broadcasts (latency)")
        ap.add_argument(
            "--burst", type=int, default=None, help="burst broadcasts (default: by kind)"
        )
        ap.add_argument("--interval", type=int, default=100, help="ms between paced broadcasts")
        ap.add_argument("--concurrency", type=int, default=50)
        ap.add_argument("--sources", type=int, default=8, help="client source addresses 127.0.0.x")
        ap.add_argument("--settle", type=int, default=2000)
        ap.add_argument("--bcast-timeout", type=int, default=60)
        ap.add_argument("--max-seconds", type=int, default=1200)

    return scenario_main(
        argv,
        __doc__,
        ALL_KINDS,
        options,
        run_fanout,
        out_help="also append the JSON line to this file",
        quiet_help="don't echo the client's progress",
    )


if __name__ == "__main__":
    raise SystemExit(main())
