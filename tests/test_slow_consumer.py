"""A client that stops reading cannot slow the others down or grow the server's memory.

One client subscribes and then never reads again, while 200 others receive a stream
of large broadcasts. The server runs as a real ``cablecar serve`` subprocess so that
its memory (RSS, from ``/proc``) is measured alone. The kernel's socket buffers absorb
a few MB for the stalled client before the server's own buffer for it starts to grow;
past ``max_pending_output`` (256 KiB here) it is cut with ``disconnect`` reason
``too_slow``, ``reconnect: true``, then closed, while the 200 others get every
broadcast, in order. With ``-s`` the test prints its figures.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import struct
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import free_port
from .rawws import RawWS
from .servers import CablecarProcess

RECEIVERS = 200
ROUNDS = 250  # broadcasts (~16 MB to each client)
SIZE = 64 * 1024  # bytes of padding per broadcast
WINDOW = 1  # broadcasts in flight ahead of the slowest receiver (x SIZE < MAX_PENDING)
MAX_PENDING = 256 * 1024
FEED = '{"channel":"FeedChannel"}'

APP = f"""
from cablecar import Cable, Channel


class FeedChannel(Channel):
    async def subscribed(self):
        if self.params.get("role") != "producer":  # the producer does not listen
            self.stream_from("feed")

    async def blast(self, data):
        await self.cable.broadcast("feed", {{"seq": data["seq"], "pad": "x" * data["size"]}})
        self.transmit({{"sent": data["seq"]}})


cable = Cable(
    channels=[FeedChannel],
    max_pending_output={MAX_PENDING},
    close_timeout=120.0,
    ping_interval=1.0,
    max_commands_per_second=10_000,
)
"""

_SEQ = re.compile(rb'"message":\{"seq":(\d+)')


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Receiver(asyncio.Protocol):
    """A well-behaved client that reads everything; counts the broadcasts it gets."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.buf = bytearray()
        self.upgraded = False
        self.seqs: list[int] = []
        self.texts: list[Any] = []
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: actioncable-v1-json\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            assert buf.startswith(b"HTTP/1.1 101")
            del buf[: end + 4]
            self.upgraded = True
        pos = 0
        while len(buf) - pos >= 2:
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if len(buf) - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            match = _SEQ.match(payload, payload.find(b'"message"'))
            if match:
                self.seqs.append(int(match.group(1)))
            elif b'"type":"ping"' not in payload:
                self.texts.append(orjson.loads(payload))
        del buf[:pos]
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.changed.set()

    def send_json(self, obj: Any) -> None:
        payload = orjson.dumps(obj)
        assert len(payload) < 126 and self.transport is not None
        self.transport.write(bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload)


async def open_receiver(port: int, name: str) -> Receiver:
    loop = asyncio.get_running_loop()
    _t, proto = await loop.create_connection(
        lambda: Receiver(f"/cable?user={name}"), "127.0.0.1", port
    )
    async with asyncio.timeout(30):
        while not proto.texts:
            proto.changed.clear()
            await proto.changed.wait()
    assert proto.texts[0] == {"type": "welcome"}
    proto.send_json({"command": "subscribe", "identifier": FEED})
    async with asyncio.timeout(30):
        while len(proto.texts) < 2:
            proto.changed.clear()
            await proto.changed.wait()
    assert proto.texts[1]["type"] == "confirm_subscription"
    return proto


@pytest.fixture
def feed_server(tmp_path: Path) -> Any:
    app = tmp_path / "feed_app.py"
    app.write_text(APP)
    log = tmp_path / "server.log"
    proc = CablecarProcess(free_port(), f"{app}:cable", log=log).start()
    yield proc, log
    proc.stop()


async def test_a_stalled_client_is_cut_and_the_others_keep_receiving(feed_server: Any) -> None:
    """A client that stops reading is cut once its buffer limit is reached, server memory stays bounded and the others keep receiving."""
    proc, log = feed_server
    pid = proc.proc.pid
    samples: list[int] = [rss_kib(pid)]
    start_rss = samples[0]

    async def sample() -> None:
        while True:
            samples.append(rss_kib(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        # The stalled client: a small receive buffer, so the kernel absorbs less.
        slow = await RawWS.open(proc.port, "/cable?user=stalled", rcvbuf=4096)
        slow.subscribe(FEED)
        assert (await slow.recv_json())["type"] == "confirm_subscription"
        receivers = [await open_receiver(proc.port, f"r{i}") for i in range(RECEIVERS)]
        connected_rss = rss_kib(pid)
        producer = await RawWS.open(proc.port, "/cable?user=producer")
        producer.subscribe('{"channel":"FeedChannel","role":"producer"}')
        await producer.recv_until(lambda m: m.get("type") == "confirm_subscription")
        started = time.monotonic()
        cut_at: int | None = None
        for seq in range(ROUNDS):
            # Keep at most WINDOW broadcasts ahead of the slowest well-behaved receiver.
            async with asyncio.timeout(60):
                while min(len(r.seqs) for r in receivers) < seq - WINDOW:
                    await asyncio.sleep(0.005)
            producer.perform(
                '{"channel":"FeedChannel","role":"producer"}', "blast", seq=seq, size=SIZE
            )
            if cut_at is None and "slow consumer" in log.read_text():
                cut_at = seq
        async with asyncio.timeout(60):
            while min(len(r.seqs) for r in receivers) < ROUNDS:
                await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        end_rss = rss_kib(pid)
    finally:
        sampler.cancel()
    peak_rss = max(samples)

    # Every well-behaved receiver got every broadcast, in order, and is still connected.
    for r in receivers:
        assert r.seqs == list(range(ROUNDS))
        assert not r.closed and not any(t.get("type") == "disconnect" for t in r.texts)
    # The stalled one was cut: now it reads its backlog, then disconnect, then close.
    text = log.read_text()
    assert "slow consumer" in text, text[-2000:]
    code, texts = await slow.expect_close(timeout=60)
    assert code == 1000
    got = [t for t in texts if "message" in t]
    assert texts[-1] == {"type": "disconnect", "reason": "too_slow", "reconnect": True}
    assert len(got) < ROUNDS  # it never got the broadcasts after the cut
    # Memory stays bounded: had the server kept buffering for the stalled client, it
    # would hold every broadcast after the kernel's buffers filled (~20 MB here).
    unbounded = (ROUNDS - len(got)) * SIZE
    print(
        f"\nslow consumer: {RECEIVERS} receivers x {ROUNDS} broadcasts of {SIZE // 1024} KiB "
        f"in {elapsed:.1f}s ({RECEIVERS * ROUNDS / elapsed:.0f} deliveries/s, "
        f"{RECEIVERS * ROUNDS * SIZE / elapsed / 1e6:.0f} MB/s); stalled client cut at broadcast "
        f"{cut_at} after receiving {len(got)}; server RSS start {start_rss // 1024} MiB, "
        f"with clients {connected_rss // 1024} MiB, peak {peak_rss // 1024} MiB, "
        f"end {end_rss // 1024} MiB (unbounded buffering would add {unbounded >> 20} MiB)",
        file=sys.stderr,
    )
    assert (peak_rss - connected_rss) * 1024 < min(16 << 20, unbounded // 2), (
        start_rss,
        connected_rss,
        peak_rss,
        unbounded,
    )
    for r in receivers:
        assert r.transport is not None
        r.transport.close()
    producer.close()
