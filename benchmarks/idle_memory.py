"""Idle memory: server RSS per idle subscribed connection, and RSS after they all disconnect.

1. Start a fresh server, warm it with one subscribed connection (opened and closed), measure
   the baseline RSS (summed over the server's process tree).
2. ``benchmarks/loadclient.js idle`` opens N connections subscribed to ``BenchmarkChannel``
   (Django: raw connections, which join the group on connect); after ``--settle`` seconds,
   measure RSS: (RSS - baseline) / N is the cost of one idle subscribed connection.
3. The client closes every connection (close handshake); when the server holds no more of
   their connections (or after 30 s) and ``--settle`` seconds more, measure RSS again: what the
   server gives back.
4. A second identical wave: RSS after it, minus RSS after the first, shows whether memory kept
   after the first wave is reused (allocator retention) or lost (a leak).

    .venv/bin/python benchmarks/idle_memory.py --server floor --clients 10000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import IO, Any

from _common import (
    ALL_KINDS,
    Server,
    connection_count,
    loadclient_command,
    machine_info,
    node_env,
    raise_nofile_limit,
    rss_kb,
    scenario_main,
)
from _wsclient import open_subscribed

__all__ = ["main", "run_idle_memory"]


def _read_event(stream: IO[str], want: str, timeout: float) -> dict[str, Any]:
    box: list[dict[str, Any]] = []

    def reader() -> None:
        for line in stream:
            line = line.strip()
            if not line.startswith("{"):
                continue
            ev = json.loads(line)
            if ev.get("event") in (want, "aborted"):
                box.append(ev)
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if not box:
        raise TimeoutError(f"load client sent no {want!r} event within {timeout}s")
    if box[0].get("event") == "aborted":
        raise RuntimeError(f"load client aborted: {box[0]}")
    return box[0]


def _settled_usage(srv: Server, settle: float) -> tuple[int, int]:
    """After ``settle`` seconds: the server's RSS (kB, over its process tree) and the
    connections it holds on its port."""
    time.sleep(settle)
    return rss_kb(srv.pids()), connection_count(srv.port)


def _wave(
    srv: Server,
    clients: int,
    concurrency: int,
    settle: float,
    max_seconds: int,
    conns0: int,
    echo: bool,
) -> dict[str, Any]:
    """Open ``clients`` idle subscribed connections, measure, close them all, measure again."""
    cmd = loadclient_command(
        "idle",
        url=srv.url,
        mode=srv.mode,
        clients=clients,
        concurrency=concurrency,
        max_seconds=max_seconds,
    )
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None if echo else subprocess.DEVNULL,
        text=True,
        env=node_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        ready = _read_event(proc.stdout, "ready", max_seconds)
        rss1, conns1 = _settled_usage(srv, settle)
        proc.stdin.write("close\n")
        proc.stdin.flush()
        closed = _read_event(proc.stdout, "closed", 60)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30 and connection_count(srv.port) > conns0:
            time.sleep(0.25)
        gone_s = round(time.monotonic() - t0, 2)
        rss2, conns2 = _settled_usage(srv, settle)
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {
        "ready": ready,
        "closed": closed,
        "rss_idle": rss1,
        "rss_after": rss2,
        "conns_idle": conns1,
        "conns_after": conns2,
        "disconnect_s": gone_s,
    }


def run_idle_memory(
    kind: str,
    clients: int,
    *,
    concurrency: int = 100,
    settle: float = 3.0,
    max_seconds: int = 600,
    waves: int = 2,
    echo: bool = True,
) -> dict[str, Any]:
    """Measure idle RSS per connection and RSS after disconnect on a fresh server of ``kind``."""
    raise_nofile_limit()
    info = machine_info()
    with Server(kind) as srv:
        time.sleep(1)
        open_subscribed(srv.url, srv.mode == "raw", user="warm").close()
        rss0, conns0 = _settled_usage(srv, 1.5)
        w1 = _wave(srv, clients, concurrency, settle, max_seconds, conns0, echo)
        # a second wave on the same server: memory the first one left behind should be reused
        w2 = (
            _wave(srv, clients, concurrency, settle, max_seconds, conns0, echo)
            if waves > 1
            else None
        )
        pids = srv.pids()
    ready, closed = w1["ready"], w1["closed"]
    rss1, rss2, conns1, conns2 = (
        w1["rss_idle"],
        w1["rss_after"],
        w1["conns_idle"],
        w1["conns_after"],
    )
    gone_s = w1["disconnect_s"]
    n = int(ready.get("subscribed") or 0)
    growth = rss1 - rss0
    retained = rss2 - rss0
    problems = []
    if n != clients:
        problems.append(f"subscribed {n}/{clients}")
    if closed.get("dropped_while_idle"):
        problems.append(f"{closed['dropped_while_idle']} dropped while idle")
    if conns2 > conns0:
        problems.append(f"server still holds {conns2 - conns0} connections after disconnect")
    if w2 is not None and w2["ready"].get("subscribed") != clients:
        problems.append(f"second wave subscribed {w2['ready'].get('subscribed')}/{clients}")
    r = {
        "scenario": "idle_memory",
        "server": kind,
        "clients": clients,
        "subscribed": n,
        "rss_baseline_kb": rss0,
        "rss_idle_kb": rss1,
        "rss_after_disconnect_kb": rss2,
        "kb_per_conn": round(growth / n, 2) if n else None,
        "retained_kb": retained,
        "retained_fraction": round(retained / growth, 3) if growth > 0 else None,
        "server_connections": {"baseline": conns0, "idle": conns1, "after": conns2},
        "second_wave": None
        if w2 is None
        else {
            "rss_idle_kb": w2["rss_idle"],
            "rss_after_disconnect_kb": w2["rss_after"],
            "growth_over_first_kb": w2["rss_after"] - rss2,
        },
        "disconnect_s": gone_s,
        "connect_per_s": ready.get("connect_per_s"),
        "server_processes": len(pids),
        "complete": not problems,
        "problems": problems,
        "machine": info,
    }
    if echo:
        print(
            f"[idle {kind} N={clients}] {r['kb_per_conn']} kB/conn; after disconnect "
            f"{retained / 1024:.1f} MB above baseline ({r['retained_fraction']} of growth)",
            file=sys.stderr,
        )
    return r


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""

    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--clients", type=int, default=10000)
        ap.add_argument("--concurrency", type=int, default=100)
        ap.add_argument("--settle", type=float, default=3.0)
        ap.add_argument("--waves", type=int, default=2, help="connect/disconnect cycles (1 or 2)")
        ap.add_argument("--max-seconds", type=int, default=600)

    return scenario_main(argv, __doc__, ALL_KINDS, options, run_idle_memory)


if __name__ == "__main__":
    raise SystemExit(main())
