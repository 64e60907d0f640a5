"""Run ``cablecar serve`` as a real subprocess on a free port, stop it, start it again.

Also a command-line tool for shell commands that must stop/start a server (the
conformance suite's restart test)::

    python -m tests.servers start PORT PIDFILE APP
    python -m tests.servers stop PIDFILE
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE_APP = "examples/conformance_app.py:cable"


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


class CablecarProcess:
    """``cablecar serve APP --port PORT`` in a subprocess."""

    def __init__(
        self, port: int, app: str = CONFORMANCE_APP, *extra: str, log: Path | None = None
    ) -> None:
        self.port = port
        self.app = app
        self.extra = list(extra)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/cable"

    def start(self) -> CablecarProcess:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cablecar",
                "serve",
                self.app,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.extra,
            ],
            cwd=ROOT,
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


def main(argv: list[str]) -> int:
    if argv[0] == "start":
        port, pidfile = int(argv[1]), Path(argv[2])
        app = argv[3] if len(argv) > 3 else CONFORMANCE_APP
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cablecar",
                "serve",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        pidfile.write_text(str(proc.pid))
        wait_port(port)
        print(f"started pid {proc.pid}")
        return 0
    if argv[0] == "stop":
        pidfile = Path(argv[1])
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return 0
        for _ in range(300):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        print(f"stopped pid {pid}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
