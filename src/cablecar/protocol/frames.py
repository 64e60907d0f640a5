"""Server frames as JSON bytes (the WebSocket framing is the transport's job).

The data frame is spliced from bytes: the broadcast payload, already JSON, is never
decoded or re-encoded (``{"identifier":<id>,"message":<payload>}``).
"""

from __future__ import annotations

from .. import _json
from .constants import DisconnectReason, MessageType

__all__ = [
    "PONG",
    "PRESENCE_TYPE",
    "WELCOME",
    "confirm",
    "confirm_history",
    "data_frame",
    "disconnect",
    "encode_identifier",
    "ping",
    "position",
    "positioned_frame",
    "presence",
    "reject",
    "reject_history",
    "welcome",
]

WELCOME = b'{"type":"welcome"}'
PONG = b'{"type":"pong"}'


def welcome(sid: str, restored_ids: list[str] | None = None) -> bytes:
    """The extended protocol's welcome: ``sid`` always, ``restored_ids`` always a list
    (``[]`` when empty, so the official client never guesses), ``restored`` when true."""
    if restored_ids is None:
        return _json.dumps({"type": "welcome", "sid": sid, "restored_ids": []})
    return _json.dumps(
        {"type": "welcome", "sid": sid, "restored": True, "restored_ids": restored_ids}
    )


def confirm_history(identifier_json: bytes) -> bytes:
    """``confirm_history``: the backlog of a history request is complete."""
    return b'{"identifier":%s,"type":"confirm_history"}' % identifier_json


def reject_history(identifier_json: bytes) -> bytes:
    """``reject_history``: the gap cannot be filled (expired, another epoch)."""
    return b'{"identifier":%s,"type":"reject_history"}' % identifier_json


#: Spliced into a data frame in place of a position: ``{..., "type":"presence"}``
#: (presence events are broadcasts on the presence stream, with this type).
PRESENCE_TYPE = b',"type":"presence"'


def presence(identifier_json: bytes, message: dict[str, object]) -> bytes:
    """A presence reply to one client (``info``, ``error``)."""
    return positioned_frame(identifier_json, _json.dumps(message), PRESENCE_TYPE)


def position(stream: str, epoch: str, offset: int) -> bytes:
    """The position fields of a stored broadcast, ready to splice before a data
    frame's closing brace: ``,"stream_id":...,"epoch":...,"offset":7``."""
    return b',"stream_id":%s,"epoch":%s,"offset":%d' % (
        _json.dumps(stream),
        _json.dumps(epoch),
        offset,
    )


def positioned_frame(identifier_json: bytes, payload: bytes, position: bytes) -> bytes:
    """A data frame with position fields (extended protocol)."""
    return b'{"identifier":' + identifier_json + b',"message":' + payload + position + b"}"


def ping(now: int) -> bytes:
    """``{"type":"ping","message":<unix seconds>}``."""
    return b'{"type":"ping","message":%d}' % now


def encode_identifier(identifier: str) -> bytes:
    """The identifier as a JSON string, ready to splice into frames.

    The result is kept for the life of a subscription, so it is copied to an
    exact-size object: the JSON library's output buffer is larger than its content (about
    4 KiB for a short string), which would cost every subscription that much.
    """
    return bytes(memoryview(_json.dumps(identifier)))


def confirm(identifier_json: bytes) -> bytes:
    """``confirm_subscription`` echoing the identifier byte for byte."""
    return b'{"identifier":%s,"type":"confirm_subscription"}' % identifier_json


def reject(identifier_json: bytes) -> bytes:
    """``reject_subscription`` echoing the identifier byte for byte."""
    return b'{"identifier":%s,"type":"reject_subscription"}' % identifier_json


def disconnect(reason: DisconnectReason | str | None, reconnect: bool) -> bytes:
    """``disconnect``, always with both ``reason`` and ``reconnect``."""
    return _json.dumps(
        {"type": MessageType.DISCONNECT.value, "reason": reason, "reconnect": reconnect}
    )


def data_frame(identifier_json: bytes, payload: bytes) -> bytes:
    """``{"identifier":...,"message":<payload>}``; ``payload`` is JSON bytes.

    Hot path: one bytes join, no JSON work.
    """
    return b'{"identifier":' + identifier_json + b',"message":' + payload + b"}"
