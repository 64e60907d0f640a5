"""Connect storm: connections + subscriptions per second, and server CPU per connection.

The anchors' Node client (``$A/bench/run.sh``) opens N WebSockets with ``--concurrency``
handshakes in flight, each subscribing to ``BenchmarkChannel`` (Action Cable servers) or just
opening (Django's raw protocol, which joins the group on connect); the rate is subscribed
clients over the time until the last confirmation. One broadcast follows, to check every
client is live. Server CPU is read between the client's "connecting" and "subscribed" lines.

    .venv/bin/python benchmarks/connect_storm.py --server floor --clients 10000 --concurrency 200
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import (
    ALL_KINDS,
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

__all__ = ["main", "run_connect_storm"]


def run_connect_storm(
    kind: str,
    clients: int,
    *,
    concurrency: int = 200,
    sources: int = 8,
    max_seconds: int = 600,
    echo: bool = True,
) -> dict[str, Any]:
    """Run one connect storm against a fresh server of ``kind``."""
    raise_nofile_limit()
    a = anchors_home()
    info = machine_info()
    with Server(kind) as srv:
        time.sleep(1)
        cmd = harness_command(
            a,
            srv,
            clients=clients,
            broadcasts=1,
            burst=1,
            interval=0,
            concurrency=concurrency,
            sources=sources,
            settle=500,
            max_seconds=max_seconds,
        )
        out, snaps = run_load_client(
            srv,
            cmd,
            {"] connecting ": "start", "] subscribed ": "end"},
            timeout=max_seconds + 60,
            env=node_env(),
            prefix=f"[connect {kind} N={clients}] " if echo else None,
        )
    h = last_json_line(out)
    subscribed = int(h.get("subscribed") or 0)
    cpu_us = None
    if "start" in snaps and "end" in snaps and subscribed:
        cpu_us = round((snaps["end"].server_cpu - snaps["start"].server_cpu) / subscribed * 1e6, 1)
    thr = h.get("throughput") or {}
    problems = []
    if subscribed != clients:
        problems.append(f"subscribed {subscribed}/{clients}")
    if h.get("connect_errors"):
        problems.append(f"{h['connect_errors']} connect errors")
    if thr.get("delivered") != subscribed:
        problems.append(f"check broadcast reached {thr.get('delivered')}/{subscribed}")
    return {
        "scenario": "connect_storm",
        "server": kind,
        "clients": clients,
        "concurrency": concurrency,
        "subscribed": subscribed,
        "connect_s": h.get("connect_s"),
        "connect_per_s": h.get("connect_per_s"),
        "server_cpu_us_per_connect": cpu_us,
        "kb_per_conn": h.get("kb_per_conn"),
        "complete": not problems,
        "problems": problems,
        "machine": info,
        "harness": h,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""

    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--clients", type=int, default=10000)
        ap.add_argument("--concurrency", type=int, default=200)
        ap.add_argument("--sources", type=int, default=8)
        ap.add_argument("--max-seconds", type=int, default=600)

    return scenario_main(argv, __doc__, ALL_KINDS, options, run_connect_storm)


if __name__ == "__main__":
    raise SystemExit(main())
