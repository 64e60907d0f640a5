"""Throwaway redis-server, PostgreSQL and nats-server processes for tests.

Each server runs on a free port on 127.0.0.1 with its files in a fresh temporary
directory, never touches the machine's own services, and can be stopped (politely or
by SIGKILL, to simulate a crash) and started again on the same port::

    with RedisServer() as redis:
        url = redis.url          # redis://127.0.0.1:<port>/0
        redis.stop(kill=True)    # the broker dies
        redis.start()            # and comes back on the same port

Missing binaries raise :class:`ServiceUnavailable` (the fixtures turn it into a skip).
PostgreSQL refuses to run as root, so as root ``initdb``/``pg_ctl`` run as the
``postgres`` user through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

__all__ = [
    "NatsServer",
    "PostgresServer",
    "RedisServer",
    "Service",
    "ServiceUnavailable",
    "free_port",
]

#: Upper bound on any start or stop, in seconds.
START_TIMEOUT = 30.0


class ServiceUnavailable(RuntimeError):
    """The server's binary is not installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find(name: str, *patterns: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[-1]
    raise ServiceUnavailable(f"{name} is not installed (make test installs it)")


class Service:
    """A server process on ``127.0.0.1:port`` with its files in ``self.dir``."""

    name = "service"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"cablecar-{self.name}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL a cablecar adapter connects to."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers."""
        raise NotImplementedError

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM, or SIGKILL with ``kill=True`` (a crash)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(START_TIMEOUT)

    def close(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _spawn(self, args: list[str], ready: Callable[[], bool], what: str) -> None:
        """Unless running, start ``args`` (output discarded) and wait until ``ready()``."""
        if self.running:
            return
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until(ready, what)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _wait_until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self._log_tail()}"
                )
            with contextlib.suppress(OSError):
                if ready():
                    return
            time.sleep(0.02)
        raise RuntimeError(
            f"{self.name} did not {what} within {START_TIMEOUT} s:\n{self._log_tail()}"
        )


def _greeting(port: int, send: bytes, expect: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        if send:
            sock.sendall(send)
        data = b""
        while len(data) < len(expect):
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
        return data.startswith(expect)


class RedisServer(Service):
    """``redis-server --port P --save "" --appendonly no`` in a temp dir."""

    name = "redis"

    def __init__(self, port: int | None = None) -> None:
        self.binary = _find("redis-server")
        super().__init__(port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._spawn(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "no",
                "--dir", str(self.dir),
                "--logfile", str(self.log_path),
            ],
            lambda: _greeting(self.port, b"PING\r\n", b"+PONG"),
            "answer PING",
        )  # fmt: skip


class NatsServer(Service):
    """``nats-server -a 127.0.0.1 -p P -js`` (core NATS, and JetStream stored in the
    temp dir, for history; ``jetstream=False``: core NATS only)."""

    name = "nats"

    def __init__(self, port: int | None = None, *, jetstream: bool = True) -> None:
        self.binary = _find("nats-server", "/usr/sbin/nats-server", "/usr/local/sbin/nats-server")
        self.jetstream = jetstream
        super().__init__(port)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._spawn(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-l", str(self.log_path),
             *(["-js", "-sd", str(self.dir / "jetstream")] if self.jetstream else [])],
            lambda: _greeting(self.port, b"", b"INFO "),
            "send INFO",
        )  # fmt: skip


class PostgresServer(Service):
    """A PostgreSQL cluster made by ``initdb`` (trust auth) and run by ``pg_ctl``.

    The unix socket lives in the temp dir; as root, everything runs as ``postgres``.
    ``stop(kill=True)`` is ``pg_ctl stop -m immediate``: no clean shutdown, crash
    recovery on the next start, every client connection dropped.
    """

    name = "postgres"

    def __init__(self, port: int | None = None) -> None:
        pattern = "/usr/lib/postgresql/*/bin/"
        self.initdb = _find("initdb", pattern + "initdb")
        self.pg_ctl = _find("pg_ctl", pattern + "pg_ctl")
        super().__init__(port)
        self.data = self.dir / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = _find("runuser", "/usr/sbin/runuser", "/sbin/runuser")
            self._as_user = [runuser, "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres", "postgres")
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def running(self) -> bool:
        return self._started

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as_user, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=START_TIMEOUT * 2,
            check=False,
        )
        if done.returncode != 0:
            output = done.stdout.decode(errors="replace")[-2000:]
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}):\n{output}\n{self._log_tail()}"
            )

    def start(self) -> None:
        if self._started:
            return
        if not (self.data / "PG_VERSION").exists():
            self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-locale", "--no-sync")  # fmt: skip
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write(
                    f"port = {self.port}\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 100\n"
                )
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log_path), "-w",
                  "-t", str(int(START_TIMEOUT)), "start")  # fmt: skip
        self._started = True

    def stop(self, *, kill: bool = False) -> None:
        if not self._started:
            return
        self._started = False
        mode = "immediate" if kill else "fast"
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w",
                  "-t", str(int(START_TIMEOUT)), "stop")  # fmt: skip


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def freeze(pids: list[int], timeout: float = 10.0) -> None:
    """SIGSTOP ``pids`` and return once every thread of each is stopped.

    The kernel wakes one thread to begin a group stop; until it runs, the others go on
    (on a busy machine, for milliseconds: long enough for a server to answer a PING).
    """
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while not all(_state(pid, task) in ("T", "t", "Z", "X", None)
                      for task in os.listdir(f"/proc/{pid}/task")):  # fmt: skip
            if time.monotonic() > deadline:
                raise TimeoutError(f"process {pid} did not stop")
            time.sleep(0.001)


def thaw(pids: list[int]) -> None:
    """SIGCONT what :func:`freeze` stopped."""
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """:func:`freeze` ``pids`` for the block, :func:`thaw` them after (even on failure)."""
    freeze(pids)
    try:
        yield
    finally:
        thaw(pids)


def _state(pid: int, task: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children(p)
    return found
