"""Client commands: bytes in, typed values out.

``parse_command`` never raises anything but :class:`~cablecar.errors.InvalidCommand`;
each fault carries a stable ``kind`` so that the session can log it once per
connection per kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _json
from .._logging import short as _short
from ..errors import InvalidCommand
from .constants import Command

__all__ = ["Perform", "Subscribe", "Unsubscribe", "parse_command", "parse_identifier"]


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``{"command":"subscribe","identifier":...}``."""

    identifier: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """``{"command":"unsubscribe","identifier":...}``."""

    identifier: str


@dataclass(frozen=True, slots=True)
class Perform:
    """``{"command":"message","identifier":...,"data":"{\\"action\\":...}"}``.

    Attributes:
        identifier: the raw identifier string.
        action: the ``action`` key of the decoded data, or ``"receive"`` when missing
            or blank (what Rails does for ``subscription.send(...)``).
        data: the decoded data object (``action`` key included, as in Rails).
    """

    identifier: str
    action: str
    data: dict[str, Any]


AnyCommand = Subscribe | Unsubscribe | Perform


def parse_command(frame: bytes | str) -> AnyCommand:
    """Parse one text frame's payload into a command.

    Raises:
        InvalidCommand: the frame is not a well-formed command.
    """
    try:
        obj = _json.loads(frame)
    except _json.JSONDecodeError:
        raise InvalidCommand("not_json", "frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidCommand("not_object", f"frame is a JSON {type(obj).__name__}, not an object")
    command = obj.get("command")
    identifier = obj.get("identifier")
    if not isinstance(command, str):
        raise InvalidCommand("bad_command", f"missing or non-string command: {_short(command)}")
    if not isinstance(identifier, str) or not identifier:
        raise InvalidCommand(
            "bad_identifier", f"missing or non-string identifier: {_short(identifier)}"
        )
    if command == Command.SUBSCRIBE:
        return Subscribe(identifier)
    if command == Command.UNSUBSCRIBE:
        return Unsubscribe(identifier)
    if command == Command.MESSAGE:
        raw = obj.get("data")
        if not isinstance(raw, str):
            raise InvalidCommand("bad_data", f"data must be a JSON string, got {_short(raw)}")
        try:
            data = _json.loads(raw)
        except _json.JSONDecodeError:
            raise InvalidCommand("bad_data", "data is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidCommand("bad_data", f"data is a JSON {type(data).__name__}, not an object")
        action = data.get("action")
        if action is None or action == "":
            action = "receive"
        elif not isinstance(action, str):
            raise InvalidCommand("bad_action", f"action must be a string: {_short(action)}")
        return Perform(identifier, action, data)
    raise InvalidCommand("unknown_command", f"unknown command {_short(command)}")


def parse_identifier(identifier: str) -> tuple[str, dict[str, Any]]:
    """Decode an identifier into ``(channel_name, params)``; ``params`` keeps ``channel``.

    Raises:
        InvalidCommand: not a JSON object, or no string ``channel``.
    """
    try:
        params = _json.loads(identifier)
    except _json.JSONDecodeError:
        raise InvalidCommand("bad_identifier", "identifier is not valid JSON") from None
    if not isinstance(params, dict):
        raise InvalidCommand("bad_identifier", "identifier is not a JSON object")
    channel = params.get("channel")
    if not isinstance(channel, str) or not channel:
        raise InvalidCommand("bad_identifier", "identifier has no channel")
    return channel, params
