"""Bounds one client cannot push past: fragments count against the message limit,
invalid UTF-8 fails at the first bad fragment, and a client that stops reading is cut
at the default pending-output limit."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest

from cablecar import Cable, Channel, Connection
from cablecar.transports.standalone.framing import FrameError, FrameParser

from .conftest import TIMEOUT
from .rawws import RawWS

CONT, TEXT = 0x0, 0x1


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (mask of zeros: the payload goes as it is)."""
    head = bytes(((0x80 if fin else 0) | opcode,))
    n = len(payload)
    if n < 126:
        head += bytes((0x80 | n,))
    else:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    return head + b"\x00\x00\x00\x00" + payload


@pytest.mark.parametrize("size", [1, 0])
def test_a_flood_of_tiny_fragments_hits_the_message_limit(size: int) -> None:
    """A million one-byte (or empty) continuation frames are refused with 1009 long
    before they could hold more memory than the 1 MiB message limit."""
    parser = FrameParser(1 << 20)
    tracemalloc.start()
    try:
        parser.feed(frame(TEXT, b"a" * size, fin=False))
        chunk = frame(CONT, b"a" * size, fin=False) * 1000
        with pytest.raises(FrameError) as info:
            for _ in range(1000):  # up to 1,000,000 fragments
                parser.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == 1009
    assert peak < 2 << 20  # held at most about the message limit


def test_invalid_utf8_fails_at_the_first_bad_fragment() -> None:
    """A text message whose first fragment cannot start valid UTF-8 is refused with
    1007 at once, before the rest arrives."""
    parser = FrameParser(1 << 20)
    with pytest.raises(FrameError) as info:
        parser.feed(frame(TEXT, b'{"a":"\xff', fin=False))
    assert info.value.code == 1007
    ok = FrameParser(1 << 20)  # a character split across fragments is fine
    assert ok.feed(frame(TEXT, b'"\xe2\x82', fin=False)) == []
    assert ok.feed(frame(CONT, b'\xac"'))[0].payload == '"€"'.encode()


class FeedChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from("feed")


async def test_a_client_that_never_reads_is_cut_by_default(cablecar_server: Any) -> None:
    """With the default limits, a subscriber that stops reading while 400 broadcasts of
    16 KB (6.4 MB) are sent is cut as too slow; a reading subscriber gets all 400."""
    cable = Cable(Connection, [FeedChannel])
    server = await cablecar_server(cable)
    sloth = await RawWS.open(server.port, rcvbuf=4096)
    sloth.subscribe('{"channel":"FeedChannel"}')
    await sloth.recv_until(lambda m: m.get("type") == "confirm_subscription")
    sloth.writer.transport.pause_reading()  # reads nothing more: its kernel buffer fills
    reader = await RawWS.open(server.port)
    reader.subscribe('{"channel":"FeedChannel"}')
    await reader.recv_until(lambda m: m.get("type") == "confirm_subscription")
    body = "x" * 16_000

    async def read_all() -> list[int]:
        return [
            (await reader.recv_until(lambda m: "message" in m))["message"]["n"] for _ in range(400)
        ]

    reading = asyncio.create_task(read_all())
    for n in range(400):
        await cable.broadcast("feed", {"n": n, "body": body})
        await asyncio.sleep(0.001)  # a pace a reading client keeps up with
    assert await asyncio.wait_for(reading, TIMEOUT * 2) == list(range(400))
    async with asyncio.timeout(TIMEOUT * 2):
        while cable.figures()["slow_consumers"] != 1 or cable.socket_count != 1:
            await asyncio.sleep(0.02)  # cut, then closed within close_timeout
