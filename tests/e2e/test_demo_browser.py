"""The chat demo in headless Chromium: what people see when they use the page.

One Chromium (Debian's, driven by Playwright) and several browser contexts, each a
separate person with their own storage and WebSocket. The demo runs as its own process
(`python -m cablecar demo`), so a test can kill it and start it again on the same port.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

from ..conftest import free_port, wait_healthy  # noqa: E402
from ..proxy import CuttableProxy  # noqa: E402
from ..timing import FACTOR  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CABLECAR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 5000 * FACTOR
#: A delay shown in milliseconds (push is never seconds late on one machine).
IN_MILLISECONDS = re.compile(r"^\d+ ms$")


class DemoProcess:
    """`python -m cablecar demo --port P` in a subprocess; killable and restartable."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "demo.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0 * FACTOR) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cablecar", "demo", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_healthy(self.url, self.proc, self.log, timeout)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, as when a machine dies."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM (what Ctrl-C does too): a graceful shutdown; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    server = DemoProcess(tmp_path_factory.mktemp("demo"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make test installs Debian's chromium)")
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Person:
    """One browser context (a separate person), its page, and what went wrong in it."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.page: Page = context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", self._on_dialog)

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def join(self, base: str, name: str, room: str) -> Person:
        page = self.page
        page.goto(f"{base}/#room={quote(room)}")
        page.get_by_label("Your name").fill(name)
        page.get_by_role("button", name="Join").click()
        expect(page.locator("#conn-state")).to_have_attribute(
            "data-state", "connected", timeout=WAIT_MS
        )
        expect(page.locator("#member-list")).to_contain_text(name, timeout=WAIT_MS)
        return self

    @property
    def box(self) -> Any:
        return self.page.get_by_role("textbox", name="Message", exact=True)

    @property
    def messages(self) -> Any:
        return self.page.locator("#messages .msg")

    def say(self, text: str) -> None:
        self.box.fill(text)
        self.box.press("Enter")


@pytest.fixture
def people(browser: Browser) -> Iterator[Any]:
    """``people()`` opens a new browser context; all are closed after the test."""
    opened: list[Person] = []

    def open_person() -> Person:
        person = Person(browser.new_context(viewport={"width": 1200, "height": 850}))
        opened.append(person)
        return person

    yield open_person
    for person in opened:
        assert person.errors == [], f"uncaught errors in the page: {person.errors}"
        person.context.close()


def _room(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_people_in_a_room_see_each_other_live_and_other_rooms_stay_apart(
    demo: DemoProcess, people: Any
) -> None:
    """Two people in one room see each other's messages, joins, leaves and typing at once
    (protocol presence and whisper); a tab that crashes leaves within the presence TTL;
    a third person in another room (created from the page) sees none of it; a newcomer
    gets the room's history; the how-it-works panel measures all three ways."""
    room = _room("tea")
    alice = people().join(demo.url, "alice", room)
    bob = people().join(demo.url, "bob", room)
    # Presence: alice sees bob arrive without doing anything.
    expect(alice.page.locator("#member-list")).to_contain_text("bob", timeout=WAIT_MS)
    expect(alice.page.locator("#member-count")).to_have_text("(2)")
    expect(alice.page.locator("#messages")).to_contain_text("bob joined.")

    carol = people().join(demo.url, "carol", "lobby")
    other = _room("coffee")
    carol.page.get_by_label("New room").fill(other)
    carol.page.get_by_label("New room").press("Enter")  # keyboard only
    expect(carol.page.locator("#room-title")).to_have_text(f"# {other}", timeout=WAIT_MS)
    expect(carol.page.locator("#member-list")).to_have_text("carol (you)", timeout=WAIT_MS)
    # The new room shows up in everyone's room list with its member count.
    expect(alice.page.locator(f'[data-room="{other}"]')).to_have_accessible_name(
        f"{other}, 1 person", timeout=WAIT_MS
    )

    # Typing: bob types, alice is told; carol, in another room, is not.
    bob.box.press_sequentially("hel")
    expect(alice.page.locator("#typing")).to_have_text("bob is typing…", timeout=WAIT_MS)

    alice.page.select_option("#poll-interval", "1")
    bob.box.fill("hello from bob")
    bob.box.press("Enter")
    last = alice.messages.last
    expect(last.locator(".author")).to_have_text("bob", timeout=WAIT_MS)
    expect(last.locator(".body")).to_have_text("hello from bob")
    expect(alice.page.locator("#typing")).to_have_text("")
    expect(bob.messages.last.locator(".body")).to_have_text("hello from bob", timeout=WAIT_MS)
    expect(bob.box).to_have_value("")

    carol.say("only in the other room")
    expect(carol.messages.last.locator(".body")).to_have_text(
        "only in the other room", timeout=WAIT_MS
    )
    time.sleep(0.3)
    assert "hello from bob" not in carol.page.locator("#messages").inner_text()
    assert "only in the other room" not in alice.page.locator("#messages").inner_text()
    assert carol.page.locator("#typing").inner_text() == ""

    # How it works: push has it already, in milliseconds; refresh and polling get it too.
    push = alice.page.locator("#method-push")
    expect(push.locator(".latest")).to_have_text("bob: hello from bob")
    expect(push.locator(".delay")).to_have_text(IN_MILLISECONDS)
    rr = alice.page.locator("#method-rr")
    expect(rr.locator(".latest")).to_have_text("\u2013")  # the placeholder dash
    alice.page.get_by_role("button", name="Refresh").click()
    expect(rr.locator(".latest")).to_have_text("bob: hello from bob", timeout=WAIT_MS)
    expect(rr.locator(".requests")).to_have_text("1")
    poll = alice.page.locator("#method-poll")
    expect(poll.locator(".latest")).to_have_text("bob: hello from bob", timeout=WAIT_MS)

    # History: someone arriving later sees what was said before.
    dave = people().join(demo.url, "dave", room)
    expect(dave.messages.locator(".body")).to_have_text(["hello from bob"], timeout=WAIT_MS)
    expect(dave.page.locator("#member-list .member")).to_have_count(3)

    # Leaving: bob closes his tab (the browser closes the socket); alice sees him go.
    bob.context.close()
    expect(alice.page.locator("#member-list")).not_to_contain_text("bob", timeout=WAIT_MS)
    expect(alice.page.locator("#messages")).to_contain_text("bob left.")
    expect(alice.page.locator("#member-count")).to_have_text("(2)")

    # Vanishing: dave's tab crashes (no unsubscribe, no close frame from the page); he is
    # still listed at first and leaves within the presence TTL (5 s) plus the sweep.
    with contextlib.suppress(playwright_sync.Error):
        dave.page.goto("chrome://crash", timeout=WAIT_MS)
    expect(alice.page.locator("#messages")).to_contain_text("dave left.", timeout=WAIT_MS * 3)
    expect(alice.page.locator("#member-list")).not_to_contain_text("dave")


def test_bad_input_is_refused_or_shown_as_plain_text(demo: DemoProcess, people: Any) -> None:
    """Empty and 100 kB messages are refused with a message to the user; HTML and script
    in a name or a message are shown as text: no element is created, nothing runs."""
    room = _room("xss")
    name = "<img src=x onerror=alert(1)>"
    mallory = people().join(demo.url, name, room)
    viewer = people().join(demo.url, "viewer", room)
    page = mallory.page

    mallory.say("")
    expect(page.locator("#composer-error")).to_contain_text("empty", timeout=WAIT_MS)
    mallory.say("   \n  ")
    expect(page.locator("#composer-error")).to_contain_text("empty")
    mallory.box.fill("x" * 100_000)
    expect(page.locator("#char-count")).to_contain_text("100000 / 2000")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#composer-error")).to_have_text(
        "Your message is 100000 characters long; the limit is 2000. It was not sent."
    )
    expect(mallory.box).to_have_value("x" * 100_000)  # kept, so nothing typed is lost
    assert mallory.messages.count() == 0

    payload = "<script>alert(2)</script><img src=x onerror=alert(3)><b>bold?</b>"
    mallory.say(payload)
    for person in (mallory, viewer):
        last = person.messages.last
        expect(last.locator(".body")).to_have_text(payload, timeout=WAIT_MS)
        expect(last.locator(".author")).to_have_text(name)
        expect(person.page.locator("#member-list")).to_contain_text(name)
        created = person.page.evaluate(
            "document.querySelectorAll('main img, main script, main b, #me img').length"
        )
        assert created == 0, "user text was parsed as HTML"
        assert person.dialogs == []
    expect(page.locator("#me-name")).to_have_text(name)
    expect(page.locator("#composer-error")).to_have_text("")
    time.sleep(0.3)  # an onerror handler would have fired by now
    assert mallory.dialogs == [] and viewer.dialogs == []
    assert viewer.messages.count() == 1


def test_page_reconnects_and_keeps_working_after_the_server_is_killed_and_restarted(
    demo: DemoProcess, people: Any
) -> None:
    """Kill -9 the server: the page says reconnecting; start it again on the same port:
    the page says connected, re-joins its room by itself, and chatting works again."""
    room = _room("phoenix")
    erin = people().join(demo.url, "erin", room)
    frank = people().join(demo.url, "frank", room)
    erin.say("before the crash")
    expect(frank.messages.last.locator(".body")).to_have_text("before the crash", timeout=WAIT_MS)

    demo.kill()
    for person in (erin, frank):
        expect(person.page.locator("#conn-state")).to_have_attribute(
            "data-state", "reconnecting", timeout=WAIT_MS
        )
        expect(person.page.locator("#conn-text")).to_have_text("Reconnecting…")
    erin.say("while down")
    expect(erin.page.locator("#composer-error")).to_contain_text("Not connected")

    demo.start()
    for person in (erin, frank):
        expect(person.page.locator("#conn-state")).to_have_attribute(
            "data-state", "connected", timeout=3 * WAIT_MS
        )
        expect(person.page.locator("#member-list")).to_contain_text("erin", timeout=WAIT_MS)
        expect(person.page.locator("#member-list")).to_contain_text("frank", timeout=WAIT_MS)
        expect(person.page.locator("#messages")).to_contain_text("The server restarted")
    erin.say("after the restart")
    for person in (erin, frank):
        expect(person.messages.last.locator(".body")).to_have_text(
            "after the restart", timeout=WAIT_MS
        )
    # What was on screen before the crash is still there.
    expect(frank.messages.locator(".body")).to_have_text(["before the crash", "after the restart"])


def test_ctrl_c_shuts_the_demo_down_cleanly_and_the_page_comes_back(
    demo: DemoProcess, people: Any
) -> None:
    """SIGTERM (Ctrl-C) tells pages the server is restarting and exits 0; the page
    reconnects once the demo is back."""
    grace = people().join(demo.url, "grace", _room("calm"))
    status = demo.stop()
    assert status == 0, demo.log()
    assert "cablecar demo: stopped" in demo.log()
    expect(grace.page.locator("#conn-state")).to_have_attribute(
        "data-state", "reconnecting", timeout=WAIT_MS
    )
    demo.start()
    assert f"cablecar demo: open http://127.0.0.1:{demo.port}/" in demo.log()
    expect(grace.page.locator("#conn-state")).to_have_attribute(
        "data-state", "connected", timeout=3 * WAIT_MS
    )
    grace.say("still here")
    expect(grace.messages.last.locator(".body")).to_have_text("still here", timeout=WAIT_MS)


def speak(url: str, room: str, bodies: list[str]) -> None:
    """Send ``bodies`` to ``room`` as "gus" with the Python client, in a thread of its own
    (Playwright's sync API already runs an event loop in this one)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _speak(url, room, bodies)).result(30)


async def _speak(url: str, room: str, bodies: list[str]) -> None:
    import cablecar.client

    ws_url = url.replace("http", "ws") + "/cable?name=gus"
    async with cablecar.client.connect(ws_url) as consumer:
        sub = await consumer.subscribe("ChatChannel", room=room)
        for body in bodies:
            await sub.perform("speak", body=body)
        async with asyncio.timeout(10):  # our own copies: the server has them all
            got = 0
            async for message in sub:
                got += isinstance(message, dict) and message.get("type") == "message"
                if got == len(bodies):
                    break


def test_a_cut_connection_catches_up_every_missed_message_once_in_order(
    demo: DemoProcess, people: Any
) -> None:
    """Scenario 1a in Chromium: the page's TCP connection is cut for 2 s while 10
    messages are sent; the page resumes its session (cablecar.js on the extended
    protocol), shows "10 missed messages caught up", each message once and in order, then
    a live one."""
    proxy = CuttableProxy(demo.port)
    try:
        room = _room("tunnel")
        hana = people().join(proxy.url, "hana", room)
        hana.say("before the tunnel")
        expect(hana.messages.last.locator(".body")).to_have_text(
            "before the tunnel", timeout=WAIT_MS
        )
        proxy.cut()
        expect(hana.page.locator("#conn-state")).to_have_attribute(
            "data-state", "reconnecting", timeout=WAIT_MS
        )
        missed = [f"missed {n}" for n in range(1, 11)]
        speak(demo.url, room, missed)
        time.sleep(2)
        proxy.open = True
        expect(hana.page.locator("#conn-state")).to_have_attribute(
            "data-state", "connected", timeout=3 * WAIT_MS
        )
        expect(hana.page.locator("#messages")).to_contain_text(
            "Reconnected: 10 missed messages caught up.", timeout=WAIT_MS
        )
        speak(demo.url, room, ["live again"])
        expect(hana.messages.last.locator(".body")).to_have_text("live again", timeout=WAIT_MS)
        expect(hana.messages.locator(".body")).to_have_text(
            ["before the tunnel", *missed, "live again"]
        )
    finally:
        proxy.close()


def test_a_page_whose_websocket_is_blocked_chats_over_long_polling(
    demo: DemoProcess, people: Any
) -> None:
    """Chromium with every WebSocket blocked (request interception closes it before it
    opens, as a proxy that strips upgrades would): the demo page falls back to long
    polling by itself, says so, and chats both ways with a page on a WebSocket."""
    room = _room("blocked")
    blocked = people()
    blocked.page.route_web_socket(re.compile(".*"), lambda ws: ws.close(code=1011))
    polly = blocked.join(demo.url, "polly", room)
    expect(polly.page.locator("#conn-transport")).to_have_text(" (long polling)")
    webb = people().join(demo.url, "webb", room)
    expect(webb.page.locator("#conn-transport")).to_have_text(" (WebSocket)")
    expect(polly.page.locator("#member-list")).to_contain_text("webb", timeout=WAIT_MS)
    polly.say("hello over plain HTTP")
    expect(webb.messages.last.locator(".body")).to_have_text(
        "hello over plain HTTP", timeout=WAIT_MS
    )
    webb.say("hello over a WebSocket")
    expect(polly.messages.last.locator(".body")).to_have_text(
        "hello over a WebSocket", timeout=WAIT_MS
    )
    expect(polly.messages.locator(".body")).to_have_text(
        ["hello over plain HTTP", "hello over a WebSocket"]
    )


def test_the_three_ways_panel_is_on_the_first_screen(demo: DemoProcess, browser: Browser) -> None:
    """On a 1280x900 screen the join page says what cablecar is; once joined, the whole
    "one room, three ways" panel is in view beside the chat without scrolling."""
    person = Person(browser.new_context(viewport={"width": 1280, "height": 900}))
    try:
        person.page.goto(demo.url)
        expect(person.page.locator("#welcome .about")).to_contain_text("Action Cable for Python")
        person.join(demo.url, "dora", _room("fold"))
        expect(person.page.locator("#how")).to_be_visible(timeout=WAIT_MS)
        for part in ("#how-title", "#method-rr", "#method-poll", "#method-push"):
            box = person.page.locator(part).bounding_box()
            assert box is not None and box["y"] >= 0, part
            assert box["y"] + box["height"] <= 900, (part, box)
        composer = person.page.locator("#composer").bounding_box()
        assert composer is not None and composer["y"] + composer["height"] <= 900
        assert person.errors == []
    finally:
        person.context.close()
