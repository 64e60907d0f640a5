"""Listen to a chat room from Python and print what is said.

    cablecar serve examples/conformance_app.py:cable --port 8080     # in another terminal
    python examples/client_listen.py ws://127.0.0.1:8080/cable --room lobby --count 3

Works against any Action Cable server whose ``ChatChannel`` streams ``chat_<room>`` and
broadcasts ``{"from": ..., "body": ...}`` (cablecar's conformance app, the Rails anchor).
Stops after ``--count`` messages or ``--timeout`` seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio

import cablecar.client


async def listen(url: str, room: str, count: int, timeout: float) -> None:
    async with cablecar.client.connect(url) as consumer:
        chat = await consumer.subscribe("ChatChannel", room=room)
        print(f"listening to room {room!r} ({count} messages or {timeout:g} s)", flush=True)
        try:
            async with asyncio.timeout(timeout):
                async for message in chat:  # continues across reconnects
                    note = " (after a reconnect)" if chat.reconnected else ""
                    print(f"{message['from']}: {message['body']}{note}", flush=True)
                    count -= 1
                    if count == 0:
                        break
        except TimeoutError:
            print("timed out", flush=True)
    print("done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the cable, e.g. ws://127.0.0.1:8080/cable")
    parser.add_argument("--room", default="lobby")
    parser.add_argument("--count", type=int, default=3, help="stop after N messages")
    parser.add_argument("--timeout", type=float, default=30.0, help="stop after S seconds")
    args = parser.parse_args()
    asyncio.run(listen(args.url, args.room, args.count, args.timeout))


if __name__ == "__main__":
    main()
