"""The ASGI split: how much of an ASGI server's fan-out CPU is cablecar's own code.

For each server (``standalone``, ``uvicorn``, ``granian``; the servers, app, client and burst
of ``asgi_vs_standalone.py``): N subscribers of one stream, a control connection asks the
server for bursts of B broadcasts (``BenchChannel.burst``), the clients count every delivery.

1. ``--rounds`` bursts unprofiled: server CPU per delivery (user + system CPU of the server's
   processes from ``/proc``; the median), as ``asgi_vs_standalone.py`` reports it.
2. ``--rounds`` bursts under ``py-spy record --nonblocking --subprocesses`` (started after the
   warm-up, stopped after the last delivery: the burst only). Each sample is given to the
   innermost frame of a known kind, walking outwards from the leaf:

   - ``cablecar``: a file under ``src/cablecar`` (or an installed ``cablecar`` package),
   - ``app``: the benchmark's channel (``benchmarks/``: the broadcast loop),
   - ``asgi_server``: ``uvicorn``, ``websockets``, ``h11``, ``httptools``, ``wsproto``,
     ``granian`` (Granian's Python glue),
   - ``event_loop``: ``asyncio`` and ``uvloop`` (a sample whose Python stack ends in
     ``asyncio/runners.py`` is uvloop's C loop: polling, callbacks, socket writes),
   - ``native``: a thread py-spy sees running with no Python frame at all (Granian's Rust
     runtime thread that holds a Python thread state),
   - ``other``: no frame of a known kind (threading, the interpreter's own).

   Frames of other files (``json``, ``logging``, ``collections``...) count for the innermost
   known frame that called them. C code called from Python counts for its caller: uvicorn's
   ``transport.write`` is uvicorn's, and Granian's Rust ``send`` awaitable, called from
   cablecar's writer, is cablecar's in this mode (``--native`` tells them apart, below).
   Granian also runs Rust threads py-spy never samples.

   Shares of the server's CPU: each thread's CPU in the profiled bursts
   (``/proc/<pid>/task/<tid>/schedstat``) is shared out by that thread's samples; the CPU of
   threads py-spy never sampled is ``unsampled`` (for Granian: its Rust I/O threads, the
   ASGI server's). Reported per server: those shares, cablecar's CPU µs per delivery
   (= CPU per delivery x cablecar's share), and the top cablecar functions by own samples.

   ``--native`` samples C and Rust frames too (uvloop's, Granian's ``_granian`` module): then
   Granian's Rust ``send`` is Granian's and a socket write is the event loop's. py-spy then
   pauses the server at each sample and no longer tells idle threads apart, so samples with
   a blocking call on the stack (``epoll_wait``, a futex wait...) are dropped.

    .venv/bin/python benchmarks/asgi_split.py                         # 1,000 clients, 3x200
    .venv/bin/python benchmarks/asgi_split.py --servers uvicorn --clients 200 --burst 50

Writes the collapsed stacks to ``benchmarks/results/asgi-split-<server>-<time>.collapsed``.
Prints one JSON line per server, then the split table and the top tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asgi_vs_standalone as avs
from _common import RESULTS_DIR, event_loop_runner, free_port, machine_info
from profile_fanout import parse_collapsed

__all__ = [
    "CATEGORIES",
    "classify",
    "classify_frame",
    "cpu_split",
    "find_pyspy",
    "is_idle",
    "main",
    "parse_args",
    "run_split",
    "split",
    "thread_cpu",
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: The kinds of code a sample is given to, in report order.
CATEGORIES = ("cablecar", "app", "asgi_server", "event_loop", "native", "other")
#: With ``--native`` py-spy's idle filter misses threads blocked in C: a sample with one of
#: these functions on its stack is a thread waiting (polling, parked, joining), not working.
#: (``syscall`` is how Rust's std and tokio park a thread: a futex wait.)
IDLE_FUNCTIONS = frozenset(
    {
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "wait4",
        "waitpid",
        "pthread_cond_wait",
        "pthread_cond_timedwait",
        "PyThread_acquire_lock_timed",
        "sem_wait",
        "sem_timedwait",
        "sem_clockwait",
        "nanosleep",
        "clock_nanosleep",
        "select",
        "poll",
        "syscall",
    }
)
_ASGI_PARTS = ("/uvicorn/", "/websockets/", "/h11/", "/httptools/", "/wsproto/", "/granian/")
_LOOP_PARTS = ("/asyncio/", "/uvloop/")


def _frame_file(frame: str) -> str:
    """The file of a py-spy frame ``function (path[:line])``; ``""`` for a bare name."""
    if not frame.endswith(")") or " (" not in frame:
        return ""
    path = frame[frame.rindex(" (") + 2 : -1]
    head, sep, tail = path.rpartition(":")
    return head if sep and tail.isdigit() else path


def classify_frame(frame: str) -> str | None:
    """The kind of code one frame belongs to, or ``None`` for a file of no known kind."""
    path = "/" + _frame_file(frame).replace("\\", "/").lstrip("/")
    if "/src/cablecar/" in path or "-packages/cablecar/" in path:
        return "cablecar"
    if any(p in path for p in _ASGI_PARTS):
        return "asgi_server"
    if any(p in path for p in _LOOP_PARTS) or path.endswith("/selectors.py"):
        return "event_loop"
    if "/benchmarks/" in path:
        return "app"
    return None


def _python_frames(stack: tuple[str, ...]) -> list[str]:
    # py-spy --threads/--subprocesses put "process N:..." and "thread (0x..)" at the root.
    return [f for f in stack if not f.startswith(("process ", "thread ("))]


def is_idle(stack: tuple[str, ...]) -> bool:
    """A sample of a thread that waits (a blocking call on its stack; see ``IDLE_FUNCTIONS``)."""
    return any(f.split(" (", 1)[0] in IDLE_FUNCTIONS for f in _python_frames(stack))


def classify(stack: tuple[str, ...]) -> tuple[str, str]:
    """(kind, frame) that a sample counts for: the innermost frame of a known kind;
    ``native`` for a thread with no frame at all (py-spy sees it run, but only C or Rust:
    Granian's runtime thread), ``other`` when no frame is of a known kind."""
    frames = _python_frames(stack)
    if not frames:
        return "native", next((f for f in stack if f.startswith("thread (")), "?")
    for frame in reversed(frames):
        kind = classify_frame(frame)
        if kind is not None:
            return kind, frame
    return "other", frames[-1] if frames else "?"


def _tid(stack: tuple[str, ...]) -> str:
    """The thread id py-spy put at the root of a stack (``thread (1234): MainThread``)."""
    for f in stack:
        m = re.match(r"thread \((\d+)\)", f)
        if m:
            return m.group(1)
    return ""


def split(stacks: Counter[tuple[str, ...]]) -> dict[str, Any]:
    """Samples per kind (overall and per thread), and cablecar's functions by own samples."""
    kinds: Counter[str] = Counter()
    own: Counter[str] = Counter()
    by_thread: dict[str, Counter[str]] = {}
    idle = 0
    for stack, n in stacks.items():
        if is_idle(stack):
            idle += n
            continue
        kind, frame = classify(stack)
        kinds[kind] += n
        if kind == "cablecar":
            own[_short(frame)] += n
        by_thread.setdefault(_tid(stack), Counter())[kind] += n
    total = sum(kinds.values())
    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "samples_by_kind": {k: kinds[k] for k in CATEGORIES},
        "sample_share": {k: round(kinds[k] / total, 4) if total else 0.0 for k in CATEGORIES},
        "samples_by_thread": {t: dict(c) for t, c in by_thread.items()},
        "cablecar_top": [
            [f, n, round(n / total, 4) if total else 0.0] for f, n in own.most_common(15)
        ],
    }


