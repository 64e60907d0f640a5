"""protocol/commands.py: client commands parsed into typed values (and subprotocols
negotiated)."""

from __future__ import annotations

import orjson
import pytest

from cablecar.errors import InvalidCommand
from cablecar.protocol import (
    Perform,
    Subscribe,
    Unsubscribe,
    choose_subprotocol,
    parse_command,
    parse_identifier,
    parse_subprotocols,
)

IDENT = '{"channel":"ChatChannel","room":"1"}'


def cmd(**kw: object) -> bytes:
    return orjson.dumps(kw)


def test_subscribe_keeps_identifier_byte_for_byte() -> None:
    """The raw identifier string is kept exactly, for the echo in confirm/reject."""
    odd = '{ "room" : "1",  "channel":"ChatChannel"}'
    assert parse_command(cmd(command="subscribe", identifier=odd)) == Subscribe(odd)


def test_unsubscribe() -> None:
    """An unsubscribe command decodes to Unsubscribe with its identifier."""
    assert parse_command(cmd(command="unsubscribe", identifier=IDENT)) == Unsubscribe(IDENT)


def test_message_decodes_json_in_json_data() -> None:
    """``data`` is a JSON string holding an object; its action picks the method."""
    c = parse_command(
        cmd(command="message", identifier=IDENT, data='{"action":"speak","body":"hi"}')
    )
    assert c == Perform(IDENT, "speak", {"action": "speak", "body": "hi"})


@pytest.mark.parametrize("data", ['{"body":"hi"}', '{"action":"","x":1}', '{"action":null}'])
def test_missing_action_calls_receive(data: str) -> None:
    """A message whose data has no action is a perform of "receive"."""
    c = parse_command(cmd(command="message", identifier=IDENT, data=data))
    assert isinstance(c, Perform) and c.action == "receive"


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (b"not json", "not_json"),
        (b"[1,2]", "not_object"),
        (b'"str"', "not_object"),
        (cmd(identifier=IDENT), "bad_command"),
        (cmd(command=1, identifier=IDENT), "bad_command"),
        (cmd(command="subscribe"), "bad_identifier"),
        (cmd(command="subscribe", identifier=""), "bad_identifier"),
        (cmd(command="subscribe", identifier={"channel": "X"}), "bad_identifier"),
        (cmd(command="message", identifier=IDENT), "bad_data"),
        (cmd(command="message", identifier=IDENT, data={"action": "x"}), "bad_data"),
        (cmd(command="message", identifier=IDENT, data="{oops"), "bad_data"),
        (cmd(command="message", identifier=IDENT, data="[1]"), "bad_data"),
        (cmd(command="message", identifier=IDENT, data='{"action":5}'), "bad_action"),
        (cmd(command="explode", identifier=IDENT), "unknown_command"),
    ],
)
def test_malformed_commands_raise_invalid_command_with_a_kind(frame: bytes, kind: str) -> None:
    """Every malformed frame maps to one InvalidCommand kind (logged once per kind)."""
    with pytest.raises(InvalidCommand) as info:
        parse_command(frame)
    assert info.value.kind == kind


@pytest.mark.parametrize("ident", ["nope", "[]", '"x"', "{}", '{"channel":""}', '{"channel":3}'])
def test_bad_identifiers(ident: str) -> None:
    """Identifiers that are not a JSON object with a string channel raise InvalidCommand."""
    with pytest.raises(InvalidCommand):
        parse_identifier(ident)


def test_identifier_params_include_channel() -> None:
    """A parsed identifier gives the channel name and all params, the channel included."""
    assert parse_identifier(IDENT) == ("ChatChannel", {"channel": "ChatChannel", "room": "1"})


def test_subprotocol_negotiation_picks_the_first_supported() -> None:
    """Subprotocol negotiation picks the first supported one the client offers, or none."""
    assert parse_subprotocols("foo, actioncable-v1-json,actioncable-unsupported") == [
        "foo",
        "actioncable-v1-json",
        "actioncable-unsupported",
    ]
    assert choose_subprotocol(["foo", "actioncable-v1-json"]) == "actioncable-v1-json"
    assert choose_subprotocol(["actioncable-unsupported"]) is None
    assert choose_subprotocol([]) is None
