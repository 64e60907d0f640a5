"""protocol/frames.py: server frames built as JSON bytes, exactly as Action Cable and
AnyCable's extended protocol shape them."""

from __future__ import annotations

import orjson

from cablecar.protocol import frames

IDENT = '{"channel":"ChatChannel","room":"1"}'


def test_frames_have_the_exact_action_cable_shapes() -> None:
    """Welcome, ping, confirm, reject and disconnect frames have Action Cable's exact JSON shapes."""
    ident = frames.encode_identifier(IDENT)
    assert orjson.loads(frames.WELCOME) == {"type": "welcome"}
    assert orjson.loads(frames.ping(1700000000)) == {"type": "ping", "message": 1700000000}
    assert orjson.loads(frames.confirm(ident)) == {
        "identifier": IDENT,
        "type": "confirm_subscription",
    }
    assert orjson.loads(frames.reject(ident)) == {
        "identifier": IDENT,
        "type": "reject_subscription",
    }
    assert orjson.loads(frames.disconnect("unauthorized", False)) == {
        "type": "disconnect",
        "reason": "unauthorized",
        "reconnect": False,
    }
    assert orjson.loads(frames.disconnect(None, True)) == {
        "type": "disconnect",
        "reason": None,
        "reconnect": True,
    }


def test_data_frame_splices_the_payload_without_reencoding() -> None:
    """A data frame carries the broadcast payload's bytes as sent (spacing and key order kept)."""
    payload = b'{"b":1, "a":[1,2]}'  # spacing and key order survive: no decode/encode
    frame = frames.data_frame(frames.encode_identifier(IDENT), payload)
    assert frame.endswith(b',"message":{"b":1, "a":[1,2]}}')
    assert orjson.loads(frame) == {"identifier": IDENT, "message": {"b": 1, "a": [1, 2]}}


def test_identifiers_are_spliced_as_json_strings() -> None:
    """An identifier with quotes, backslashes and non-ASCII text is spliced into frames as
    a JSON string that decodes back to the identifier byte for byte."""
    odd = '{"channel":"Chat\\Channel","room":"caf\u00e9 \\"1\\""}'
    ident = frames.encode_identifier(odd)
    assert orjson.loads(ident) == odd
    assert orjson.loads(frames.confirm(ident))["identifier"] == odd


def test_extended_frames_carry_positions_and_the_welcome_its_sid() -> None:
    """The extended protocol's welcome always lists restored_ids; a positioned data frame
    carries stream_id, epoch and offset after the message; history answers echo the
    identifier."""
    ident = frames.encode_identifier(IDENT)
    assert orjson.loads(frames.welcome("s1")) == {
        "type": "welcome",
        "sid": "s1",
        "restored_ids": [],
    }
    assert orjson.loads(frames.welcome("s2", ["a", "b"])) == {
        "type": "welcome",
        "sid": "s2",
        "restored": True,
        "restored_ids": ["a", "b"],
    }
    frame = frames.positioned_frame(ident, b'{"n":1}', frames.position("room_1", "e1", 7))
    assert orjson.loads(frame) == {
        "identifier": IDENT,
        "message": {"n": 1},
        "stream_id": "room_1",
        "epoch": "e1",
        "offset": 7,
    }
    assert orjson.loads(frames.confirm_history(ident)) == {
        "identifier": IDENT,
        "type": "confirm_history",
    }
    assert orjson.loads(frames.reject_history(ident))["type"] == "reject_history"
    assert orjson.loads(frames.presence(ident, {"type": "info", "total": 0})) == {
        "identifier": IDENT,
        "message": {"type": "info", "total": 0},
        "type": "presence",
    }
