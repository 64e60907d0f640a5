"""cablecar.js, the package's browser client, under Node against a real cablecar server.

The JavaScript tests (tests/js/cablecar_js.test.mjs) connect, subscribe, get rejected and
refused, unsubscribe, lose the connection through a TCP proxy (cut, refused, silent, a lost
subscribe frame) and recover. The same file passes against Rails' own Action Cable:

    CABLE_URL=ws://127.0.0.1:PORT/cable node --experimental-websocket --test tests/js/cablecar_js.test.mjs
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import free_port, wait_healthy

pytestmark = pytest.mark.node

#: The conformance app signs $pubsub names with it; the Node test signs with node:crypto.
STREAMS_SECRET = "cablecar-js-test-secret"

ROOT = Path(__file__).resolve().parents[2]
JS_TEST = ROOT / "tests" / "js" / "cablecar_js.test.mjs"


@pytest.mark.parametrize("history", [False, True], ids=["plain", "history"])
def test_cablecar_js_passes_its_node_tests_against_cablecar(history: bool) -> None:
    """Every test of cablecar.js passes against `cablecar serve examples/conformance_app.py`;
    with ``history=True`` it speaks the extended protocol (and its resume, presence and
    whisper tests run too)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (make test installs it)")
    port = free_port()
    app = f"{ROOT / 'examples' / 'conformance_app.py'}:cable"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cablecar",
            "serve",
            app,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "CABLE_STREAMS_SECRET": STREAMS_SECRET,
            "CABLE_HISTORY": "1" if history else "0",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        result = subprocess.run(
            [node, "--experimental-websocket", "--test", "--test-reporter=tap", str(JS_TEST)],
            cwd=ROOT,
            env={
                **os.environ,
                "CABLE_URL": f"ws://127.0.0.1:{port}/cable",
                "STREAMS_SECRET": STREAMS_SECRET,
                "CABLE_EXT": "1" if history else "0",
            },
            capture_output=True,
            text=True,
            timeout=100,
        )
    finally:
        server.terminate()
        try:
            _, errors = server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            _, errors = server.communicate()
    report = result.stdout
    passed = re.search(r"^# pass (\d+)", report, re.M)
    failed = re.search(r"^# fail (\d+)", report, re.M)
    assert result.returncode == 0 and failed and failed[1] == "0", (
        f"node tests failed:\n{report[-6000:]}\n{result.stderr[-2000:]}\n"
        f"server stderr:\n{errors.decode(errors='replace')[-3000:]}"
    )
    assert passed and int(passed[1]) >= 10, report[-2000:]
    skipped = re.search(r"^# skipped (\d+)", report, re.M)
    assert skipped and skipped[1] == ("0" if history else "2"), report[-2000:]
