"""The ``cablecar`` command's first-run experience: errors name the fix, ``--help`` shows
defaults, a missing extra says what to install. Each runs the command as a user would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import free_port
from .servers import CablecarProcess

ROOT = Path(__file__).resolve().parent.parent

GREETER = textwrap.dedent(
    """
    from cablecar import Cable, Channel

    class GreeterChannel(Channel):
        async def subscribed(self):
            self.transmit({"hello": "from subscribed"})

        async def ask(self, data):
            self.transmit({"answer": data["q"] * 2})

    cable = Cable(channels=[GreeterChannel])
    """
)


def cablecar(*args: str, cwd: Path = ROOT, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cablecar", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False,
    )  # fmt: skip


def test_serve_on_a_busy_port_says_so_in_one_line() -> None:
    """cablecar serve on a port another program holds exits 1 with one line naming the
    address and the fix, and no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cablecar("serve", "examples/chat_app.py:cable", "--port", str(port))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("cablecar:")]
    assert errors == [
        f"cablecar: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another server on that port? choose one with --port)"
    ], done.stderr


def test_an_import_error_inside_the_app_names_its_file_and_line(tmp_path: Path) -> None:
    """An app module whose own import fails: the error names the missing module and the
    file and line of the import that failed, not just the app's name."""
    (tmp_path / "myapp.py").write_text("import os\nimport no_such_package_here\ncable = None\n")
    done = cablecar("serve", "myapp:cable", cwd=tmp_path)
    assert done.returncode == 1
    assert "No module named 'no_such_package_here'" in done.stderr
    assert f"raised at {tmp_path / 'myapp.py'}:2" in done.stderr
    missing = cablecar("serve", "nosuchapp:cable", cwd=tmp_path)
    assert "cannot import 'nosuchapp': No module named 'nosuchapp'" in missing.stderr


def test_help_shows_every_default() -> None:
    """serve --help, demo --help and perform --help show each option's default and say
    what --host and --port are."""
    serve = cablecar("serve", "--help").stdout
    assert "address to listen on (default: 127.0.0.1)" in serve
    assert "TCP port to listen on (default: 8080)" in serve
    assert "(default: info)" in serve and "(default: 1)" in serve
    assert "(default: 8080)" in cablecar("demo", "--help").stdout
    perform = cablecar("perform", "--help").stdout
    assert "(default: 10.0)" in perform and "(default: None)" not in perform


def test_without_the_client_extra_the_commands_say_what_to_install() -> None:
    """Without websockets installed, cablecar listen/perform and import cablecar.client
    say to pip install 'cablecar-py[client]' instead of "invalid choice" or a bare error."""
    block = "import sys; sys.modules['websockets'] = None; "
    for command in ("listen", "perform"):
        done = subprocess.run(
            [sys.executable, "-c", block + "from cablecar.cli import main; "
             f"sys.exit(main(['{command}', 'ws://127.0.0.1:1/cable', 'Chat']))"],
            capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "invalid choice" not in done.stderr
        assert f"cablecar {command} needs websockets: pip install 'cablecar-py[client]'" in (
            done.stderr
        )
    imported = subprocess.run(
        [sys.executable, "-c", block + "import cablecar.client"],
        capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
    )  # fmt: skip
    assert "cablecar.client needs the websockets package: pip install 'cablecar-py[client]'" in (
        imported.stderr
    )


@pytest.fixture
def greeter(tmp_path: Path) -> Iterator[CablecarProcess]:
    (tmp_path / "greeter.py").write_text(GREETER)
    app = f"{tmp_path / 'greeter.py'}:cable"
    server = CablecarProcess(free_port(), app, log=tmp_path / "log").start()
    try:
        yield server
    finally:
        server.stop()


def test_perform_wait_reply_prints_the_actions_reply(greeter: CablecarProcess) -> None:
    """perform --wait-reply prints the reply to the action, not what subscribed()
    transmitted before the confirmation."""
    done = cablecar("perform", greeter.url, "GreeterChannel", "ask", "q=21", "--wait-reply")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"answer": 42}


def test_the_servers_root_says_where_the_cable_is(greeter: CablecarProcess) -> None:
    """GET / on a bare cablecar serve answers 404 with a line saying where WebSocket
    clients connect and where health is, instead of a bare "not found"."""
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{greeter.port}/", timeout=5)
    body = info.value.read().decode()
    assert info.value.code == 404
    assert "nothing at /." in body
    assert "connect at /cable; health at /health" in body