def cpu_split(
    samples_by_thread: dict[str, dict[str, int]], thread_cpu_s: dict[str, float]
) -> dict[str, float]:
    """Shares of the server's CPU per kind: each sampled thread's CPU (``/proc``) shared out
    by its samples, the CPU of threads py-spy never sampled (Granian's Rust threads) as
    ``unsampled``. ``thread_cpu_s`` is keyed ``pid/tid name``."""
    total = sum(thread_cpu_s.values())
    out = dict.fromkeys((*CATEGORIES, "unsampled"), 0.0)
    if total <= 0:
        return out
    for key, cpu in thread_cpu_s.items():
        tid = key.split(" ", 1)[0].split("/")[-1]
        kinds = samples_by_thread.get(tid)
        n = sum(kinds.values()) if kinds else 0
        if not kinds or n == 0:
            out["unsampled"] += cpu / total
            continue
        for k, c in kinds.items():
            out[k] += cpu / total * c / n
    return {k: round(v, 4) for k, v in out.items()}


def _short(frame: str) -> str:
    f = frame.replace(str(ROOT) + "/", "")
    for marker in ("/src/cablecar/", "-packages/cablecar/"):
        if marker in f:
            f = f.split(" (")[0] + " (cablecar/" + f.split(marker, 1)[1]
    return f


