"""A separate process that posts notices to the Turbo board through a Broadcaster.

    CABLE_PUBSUB=redis://127.0.0.1:6379/0 uvicorn app:app --ws websockets-sansio
    CABLE_PUBSUB=redis://127.0.0.1:6379/0 python worker.py "Deploy finished"

Nothing here signs anything: broadcasting needs only the broker's URL.
"""

from __future__ import annotations

import os
import sys

from cablecar import Broadcaster, turbo


def main(text: str) -> None:
    with Broadcaster(os.environ["CABLE_PUBSUB"]) as broadcaster:
        notice = turbo.HTML(f'<li class="notice">{turbo.escape(text)}</li>')
        turbo.broadcast_sync(broadcaster, "board", turbo.append("messages", notice))


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "Hello from a worker")
