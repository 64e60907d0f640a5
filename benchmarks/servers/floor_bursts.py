"""The anchors' Python floor, extended with the burst scenario of ``benchmarks/bursts.py``.

Subscribing with ``{"channel": "BurstChannel", "streams": K}`` joins streams ``s0`` ..
``s{K-1}`` (one subscription, K streams, like ``stream_from`` K times); the ``burst``
action broadcasts ``rounds`` x ``streams`` messages ``{"s": k, "n": r, "pad": ...}``,
``per_tick`` of them per event loop iteration, exactly as ``bursts.py``'s cablecar channel
does. Each broadcast is framed once and the same bytes are written to every member of
its stream: one ``transport.write`` per recipient and message, the floor's way. Run it with
the anchors' venv (uvloop, orjson):

    $A/.venv/bin/python benchmarks/servers/floor_bursts.py --port P --floor $A/bench/servers/floor.py
"""

from __future__ import annotations

import asyncio
from typing import Any

import floor_streams
from floor_streams import channel_ws

__all__ = ["build"]


def build(floor: Any) -> type:
    """A protocol class: the floor's ``WS`` plus ``BurstChannel``."""
    streams: dict[str, set[Any]] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def burst(ident: str, rounds: int, count: int, per_tick: int, pad: str) -> None:
        done = 0
        for n in range(rounds):
            for s in range(count):
                message = {"s": s, "n": n, "pad": pad}
                f = floor.frame(floor.dumps({"identifier": ident, "message": message}))
                for t in streams.get(f"s{s}", ()):
                    t.write(f)
                done += 1
                if done % per_tick == 0:
                    await asyncio.sleep(0)

    class BurstWS(channel_ws(floor, "BurstChannel")):  # type: ignore[misc]
        __slots__ = ("joined",)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.joined: list[str] = []

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            for name in self.joined:
                members = streams.get(name)
                if members is not None:
                    members.discard(self.t)

        def on_command(self, cmd: Any, m: Any, ident: str, params: Any) -> None:
            if cmd == "subscribe":
                self.joined = [f"s{k}" for k in range(int(params.get("streams", 1)))]
                for name in self.joined:
                    streams.setdefault(name, set()).add(self.t)
                self.reply(ident, "confirm_subscription")
            elif cmd == "message":
                data = floor.loads(m["data"])
                if data.get("action") == "burst":
                    rounds, count = int(data["rounds"]), int(data["streams"])
                    per_tick, pad = int(data["per_tick"]), "x" * int(data.get("size", 64))
                    task = asyncio.ensure_future(burst(ident, rounds, count, per_tick, pad))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

    return BurstWS


if __name__ == "__main__":
    floor_streams.main(build, "floor-bursts")
