"""docs/node.md: its two scripts, taken from the page as written, run under Node against
the README's chat app and print the message they sent."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from ..conftest import free_port
from ..servers import ROOT, CablecarProcess
from .official_client import JS, needs_node

PAGE = ROOT / "docs" / "node.md"
SCRIPT = re.compile(r"```js\n// (\w+\.mjs)[^\n]*\n(.*?)```", re.S)

pytestmark = [pytest.mark.node, needs_node]


@pytest.mark.parametrize(
    ("script", "client"),
    [("rails.mjs", "@rails/actioncable"), ("anycable.mjs", "@anycable/core")],
)
def test_the_pages_scripts_chat_with_cablecar(tmp_path: Path, script: str, client: str) -> None:
    """Each script of docs/node.md, copied as is, subscribes to the chat app, speaks, prints
    its own message back as JSON and exits 0 by itself."""
    scripts = dict(SCRIPT.findall(PAGE.read_text()))
    assert set(scripts) == {"rails.mjs", "anycable.mjs"}
    (tmp_path / script).write_text(scripts[script])
    (tmp_path / "node_modules").symlink_to(JS / "node_modules")
    server = CablecarProcess(free_port(), "examples/chat_app.py:cable").start()
    try:
        env = {**os.environ, "CABLE_URL": f"{server.url}?user=node"}
        done = subprocess.run(
            ["node", script], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"from": "node", "body": f"hello from {client}"}
