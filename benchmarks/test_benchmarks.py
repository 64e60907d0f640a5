"""Correctness of the benchmark code itself: every delivery counted, every target judged right.

No timing assertions: these run the scenarios at tiny sizes against real servers (the anchors'
Python floor; cablecar when it is installed) and check the counts, then check the report's
verdicts on hand-made records.

    .venv/bin/pytest benchmarks/test_benchmarks.py
"""

from __future__ import annotations

import shutil
from collections import Counter
from typing import Any

import pytest
from _common import REPO, CpuSnapshot, Server
from connect_storm import run_connect_storm
from fanout import default_burst, run_fanout, summarize
from fuzz import fuzz_commands, fuzz_frames, fuzz_live
from http_transports import run_longpoll_roundtrip, run_sse_fanout
from idle_memory import run_idle_memory
from many_streams import run_many_streams
from presence import run_presence, run_whisper
from profile_fanout import flamegraph_svg, parse_collapsed, top_table
from report import Table, render, targets
from roundtrip import run_roundtrip
from run_all import plan

HAVE_NODE = shutil.which("node") is not None
HAVE_CABLECAR = (REPO / ".venv" / "bin" / "cablecar").exists()
HAVE_REDIS = shutil.which("redis-server") is not None

needs_node = pytest.mark.skipif(not HAVE_NODE, reason="Node is not installed")
needs_cablecar = pytest.mark.skipif(not HAVE_CABLECAR, reason="cablecar is not installed")
needs_redis = pytest.mark.skipif(not HAVE_REDIS, reason="redis-server is not installed")


# -- every delivery counted, against real servers ------------------------------------------------


@needs_node
@pytest.mark.node
@pytest.mark.parametrize(
    "kind",
    [
        "floor",
        pytest.param("cablecar", marks=needs_cablecar),
        pytest.param("cablecar-redis", marks=[needs_cablecar, needs_redis, pytest.mark.services]),
    ],
)
def test_fanout_counts_every_delivery(kind: str) -> None:
    """50 subscribers x 3 paced + 3 burst broadcasts: 150 deliveries each, all counted."""
    r = run_fanout(kind, 50, broadcasts=3, burst=3, settle=200, echo=False)
    assert r["subscribed"] == 50
    assert r["latency_deliveries"] == 150
    assert r["deliveries"] == 150
    assert r["expected"] == 150
    assert r["complete"], r["problems"]
    assert r["server_cpu_us_per_delivery"] is not None
    assert r["kb_per_conn"] is not None


@needs_node
@needs_cablecar
@needs_redis
@pytest.mark.node
@pytest.mark.services
def test_fanout_two_workers_sums_the_process_tree() -> None:
    """--workers 2: both workers' subscribers are counted and CPU is read over the tree."""
    r = run_fanout("cablecar-workers2-redis", 40, broadcasts=2, burst=2, settle=200, echo=False)
    assert r["deliveries"] == 80
    assert r["latency_deliveries"] == 80
    assert r["server_processes"] >= 3  # the supervisor and two workers
    assert r["redis_cpu_us_per_delivery"] is not None
    assert r["complete"], r["problems"]


@needs_node
@pytest.mark.node
@pytest.mark.parametrize("kind", ["floor", pytest.param("cablecar", marks=needs_cablecar)])
def test_many_streams_counts_every_delivery_per_room(kind: str) -> None:
    """20 rooms of 3: each speak reaches exactly its 3 members, nobody else."""
    r = run_many_streams(kind, 60, per_stream=3, rounds=2, burst=3, echo=False)
    assert r["streams"] == 20
    assert r["latency_deliveries"] == 20 * 3 * 2
    assert r["deliveries"] == 20 * 3 * 3
    c = r["client"]
    assert (c["misrouted"], c["duplicates"], c["rooms_short"]) == (0, 0, 0)
    assert r["complete"], r["problems"]


@needs_node
@pytest.mark.node
@needs_cablecar
def test_whisper_and_broadcast_count_every_delivery() -> None:
    r = run_whisper(clients=20, senders=4, each=3)
    assert r["broadcast"]["deliveries"] == 4 * 3 * 20
    assert r["whisper"]["deliveries"] == 4 * 3 * 19  # never to the sender


