"""HTTP/1.1 request heads and responses for the standalone server, sans I/O.

Only what a WebSocket server needs: parse one request head (bounded), validate an
upgrade, build the 101 answer and small plain responses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from http import HTTPStatus

from ...errors import ProtocolViolation

__all__ = [
    "HandshakeError",
    "RequestHead",
    "accept_key",
    "build_response",
    "build_stream_head",
    "build_switching_protocols",
    "parse_head",
    "validate_upgrade",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class HandshakeError(ProtocolViolation):
    """The request cannot be served; answer with ``status`` and close."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = headers


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]


def parse_head(head: bytes, max_headers: int = 100) -> RequestHead:
    """Parse a request head (everything before ``\\r\\n\\r\\n``).

    Raises:
        HandshakeError: malformed request line or headers (400), too many headers (431).
    """
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise HandshakeError(400, "undecodable request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0]:
        raise HandshakeError(400, "malformed request line")
    method, target, _version = parts
    if not set(method) <= _TOKEN:
        raise HandshakeError(400, "malformed method")
    if not target.startswith("/"):
        raise HandshakeError(400, "request target must be a path")
    if len(lines) - 1 > max_headers:
        raise HandshakeError(431, "too many headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or not set(name) <= _TOKEN:
            raise HandshakeError(400, "malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    path, _, query = target.partition("?")
    return RequestHead(method, path, query, headers)


def _has_token(value: str, token: str) -> bool:
    """Whether the comma-separated header ``value`` lists ``token`` (lowercase)."""
    value = value.lower()
    return value == token or token in {t.strip() for t in value.split(",")}


def validate_upgrade(head: RequestHead) -> str:
    """Check a WebSocket upgrade request; return its ``Sec-WebSocket-Key``.

    Raises:
        HandshakeError: not an upgrade (426), wrong method (405) or version (426),
            bad key (400).
    """
    h = head.headers
    if not _has_token(h.get("upgrade", ""), "websocket") or not _has_token(
        h.get("connection", ""), "upgrade"
    ):
        raise HandshakeError(
            426,
            "this endpoint speaks WebSocket only",
            (("Upgrade", "websocket"), ("Connection", "Upgrade")),
        )
    if head.method != "GET":
        raise HandshakeError(405, "WebSocket upgrades use GET", (("Allow", "GET"),))
    if h.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError(
            426, "unsupported WebSocket version", (("Sec-WebSocket-Version", "13"),)
        )
    key = h.get("sec-websocket-key", "").strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise HandshakeError(400, "invalid Sec-WebSocket-Key") from None
    if len(raw) != 16:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key")
    return key


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def build_switching_protocols(key: str, subprotocol: str | None) -> bytes:
    """The 101 response completing the handshake."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def build_response(
    status: int,
    body: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
    head_only: bool = False,
) -> bytes:
    """A complete ``Connection: close`` response."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    for name, value in headers:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            continue  # never let a handler split the response
        lines.append(f"{name}: {value}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return head if head_only else head + body


def build_stream_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """The head of a response whose body runs until the connection closes (server-sent
    events): no ``Content-Length``, ``Connection: close``."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Connection: close"]
    for name, value in headers:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            continue
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
