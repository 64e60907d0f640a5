"""Run ``cablecar serve`` as a real subprocess on a free port, stop it, start it again.

Also a command-line tool for shell commands that must stop/start a server (the
conformance suite's restart test)::

    python -m tests.servers start PORT PIDFILE APP
    python -m tests.servers stop PIDFILE
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE_APP = "examples/conformance_app.py:cable"
#: The shared Action Cable conformance suite (official JS clients), beside the repo.
CONFORMANCE = ROOT.parent / "shared" / "conformance" / "run.sh"


@contextlib.contextmanager
def serving(folder: Path, *module_argv: str) -> Iterator[int]:
    """``python -m <module_argv> --port <a free port>`` run in ``folder`` (a project built
    from a docs page) until the block ends; yields the port once it accepts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", *module_argv, "--port", str(port)],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def wait_port(port: int, up: bool = True, timeout: float = 15.0) -> None:
    """Wait until 127.0.0.1:port accepts (or refuses) connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not come {'up' if up else 'down'} in {timeout}s")


class ServerProcess:
    """A server in a subprocess of its own session, started in ROOT; ``start`` returns
    once it listens on ``port``. Subclasses say which ``command`` and ``url``."""

    def __init__(self, port: int, log: Path | None = None, env: dict[str, str] | None = None):
        self.port = port
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/cable"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=None if self.env is None else {**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_port(self.port)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class CablecarProcess(ServerProcess):
    """``cablecar serve APP --port PORT`` in a subprocess."""

    def __init__(
        self,
        port: int,
        app: str = CONFORMANCE_APP,
        *extra: str,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(port, log, env)
        self.app = app
        self.extra = list(extra)

    def command(self) -> list[str]:
        serve = [sys.executable, "-m", "cablecar", "serve", self.app, "--host", "127.0.0.1"]
        return [*serve, "--port", str(self.port), *self.extra]


def start_detached(command: list[str], port: int, pidfile: Path) -> int:
    """Start ``command`` in ROOT in its own session (it outlives the shell that asked),
    write its pid to ``pidfile`` and wait until it listens on ``port``."""
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pidfile.write_text(str(proc.pid))
    wait_port(port)
    print(f"started pid {proc.pid}")
    return 0


def stop_pidfile(pidfile: Path) -> int:
    """SIGTERM the process named in ``pidfile`` and wait (15 s at most) until it exits."""
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    for _ in range(300):
        if not _alive(pid):
            break
        time.sleep(0.05)
    print(f"stopped pid {pid}")
    return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def conformance_home(name: str) -> Path:
    """A working folder for one run of the shared suite (``CONFORMANCE_HOME``: run.sh
    copies the suite into it), so that several runs can go at once. The npm packages
    are installed once, beside it, and shared through a ``node_modules`` link: make
    every run's folder before starting any of them."""
    base = Path.home() / ".cache" / "cablecar-conformance"
    modules = base / "node_modules"
    wanted = ("@rails/actioncable", "@anycable/core", "ws")
    if not all((modules / pkg / "package.json").exists() for pkg in wanted):
        base.mkdir(parents=True, exist_ok=True)
        for lock in ("package.json", "package-lock.json"):
            shutil.copy(CONFORMANCE.parent / lock, base / lock)
        npm = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        subprocess.run(npm, cwd=base, check=True, capture_output=True, timeout=300)
    home = base / "runs" / name
    home.mkdir(parents=True, exist_ok=True)
    link = home / "node_modules"
    if not link.is_symlink():
        shutil.rmtree(link, ignore_errors=True)
        link.symlink_to(modules, target_is_directory=True)
    return home


def run_conformance_suite(
    server: ServerProcess, control: str, tmp_path: Path, *extra: str, home: Path
) -> None:
    """Run the shared conformance suite against ``server`` (started) and assert it ends
    with 'N passed, 0 failed'; ``server`` is stopped after. Its restart test stops and
    starts the server with ``python -m <control> stop PIDFILE`` and ``python -m <control>
    start PORT PIDFILE *extra`` (``tests.servers`` or ``tests.asgi_servers``), in the
    server's environment. ``home``: the run's working folder (:func:`conformance_home`)."""
    assert server.proc is not None
    pidfile = tmp_path / "server.pid"
    pidfile.write_text(str(server.proc.pid))
    ctl = f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m {control}"
    start = shlex.join([str(server.port), str(pidfile), *extra])
    env = {
        **os.environ,
        **(server.env or {}),
        "CABLE_STOP_CMD": f"{ctl} stop {shlex.quote(str(pidfile))}",
        "CABLE_START_CMD": f"{ctl} start {start}",
        "CONFORMANCE_HOME": str(home),
    }
    try:
        result = subprocess.run(
            ["bash", str(CONFORMANCE), server.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=500,
        )
    finally:
        # The suite may have restarted the server: stop whichever process runs now.
        subprocess.run(["bash", "-c", env["CABLE_STOP_CMD"]], capture_output=True, timeout=30)
        server.stop()
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    output = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    print(f"conformance suite, {type(server).__name__} at {server.url}: {last}")  # pytest -rP
    passed, _, rest = last.partition(" passed, ")
    assert rest == "0 failed" and int(passed) >= 50, output


def main(argv: list[str]) -> int:
    if argv[0] == "start":
        port, pidfile = int(argv[1]), Path(argv[2])
        app = argv[3] if len(argv) > 3 else CONFORMANCE_APP
        cmd = [sys.executable, "-m", "cablecar", "serve", app, "--host", "127.0.0.1"]
        return start_detached([*cmd, "--port", str(port)], port, pidfile)
    if argv[0] == "stop":
        return stop_pidfile(Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