def test_fuzzers_count_inputs_and_find_nothing() -> None:
    assert fuzz_frames(500)["failures"] == 0
    assert fuzz_commands(500)["inputs"] == 500


@needs_cablecar
def test_live_fuzz_leaves_the_server_alive() -> None:
    result = fuzz_live(5, per_connection=10)
    assert result["server_alive"] and result["failures"] == 0 and result["frames"] == 50


@needs_cablecar
def test_sse_fanout_counts_every_delivery_on_both_transports() -> None:
    result = run_sse_fanout(clients=5, broadcasts=4)
    for transport in ("websocket", "sse"):
        assert result[transport]["deliveries"] == result[transport]["expected"] == 20


@needs_cablecar
def test_longpoll_roundtrips_see_each_message_come_back() -> None:
    result = run_longpoll_roundtrip(5)
    assert result["websocket"]["round_trips"] == result["longpoll"]["round_trips"] == 5
    assert result["longpoll"]["median_ms"] > 0


@needs_cablecar
@needs_redis
@pytest.mark.services
def test_presence_sees_every_join_and_leave_across_nodes() -> None:
    assert run_presence(members=20)["events"] == 40


def test_connect_storm_subscribes_every_client() -> None:
    """All 100 clients connect, subscribe and receive the check broadcast."""
    r = run_connect_storm("floor", 100, concurrency=20, echo=False)
    assert r["subscribed"] == 100
    assert r["harness"]["throughput"]["delivered"] == 100
    assert r["connect_per_s"] > 0
    assert r["complete"], r["problems"]


def test_roundtrip_times_every_echo() -> None:
    """Each of the 50 timed round trips gets its own echo back (matched by sequence number)."""
    r = run_roundtrip("floor", count=50, warmup=5, echo=False)
    assert r["count"] == 50
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["complete"]


@needs_node
@pytest.mark.node
def test_idle_memory_sees_connections_come_and_go() -> None:
    """The server holds one connection per idle client, and none of them after they leave."""
    r = run_idle_memory("floor", 200, settle=0.5, waves=1, echo=False)
    conns = r["server_connections"]
    assert r["subscribed"] == 200
    assert conns["idle"] == conns["baseline"] + 200
    assert conns["after"] == conns["baseline"]
    assert r["rss_idle_kb"] > r["rss_baseline_kb"] > 0
    assert r["complete"], r["problems"]


def test_server_stop_ends_its_processes() -> None:
    """A stopped server leaves no process of its tree behind."""
    srv = Server("floor").start()
    pids = srv.pids()
    assert pids and CpuSnapshot(srv).server_cpu >= 0
    srv.stop()
    import os

    for p in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(p, 0)


# -- the accounting and the verdicts, on hand-made records ------------------------------------


def _harness(subscribed: int, lat: int, delivered: int, **extra: Any) -> dict[str, Any]:
    return {
        "subscribed": subscribed,
        "connect_errors": 0,
        "closed_early": 0,
        "unknown_msgs": 0,
        "latency": {"deliveries": lat, "p99_ms": 5.0},
        "throughput": {"delivered": delivered, "deliveries_per_s": 1000.0},
        **extra,
    }


def test_summarize_flags_a_missing_delivery() -> None:
    """One delivery short in the burst makes the run incomplete, with the count in the reason."""
    ok = summarize("floor", 50, 3, 3, _harness(50, 150, 150), {}, 1, {})
    assert ok["complete"]
    short = summarize("floor", 50, 3, 3, _harness(50, 150, 149), {}, 1, {})
    assert not short["complete"]
    assert "burst deliveries 149/150" in short["problems"]
    dropped = summarize("floor", 50, 3, 3, _harness(49, 147, 147), {}, 1, {})
    assert "subscribed 49/50" in dropped["problems"]


def test_default_burst_keeps_slow_servers_short() -> None:
    """Fast servers get ~200 k deliveries per burst, the slow anchors 10 broadcasts."""
    assert default_burst("rails-async", 1000) == 10
    assert default_burst("floor", 1000) == 200
    assert default_burst("cablecar", 10000) == 20


