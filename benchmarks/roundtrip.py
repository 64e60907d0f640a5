"""Action round trip: one client performs ``echo`` and waits for the transmit back; no other load.

A blocking Python client (``_wsclient.py``: one socket, ``TCP_NODELAY``) subscribes to
``BenchmarkChannel``, warms up, then times ``--count`` round trips one after another
(``perform("echo", {n})`` -> ``{"identifier": ..., "message": {"action": "echo", "n": n}}``).
Django's raw protocol uses ``{"type": "echo", "payload": {n}}``. Pings are skipped.

Round trips run back to back in groups of ``--group`` (400), with a ``--pause`` (4.5 s) between
groups: cablecar refuses a connection's commands past its default rate limit
(``CableConfig.command_burst`` = 500 at once, refilled at ``max_commands_per_second`` = 100),
so a group stays within the burst and the pause refills it. Only cablecar gets the pauses (the
anchors have no such limit, and Django's Redis layer drops a consumer that idles for ~5 s);
the pauses are idle time between groups, outside every timed round trip. ``--interval MS``
paces round trips instead (one every MS milliseconds), for every server.

    .venv/bin/python benchmarks/roundtrip.py --server floor --count 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from _common import (
    ALL_KINDS,
    CABLECAR_KINDS,
    CpuSnapshot,
    Server,
    machine_info,
    raise_nofile_limit,
    scenario_main,
)
from _wsclient import WSClient, open_subscribed

__all__ = ["main", "run_roundtrip"]

IDENT = json.dumps({"channel": "BenchmarkChannel"}, separators=(",", ":"))


def _pct(xs: list[float], p: float) -> float:
    i = min(len(xs) - 1, max(0, -(-len(xs) * p // 100) - 1))
    return xs[int(i)]


REPLY_TIMEOUT = 10.0  # seconds without our echo (pings may keep arriving) = a lost reply


def _one(ws: WSClient, raw: bool, n: int) -> float:
    if raw:
        msg = json.dumps({"type": "echo", "payload": {"n": n}})
    else:
        data = json.dumps({"action": "echo", "n": n})
        msg = json.dumps({"command": "message", "identifier": IDENT, "data": data})
    t0 = time.perf_counter()
    ws.send_text(msg)
    while True:
        text = ws.recv_text()
        t1 = time.perf_counter()
        m = json.loads(text)
        body = m.get("payload") if raw else m.get("message")
        if isinstance(body, dict) and body.get("n") == n:
            return t1 - t0
        if t1 - t0 > REPLY_TIMEOUT:
            raise TimeoutError(f"no echo of round trip {n} within {REPLY_TIMEOUT:.0f}s")


class _Schedule:
    """When the next round trip may start: back to back in groups, or one every interval."""

    def __init__(self, interval: float, group: int, pause: float) -> None:
        self.interval, self.group, self.pause = interval, group, pause
        self.sent = 0
        self.t_next = time.perf_counter()

    def wait(self) -> None:
        if self.interval > 0:
            delay = self.t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.t_next = max(self.t_next + self.interval, time.perf_counter())
        elif self.sent and self.sent % self.group == 0:
            time.sleep(self.pause)
        self.sent += 1


def _timed(
    ws: WSClient, raw: bool, seqs: range, schedule: _Schedule, problems: list[str]
) -> list[float]:
    out = []
    for n in seqs:
        schedule.wait()
        try:
            out.append(_one(ws, raw, n))
        except (TimeoutError, ConnectionError) as e:
            problems.append(str(e))
            break
    return out


def run_roundtrip(
    kind: str,
    *,
    count: int = 2000,
    warmup: int = 200,
    group: int = 400,
    pause: float = 4.5,
    interval: float = 0.0,
    echo: bool = True,
) -> dict[str, Any]:
    """Time ``count`` sequential echo round trips on a fresh server of ``kind``.

    Args:
        kind: the server kind.
        count: timed round trips (after ``warmup`` untimed ones).
        group: round trips back to back before a pause (ignored when ``interval`` is set).
        pause: seconds between groups.
        interval: if > 0, milliseconds between round trip starts instead of groups.
        echo: print a summary line on stderr.
    """
    raise_nofile_limit()
    info = machine_info()
    with Server(kind) as srv:
        time.sleep(1)
        ws = open_subscribed(srv.url, srv.mode == "raw", user="rt")
        raw = srv.mode == "raw"
        try:
            # only cablecar limits a connection's command rate; Django's Redis layer drops a
            # consumer that idles ~5 s (redis-py read timeout), so the others never pause
            schedule = _Schedule(
                interval / 1000, group if kind in CABLECAR_KINDS else 1 << 30, pause
            )
            problems: list[str] = []
            _timed(ws, raw, range(-warmup, 0), schedule, problems)
            s0 = CpuSnapshot(srv)
            rtts = _timed(ws, raw, range(count), schedule, problems) if not problems else []
            s1 = CpuSnapshot(srv)
        finally:
            ws.close()
    ms = sorted(x * 1000 for x in rtts)
    if len(ms) != count:
        problems.append(f"{len(ms)}/{count} round trips")

    def q(p: float) -> float | None:
        return round(_pct(ms, p), 3) if ms else None

    r = {
        "scenario": "roundtrip",
        "server": kind,
        "count": len(ms),
        "schedule": f"every {interval} ms" if interval > 0 else f"groups of {group}",
        "p50_ms": q(50),
        "p90_ms": q(90),
        "p99_ms": q(99),
        "max_ms": q(100),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else None,
        "server_cpu_us_per_roundtrip": round((s1.server_cpu - s0.server_cpu) / len(ms) * 1e6, 1)
        if ms
        else None,
        "complete": not problems,
        "problems": problems,
        "machine": info,
    }
    if echo:
        print(
            f"[roundtrip {kind}] p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms max {r['max_ms']} ms",
            file=sys.stderr,
        )
    return r


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""

    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--count", type=int, default=2000)
        ap.add_argument("--warmup", type=int, default=200)
        ap.add_argument("--group", type=int, default=400, help="round trips back to back")
        ap.add_argument("--pause", type=float, default=4.5, help="seconds between groups")
        ap.add_argument("--interval", type=float, default=0.0, help="ms between starts (no groups)")

    return scenario_main(argv, __doc__, ALL_KINDS, options, run_roundtrip)


if __name__ == "__main__":
    raise SystemExit(main())
