"""docs/fastapi.md's recipe, run as written: its main.py in an empty folder under uvicorn, a
client subscribed through the middleware, a POST to the app's own route reaching it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import cablecar.client

from ..servers import ROOT, serving
from ..timing import TIMEOUT
from .official_client import assert_refused

PAGE = ROOT / "docs" / "fastapi.md"


@pytest.fixture
def recipe(tmp_path: Path) -> Iterator[int]:
    """main.py from the page in an empty folder, served by uvicorn; yields the port."""
    code = re.search(r"```python\n# main\.py\n(.*?)```", PAGE.read_text(), re.S)
    assert code is not None
    (tmp_path / "main.py").write_text(code.group(1))
    with serving(tmp_path, "uvicorn", "main:app", "--ws", "websockets-sansio",
                 "--log-level", "warning") as port:  # fmt: skip
        yield port


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
    await assert_refused(url)