def _fan(
    server: str, n: int, dps: float, cpu: float, p99: float, ok: bool = True
) -> dict[str, Any]:
    return {
        "scenario": "fanout",
        "server": server,
        "clients": n,
        "deliveries_per_s": dps,
        "server_cpu_us_per_delivery": cpu,
        "p99_ms": p99,
        "complete": ok,
        "problems": [] if ok else ["burst deliveries 1/2"],
    }


def _verdicts(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    return {(x.name, x.kind, x.size): x.status for x in targets(Table(records))}


def test_targets_met_and_not_met() -> None:
    """Ratios against the floor, Rails and Django are judged against issue 9's thresholds."""
    recs = [
        _fan("floor", 1000, 100_000, 8.0, 20.0),
        _fan("rails-async", 1000, 7_000, 150.0, 200.0),
        _fan("django-memory", 1000, 2_000, 500.0, 600.0),
        _fan("cablecar", 1000, 85_000, 9.0, 35.0),  # 0.85x floor, 12x Rails, 42x Django
    ]
    v = _verdicts(recs)
    assert v[("fan-out throughput ÷ floor", "cablecar", "1,000")] == "met"
    assert v[("fan-out throughput ÷ rails-async", "cablecar", "1,000")] == "met"
    assert v[("fan-out throughput ÷ django-memory", "cablecar", "1,000")] == "met"
    assert v[("CPU per delivery ÷ floor", "cablecar", "1,000")] == "met"  # 1.125x
    assert v[("delivery p99 ÷ floor", "cablecar", "1,000")] == "NOT met"  # 1.75x
    recs[-1] = _fan("cablecar", 1000, 70_000, 11.0, 25.0)
    v = _verdicts(recs)
    assert v[("fan-out throughput ÷ floor", "cablecar", "1,000")] == "NOT met"  # 0.7x
    assert v[("CPU per delivery ÷ floor", "cablecar", "1,000")] == "NOT met"  # 1.375x
    assert v[("delivery p99 ÷ floor", "cablecar", "1,000")] == "met"  # 1.25x


def test_incomplete_or_missing_runs_never_claim_a_target() -> None:
    """A run that lost deliveries, or a peer not run, gives n/a with the reason."""
    recs = [
        _fan("floor", 1000, 100_000, 8.0, 20.0),
        _fan("cablecar", 1000, 900_000, 1.0, 1.0, ok=False),
    ]
    v = _verdicts(recs)
    assert v[("fan-out throughput ÷ floor", "cablecar", "1,000")].startswith("n/a: cablecar")
    assert v[("fan-out throughput ÷ rails-async", "cablecar", "1,000")].startswith("n/a")
    md = render(recs)
    assert "INCOMPLETE" in md and "### Targets" in md


def test_an_incomplete_anchor_run_still_gives_a_ratio_with_a_caveat() -> None:
    """An anchor that failed its own run (Django timing out) still has a rate; it is flagged."""
    recs = [
        _fan("django-memory", 5000, 200.0, 5000.0, 50_000.0, ok=False),
        _fan("cablecar", 5000, 50_000, 15.0, 300.0),
    ]
    v = _verdicts(recs)
    key = ("fan-out throughput ÷ django-memory", "cablecar", "5,000")
    assert v[key] == "met (django-memory run incomplete)"


def test_memory_connect_scaleout_and_roundtrip_targets() -> None:
    """The non-fan-out targets read the right scenario and size."""
    recs = [
        {"scenario": "idle_memory", "server": "cablecar", "clients": 10000, "kb_per_conn": 6.5,
         "retained_kb": 30000, "retained_fraction": 0.45, "complete": True},
        {"scenario": "connect_storm", "server": "cablecar", "clients": 10000,
         "connect_per_s": 900, "complete": True},
        {"scenario": "connect_storm", "server": "floor", "clients": 10000,
         "connect_per_s": 1000, "complete": True},
        _fan("cablecar-redis", 10000, 50_000, 10.0, 100.0),
        _fan("cablecar-workers2-redis", 10000, 85_000, 12.0, 100.0),
        {"scenario": "roundtrip", "server": "cablecar", "clients": 0, "p99_ms": 0.4,
         "complete": True},
        {"scenario": "roundtrip", "server": "rails-async", "clients": 0, "p99_ms": 2.0,
         "complete": True},
    ]  # fmt: skip
    v = _verdicts(recs)
    assert v[("kB per idle subscribed connection", "cablecar", "10,000")] == "met"
    assert (
        v[("RSS kept after disconnect (share of idle growth)", "cablecar", "10,000")] == "NOT met"
    )
    assert v[("connect+subscribe rate ÷ floor", "cablecar", "10,000")] == "met"
    key = ("--workers 2 throughput ÷ 1 worker (Redis)", "cablecar-workers2-redis", "10,000")
    assert v[key] == "met"  # 1.7x
    assert v[("action round trip p99 ÷ rails-async", "cablecar", "-")] == "met"
    assert v[("action round trip p99 (aim)", "cablecar", "-")] == "met"


def test_plan_skips_what_an_anchor_cannot_serve() -> None:
    """Django/Node serve one stream; Django's in-memory layer is skipped at 10,000."""
    steps = plan(
        ["fanout", "many_streams"],
        ["cablecar", "django-memory", "node"],
        {"fanout": [1000, 10000], "many_streams": [500]},
        include_slow=False,
    )
    skipped = {(sc, k, n) for sc, k, n, why in steps if why}
    assert ("fanout", "django-memory", 10000) in skipped
    assert ("fanout", "django-memory", 1000) not in skipped
    assert ("many_streams", "django-memory", 500) in skipped
    assert ("many_streams", "node", 500) in skipped
    assert ("many_streams", "cablecar", 500) not in skipped


def test_profile_summaries() -> None:
    """Collapsed stacks -> own/inclusive top table and an SVG with one box per frame."""
    stacks = parse_collapsed("main;loop;write 30\nmain;loop;encode 10\nmain;idle 60\n")
    assert stacks == Counter(
        {("main", "loop", "write"): 30, ("main", "loop", "encode"): 10, ("main", "idle"): 60}
    )
    top = top_table(stacks)
    assert "100 samples" in top
    assert " 60.0    60.0   idle" in top
    svg = flamegraph_svg(stacks, "t")
    assert svg.count("<rect") == 5  # main, loop, write, encode, idle
    merged = parse_collapsed(
        "run (a.py:1);write (loop.c:10) 2\nrun (a.py:1);write (loop.c:12) 3\n", lines=False
    )
    assert merged == Counter({("run (a.py)", "write (loop.c)"): 5})


@pytest.mark.parametrize("kind", ["floor", pytest.param("cablecar", marks=needs_cablecar)])
@pytest.mark.parametrize("shape", ["ticks", "streams"])
def test_bursts_count_every_delivery_in_order(kind: str, shape: str) -> None:
    """20 connections, 100 broadcasts per burst (10 per tick on one stream, or one per
    tick on each of 50 streams): every delivery counted and checked in order per stream."""
    from bursts import parse_args, run_bursts

    args = parse_args(["--clients", "20", "--broadcasts", "100", "--repeat", "1"])
    r = run_bursts(kind, shape, args)
    assert r["complete"], r["problems"]
    assert r["deliveries_per_burst"] == 20 * 100
    assert r["deliveries_per_s"] and r["server_cpu_us_per_delivery"] is not None


def test_burst_order_check_finds_what_is_wrong() -> None:
    """The order check names a missing, a repeated, a reordered and a stray message."""
    from bursts import check_order

    def msgs(*pairs: tuple[int, int]) -> bytes:
        return b"".join(b'{"message":{"s":%d,"n":%d,"pad":"x"}}' % p for p in pairs)

    assert check_order(msgs((0, 0), (1, 0), (0, 1), (1, 1)), 2, 2) is None
    assert check_order(msgs((0, 0), (1, 0), (1, 1)), 2, 2) == "stream s0: 1 of 2 messages"
    assert check_order(msgs((0, 0), (0, 0), (0, 1)), 1, 2) == (
        "stream s0: message 0 where 1 was due"
    )
    assert check_order(msgs((0, 1), (0, 0)), 1, 2) == "stream s0: message 1 where 0 was due"
    assert (
        check_order(msgs((3, 0)), 2, 1) == "a message of stream s3, which it does not stream from"
    )


# -- workers balance and the ASGI split ------------------------------------------------------


@needs_cablecar
@needs_redis
@pytest.mark.services
def test_workers_balance_counts_every_connection_and_delivery() -> None:
    """--workers 2, 50 clients: each connection is held by a worker, every delivery counted."""
    from workers_balance import run_balance

    r = run_balance(50, broadcasts=3, rounds=1, warmup=2)
    assert r["subscribed"] == 50
    assert len(r["worker_pids"]) == len(r["connections_per_worker"]) == 2
    assert sum(r["connections_per_worker"]) == 50
    assert r["connections_no_worker"] == 0 and r["clients_unmatched"] == 0
    assert r["deliveries_counted_per_worker"] == r["deliveries_expected_per_worker"]
    assert sum(r["deliveries_expected_per_worker"]) == 50 * (3 + 2)
    assert [w["deliveries"] for w in r["rounds"][0]["workers"]] == [
        3 * n for n in r["connections_per_worker"]
    ]
    assert r["complete"], r["problems"]


def test_asgi_split_classifies_a_hand_written_profile() -> None:
    """Samples go to the innermost cablecar / ASGI server / event loop frame; CPU by thread."""
    from asgi_split import classify_frame, cpu_split, split

    root = "process 1:x;thread (11): MainThread;run (/v/lib/python3.11/asyncio/runners.py)"
    cc = "/w/src/cablecar"
    uv = "/v/site-packages/uvicorn/protocols/websockets/websockets_sansio_impl.py"
    text = "\n".join(
        [
            f"{root};_write_loop ({cc}/transports/asgi.py);send ({uv}) 50",
            f"{root};_write_loop ({cc}/transports/asgi.py) 10",
            f"{root};deliver ({cc}/hub.py);dumps ({cc}/_json.py);encode (/py/json/encoder.py) 5",
            f"{root};burst (/w/benchmarks/asgi_vs_standalone.py) 5",
            f"{root} 20",  # uvloop's C loop: the innermost Python frame is asyncio's
            "process 1:x;thread (12) 10",  # a thread with no Python frame (Granian's Rust)
            "process 1:x;thread (11): MainThread;run (/v/uvloop/loop.c);epoll_wait (libc.so.6) 7",
        ]
    )
    s = split(parse_collapsed(text))
    assert s["idle_samples_dropped"] == 7
    assert s["samples"] == 100
    assert s["samples_by_kind"] == {
        "cablecar": 15,
        "app": 5,
        "asgi_server": 50,
        "event_loop": 20,
        "native": 10,
        "other": 0,
    }
    top = {f.split(" (")[0]: n for f, n, _share in s["cablecar_top"]}
    assert top == {"_write_loop": 10, "dumps": 5}  # json's encoder counts for its caller
    assert s["samples_by_thread"]["12"] == {"native": 10}
    assert classify_frame("f (/v/site-packages/granian/asgi.py)") == "asgi_server"
    assert classify_frame("f (/usr/lib/python3.11/json/encoder.py)") is None
    # thread 11: 9 s of CPU over 90 samples; 12: 1 s over 10; 13 never sampled: 10 s.
    cpu = cpu_split(
        s["samples_by_thread"], {"5/11 python": 9.0, "5/12 python": 1.0, "5/13 tokio": 10.0}
    )
    assert cpu["cablecar"] == pytest.approx(0.075)  # 9 s x 15/90 of 20 s
    assert cpu["native"] == pytest.approx(0.05)
    assert cpu["unsampled"] == pytest.approx(0.5)
    assert sum(cpu.values()) == pytest.approx(1.0)


@needs_cablecar
def test_asgi_split_counts_every_delivery_under_the_profiler() -> None:
    """uvicorn, 20 clients, one plain and one profiled burst of 20: every delivery counted."""
    from pathlib import Path

    from asgi_split import find_pyspy, parse_args, run_split

    pyspy = find_pyspy()
    if pyspy is None:
        pytest.skip("py-spy is not installed")
    args = parse_args(["--clients", "20", "--burst", "20", "--rounds", "1", "--attach", "0.5"])
    r = run_split("uvicorn", args, pyspy, "test")
    assert r["delivered"] == r["expected"] == 20 * 20 * 2  # one plain, one profiled burst
    assert sum(r["samples_by_kind"].values()) == r["samples"]
    assert not [p for p in r["problems"] if "deliveries" in p]
    Path(r["profile"]).unlink(missing_ok=True)
