"""docs/django.md's recipe, run as written: `django-admin startproject mysite`, the page's
four files, migrate, a user, uvicorn; the user's session cookie opens the cable and a view
publishes to that user's stream."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import cablecar.client

from ..servers import ROOT, serving
from ..timing import TIMEOUT
from .official_client import assert_refused

PAGE = ROOT / "docs" / "django.md"
FILE_BLOCK = re.compile(r"```python\n# (mysite/\w+\.py)\n(.*?)```", re.S)

LOGIN = (
    "from django.contrib.auth.models import User; from django.test import Client; "
    "User.objects.create_user('ann', password='pw-for-ann'); c = Client(); "
    "assert c.login(username='ann', password='pw-for-ann'); print(c.cookies['sessionid'].value)"
)


def _run(*argv: str, cwd: Path) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    done = subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """The page's project, migrated and served; yields the port and ann's session id."""
    _run("-m", "django", "startproject", "mysite", ".", cwd=tmp_path)
    files = dict(FILE_BLOCK.findall(PAGE.read_text()))
    assert set(files) == {"mysite/cable.py", "mysite/views.py", "mysite/urls.py",
                          "mysite/asgi.py"}  # fmt: skip
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    _run("manage.py", "migrate", "-v", "0", cwd=tmp_path)
    session = _run("manage.py", "shell", "-c", LOGIN, cwd=tmp_path).split()[-1]
    with serving(tmp_path, "uvicorn", "mysite.asgi:application", "--ws", "websockets-sansio",
                 "--log-level", "warning") as port:  # fmt: skip
        yield port, session


async def test_the_recipe_runs_in_a_new_django_project(project: tuple[int, str]) -> None:
    """ann's session cookie opens the cable; GET /note?text=hi as ann reaches her
    NotesChannel subscription; a connection without a session is refused."""
    port, session = project
    url = f"ws://127.0.0.1:{port}/cable"
    cookies = {"sessionid": session}
    async with cablecar.client.connect(url, cookies=cookies) as consumer:
        notes = await consumer.subscribe("NotesChannel")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", cookies=cookies) as http:
            answer = await http.get("/note", params={"text": "hi"})
        assert answer.json() == {"sent": True}
        assert await notes.receive(timeout=TIMEOUT) == {"note": "hi"}
    await assert_refused(url)