# -- per-thread CPU ---------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return pids


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of every thread of ``pid`` and its children, keyed ``pid/tid name``
    (``/proc/<pid>/task/<tid>/schedstat``: time on CPU in ns)."""
    out: dict[str, float] = {}
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    task = f"/proc/{p}/task/{tid}"
                    name = Path(f"{task}/comm").read_text().strip()
                    ns = int(Path(f"{task}/schedstat").read_text().split()[0])
                    out[f"{p}/{tid} {name}"] = ns / 1e9
    return out


# -- the run ----------------------------------------------------------------------------------


def _spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _measure(
    kind: str, port: int, pid: int, args: argparse.Namespace, pyspy: str, raw: Path
) -> dict[str, Any]:
    sem = asyncio.Semaphore(100)

    async def one() -> avs._Client:
        async with sem:
            return await avs._open(port, False)

    clients = await asyncio.gather(*(one() for _ in range(args.clients)))
    control = clients[0]
    assert control.transport is not None
    problems: list[str] = []

    async def burst(n: int) -> tuple[int, int, float, float]:
        got, want, elapsed, cpu = await avs.burst_once(
            clients, pid, n, args.size, args.burst_timeout
        )
        if got != want:
            problems.append(f"burst of {n}: {got} of {want} deliveries")
        return got, want, elapsed, cpu

    await burst(20)  # warm-up
    plain = [await burst(args.burst) for _ in range(args.rounds)]
    # The profiled bursts: py-spy attaches, then the bursts, then it writes its stacks.
    cmd = [pyspy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw"]
    cmd += ["--output", str(raw), "--nonblocking", "--subprocesses", "--threads"]
    cmd += ["--full-filenames", "--nolineno"]
    if args.native:  # C and Rust frames too (py-spy then pauses the server per sample)
        cmd = [c for c in cmd if c != "--nonblocking"] + ["--native"]
    spy = _spawn(cmd)
    await asyncio.sleep(args.attach)
    th0 = thread_cpu(pid)
    t0 = time.monotonic()
    profiled = [await burst(args.burst) for _ in range(args.rounds)]
    wall = time.monotonic() - t0
    th1 = thread_cpu(pid)
    spy.send_signal(signal.SIGINT)
    try:
        _, err = await asyncio.to_thread(spy.communicate, timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    threads = {k: round(th1[k] - th0.get(k, 0.0), 3) for k in th1}
    threads = {k: v for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0}
    return {
        "plain": plain,
        "profiled": profiled,
        "profiled_wall_s": round(wall, 2),
        "thread_cpu_s": threads,
        "pyspy_stderr": err.decode(errors="replace")[-500:] if err else "",
        "problems": problems,
    }


def run_split(kind: str, args: argparse.Namespace, pyspy: str, stamp: str) -> dict[str, Any]:
    """One server: plain and profiled bursts, the split, cablecar's µs per delivery."""
    port = free_port()
    proc = avs.start_server(kind, port)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    raw = RESULTS_DIR / f"asgi-split-{kind}-{stamp}.collapsed"
    try:
        avs.wait_port(port)
        with event_loop_runner() as runner:
            m = runner.run(_measure(kind, port, proc.pid, args, pyspy, raw))
    finally:
        children = _tree(proc.pid)[1:]
        avs.stop_server(proc)
        for p in children:  # a Granian worker its parent did not stop
            with contextlib.suppress(OSError):
                if Path(f"/proc/{p}/cmdline").read_bytes().find(b"granian") >= 0:
                    os.kill(p, signal.SIGKILL)
    stacks = parse_collapsed(raw.read_text()) if raw.exists() else Counter()
    s = split(stacks)
    plain_us = statistics.median(cpu / max(d, 1) for d, _w, _e, cpu in m["plain"]) * 1e6
    prof_us = statistics.median(cpu / max(d, 1) for d, _w, _e, cpu in m["profiled"]) * 1e6
    rate = statistics.median(d / max(e, 1e-9) for d, _w, e, _c in m["plain"])
    threads = m["thread_cpu_s"]
    shares = cpu_split(s["samples_by_thread"], threads)
    delivered = sum(d for d, _w, _e, _c in m["plain"] + m["profiled"])
    expected = sum(w for _d, w, _e, _c in m["plain"] + m["profiled"])
    problems = list(m["problems"])
    if not stacks:
        problems.append(f"py-spy recorded nothing ({m['pyspy_stderr'].strip()[-200:]})")
    return {
        "scenario": "asgi_split",
        "server": kind,
        "clients": args.clients,
        "burst": args.burst,
        "rounds": args.rounds,
        "payload_bytes": args.size,
        "deliveries_per_s": round(rate),
        "server_cpu_us_per_delivery": round(plain_us, 2),
        "server_cpu_us_per_delivery_profiled": round(prof_us, 2),
        "delivered": delivered,
        "expected": expected,
        **{k: v for k, v in s.items() if k != "cablecar_top"},
        "thread_cpu_s": dict(list(threads.items())[:8]),
        "cpu_share": shares,
        "cablecar_cpu_us_per_delivery": round(plain_us * shares["cablecar"], 2),
        "cablecar_top": s["cablecar_top"],
        "profile": str(raw),
        "problems": problems,
        "complete": not problems and delivered == expected,
        "machine": machine_info(),
    }


