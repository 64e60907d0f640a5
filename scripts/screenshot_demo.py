"""Take docs/demo.png: the chat demo with a conversation in progress.

    .venv/bin/python scripts/screenshot_demo.py [--out docs/demo.png]

Starts the demo (`python -m cablecar demo`) on a free port, has three people talk in
headless Chromium (Debian's /usr/bin/chromium, driven by Playwright), and saves what the
first person sees. Not part of the test run.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CONVERSATION = [
    ("alice", "Morning! Did the 2.4 release go out?"),
    ("bob", "Yes, rolled out at 10:02. No errors so far."),
    ("carol", "The dashboard updates by itself now, no more refresh button."),
    ("alice", "Watch the panel on the right: push shows each message in a few ms, polling lags."),
    ("bob", "Try <b>HTML</b> in a message: it shows as plain text."),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the demo exited before answering")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"no answer from {url}")


def join(page: Page, url: str, name: str) -> None:
    page.goto(f"{url}/#room=lobby")
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Join").click()
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "connected")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs" / "demo.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [sys.executable, "-m", "cablecar", "demo", "--port", str(port)], stdout=log, stderr=log
    )
    try:
        wait_healthy(url, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            pages: dict[str, Page] = {}
            for name in ("alice", "bob", "carol"):
                context = browser.new_context(
                    viewport={"width": 1280, "height": 1040}, device_scale_factor=1
                )
                pages[name] = context.new_page()
                join(pages[name], url, name)
            alice = pages["alice"]
            alice.select_option("#poll-interval", "2")
            alice.get_by_role("button", name="Refresh").click()
            for name, text in CONVERSATION:
                box = pages[name].get_by_role("textbox", name="Message", exact=True)
                box.fill(text)
                box.press("Enter")
                expect(alice.locator("#messages .msg .body").last).to_have_text(text)
                time.sleep(0.4)
            time.sleep(1.0)
            alice.get_by_role("button", name="Refresh").click()
            expect(alice.locator("#method-poll .latest")).to_contain_text("HTML", timeout=5000)
            pages["carol"].get_by_role("textbox", name="Message", exact=True).press_sequentially(
                "Ni"
            )
            expect(alice.locator("#typing")).to_have_text("carol is typing…")
            box = alice.get_by_role("textbox", name="Message", exact=True)
            box.fill("See you at the stand-up")
            box.blur()
            alice.mouse.move(0, 0)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            alice.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(15)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
