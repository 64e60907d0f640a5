"""RFC 6455 framing: what the parser accepts, refuses (with which close code), and builds."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cablecar.transports.standalone.framing import (
    CloseCode,
    FrameError,
    FrameParser,
    Opcode,
    build_close,
    text_frame,
)


def client_frame(
    payload: bytes, opcode: int = 1, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """A frame as a client sends it (masked)."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        head = bytes((b0, (0x80 if mask else 0) | n))
    elif n < 65536:
        head = bytes((b0, (0x80 if mask else 0) | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, (0x80 if mask else 0) | 127)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_text_frames_of_every_length_class_round_trip() -> None:
    """Text frames with 7-bit, 16-bit and 64-bit lengths parse to the payload sent."""
    p = FrameParser(max_size=1 << 20)
    for size in (0, 1, 125, 126, 65535, 65536, 300_000):
        payload = b"x" * size
        assert [(f.opcode, f.payload) for f in p.feed(client_frame(payload))] == [
            (Opcode.TEXT, payload)
        ]


def test_frames_split_across_reads_are_reassembled() -> None:
    """Frames fed one byte at a time come out whole and in order."""
    data = client_frame(b"hello") + client_frame(b"world")
    p = FrameParser(max_size=1024)
    out = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1])
    assert [f.payload for f in out] == [b"hello", b"world"]


def test_fragmented_message_is_reassembled_with_control_frames_between() -> None:
    """A fragmented message with a ping between its fragments gives the ping first, then the whole message."""
    p = FrameParser(max_size=1024)
    frames = p.feed(
        client_frame(b"hel", fin=False)
        + client_frame(b"ping!", opcode=Opcode.PING)
        + client_frame(b"lo", opcode=Opcode.CONT)
    )
    assert [(f.opcode, f.payload) for f in frames] == [
        (Opcode.PING, b"ping!"),
        (Opcode.TEXT, b"hello"),
    ]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(b"x", mask=False), CloseCode.PROTOCOL_ERROR),
        (client_frame(b"x", rsv=0x40), CloseCode.PROTOCOL_ERROR),
        (client_frame(b"x", opcode=3), CloseCode.PROTOCOL_ERROR),
        (client_frame(b"x" * 126, opcode=Opcode.PING), CloseCode.PROTOCOL_ERROR),
        (client_frame(b"x", opcode=Opcode.PING, fin=False), CloseCode.PROTOCOL_ERROR),
        (client_frame(b"x", opcode=Opcode.CONT), CloseCode.PROTOCOL_ERROR),
        (client_frame(b"a", fin=False) + client_frame(b"b"), CloseCode.PROTOCOL_ERROR),
        (client_frame(b"\xff\xfe"), CloseCode.INVALID_DATA),
        (client_frame(b"\x03"), CloseCode.PROTOCOL_ERROR)
        if False
        else (client_frame(b"\x03", opcode=Opcode.CLOSE), CloseCode.PROTOCOL_ERROR),
        (client_frame(struct.pack("!H", 999), opcode=Opcode.CLOSE), CloseCode.PROTOCOL_ERROR),
        (
            client_frame(struct.pack("!H", 1000) + b"\xff", opcode=Opcode.CLOSE),
            CloseCode.PROTOCOL_ERROR,
        ),
        (client_frame(b"x" * 2000), CloseCode.MESSAGE_TOO_BIG),
        (
            client_frame(b"x" * 600, fin=False) + client_frame(b"x" * 600, opcode=Opcode.CONT),
            CloseCode.MESSAGE_TOO_BIG,
        ),
    ],
)
def test_violations_raise_with_the_close_code(data: bytes, code: int) -> None:
    """Each RFC 6455 violation raises FrameError with the close code the connection must get."""
    with pytest.raises(FrameError) as info:
        FrameParser(max_size=1024).feed(data)
    assert info.value.code == code


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    """The parser refuses a huge frame before its payload arrives (no buffering)."""
    header = bytes((0x81, 0x80 | 127)) + struct.pack("!Q", 1 << 40)
    with pytest.raises(FrameError) as info:
        FrameParser(max_size=1 << 20).feed(header)
    assert info.value.code == CloseCode.MESSAGE_TOO_BIG


def test_server_frames() -> None:
    """Server frames are unmasked and use the shortest length encoding; close frames carry their code."""
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"x" * 70000)[:2] == b"\x81\x7f"
    assert build_close(1009)[:4] == b"\x88\x02\x03\xf1"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(min_value=1, max_value=64))
def test_any_byte_stream_either_parses_or_raises_frame_error(
    chunks: list[bytes], step: int
) -> None:
    """Arbitrary input never raises anything but FrameError (hypothesis)."""
    p = FrameParser(max_size=4096)
    data = b"".join(chunks)
    try:
        for i in range(0, len(data), step):
            p.feed(data[i : i + step])
    except FrameError as exc:
        assert exc.code in (1002, 1007, 1009)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=200), min_size=1, max_size=5))
def test_valid_text_frames_always_round_trip(texts: list[str]) -> None:
    """Any valid texts, framed by a client, parse back to the same texts."""
    p = FrameParser(max_size=1 << 16)
    data = b"".join(client_frame(t.encode()) for t in texts)
    assert [f.payload.decode() for f in p.feed(data)] == texts
