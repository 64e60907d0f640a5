"""The anchors' Python floor, extended to many streams (for the many-streams scenario).

The anchors' ``floor.py`` puts every subscriber on one stream. This subclass keeps its
handshake, framing and ``BenchmarkChannel`` behaviour and adds ``ChatChannel``: subscribing
with ``{"channel": "ChatChannel", "room": R}`` joins stream ``R``; the ``speak`` action frames
``{"identifier": ..., "message": {"from": user, "body": ...}}`` ONCE and writes the same bytes
to every member of the room (what Action Cable's ChatChannel in ``examples/conformance_app.py``
and the Rails anchor send). Run it with the anchors' venv (uvloop, orjson):

    $A/.venv/bin/python benchmarks/servers/floor_streams.py --port P --floor $A/bench/servers/floor.py
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["channel_ws", "command_for", "main"]


def _load_floor(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("floor", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["floor"] = mod
    spec.loader.exec_module(mod)
    return mod


def command_for(floor: Any, ac: bool, payload: bytes, channel: str) -> Any:
    """``(command, identifier, params)`` of an Action Cable command for ``channel``;
    None for anything else (the floor's own handling then applies; bad JSON included)."""
    if not ac:
        return None
    try:
        m = floor.loads(payload)
        ident = m.get("identifier")
        params = floor.loads(ident) if ident else {}
    except Exception:
        return None
    return (m, ident, params) if params.get("channel") == channel else None


def channel_ws(floor: Any, channel: str) -> type:
    """A protocol class: the floor's ``WS``, with every Action Cable command for ``channel``
    passed to ``on_command`` (to override) and everything else handled by the floor."""

    class ChannelWS(floor.WS):  # type: ignore[misc]
        __slots__ = ()

        def on_message(self, payload: bytes) -> None:
            parsed = command_for(floor, self.ac, payload, channel)
            if parsed is None:
                super().on_message(payload)
                return
            m, ident, params = parsed
            self.on_command(m.get("command"), m, ident, params)

        def on_command(self, cmd: Any, m: Any, ident: str, params: Any) -> None:
            """One command ``m`` (its ``cmd``) for ``channel`` on subscription ``ident``."""

        def reply(self, ident: str, kind: str) -> None:
            """Send ``{"identifier": ident, "type": kind}`` (confirm or reject) to this client."""
            self.t.write(floor.frame(floor.dumps({"identifier": ident, "type": kind})))

    return ChannelWS


def build(floor: Any) -> type:
    """A protocol class: the floor's ``WS`` plus per-room streams."""
    rooms: dict[str, set[Any]] = {}

    class StreamsWS(channel_ws(floor, "ChatChannel")):  # type: ignore[misc]
        __slots__ = ("joined", "user")

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.user = ""
            self.joined: dict[str, str] = {}  # identifier -> room

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            for room in self.joined.values():
                members = rooms.get(room)
                if members is not None:
                    members.discard(self.t)
                    if not members:
                        del rooms[room]

        def handshake(self, head: str) -> None:
            target = head.split("\r\n", 1)[0].split(" ")
            if len(target) > 1:
                self.user = parse_qs(urlsplit(target[1]).query).get("user", [""])[0]
            super().handshake(head)

        def on_command(self, cmd: Any, m: Any, ident: str, params: Any) -> None:
            room = str(params.get("room") or "")
            if cmd == "subscribe":
                if not room:
                    self.reply(ident, "reject_subscription")
                    return
                self.joined[ident] = room
                rooms.setdefault(room, set()).add(self.t)
                self.reply(ident, "confirm_subscription")
            elif cmd == "unsubscribe":
                r = self.joined.pop(ident, None)
                if r is not None and r in rooms:
                    rooms[r].discard(self.t)
            elif cmd == "message" and ident in self.joined:
                data = floor.loads(m["data"])
                if data.get("action") == "speak":
                    msg = {"from": self.user, "body": data.get("body")}
                    f = floor.frame(floor.dumps({"identifier": ident, "message": msg}))
                    for t in rooms.get(room, ()):
                        t.write(f)

    return StreamsWS


async def _serve(proto: type, host: str, port: int, floor: Any, name: str) -> None:
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(proto, host, port, backlog=4096)
    task = asyncio.ensure_future(floor.pinger())
    print(f"{name} listening on ws://{host}:{port}/cable", flush=True)
    try:
        async with srv:
            await srv.serve_forever()
    finally:
        task.cancel()


def main(build: Any = build, name: str = "floor-streams") -> None:
    """Command line entry point: serve the protocol class ``build(floor)`` returns."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--floor", required=True, help="path to the anchors' bench/servers/floor.py")
    a = ap.parse_args()
    floor = _load_floor(a.floor)
    import uvloop

    uvloop.install()
    asyncio.run(_serve(build(floor), a.host, a.port, floor, name))


if __name__ == "__main__":
    main()
