"""Run every scenario against cablecar and the anchors in ONE run; print the table of ratios.

What ``make bench`` runs. Each measurement gets a fresh server; results go to
``benchmarks/results/run-<time>.jsonl`` (one JSON line per measurement, plus a "meta" line)
and the markdown report (``report.py``) to ``run-<time>.md`` and stdout.

    .venv/bin/python benchmarks/run_all.py                      # full: 1,000 / 5,000 / 10,000
    .venv/bin/python benchmarks/run_all.py --quick              # small sizes, a few minutes
    .venv/bin/python benchmarks/run_all.py --servers cablecar,floor --scenarios fanout,roundtrip
    .venv/bin/python benchmarks/run_all.py --report benchmarks/results/run-X.jsonl   # re-render

The full run takes about 45 minutes on a 2-core machine (Django's in-memory layer alone needs
minutes at 5,000 subscribers; it is not run at 10,000, where one broadcast would take about a
minute — pass ``--include-slow`` to run it anyway).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    ALL_KINDS,
    BENCH_DIR,
    REPO,
    RESULTS_DIR,
    anchors_home,
    last_json_line,
    machine_info,
    raise_nofile_limit,
)
from many_streams import STREAM_KINDS
from report import load, render

__all__ = ["DEFAULT_SERVERS", "SCENARIOS", "main", "plan"]

DEFAULT_SERVERS = (
    "cablecar",
    "cablecar-redis",
    "cablecar-workers2-redis",
    "floor",
    "rails-async",
    "rails-redis",
    "django-memory",
    "django-redis",
)
SCENARIOS = ("roundtrip", "fanout", "many_streams", "connect_storm", "idle_memory")
FULL = {
    "fanout": [1000, 5000, 10000],
    "many_streams": [5000],
    "connect_storm": [10000],
    "idle_memory": [10000],
    "roundtrip": [2000],  # round trips, not clients
}
QUICK = {
    "fanout": [200, 1000],
    "many_streams": [500],
    "connect_storm": [1000],
    "idle_memory": [1000],
    "roundtrip": [300],
}
TIMEOUT = {"fanout": 1800, "many_streams": 1200, "connect_storm": 900, "idle_memory": 900}


def plan(
    scenarios: list[str],
    servers: list[str],
    sizes: dict[str, list[int]],
    include_slow: bool,
    reps: int = 1,
) -> list[tuple[str, str, int, str | None]]:
    """(scenario, server, size, reason-to-skip) for every measurement, in run order.

    Sizes go from small to large, and within a size every server runs before the next size, so
    a drift in the machine's load spreads over all servers rather than landing on one; with
    ``reps`` > 1 the whole round of servers repeats (the report takes medians).
    """
    out: list[tuple[str, str, int, str | None]] = []
    for sc in scenarios:
        for n in sizes[sc]:
            for k in [k for _ in range(reps) for k in servers]:
                skip = None
                if sc == "many_streams" and k not in STREAM_KINDS:
                    skip = "serves one stream only"
                elif sc == "fanout" and k == "django-memory" and n > 5000 and not include_slow:
                    skip = "in-memory layer: minutes per broadcast at this size (--include-slow)"
                out.append((sc, k, n, skip))
    return out


def _command(sc: str, k: str, n: int, quick: bool) -> list[str]:
    py = sys.executable
    base = [py, str(BENCH_DIR / f"{sc}.py"), "--server", k, "--quiet"]
    if sc == "roundtrip":
        return [*base, "--count", str(n)]
    if sc == "many_streams":
        return [*base, "--clients", str(n), "--per-stream", "5"] + (
            ["--rounds", "5", "--burst", "5"] if quick else []
        )
    if sc == "fanout" and quick:
        return [*base, "--clients", str(n), "--settle", "1000"]
    if sc == "idle_memory" and quick:
        return [*base, "--clients", str(n), "--settle", "1.5"]
    return [*base, "--clients", str(n)]


def _one_line(r: dict[str, Any]) -> str:
    sc = r.get("scenario")
    ok = "complete" if r.get("complete") else "INCOMPLETE " + "; ".join(r.get("problems") or [])
    if sc in ("fanout", "many_streams"):
        return (
            f"{r.get('deliveries_per_s')} deliveries/s, p99 {r.get('p99_ms')} ms, "
            f"{r.get('server_cpu_us_per_delivery')} µs/delivery; {ok}"
        )
    if sc == "connect_storm":
        return f"{r.get('connect_per_s')} conn/s; {ok}"
    if sc == "roundtrip":
        return f"p50 {r.get('p50_ms')} ms p99 {r.get('p99_ms')} ms; {ok}"
    if sc == "idle_memory":
        return f"{r.get('kb_per_conn')} kB/conn, kept {r.get('retained_fraction')}; {ok}"
    return ok


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    ap.add_argument("--servers", default=",".join(DEFAULT_SERVERS), help="comma-separated kinds")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--sizes", help="override fan-out sizes, e.g. 1000,5000")
    ap.add_argument("--reps", type=int, default=1, help="repeat each measurement (medians)")
    ap.add_argument("--include-slow", action="store_true", help="Django in-memory at 10,000")
    ap.add_argument("--out", help="results file (default results/run-<time>.jsonl)")
    ap.add_argument("--report", nargs="+", metavar="JSONL", help="only render these results")
    a = ap.parse_args(argv)
    if a.report:
        print(render(load(a.report)))
        return 0
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in servers:
        if s not in ALL_KINDS:
            ap.error(f"unknown server {s!r}; kinds: {', '.join(ALL_KINDS)}")
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; scenarios: {', '.join(SCENARIOS)}")
    sizes = {k: list(v) for k, v in (QUICK if a.quick else FULL).items()}
    if a.sizes:
        sizes["fanout"] = [int(x) for x in a.sizes.split(",")]
    raise_nofile_limit()
    anchors_home()  # install once; the scenario processes inherit $CABLECAR_ANCHORS
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(a.out) if a.out else RESULTS_DIR / f"run-{stamp}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "examples"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        check=False,
    ).stdout.strip()
    if commit and dirty:
        commit += " (with uncommitted changes)"
    meta = json.dumps(
        {
            "scenario": "meta",
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "commit": commit or "?",
            "quick": a.quick,
            "servers": servers,
            "scenarios": scenarios,
            "sizes": {k: sizes[k] for k in scenarios},
            "reps": a.reps,
            "machine": machine_info(),
        },
        separators=(",", ":"),
    )
    out.write_text(meta + "\n")
    steps = plan(scenarios, servers, sizes, a.include_slow, a.reps)
    t_all = time.monotonic()
    for i, (sc, k, n, skip) in enumerate(steps, 1):
        tag = f"[{i}/{len(steps)} {sc} {k} N={n}]"
        if skip:
            print(f"{tag} skipped: {skip}", file=sys.stderr, flush=True)
            continue
        t0 = time.monotonic()
        print(f"{tag} ...", file=sys.stderr, flush=True)
        try:
            p = subprocess.run(
                _command(sc, k, n, a.quick),
                capture_output=True,
                text=True,
                timeout=TIMEOUT.get(sc, 900),
                check=False,
                cwd=REPO,
            )
            r = last_json_line(p.stdout)
        except subprocess.TimeoutExpired:
            r = {"complete": False, "error": f"timed out after {TIMEOUT.get(sc, 900)}s"}
        except ValueError:
            r = {"complete": False, "error": (p.stderr or "no output").strip()[-400:]}
        r.setdefault("scenario", sc)
        r.setdefault("server", k)
        r.setdefault("clients", n)
        if sc == "roundtrip":
            r["clients"] = 0
        r.setdefault("problems", [r["error"]] if r.get("error") else [])
        with open(out, "a") as f:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
        print(
            f"{tag} {_one_line(r)} ({time.monotonic() - t0:.0f}s)"
            + (f" error: {r['error'][-300:]}" if r.get("error") else ""),
            file=sys.stderr,
            flush=True,
        )
    md = render(load([out]))
    out.with_suffix(".md").write_text(md + "\n")
    print(f"results: {out} ({(time.monotonic() - t_all) / 60:.1f} min)", file=sys.stderr)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
