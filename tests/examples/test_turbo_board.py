"""examples/turbo_board in headless Chromium: Hotwire's Turbo and its stream source
element, served by the example under uvicorn, apply Turbo Streams that Python code
broadcasts through cablecar (a view, a background task, a separate worker process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import free_port
from ..e2e.test_demo_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS
from ..servers import ROOT

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

pytestmark = pytest.mark.browser

EXAMPLE = ROOT / "examples" / "turbo_board"
NODE_MODULES = ROOT / "tests/js/node_modules"
TURBO_JS = NODE_MODULES / "@hotwired/turbo-rails/app/assets/javascripts/turbo.js"


class Board:
    """``uvicorn app:app`` for the example in a subprocess."""

    def __init__(self, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", "--port", str(self.port),
             "--ws", "websockets-sansio", "--log-level", "warning"],
            cwd=EXAMPLE, env={**os.environ, "TURBO_JS": str(TURBO_JS), **env},
            stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.url + "/turbo.js", timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("the example did not start:\n" + log.read_text()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make test installs Debian's chromium)")
    if not TURBO_JS.exists():
        pytest.skip("@hotwired/turbo-rails is not installed (make npmdeps)")
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser: Browser, url: str, errors: list[str]) -> Page:
    page = browser.new_context().new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    # The stream source element is connected (its subscription confirmed).
    expect(page.locator("turbo-cable-stream-source[connected]")).to_have_count(1, timeout=WAIT_MS)
    return page


def test_turbo_page_appends_removes_and_escapes(browser: Browser, tmp_path: Path) -> None:
    """Two pages: a post from one appears in both (``append`` from the view), HTML in the
    text shows as text, the clock updates (a background task), delete removes the item
    from both (``remove``)."""
    board = Board(tmp_path / "board.log")
    errors: list[str] = []
    try:
        alice = open_page(browser, board.url, errors)
        bob = open_page(browser, board.url, errors)
        expect(bob.locator("#clock")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"), timeout=WAIT_MS)
        hostile = '<img src=x onerror="document.body.dataset.owned=1"><b>bold</b>'
        alice.fill("#message_form input[name=text]", hostile)
        alice.click("#message_form button")
        for page in (alice, bob):
            item = page.locator("#messages li .text")
            expect(item).to_have_text(hostile, timeout=WAIT_MS)  # shown as text
            assert page.locator("#messages img, #messages b").count() == 0
            assert page.evaluate("document.body.dataset.owned") is None
        expect(alice.locator("#message_form input[name=text]")).to_have_value("")
        bob.click("#messages li button")
        for page in (alice, bob):
            expect(page.locator("#messages li")).to_have_count(0, timeout=WAIT_MS)
    finally:
        board.stop()
    assert errors == [], errors


def test_anycable_turbo_stream_page(browser: Browser, tmp_path: Path) -> None:
    """The same board through @anycable/turbo-stream and @anycable/web (extended
    protocol): its stream source element is confirmed, a post appears, a delete removes
    it; the vendor route serves only the listed packages' scripts."""
    board = Board(tmp_path / "board.log", NODE_MODULES=str(NODE_MODULES))
    errors: list[str] = []
    try:
        page = open_page(browser, board.url + "/anycable", errors)
        page.fill("#message_form input[name=text]", "<b>via anycable</b>")
        page.click("#message_form button")
        expect(page.locator("#messages li .text")).to_have_text(
            "<b>via anycable</b>", timeout=WAIT_MS
        )
        page.click("#messages li button")
        expect(page.locator("#messages li")).to_have_count(0, timeout=WAIT_MS)
        for path in ("/vendor/../package.json", "/vendor/ws/index.js", "/vendor/%2e%2e/x.js"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(board.url + path, timeout=5)
    finally:
        board.stop()
    assert errors == [], errors


@pytest.mark.services
def test_a_worker_process_broadcasts_to_the_page(
    browser: Browser, tmp_path: Path, redis_server: Any
) -> None:
    """With the app on Redis, ``worker.py`` (a separate process with a Broadcaster)
    appends a notice to an open page; its text is escaped."""
    board = Board(tmp_path / "board.log", CABLE_PUBSUB=redis_server.url)
    errors: list[str] = []
    try:
        page = open_page(browser, board.url, errors)
        subprocess.run(
            [sys.executable, "worker.py", "<i>deployed</i>"], cwd=EXAMPLE, check=True,
            env={**os.environ, "CABLE_PUBSUB": redis_server.url}, timeout=60,
        )  # fmt: skip
        expect(page.locator("#messages li.notice")).to_have_text("<i>deployed</i>", timeout=WAIT_MS)
        assert page.locator("#messages i").count() == 0
    finally:
        board.stop()
    assert errors == [], errors