def report(results: list[dict[str, Any]]) -> str:
    """The split table (shares of server CPU) and each server's top cablecar functions."""
    cols = ("cablecar", "app", "asgi_server", "event_loop", "native", "other", "unsampled")
    names = ("cablecar", "app", "ASGI srv", "loop", "native", "other", "unsamp")
    head = f"{'server':<11} {'deliv/s':>8} {'CPU us/d':>9} " + " ".join(f"{n:>8}" for n in names)
    lines = [head + f" {'cablecar us/d':>14}"]
    for r in results:
        sh = r["cpu_share"]
        lines.append(
            f"{r['server']:<11} {r['deliveries_per_s']:>8,} {r['server_cpu_us_per_delivery']:>9} "
            + " ".join(f"{100 * sh[c]:>7.1f}%" for c in cols)
            + f" {r['cablecar_cpu_us_per_delivery']:>14}"
        )
    lines.append(
        "(shares of the server's CPU in the profiled bursts: each thread's CPU shared out by its "
        "py-spy samples;\n 'unsamp': threads py-spy never sampled; cablecar us/d = CPU us/d x "
        "cablecar's share)"
    )
    for r in results:
        lines += ["", f"{r['server']}: cablecar functions by own samples ({r['samples']} samples)"]
        for f, n, share in r["cablecar_top"][:10]:
            lines.append(f"  {100 * share:5.1f}%  {n:>6}  {f}")
        if not r["complete"]:
            lines.append(f"  INCOMPLETE: {'; '.join(r['problems'])}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options (also the settings of :func:`run_split`)."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=200, help="broadcasts per round")
    ap.add_argument("--rounds", type=int, default=3, help="plain rounds, then profiled rounds")
    ap.add_argument("--size", type=int, default=64, help="padding bytes per message")
    ap.add_argument("--servers", default="standalone,uvicorn,granian")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--attach", type=float, default=1.0, help="seconds py-spy gets to attach")
    ap.add_argument(
        "--native", action="store_true", help="sample C/Rust frames too (uvloop, Granian's core)"
    )
    ap.add_argument("--burst-timeout", type=float, default=120.0)
    ap.add_argument("--out", help="also append the JSON lines to this file")
    return ap.parse_args(argv)


def find_pyspy() -> str | None:
    """py-spy from the project's virtualenv, else from PATH."""
    return shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")) or shutil.which("py-spy")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    args = parse_args(argv)
    pyspy = find_pyspy()
    if not pyspy:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = []
    for kind in args.servers.split(","):
        r = run_split(kind, args, pyspy, stamp)
        line = json.dumps({**r, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
        results.append(r)
    print("\n" + report(results), flush=True)
    return 0 if all(r["complete"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
