"""docs/transports.md, run: its excerpt is examples/no_websocket.py verbatim, and every
``$`` command of its console blocks (curl against that example on a free port) prints
what the page shows under it (``...`` matches anything; pings are left out)."""

from __future__ import annotations

import doctest
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import free_port
from ..servers import ROOT, CablecarProcess

PAGE = ROOT / "docs" / "transports.md"
CONSOLE = re.compile(r"```console\n(.*?)```", re.S)
EXCERPT = re.compile(r"```python\n# (examples/\S+)\n(.*?)```", re.S)
PING = re.compile(r'event: ping\ndata: [^\n]*\n\n|\{"type":"ping","message":\d+\}\n')

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def commands(text: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` of every ``$`` line (with its ``\\`` continuations)."""
    found: list[tuple[str, str]] = []
    for block in CONSOLE.findall(text):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            assert lines[i].startswith("$ "), f"a console block line is not a command: {lines[i]}"
            command = lines[i][2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            i += 1
            expected = []
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
            found.append((command, "\n".join(expected).strip("\n")))
    return found


def test_the_excerpt_is_the_example() -> None:
    """The code shown in docs/transports.md is verbatim in the example it names."""
    blocks = EXCERPT.findall(PAGE.read_text())
    assert blocks
    for path, code in blocks:
        assert code in (ROOT / path).read_text(), f"not in {path}:\n{code}"


def test_every_command_of_the_page_prints_what_it_shows(tmp_path: Path) -> None:
    """Every curl command of docs/transports.md, run against the example, prints what the page shows."""
    steps = commands(PAGE.read_text())
    assert len(steps) >= 6 and sum("curl -sN" in c for c, _ in steps) >= 2
    port = free_port()
    server = CablecarProcess(port, "examples/no_websocket.py:cable", log=tmp_path / "log").start()
    try:
        script = ["set -u"]
        streaming = False
        for n, (command, _expected) in enumerate(steps):
            command = command.replace("localhost:8080", f"127.0.0.1:{port}")
            out = tmp_path / f"out{n}"
            if "curl -sN" in command:  # a stream: open while the next command runs, then ends
                script.append(f"{command} --max-time 3 > {out} 2>&1 &")
                script.append("stream=$!; sleep 0.7")
                streaming = True
            else:
                script.append(f"{command} > {out} 2>&1")
                if streaming:
                    script.append("wait $stream")
                    streaming = False
        script.append("wait")
        started = time.monotonic()
        subprocess.run(["bash", "-c", "\n".join(script)], check=True, timeout=60, cwd=tmp_path)
        assert time.monotonic() - started < 30
        checker = doctest.OutputChecker()
        for n, (command, expected) in enumerate(steps):
            got = PING.sub("", (tmp_path / f"out{n}").read_text()).strip("\n")
            assert checker.check_output(expected + "\n", got + "\n", doctest.ELLIPSIS), (
                f"$ {command}\nexpected:\n{expected}\ngot:\n{got}"
            )
    finally:
        server.stop()
