"""HTTP upgrade parsing and answers of the standalone server (sans I/O)."""

from __future__ import annotations

import pytest

from cablecar.transports.standalone.http import (
    HandshakeError,
    accept_key,
    build_switching_protocols,
    parse_head,
    validate_upgrade,
)

GOOD = (
    b"GET /cable?user=bob HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: actioncable-v1-json\r\nX-Dup: a\r\nX-Dup: b"
)


def test_parse_a_valid_upgrade() -> None:
    """A valid upgrade request parses to its method, path, query and headers (repeated headers joined)."""
    head = parse_head(GOOD)
    assert (head.method, head.path, head.query_string) == ("GET", "/cable", "user=bob")
    assert head.headers["host"] == "example.com"
    assert head.headers["x-dup"] == "a, b"
    assert validate_upgrade(head) == "dGhlIHNhbXBsZSBub25jZQ=="


def test_accept_key_matches_rfc6455_example() -> None:
    """The Sec-WebSocket-Accept key matches RFC 6455's example; the subprotocol header is sent only when chosen."""
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    resp = build_switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", "actioncable-v1-json")
    assert b"Sec-WebSocket-Protocol: actioncable-v1-json\r\n" in resp
    assert b"Sec-WebSocket-Protocol" not in build_switching_protocols(
        "dGhlIHNhbXBsZSBub25jZQ==", None
    )


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GARBAGE", 400),
        (b"GET /cable HTTP/1.1\r\nno colon here", 400),
        (b"GET http://x/cable HTTP/1.1\r\nHost: x", 400),
        (
            b"GET /cable HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"Y: z",
            431,
        ),
    ],
)
def test_malformed_heads(head: bytes, status: int) -> None:
    """Malformed request heads raise HandshakeError with the status to answer."""
    with pytest.raises(HandshakeError) as info:
        parse_head(head)
    assert info.value.status == status


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ((b"Upgrade: websocket\r\n", b""), 426),
        ((b"GET ", b"POST "), 405),
        ((b"Version: 13", b"Version: 8"), 426),
        ((b"dGhlIHNhbXBsZSBub25jZQ==", b"short"), 400),
        ((b"dGhlIHNhbXBsZSBub25jZQ==", b"!!!notbase64!!!"), 400),
    ],
)
def test_bad_upgrades_are_refused_with_a_status(change: tuple[bytes, bytes], status: int) -> None:
    """Upgrade requests missing or breaking a required header are refused with their status."""
    with pytest.raises(HandshakeError) as info:
        validate_upgrade(parse_head(GOOD.replace(*change)))
    assert info.value.status == status
