"""The README's example is a real file that runs: served by 'cablecar serve', it chats."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ConnectWS, free_port
from .servers import ROOT, CablecarProcess

README = ROOT / "README.md"
CHAT_APP = ROOT / "examples" / "chat_app.py"


def test_readme_shows_the_example_file_verbatim() -> None:
    """The first Python block of the README is examples/chat_app.py, byte for byte."""
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    assert block.group(1) == CHAT_APP.read_text()


@pytest.fixture
def chat_server(tmp_path: Path) -> Iterator[CablecarProcess]:
    server = CablecarProcess(
        free_port(), "examples/chat_app.py:cable", log=tmp_path / "log"
    ).start()
    yield server
    server.stop()


async def test_readme_example_chats_and_rejects(
    chat_server: CablecarProcess, ws_connect: ConnectWS
) -> None:
    """'cablecar serve examples/chat_app.py:cable': two users chat in room 1; no user is refused."""
    ann = await ws_connect(chat_server.url + "?user=ann")
    bob = await ws_connect(chat_server.url + "?user=bob")
    room = '{"channel":"ChatChannel","room":"1"}'
    for c in (ann, bob):
        assert (await c.subscribe(room))["type"] == "confirm_subscription"
    assert (await ann.subscribe('{"channel":"ChatChannel"}'))["type"] == "reject_subscription"
    await ann.perform(room, "speak", body="hi bob")
    assert (await bob.recv_data()) == {
        "identifier": room,
        "message": {"from": "ann", "body": "hi bob"},
    }
    nobody = await ws_connect(chat_server.url, welcome=False)
    assert (await nobody.recv()) == {
        "type": "disconnect",
        "reason": "unauthorized",
        "reconnect": False,
    }
