"""A minimal blocking WebSocket client (RFC 6455, text frames, client masking) for timing.

Deliberately tiny: one socket, ``TCP_NODELAY``, no threads, so the time measured around a
``send``/``recv`` pair is the server's turnaround plus loopback, not a client library's hand-offs.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from urllib.parse import urlsplit

__all__ = ["WSClient", "open_subscribed"]


class WSClient:
    """A blocking WebSocket connection.

    Args:
        url: ``ws://127.0.0.1:PORT/path?query`` (loopback only).
        subprotocols: offered in ``Sec-WebSocket-Protocol``.
        timeout: socket timeout in seconds for every operation.
    """

    def __init__(
        self, url: str, subprotocols: list[str] | None = None, timeout: float = 10
    ) -> None:
        u = urlsplit(url)
        host = u.hostname or "127.0.0.1"
        if not (host.startswith("127.") or host == "localhost"):
            raise ValueError(f"refusing non-loopback target {host}")
        self.sock = socket.create_connection((host, u.port or 80), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{u.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if subprotocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"handshake refused: {status.decode(errors='replace')}")

    def send_text(self, text: str) -> None:
        """Send one masked text frame."""
        payload = text.encode()
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        m = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "little") ^ int.from_bytes(m, "little")).to_bytes(
            n, "little"
        )
        self.sock.sendall(head + mask + masked)

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk

    def recv_text(self) -> str:
        """Receive the next text message (answers pings; raises on close)."""
        while True:
            self._need(2)
            b0, b1 = self.buf[0], self.buf[1]
            n = b1 & 0x7F
            p = 2
            if n == 126:
                self._need(4)
                n = struct.unpack_from("!H", self.buf, 2)[0]
                p = 4
            elif n == 127:
                self._need(10)
                n = struct.unpack_from("!Q", self.buf, 2)[0]
                p = 10
            if b1 & 0x80:
                raise ConnectionError("server sent a masked frame")
            self._need(p + n)
            payload, self.buf = self.buf[p : p + n], self.buf[p + n :]
            op = b0 & 0x0F
            if op == 1:
                if not b0 & 0x80:
                    raise ConnectionError("fragmented frames are not supported by this client")
                return payload.decode()
            if op == 8:
                raise ConnectionError(f"server closed: {payload[:2].hex()} {payload[2:]!r}")
            if op == 9:
                self._send_control(0xA, payload)

    def _send_control(self, op: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes((0x80 | op, 0x80 | len(payload))) + mask + masked)

    def close(self) -> None:
        """Send a close frame and close the socket."""
        try:
            self._send_control(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def open_subscribed(url: str, raw: bool, user: str = "bench", timeout: float = 10) -> WSClient:
    """Open a connection subscribed to ``BenchmarkChannel`` (raw mode: just open it).

    Raises:
        ConnectionError: the server refused the connection or the subscription.
    """
    ident = json.dumps({"channel": "BenchmarkChannel"}, separators=(",", ":"))
    sep = "&" if "?" in url else "?"
    if raw:
        return WSClient(f"{url}{sep}user={user}", timeout=timeout)
    ws = WSClient(
        f"{url}{sep}user={user}", ["actioncable-v1-json", "actioncable-unsupported"], timeout
    )
    while json.loads(ws.recv_text()).get("type") != "welcome":
        pass
    ws.send_text(json.dumps({"command": "subscribe", "identifier": ident}))
    while True:
        m = json.loads(ws.recv_text())
        if m.get("type") == "confirm_subscription":
            return ws
        if m.get("type") in ("reject_subscription", "disconnect"):
            ws.close()
            raise ConnectionError(f"subscription refused: {m}")
