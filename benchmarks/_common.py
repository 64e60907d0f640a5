"""Shared plumbing for the benchmark scenarios: servers, /proc accounting, the load clients.

Every scenario script starts a fresh server of one *kind*, drives it with a load client and
prints one JSON line. The kinds are the anchors' (started with ``$A/bench/servers/ctl.sh``)
and cablecar's own (started here with ``cablecar serve examples/conformance_app.py:cable``,
with a throwaway ``redis-server`` on a free port for the Redis kinds).

Server CPU and memory are read from ``/proc/<pid>/stat`` and ``/proc/<pid>/status``, summed
over the server's process tree (puma workers, ``cablecar serve --workers 2``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ALL_KINDS",
    "ANCHOR_KINDS",
    "BENCH_DIR",
    "CABLECAR_KINDS",
    "REPO",
    "RESULTS_DIR",
    "CpuSnapshot",
    "Server",
    "anchors_home",
    "connection_count",
    "cpu_seconds",
    "emit",
    "event_loop_runner",
    "free_port",
    "machine_info",
    "node_env",
    "proc_tree",
    "raise_nofile_limit",
    "rss_kb",
    "run_streaming",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
ANCHOR_KINDS = ("rails-async", "rails-redis", "django-memory", "django-redis", "floor", "node")
CABLECAR_KINDS = (
    "cablecar",
    "cablecar-redis",
    "cablecar-workers2-redis",
    "cablecar-history",
    "cablecar-redis-history",
    "cablecar-nometrics",
)
ALL_KINDS = CABLECAR_KINDS + ANCHOR_KINDS
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it).

    Returns:
        The new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


_ANCHORS: Path | None = None


def anchors_home() -> Path:
    """Where the anchors are installed (``$CABLECAR_ANCHORS``, else run ``install.sh`` once).

    ``install.sh`` copies ``../shared/anchors`` to ``~/.cache/cablecar-anchors`` and installs
    what is missing; it never writes into the shared folder.
    """
    global _ANCHORS
    if _ANCHORS is not None:
        return _ANCHORS
    env = os.environ.get("CABLECAR_ANCHORS")
    if env and (Path(env) / "bench" / "run.sh").exists():
        _ANCHORS = Path(env)
        return _ANCHORS
    src = Path(os.environ.get("CABLECAR_ANCHORS_SRC", REPO.parent / "shared" / "anchors"))
    out = subprocess.run(
        [str(src / "install.sh")], check=True, stdout=subprocess.PIPE, text=True, timeout=1800
    )
    home = Path(out.stdout.strip().splitlines()[-1])
    if not (home / "bench" / "run.sh").exists():
        raise RuntimeError(f"anchors install did not produce {home}/bench/run.sh")
    os.environ["CABLECAR_ANCHORS"] = str(home)
    _ANCHORS = home
    return home


def node_env(*, history: bool = False) -> dict[str, str]:
    """Environment for the Node load clients: ``ws`` comes from the anchors' node_modules;
    ``history``: the clients speak the extended protocol (positions on every message)."""
    env = dict(os.environ)
    env["NODE_PATH"] = str(anchors_home() / "bench" / "node_modules")
    if history:
        env["CABLECAR_BENCH_PROTOCOLS"] = "actioncable-v1-ext-json"
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _anchor_port() -> int:
    """A free port P whose ctl.sh Redis companion (20000 + P % 10000) is free too."""
    for _ in range(200):
        p = free_port()
        if 1024 < p < 65536 and _port_free(20000 + p % 10000) and p != 20000 + p % 10000:
            return p
    raise RuntimeError("no free port pair found")


def machine_info() -> dict[str, Any]:
    """What the figures came from: CPU model, cores, load average, kernel, Python."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def emit(result: dict[str, Any], out: str | None) -> None:
    """Print one JSON line on stdout (and append it to ``out`` when given)."""
    result.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%S"))
    line = json.dumps(result, separators=(",", ":"))
    print(line, flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(line + "\n")


def event_loop_runner() -> asyncio.Runner:
    """An ``asyncio.Runner`` on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        return asyncio.Runner()


def scenario_main(
    argv: list[str] | None,
    doc: str | None,
    kinds: Sequence[str],
    add_options: Callable[[argparse.ArgumentParser], None],
    run: Callable[..., dict[str, Any]],
    *,
    out_help: str | None = None,
    quiet_help: str | None = None,
) -> int:
    """The command line of a one-server scenario script.

    Parses ``--server`` (one of ``kinds``, required), the options ``add_options`` adds, then
    ``--out`` and ``--quiet`` (with the given help texts); calls ``run(server, echo=not
    quiet)`` with each added option as the keyword argument of its name (``--max-seconds``:
    ``max_seconds``) and prints the result record as one JSON line (:func:`emit`).

    Returns:
        The exit status: 0 when the record is ``complete``, else 1.
    """
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--server", required=True, choices=kinds)
    add_options(ap)
    ap.add_argument("--out", help=out_help)
    ap.add_argument("--quiet", action="store_true", help=quiet_help)
    a = ap.parse_args(argv)
    options = {k: v for k, v in vars(a).items() if k not in ("server", "out", "quiet")}
    r = run(a.server, **options, echo=not a.quiet)
    emit(r, a.out)
    return 0 if r["complete"] else 1


# ---------------------------------------------------------------------------------------------
# /proc accounting
# ---------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return st[st.rindex(")") + 2 :].split()


def proc_tree(roots: Sequence[int]) -> list[int]:
    """The given pids and all their live descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = _stat_fields(int(d))
        if f is None:
            continue
        children.setdefault(int(f[1]), []).append(int(d))
    out: list[int] = []
    queue = [p for p in roots if p]
    while queue:
        p = queue.pop(0)
        if p in out:
            continue
        out.append(p)
        queue.extend(children.get(p, []))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of the given processes (all their threads)."""
    ticks = 0
    for p in pids:
        f = _stat_fields(p)
        if f is not None:
            ticks += int(f[11]) + int(f[12])
    return ticks / CLK_TCK


def rss_kb(pids: Sequence[int]) -> int:
    """Resident set size, kB, summed over the given processes."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text())
            if m:
                total += int(m.group(1))
    return total


def connection_count(port: int) -> int:
    """TCP connections accepted on ``port`` that the server still holds open.

    Counts ``/proc/net/tcp{,6}`` entries whose local port is ``port`` in state ESTABLISHED or
    CLOSE_WAIT (the peer closed, the server has not yet): a server's pooled connections to
    Redis and the like are not counted.
    """
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as f:
            next(f, None)
            for line in f:
                parts = line.split(None, 4)
                if len(parts) > 3 and parts[3] in ("01", "08"):
                    if int(parts[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
    return n


class CpuSnapshot:
    """Wall time and CPU seconds of the server (and its Redis, if any) at one instant."""

    __slots__ = ("has_redis", "redis_cpu", "server_cpu", "wall")

    def __init__(self, server: Server) -> None:
        self.wall = time.monotonic()
        self.server_cpu = cpu_seconds(server.pids())
        redis = server.redis_pids()
        self.has_redis = bool(redis)
        self.redis_cpu = cpu_seconds(redis)


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _wait_health(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception as e:  # keep polling until the deadline
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"/health on {port} not 200 after {timeout}s ({last})")


def _start_time(pid: int) -> str | None:
    f = _stat_fields(pid)
    return None if f is None else f[19]


def _terminate(proc: subprocess.Popen[bytes], pids: Sequence[int], grace: float = 10.0) -> None:
    """SIGTERM the process, wait, then SIGKILL whatever of its tree is left.

    Each straggler is killed by pid only if it is still the same process (same start time),
    so a pid reused by someone else's process is never touched.
    """
    started = {p: _start_time(p) for p in pids}
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    for p, t0 in started.items():
        if t0 is not None and _start_time(p) == t0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


class Server:
    """A fresh server of one kind on a free port; a context manager.

    Args:
        kind: one of ``ALL_KINDS``.
        streams: for the ``floor`` kind, start the multi-stream floor
            (``benchmarks/servers/floor_streams.py``) instead of the anchors' one-stream floor.
        log_dir: where server logs go (cablecar kinds and the multi-stream floor).
    """

    def __init__(self, kind: str, *, streams: bool = False, log_dir: Path | None = None) -> None:
        if kind not in ALL_KINDS:
            raise ValueError(f"unknown server kind {kind!r}; one of {', '.join(ALL_KINDS)}")
        self.kind = kind
        self.streams = streams
        self.mode = "raw" if kind.startswith("django-") else "actioncable"
        self.port = 0
        self.log_dir = log_dir or RESULTS_DIR / "logs"
        self._proc: subprocess.Popen[bytes] | None = None
        self._redis: subprocess.Popen[bytes] | None = None
        self._root = 0
        self._anchor = False
        self._redis_pidfile: Path | None = None
        self._redis_dir = ""
        self._started_tree: list[int] = []

    # -- public ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The WebSocket URL of the server's cable endpoint."""
        return f"ws://127.0.0.1:{self.port}/cable"

    def pids(self) -> list[int]:
        """The server's process tree (not its Redis)."""
        return proc_tree([self._root]) if self._root else []

    def redis_pids(self) -> list[int]:
        """The Redis server backing this server, if any."""
        if self._redis is not None:
            return [self._redis.pid]
        if self._redis_pidfile is not None:
            with contextlib.suppress(OSError, ValueError):
                return [int(self._redis_pidfile.read_text().strip())]
        return []

    def start(self) -> Server:
        """Start the server and wait until it accepts connections."""
        raise_nofile_limit()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.kind in CABLECAR_KINDS:
            self._start_cablecar()
        elif self.kind == "django-redis":
            self._start_django_redis()
        elif self.kind == "floor" and self.streams:
            self._start_floor_streams()
        else:
            self._start_anchor()
        self._started_tree = self.pids()
        return self

    def stop(self) -> None:
        """Stop the server (and its Redis); safe to call twice."""
        if self._anchor:
            a = anchors_home()
            subprocess.run(
                [str(a / "bench/servers/ctl.sh"), "stop", self.kind, str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
            self._anchor = False
        if self._proc is not None:
            _terminate(self._proc, self.pids() or self._started_tree)
            self._proc = None
        if self._redis is not None:
            _terminate(self._redis, [self._redis.pid], grace=5)
            self._redis = None
        if self._redis_dir:
            shutil.rmtree(self._redis_dir, ignore_errors=True)
            self._redis_dir = ""
        self._root = 0

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- kinds ----------------------------------------------------------------------------

    def _log(self, name: str) -> IO[bytes]:
        return open(self.log_dir / f"{name}-{self.port}.log", "wb")

    def _start_anchor(self) -> None:
        a = anchors_home()
        self.port = _anchor_port()
        r = subprocess.run(
            [str(a / "bench/servers/ctl.sh"), "start", self.kind, str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
        self._anchor = True
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"ctl.sh start {self.kind} failed: {r.stderr.strip()[-500:]}")
        pid = subprocess.run(
            [str(a / "bench/servers/ctl.sh"), "pid", self.kind, str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        self._root = int(pid)
        if self.kind == "rails-redis":
            self._redis_pidfile = a / "rails" / "run" / str(self.port) / "redis.pid"
        elif self.kind == "django-redis":
            self._redis_pidfile = a / "bench" / "run" / str(self.port) / "redis.pid"

    def _start_redis(self) -> str:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        rport = free_port()
        self._redis_dir = tempfile.mkdtemp(prefix="cablecar-bench-redis-")
        rdir = self._redis_dir
        self._redis = subprocess.Popen(
            [
                exe,
                "--port",
                str(rport),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "10000",
                "--dir",
                rdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_port(rport, 15, self._redis)
        return f"redis://127.0.0.1:{rport}/0"

    def _start_cablecar(self) -> None:
        # $CABLECAR_BENCH_VENV measures cablecar on another Python (e.g. .venv-3.12).
        venv = Path(os.environ.get("CABLECAR_BENCH_VENV", REPO / ".venv"))
        exe = venv / "bin" / "cablecar"
        if not exe.exists():
            raise RuntimeError(f"{exe} not found: run `make` first")
        self.port = free_port()
        cmd = [
            str(exe),
            "serve",
            "examples/conformance_app.py:cable",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            # The activity log (INFO: every connect, subscribe and action) is a choice
            # of the operator; the benchmarks measure the server without it.
            "--log-level",
            "warning",
        ]
        if "-redis" in self.kind:
            cmd += ["--pubsub", self._start_redis()]
        if "workers2" in self.kind:
            cmd += ["--workers", "2"]
        env = dict(
            os.environ,
            CABLE_HISTORY="1" if "history" in self.kind else "",
            CABLE_METRICS="0" if "nometrics" in self.kind else "",
        )
        self._spawn(cmd, self.kind, cwd=REPO, env=env, listen_timeout=60, health=True)

    def _start_django_redis(self) -> None:
        """The anchors' Django Channels app on daphne with the Redis layer, as ctl.sh starts it,
        but with ``socket_timeout=30`` in the Redis URL.

        redis-py 8 made 5 s the default socket timeout, the same 5 s channels_redis blocks in
        BZPOPMIN waiting for a consumer's next message: any consumer idle for 5 s then dies with
        "Timeout reading from redis" (the anchors' ctl.sh start, with redis-py 8.1 and
        channels_redis 4.3, loses every idle client that way).
        """
        a = anchors_home()
        self.port = free_port()
        url = self._start_redis() + "?socket_timeout=30"
        env = dict(os.environ, CHANNEL_LAYER="redis", REDIS_URL=url)
        cmd = [
            str(a / ".venv/bin/daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--verbosity",
            "0",
            "asgi:application",
        ]
        self._spawn(cmd, "django-redis", cwd=a / "bench/servers/djchan", env=env, listen_timeout=60)

    def _start_floor_streams(self) -> None:
        a = anchors_home()
        self.port = free_port()
        cmd = [
            str(a / ".venv/bin/python"),
            str(BENCH_DIR / "servers" / "floor_streams.py"),
            "--port",
            str(self.port),
            "--floor",
            str(a / "bench/servers/floor.py"),
        ]
        self._spawn(cmd, "floor-streams", listen_timeout=30)

    def _spawn(
        self,
        cmd: Sequence[str],
        log_name: str,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        listen_timeout: float,
        health: bool = False,
    ) -> None:
        """Start the server process ``cmd`` in its own session, its output to the log
        ``log_name``, and wait until it listens (and, with ``health``, answers ``/health``);
        if it never does, stop everything started so far and re-raise."""
        self._proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdout=self._log(log_name),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._root = self._proc.pid
        try:
            _wait_port(self.port, listen_timeout, self._proc)
            if health:
                _wait_health(self.port, 30)
        except Exception:
            self.stop()
            raise


# ---------------------------------------------------------------------------------------------
# Load clients
# ---------------------------------------------------------------------------------------------


def run_streaming(
    cmd: Sequence[str],
    on_stderr: Callable[[str], bool | None],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    prefix: str | None = "",
) -> str:
    """Run a load client; call ``on_stderr`` for each progress line as it arrives.

    Progress lines are echoed to our stderr with ``prefix`` (``None``: not echoed). When
    ``on_stderr`` returns true, the client is killed (the run is hopeless; stop wasting time).

    Returns:
        The client's stdout (its JSON result line).

    Raises:
        TimeoutError: the client ran past ``timeout`` seconds (it is killed).
    """
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else ""))
    reader.start()
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        for line in proc.stderr:
            if prefix is not None:
                sys.stderr.write(prefix + line)
            if on_stderr(line):
                proc.kill()
                break
        proc.wait(max(1.0, deadline - time.monotonic()))
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
    if time.monotonic() > deadline:
        raise TimeoutError(f"load client ran past {timeout}s: {' '.join(cmd[:3])}")
    return "".join(out)


def last_json_line(text: str) -> dict[str, Any]:
    """The last line of ``text`` that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    return obj
    raise ValueError(f"no JSON result in client output: {text[-300:]!r}")


def cli_flags(**options: object) -> list[str]:
    """``--name value`` for each option, in the order given (``max_seconds=5`` becomes
    ``--max-seconds 5``)."""
    flags: list[str] = []
    for name, value in options.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def harness_command(anchors: Path, srv: Server, **options: int) -> list[str]:
    """The command line of the anchors' Node load client (``anchors/bench/run.sh``, see
    :func:`anchors_home`) against ``srv``: its URL and protocol mode, then ``options`` (the
    client's own, in the order given), then the server's pids (for its memory figures) and
    the kind as the run's label."""
    pids = ",".join(map(str, srv.pids()))
    flags = cli_flags(url=srv.url, mode=srv.mode, **options, server_pid=pids, label=srv.kind)
    return [str(anchors / "bench" / "run.sh"), *flags]


def loadclient_command(scenario: str, **options: object) -> list[str]:
    """The command line of ``benchmarks/loadclient.js`` running ``scenario``, with
    ``options`` as its flags, in the order given."""
    script = str(BENCH_DIR / "loadclient.js")
    return ["node", "--max-old-space-size=4096", script, scenario, *cli_flags(**options)]


def run_load_client(
    srv: Server,
    cmd: Sequence[str],
    marks: Mapping[str, str],
    *,
    timeout: float,
    env: dict[str, str],
    prefix: str | None,
    stop: Callable[[str], bool] | None = None,
) -> tuple[str, dict[str, CpuSnapshot]]:
    """Run a load client (:func:`run_streaming`) and read ``srv``'s CPU at its progress lines.

    ``marks`` maps a text to look for in a progress line to a snapshot name: the first text
    a line contains takes a :class:`CpuSnapshot` of ``srv`` under that name. A line that
    contains none of them is passed to ``stop``; when that returns true the client is killed.

    Returns:
        The client's stdout and the snapshots taken, by name.
    """
    snaps: dict[str, CpuSnapshot] = {}

    def on_line(line: str) -> bool:
        for text, name in marks.items():
            if text in line:
                snaps[name] = CpuSnapshot(srv)
                return False
        return stop is not None and stop(line)

    out = run_streaming(cmd, on_line, timeout=timeout, env=env, prefix=prefix)
    return out, snaps


@contextlib.contextmanager
def server_for(kind: str, *, streams: bool = False) -> Iterator[Server]:
    """``with server_for(kind) as srv:`` starts a fresh server and stops it afterwards."""
    srv = Server(kind, streams=streams)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


__all__ += [
    "cli_flags",
    "harness_command",
    "last_json_line",
    "loadclient_command",
    "run_load_client",
    "server_for",
]


# ---------------------------------------------------------------------------------------------
# A raw subscriber (Python load clients on uvloop)
# ---------------------------------------------------------------------------------------------


def client_frame(text: str) -> bytes:
    """A masked client text frame (mask key 0: the payload stays as is)."""
    data = text.encode()
    n = len(data)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + data


class RawSubscriber(asyncio.Protocol):
    """One WebSocket of a load client: the upgrade by hand (no extensions unless
    :attr:`extra_headers` offers one), a subscribe,
    then every byte after the confirmation goes to :meth:`received` as it arrives, raw
    (counting markers in the byte stream keeps the client cheaper than the servers)."""

    #: Header lines (each ending in CRLF) added to the upgrade request, e.g. an extension offer.
    extra_headers = b""

    def __init__(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.port = port
        self.head = b""
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.confirmed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, port: int, identifier: str, **kwargs: Any) -> Any:
        """Connect, upgrade and subscribe to ``identifier``; return once confirmed.

        ``kwargs`` go to the constructor, after ``port``.
        """
        loop = asyncio.get_running_loop()
        _t, client = await loop.create_connection(lambda: cls(port, **kwargs), "127.0.0.1", port)
        await asyncio.wait_for(client.upgraded, 20)
        command = {"command": "subscribe", "identifier": identifier}
        client.transport.write(client_frame(json.dumps(command)))
        await asyncio.wait_for(client.confirmed, 20)
        return client

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(
            b"GET /cable HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: actioncable-v1-json\r\n%s\r\n"
            % (self.port, self.extra_headers)
        )

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(self.head[:200].decode("latin-1")))
                return
            data = self.head[end + 4 :]
            self.upgraded.set_result(None)
        self.stream_received(data)

    def stream_received(self, data: bytes) -> None:
        """Bytes after the upgrade response: the confirmation is awaited, what follows it
        goes to :meth:`received` (override to take the whole stream)."""
        if not self.confirmed.done():
            if b"confirm_subscription" in data:
                self.confirmed.set_result(None)
            return
        self.received(data)

    def received(self, data: bytes) -> None:
        """Bytes after the confirmation (override)."""

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.upgraded, self.confirmed):
            if not fut.done():
                fut.set_exception(ConnectionError("closed"))


__all__ += ["RawSubscriber", "client_frame"]
