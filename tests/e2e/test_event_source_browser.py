"""Server-sent events in Chromium: a page's ``EventSource`` receives broadcasts and, after
the server is restarted (history in Redis), resumes from ``Last-Event-ID`` by itself with
nothing missing or repeated."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright")

from playwright.sync_api import Browser, Page

from ..conftest import free_port
from ..servers import CablecarProcess
from .test_demo_browser import WAIT_MS, browser  # noqa: F401  (the Chromium fixture)

APP = "tests/e2e/reliable_app.py:cable"
KEY = "event-source-key"
IDENTIFIER = '{"channel":"ChatChannel","room":"es"}'

PAGE = """<!doctype html><title>events</title><script>
window.got = []; window.ids = []; window.opens = 0;
const source = new EventSource("/events?user=reader&identifier=" + encodeURIComponent(%s));
source.onopen = () => { window.opens += 1; };
source.onmessage = (event) => { window.got.push(JSON.parse(event.data).n); window.ids.push(event.lastEventId); };
</script>"""


def post(base: str, body: Any) -> int:
    request = urllib.request.Request(
        base + "/_broadcast",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return int(reply.status)


def wait_for(page: Page, expression: str) -> None:
    page.wait_for_function(expression, timeout=WAIT_MS * 4)


@pytest.mark.services
def test_event_source_resumes_after_a_server_restart_from_last_event_id(
    browser: Browser,  # noqa: F811
    redis_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """3 broadcasts reach the page; the server stops (server_restart); 3 more are
    broadcast from another process while no server runs; a new server on the same port
    comes up; the browser's EventSource reconnects with Last-Event-ID and gets the 3 it
    missed, then a live one: 1..7, once each, in order."""
    prefix = f"es{free_port()}"
    for name, value in {
        "CABLE_PUBSUB": redis_server.url,
        "CABLE_PREFIX": prefix,
        "CABLE_BROADCAST_KEY": KEY,
    }.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = CablecarProcess(port, APP, log=tmp_path / "one.log").start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.route(
            f"{base}/page.html",
            lambda route: route.fulfill(
                body=PAGE % json.dumps(IDENTIFIER), content_type="text/html"
            ),
        )
        page.goto(f"{base}/page.html")
        wait_for(page, "window.opens === 1")
        for n in (1, 2, 3):
            assert post(base, {"stream": "chat_es", "data": json.dumps({"n": n})}) == 201
        wait_for(page, "window.got.length === 3")
        server.stop()
        for n in (4, 5, 6):
            subprocess.run(
                [sys.executable, "-m", "cablecar", "broadcast", "--pubsub", redis_server.url,
                 "--channel-prefix", prefix, "--history", "-q", "chat_es", json.dumps({"n": n})],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        server = CablecarProcess(port, APP, log=tmp_path / "two.log").start()
        wait_for(page, "window.got.length === 6")
        assert post(base, {"stream": "chat_es", "data": json.dumps({"n": 7})}) == 201
        wait_for(page, "window.got.length === 7")
        page.wait_for_timeout(300)
        assert page.evaluate("window.got") == [1, 2, 3, 4, 5, 6, 7]
        assert page.evaluate("window.opens") == 2
        ids = page.evaluate("window.ids")
        assert [int(i.split("/")[0]) for i in ids] == sorted(int(i.split("/")[0]) for i in ids)
    finally:
        context.close()
        server.stop()
