"""A raw RFC 6455 client over asyncio streams, for sending what a real library refuses to.

Every frame is built by hand: any opcode, FIN/RSV bits, masked or not, any mask key,
a declared length that differs from the payload. Server frames are read one at a time,
so a test sees exactly what the server wrote, including its close frame and code.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any

import orjson

from .timing import TIMEOUT

__all__ = ["CLOSE", "PING", "PONG", "TEXT", "Closed", "RawWS", "build_frame", "http_request"]

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(Exception):
    """The server closed the TCP connection (EOF) before the expected frame."""


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    key: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """One client frame, exactly as asked (``length`` overrides the declared length)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = bytes((b0, mbit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4) if key is None else key
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")
    return head + key + (body if n else b"")


def http_request(path: str = "/cable", headers: dict[str, str] | None = None) -> bytes:
    """A WebSocket upgrade request head for ``path`` (``headers`` override or add)."""
    h = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "actioncable-v1-json",
    }
    for name, value in (headers or {}).items():
        for existing in [k for k in h if k.lower() == name.lower()]:
            del h[existing]
        if value is not None:
            h[name] = value
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in h.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class RawWS:
    """A hand-driven WebSocket connection (client side)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.head = b""

    @classmethod
    async def open(
        cls,
        port: int,
        path: str = "/cable?user=raw",
        *,
        headers: dict[str, str] | None = None,
        welcome: bool = True,
        rcvbuf: int | None = None,
    ) -> RawWS:
        """Connect and upgrade; with ``welcome`` also wait for the welcome frame."""
        ws = await cls.connect(port, rcvbuf=rcvbuf)
        ws.writer.write(http_request(path, headers))
        await ws.read_response()
        if ws.status != 101:
            raise ConnectionError(f"upgrade refused: {ws.head[:200]!r}")
        if welcome:
            assert await ws.recv_json() == {"type": "welcome"}
        return ws

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawWS:
        """A bare TCP connection (nothing sent yet)."""
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        else:
            import socket

            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
        return cls(reader, writer)

    async def read_response(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """Read an HTTP response head; returns ``(status, head)``."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        self.head = head
        self.status = int(head.split(b" ", 2)[1])
        return self.status, head

    async def http_exchange(self, data: bytes, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """Send raw bytes, read the whole answer until EOF: ``(status, everything)``."""
        self.writer.write(data)
        everything = await asyncio.wait_for(self.reader.read(), timeout)
        status = int(everything.split(b" ", 2)[1]) if everything.startswith(b"HTTP/1.1 ") else 0
        return status, everything

    # -- frames out --------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw: Any) -> None:
        self.writer.write(build_frame(opcode, payload, **kw))

    def send_json(self, obj: Any) -> None:
        self.send_frame(TEXT, obj if isinstance(obj, bytes) else orjson.dumps(obj))

    def subscribe(self, identifier: str) -> None:
        self.send_json({"command": "subscribe", "identifier": identifier})

    def perform(self, identifier: str, action: str, **data: Any) -> None:
        payload = orjson.dumps({"action": action, **data}).decode()
        self.send_json({"command": "message", "identifier": identifier, "data": payload})

    # -- frames in ---------------------------------------------------------------------

    async def recv_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """The next server frame ``(opcode, payload)``; raises :class:`Closed` on EOF."""
        try:
            async with asyncio.timeout(timeout):
                b0, b1 = await self.reader.readexactly(2)
                assert not b1 & 0x80, "server frames are never masked"
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            raise Closed() from None
        assert b0 & 0x80, "the server does not fragment"
        return b0 & 0x0F, payload

    async def recv_json(self, timeout: float = TIMEOUT) -> Any:
        """The next text frame decoded, skipping Action Cable pings."""
        async with asyncio.timeout(timeout):
            while True:
                op, payload = await self.recv_frame(timeout)
                if op == CLOSE:
                    raise Closed(f"close frame {payload!r}")
                if op != TEXT:
                    continue
                msg = orjson.loads(payload)
                if msg.get("type") != "ping":
                    return msg

    async def recv_until(self, pred: Any, timeout: float = TIMEOUT) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv_json(timeout)
                if pred(msg):
                    return msg

    async def expect_close(self, timeout: float = TIMEOUT) -> tuple[int | None, list[Any]]:
        """Read until the server's close frame and EOF; returns ``(close code, text
        frames before it)``; the code is ``None`` when the socket ended without one."""
        texts: list[Any] = []
        code: int | None = None
        async with asyncio.timeout(timeout):
            while True:
                try:
                    op, payload = await self.recv_frame(timeout)
                except Closed:
                    break
                if op == TEXT:
                    msg = orjson.loads(payload)
                    if msg.get("type") != "ping":
                        texts.append(msg)
                elif op == CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    try:
                        self.send_frame(CLOSE, payload[:2])
                    except (ConnectionError, RuntimeError):
                        pass
            # EOF must follow the close frame.
            assert await self.reader.read() == b""
        return code, texts

    async def quiet(self, seconds: float) -> list[tuple[int, bytes]]:
        """Frames (other than Action Cable pings) received during ``seconds``."""
        got: list[tuple[int, bytes]] = []
        try:
            async with asyncio.timeout(seconds):
                while True:
                    op, payload = await self.recv_frame(seconds + 1)
                    if op == TEXT and orjson.loads(payload).get("type") == "ping":
                        continue
                    got.append((op, payload))
        except TimeoutError:
            pass
        return got

    def close(self) -> None:
        self.writer.close()
