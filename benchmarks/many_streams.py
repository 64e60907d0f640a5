"""Many streams, few subscribers each: per-broadcast overhead rather than per-socket writes.

N clients join ``ChatChannel`` rooms of ``--per-stream`` members (N / per-stream streams). One
member of every room speaks: ``--rounds`` paced rounds (all rooms at once, the next round when
every delivery of this one arrived) for latency, then ``--burst`` speaks per room back to back
for throughput. Each speak is an action (parse, dispatch, ``cable.broadcast``) whose message
reaches the room's members. The load client (``benchmarks/loadclient.js``) counts every delivery
per (room, seq) and checks it reached only members of that room.

Servers: cablecar kinds, ``rails-*`` (the anchor app has the same ChatChannel) and ``floor``
(here: ``benchmarks/servers/floor_streams.py``, the anchors' floor with per-room streams).
The Django and Node anchors serve one stream only, so they are not supported here.

    .venv/bin/python benchmarks/many_streams.py --server floor --clients 5000 --per-stream 5
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import (
    CABLECAR_KINDS,
    Server,
    last_json_line,
    loadclient_command,
    machine_info,
    node_env,
    raise_nofile_limit,
    run_load_client,
    scenario_main,
)

__all__ = ["STREAM_KINDS", "main", "run_many_streams"]

STREAM_KINDS = (*CABLECAR_KINDS, "floor", "rails-async", "rails-redis")


def run_many_streams(
    kind: str,
    clients: int,
    *,
    per_stream: int = 5,
    rounds: int = 10,
    burst: int = 20,
    interval: int = 100,
    concurrency: int = 50,
    max_seconds: int = 900,
    echo: bool = True,
) -> dict[str, Any]:
    """Run one many-streams measurement against a fresh server of ``kind``."""
    if kind not in STREAM_KINDS:
        raise ValueError(f"many_streams supports {', '.join(STREAM_KINDS)}, not {kind}")
    raise_nofile_limit()
    info = machine_info()
    with Server(kind, streams=True) as srv:
        time.sleep(1)
        cmd = loadclient_command(
            "streams",
            url=srv.url,
            clients=clients,
            per_stream=per_stream,
            rounds=rounds,
            burst=burst,
            interval=interval,
            concurrency=concurrency,
            max_seconds=max_seconds,
        )
        out, snaps = run_load_client(
            srv,
            cmd,
            {"] latency:": "burst_start", "] throughput:": "burst_end"},
            timeout=max_seconds + 60,
            env=node_env(),
            prefix=f"[streams {kind} N={clients}] " if echo else None,
        )
    c = last_json_line(out)
    lat = c.get("latency") or {}
    thr = c.get("throughput") or {}
    delivered = int(thr.get("delivered") or 0)
    cpu_us = redis_us = None
    if "burst_start" in snaps and "burst_end" in snaps and delivered:
        s0, s1 = snaps["burst_start"], snaps["burst_end"]
        cpu_us = round((s1.server_cpu - s0.server_cpu) / delivered * 1e6, 2)
        if s0.has_redis:
            redis_us = round((s1.redis_cpu - s0.redis_cpu) / delivered * 1e6, 2)
        messages = int(thr.get("messages") or 0)
        cpu_msg = (s1.server_cpu - s0.server_cpu) / messages * 1e6 if messages else None
    else:
        cpu_msg = None
    problems = []
    if c.get("event") != "result":
        problems.append(f"client {c.get('event')}: {c.get('reason')}")
    if c.get("subscribed") != clients:
        problems.append(f"subscribed {c.get('subscribed')}/{clients}")
    if lat.get("deliveries") != lat.get("expected"):
        problems.append(f"latency deliveries {lat.get('deliveries')}/{lat.get('expected')}")
    if delivered != thr.get("expected"):
        problems.append(f"burst deliveries {delivered}/{thr.get('expected')}")
    for k in ("misrouted", "duplicates", "rooms_short", "closed_early", "unknown_msgs"):
        if c.get(k):
            problems.append(f"{c[k]} {k.replace('_', ' ')}")
    return {
        "scenario": "many_streams",
        "server": kind,
        "clients": clients,
        "per_stream": per_stream,
        "streams": c.get("rooms"),
        "subscribed": c.get("subscribed"),
        "rounds": rounds,
        "burst": burst,
        "p50_ms": lat.get("p50_ms"),
        "p99_ms": lat.get("p99_ms"),
        "max_ms": lat.get("max_ms"),
        "latency_deliveries": lat.get("deliveries"),
        "latency_expected": lat.get("expected"),
        "deliveries": delivered,
        "expected": thr.get("expected"),
        "deliveries_per_s": thr.get("deliveries_per_s"),
        "messages_per_s": thr.get("messages_per_s"),
        "server_cpu_us_per_delivery": cpu_us,
        "server_cpu_us_per_message": None if cpu_msg is None else round(cpu_msg, 2),
        "redis_cpu_us_per_delivery": redis_us,
        "complete": not problems,
        "problems": problems,
        "machine": info,
        "client": c,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""

    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--clients", type=int, default=5000)
        ap.add_argument("--per-stream", type=int, default=5)
        ap.add_argument("--rounds", type=int, default=10)
        ap.add_argument("--burst", type=int, default=20)
        ap.add_argument("--interval", type=int, default=100)
        ap.add_argument("--concurrency", type=int, default=50)
        ap.add_argument("--max-seconds", type=int, default=900)

    return scenario_main(argv, __doc__, STREAM_KINDS, options, run_many_streams)


if __name__ == "__main__":
    raise SystemExit(main())
