"""docs/fastapi.md's recipe, run as written: its main.py in an empty folder under uvicorn, a
client subscribed through the middleware, a POST to the app's own route reaching it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import cablecar.client
from cablecar.errors import ConnectionRejected

from ..conftest import free_port
from ..servers import ROOT, wait_port
from ..timing import TIMEOUT

PAGE = ROOT / "docs" / "fastapi.md"


@pytest.fixture
def recipe(tmp_path: Path) -> Iterator[int]:
    """main.py from the page in an empty folder, served by uvicorn; yields the port."""
    code = re.search(r"```python\n# main\.py\n(.*?)```", PAGE.read_text(), re.S)
    assert code is not None
    (tmp_path / "main.py").write_text(code.group(1))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "main:app", "--ws", "websockets-sansio",
         "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port)
        yield port
    finally:
        server.terminate()
        server.wait(10)


async def test_the_recipe_runs_in_a_new_project(recipe: int) -> None:
    """A subscriber of NewsChannel gets what POST /news sends; a connection without a
    user is refused as unauthorized."""
    url = f"ws://127.0.0.1:{recipe}/cable"
    async with cablecar.client.connect(f"{url}?user=ann") as consumer:
        news = await consumer.subscribe("NewsChannel")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{recipe}") as http:
            answer = await http.post("/news", json={"title": "cablecar in FastAPI"})
        assert answer.json() == {"sent": True}
        assert await news.receive(timeout=TIMEOUT) == {"title": "cablecar in FastAPI"}
    with pytest.raises(ConnectionRejected) as info:
        async with cablecar.client.connect(url, reconnect=False):
            pass
    assert info.value.reason == "unauthorized"
