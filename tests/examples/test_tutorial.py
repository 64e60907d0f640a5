"""docs/tutorial.md, run as written: its files taken from the page into an empty folder,
`cablecar serve app.py:cable --static public`, two browsers chatting, and the page's
broadcast script reaching both."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..servers import ROOT, serving
from ..timing import FACTOR

PAGE = ROOT / "docs" / "tutorial.md"
#: A code block whose first line names its file: ``# app.py`` or ``<!-- public/index.html -->``.
FILE_BLOCK = re.compile(r"```(?:python|html)\n(?:# |<!-- )([\w/.]+)(?: -->)?\n.*?```", re.S)

pytestmark = pytest.mark.browser


def _files() -> dict[str, str]:
    found = {}
    for match in FILE_BLOCK.finditer(PAGE.read_text()):
        block = match.group(0)
        found[match.group(1)] = block[block.index("\n") + 1 : block.rindex("```")]
    return found


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The tutorial's files in an empty folder, served as step 4 says."""
    files = _files()
    assert set(files) == {"app.py", "public/index.html", "announce.py"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with serving(tmp_path, "cablecar", "serve", "app.py:cable", "--static", "public") as port:
        yield tmp_path, port


def test_the_tutorial_chat_works_in_two_browsers_and_from_the_script(
    folder: tuple[Path, int],
) -> None:
    """Two pages join under two names; what one says shows in both; `python announce.py`
    prints 201 and its message shows in both; HTML typed into the chat shows as text."""
    from playwright.sync_api import expect, sync_playwright

    from ..e2e.test_demo_browser import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make test installs Debian's chromium)")
    path, port = folder
    url = f"http://127.0.0.1:{port}/"
    wait = 5000 * FACTOR
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = []
            for name in ("ann", "bob"):
                page = browser.new_context().new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                page.goto(url)
                page.fill("#name", name)
                page.click("#join button")
                expect(page.locator("#say")).to_be_visible()
                pages.append((page, errors))
            ann, bob = pages[0][0], pages[1][0]
            _until_subscribed(port, 2)  # both subscribed before anyone speaks
            ann.fill("#text", "hello <b>bob</b>")
            ann.press("#text", "Enter")
            for page in (ann, bob):
                expect(page.locator("#messages li")).to_have_text(
                    ["ann: hello <b>bob</b>"], timeout=wait
                )
                assert page.locator("#messages b").count() == 0
            done = subprocess.run(
                [sys.executable, "announce.py", "The", "build", "is", "green"], cwd=path,
                env={**os.environ, "CHAT_SERVER": f"http://127.0.0.1:{port}"},
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert done.returncode == 0 and done.stdout.strip() == "201", done.stderr
            for page in (ann, bob):
                expect(page.locator("#messages li").last).to_have_text(
                    "announcer: The build is green", timeout=wait
                )
            assert [errors for _, errors in pages] == [[], []]
        finally:
            browser.close()


def _until_subscribed(port: int, count: int) -> None:
    deadline = time.monotonic() + 10 * FACTOR
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            if json.loads(answer.read())["subscriptions"] >= count:
                return
        assert time.monotonic() < deadline, "the pages did not subscribe"
        time.sleep(0.05)
