"""Helpers of the client tests: server processes, unique names.

Both servers run the conformance application (``examples/conformance_app.py`` and
``../shared/anchors/rails/app.rb``) as separate processes on free ports, so the client is
tested over real sockets against real servers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ..conftest import wait_healthy

ROOT = Path(__file__).resolve().parents[2]
ANCHORS_INSTALL = Path(
    os.environ.get("CABLECAR_ANCHORS_INSTALL", ROOT.parent / "shared" / "anchors" / "install.sh")
)
PYTHON = sys.executable
SERVER_KINDS = ["cablecar", pytest.param("rails", marks=pytest.mark.services)]


def unique(name: str) -> str:
    """A room or user name private to one test."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


class Server:
    """A server process on a fixed port that a test may stop and start again."""

    kind = ""

    def __init__(self, port: int, tmp: Path) -> None:
        self.port = port
        self.tmp = tmp

    @property
    def url(self) -> str:
        """The cable's WebSocket URL."""
        return f"ws://127.0.0.1:{self.port}/cable"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, *, fast: bool = False) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.kind} server on {self.port}>"


class CablecarServer(Server):
    """``python -m cablecar serve examples/conformance_app.py:cable``."""

    kind = "cablecar"
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.tmp / f"cablecar-{self.port}.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "cablecar", "serve", "examples/conformance_app.py:cable",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            wait_healthy(
                f"http://127.0.0.1:{self.port}", self.proc, lambda: log.read_text()[-3000:]
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, *, fast: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # graceful: clients get server_restart
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class RailsServer(Server):
    """Rails 6.1 Action Cable on puma, from ``../shared/anchors``."""

    kind = "rails"

    def __init__(self, port: int, tmp: Path, anchors: Path) -> None:
        super().__init__(port, tmp)
        self.anchors = anchors

    def start(self) -> None:
        subprocess.run(
            [str(self.anchors / "rails" / "start.sh"), str(self.port), "async"],
            check=True,
            timeout=60,
            stdout=subprocess.DEVNULL,
        )

    def stop(self, *, fast: bool = False) -> None:
        """Stop puma (``stop.sh``: TERM, graceful); ``fast`` kills it first (teardown)."""
        pidfile = self.anchors / "rails" / "run" / str(self.port) / "puma.pid"
        if fast and pidfile.exists():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        subprocess.run(
            [str(self.anchors / "rails" / "stop.sh"), str(self.port)],
            check=False,
            timeout=30,
            stdout=subprocess.DEVNULL,
        )
