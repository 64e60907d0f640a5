"""A chat bot written with cablecar's Python client: callbacks instead of a loop.

    cablecar serve examples/conformance_app.py:cable --port 8080     # in another terminal
    python examples/client_chat_bot.py ws://127.0.0.1:8080/cable --room lobby

The bot joins the room as ``bot`` and answers ``!ping`` with ``pong`` and ``!echo TEXT``
with ``TEXT``. It leaves after ``--max-replies`` answers, on ``!bye``, or after
``--timeout`` seconds. If the server restarts, the client reconnects and re-subscribes by
itself; ``on_connected`` is told whether it was a reconnect.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import cablecar.client


def answer(body: str) -> str | None:
    """The bot's reply to a chat line, or None to stay quiet."""
    if body == "!ping":
        return "pong"
    if body.startswith("!echo "):
        return body.removeprefix("!echo ")
    return None


async def run_bot(url: str, room: str, name: str, max_replies: int, timeout: float) -> None:
    done = asyncio.Event()
    replies = 0

    def on_connected(reconnected: bool) -> None:
        print(f"{'rejoined' if reconnected else 'joined'} room {room!r} as {name!r}", flush=True)

    async def on_message(message: Any) -> None:
        nonlocal replies
        if message.get("from") == name:
            return  # our own lines come back too: the room's stream is everyone's
        body = str(message.get("body"))
        if body == "!bye":
            done.set()
            return
        reply = answer(body)
        if reply is None:
            return
        await chat.perform("speak", body=reply)
        replies += 1
        print(f"answered {message.get('from')}: {body!r} -> {reply!r}", flush=True)
        if replies >= max_replies:
            done.set()

    separator = "&" if "?" in url else "?"
    async with cablecar.client.connect(f"{url}{separator}user={name}") as consumer:
        chat = await consumer.subscribe(
            "ChatChannel", room=room, on_connected=on_connected, on_message=on_message
        )
        await chat.perform("speak", body=f"{name} is here: try !ping or !echo <text>")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        await chat.perform("speak", body=f"{name} is leaving")
        await asyncio.sleep(0.2)  # Action Cable has no acks: let the last line go out
    print(f"left after {replies} replies", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the cable, e.g. ws://127.0.0.1:8080/cable")
    parser.add_argument("--room", default="lobby")
    parser.add_argument("--name", default="bot")
    parser.add_argument("--max-replies", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(run_bot(args.url, args.room, args.name, args.max_replies, args.timeout))


if __name__ == "__main__":
    main()
