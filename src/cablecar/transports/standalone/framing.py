"""RFC 6455 framing, sans I/O: client frames in, events out; server frames built once.

Invariants:

1. Client frames must be masked, carry no RSV bits and use a known opcode; control
   frames are final and at most 125 bytes. Any violation raises :class:`FrameError`
   with the close code to send (1002), and the parser accepts nothing afterwards.
2. A frame or a reassembled fragmented message longer than ``max_size`` raises
   :class:`FrameError` with code 1009 as soon as its header is read, before the
   payload is buffered, so a client cannot make the server buffer more than
   ``max_size`` plus one header.
3. A text message that is not valid UTF-8 raises code 1007.
4. Frames that came before a violation in the same read are returned first; the
   violation is raised by the next call (``feed(b"")`` surfaces it at once), so a
   valid command is never lost to garbage that follows it.
5. Nothing after a close frame is parsed: the client may not send anything after it.
"""

from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass
from enum import IntEnum

from ...errors import ProtocolViolation

__all__ = [
    "CloseCode",
    "FrameError",
    "FrameParser",
    "Opcode",
    "build_close",
    "build_frame",
    "text_frame",
]


class Opcode(IntEnum):
    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


class FrameError(ProtocolViolation):
    """The client broke RFC 6455; close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete message or control frame from the client."""

    opcode: Opcode
    payload: bytes


_DATA = frozenset((Opcode.TEXT, Opcode.BINARY))
_KNOWN = frozenset(int(op) for op in Opcode)
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))
_U16 = struct.Struct("!H")
#: Bytes each fragment of a message counts against ``max_size`` besides its payload.
_FRAGMENT_COST = 64
_UTF8 = codecs.getincrementaldecoder("utf-8")
_U64 = struct.Struct("!Q")


def _unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    # XOR as one big integer: C speed without a C extension.
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class FrameParser:
    """Incremental parser of the frames a client sends.

    Usage::

        parser = FrameParser(max_size=1 << 20)
        for frame in parser.feed(data):   # raises FrameError
            ...
    """

    __slots__ = (
        "_buf",
        "_decoder",
        "_failed",
        "_frag_op",
        "_frag_size",
        "_frags",
        "_pending",
        "max_size",
    )

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._frag_op: int | None = None
        # A fragmented message grows in one buffer (no object per fragment), and every
        # fragment counts _FRAGMENT_COST bytes against max_size on top of its payload,
        # so floods of tiny or empty fragments hit the limit like one big message.
        self._frags = bytearray()
        self._frag_size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._failed = False
        self._pending: FrameError | None = None

    @property
    def failed(self) -> bool:
        """No more frames will come: a violation (raised or pending) or a close frame."""
        return self._failed

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes read from the socket; return the frames now complete.

        Raises:
            FrameError: the client broke RFC 6455 (in this data, or after the frames
                the previous call returned).
        """
        if self._failed:
            pending, self._pending = self._pending, None
            if pending is not None:
                raise pending
            return []
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                length = b1 & 0x7F
                head = 2
                if length == 126:
                    if end - pos < 4:
                        break
                    length = _U16.unpack_from(buf, pos + 2)[0]
                    head = 4
                elif length == 127:
                    if end - pos < 10:
                        break
                    length = _U64.unpack_from(buf, pos + 2)[0]
                    head = 10
                fin = b0 & 0x80
                opcode = b0 & 0x0F
                self._check_header(b0, b1, fin, opcode, length)
                total = head + 4 + length
                if end - pos < total:
                    break
                mask = bytes(buf[pos + head : pos + head + 4])
                payload = _unmask(bytes(buf[pos + head + 4 : pos + total]), mask)
                pos += total
                frame = self._complete(fin, opcode, payload)
                if frame is not None:
                    out.append(frame)
                    if opcode == Opcode.CLOSE:
                        self._failed = True  # the client may send nothing after it
                        self._buf = bytearray()
                        return out
        except FrameError as exc:
            self._failed = True
            self._buf = bytearray()
            if out:
                self._pending = exc
                return out
            raise
        if pos:
            del buf[:pos]
        return out

    def _check_header(self, b0: int, b1: int, fin: int, opcode: int, length: int) -> None:
        if b0 & 0x70:
            raise FrameError(
                CloseCode.PROTOCOL_ERROR, "reserved bits set (no extension negotiated)"
            )
        if opcode not in _KNOWN:
            raise FrameError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if not b1 & 0x80:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "client frame is not masked")
        if opcode >= 0x8:
            if not fin:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "control frame longer than 125 bytes")
            return
        if opcode == Opcode.CONT:
            if self._frag_op is None:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "continuation frame without a start")
            size = self._frag_size + length + _FRAGMENT_COST
        else:
            if self._frag_op is not None:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
            size = length
        if size > self.max_size:
            raise FrameError(
                CloseCode.MESSAGE_TOO_BIG, f"message of {size} bytes over the {self.max_size} limit"
            )

    def _complete(self, fin: int, opcode: int, payload: bytes) -> Frame | None:
        if opcode >= 0x8:
            if opcode == Opcode.CLOSE:
                _check_close_payload(payload)
            return Frame(Opcode(opcode), payload)
        if opcode != Opcode.CONT and fin:
            if opcode == Opcode.TEXT:
                _check_utf8(payload)
            return Frame(Opcode(opcode), payload)
        if opcode != Opcode.CONT:
            self._frag_op = opcode
            if opcode == Opcode.TEXT:
                self._decoder = _UTF8()
        self._frags += payload
        self._frag_size += len(payload) + _FRAGMENT_COST
        if self._decoder is not None:
            # Fail fast: a fragment that cannot start valid UTF-8 ends the message now.
            try:
                self._decoder.decode(payload, final=bool(fin))
            except UnicodeDecodeError:
                raise FrameError(CloseCode.INVALID_DATA, "text is not valid UTF-8") from None
        if not fin:
            return None
        op = Opcode(self._frag_op or Opcode.TEXT)
        message = bytes(self._frags)
        self._frag_op = None
        self._frags = bytearray()
        self._frag_size = 0
        self._decoder = None
        return Frame(op, message)


def _check_utf8(payload: bytes) -> None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CloseCode.INVALID_DATA, "text frame is not valid UTF-8") from None


def _check_close_payload(payload: bytes) -> None:
    if not payload:
        return
    if len(payload) == 1:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = _U16.unpack_from(payload)[0]
    if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "close reason is not valid UTF-8") from None


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a (validated) close frame payload; 1005 when empty."""
    if len(payload) < 2:
        return 1005, ""
    return _U16.unpack_from(payload)[0], payload[2:].decode("utf-8", "replace")


def build_frame(opcode: int, payload: bytes) -> bytes:
    """A complete unmasked server frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + _U16.pack(n) + payload
    return bytes((0x80 | opcode, 127)) + _U64.pack(n) + payload


def text_frame(payload: bytes) -> bytes:
    """A text frame around JSON bytes. Hot path: one header, one concatenation."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + _U16.pack(n) + payload
    return b"\x81\x7f" + _U64.pack(n) + payload


def build_close(code: int = CloseCode.NORMAL, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit the 125-byte control frame limit."""
    body = _U16.pack(code) + reason.encode("utf-8")[:123]
    return build_frame(Opcode.CLOSE, body)
