"""Plain ``def`` callbacks run on worker threads; every API they may call reaches the
event loop through one boundary, so many of them at once lose nothing and reorder
nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from cablecar import Cable, Channel, Connection

from .conftest import TIMEOUT, ConnectWS

CLIENTS = 12
ROUNDS = 25


class ThreadedConnection(Connection):
    identified_by = ("name",)

    def connect(self) -> None:  # type: ignore[override]
        self.name = self.request.query.get("name", "")
        self.transmit({"hello": self.name})  # Connection.transmit from a worker thread


class ThreadedChannel(Channel):
    def subscribed(self) -> None:  # type: ignore[override]
        if self.params.get("refuse"):
            self.reject()
            return
        self.stream_from(f"own_{self.connection.name}")
        self.stream_from("gone")
        self.stop_stream_from("gone")
        self.transmit({"subscribed": True})

    def burst(self, data: dict[str, Any]) -> None:
        n = data["n"]
        for i in range(5):
            self.transmit({"n": n, "i": i})
        self.connection.transmit({"raw": n})
        self.cable.broadcast_sync(f"own_{self.connection.name}", {"echo": n})

    def restream(self) -> None:
        self.stop_stream_from(f"own_{self.connection.name}")
        self.stream_from(f"own_{self.connection.name}")
        self.transmit({"restreamed": True})

    def leave(self) -> None:
        self.connection.close(reason="bye", reconnect=False)


async def _client(connect: ConnectWS, url: str, name: str) -> None:
    ident = '{"channel":"ThreadedChannel"}'
    ws = await connect(f"{url}?name={name}", welcome=False)
    assert await ws.recv_data() == {"hello": name}  # sent by connect(), before welcome
    assert await ws.recv_data() == {"type": "welcome"}
    await ws.send({"command": "subscribe", "identifier": ident})
    # As in Rails, what subscribed() transmits precedes the confirmation.
    assert (await ws.recv_data())["message"] == {"subscribed": True}
    assert (await ws.recv_data())["type"] == "confirm_subscription"
    refused = '{"channel":"ThreadedChannel","refuse":1}'
    assert (await ws.subscribe(refused))["type"] == "reject_subscription"
    for n in range(ROUNDS):
        await ws.perform(ident, "burst", n=n)
    got: list[Any] = []
    while len(got) < ROUNDS * 7:
        frame = await ws.recv_data()
        got.append(frame.get("message", frame))
    for n in range(ROUNDS):
        # Each action's own output keeps its order; its broadcast comes after its start.
        mine = [m for m in got if m.get("n") == n or m.get("raw") == n or m.get("echo") == n]
        assert mine[:6] == [*({"n": n, "i": i} for i in range(5)), {"raw": n}]
        assert {"echo": n} in mine
    await ws.perform(ident, "restream")
    assert (await ws.recv_data())["message"] == {"restreamed": True}
    await ws.perform(ident, "burst", n=-1)
    await ws.recv_until(lambda m: m.get("message") == {"echo": -1})
    await ws.perform(ident, "leave")
    frame = await ws.recv_until(lambda m: m.get("type") == "disconnect")
    assert frame == {"type": "disconnect", "reason": "bye", "reconnect": False}


async def test_worker_thread_callers_reach_the_loop_in_order(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """Twelve clients at once, each running 25 plain-def actions that call transmit,
    Connection.transmit, broadcast_sync, stream_from, stop_stream_from, reject and
    Connection.close from worker threads: every frame arrives, in order."""
    cable = Cable(ThreadedConnection, [ThreadedChannel], worker_pool_size=4)
    server = await cablecar_server(cable)
    async with asyncio.timeout(TIMEOUT * 6):
        await asyncio.gather(*(_client(ws_connect, server.url, f"c{i}") for i in range(CLIENTS)))
    assert "gone" not in cable.streams()
