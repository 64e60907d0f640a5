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

__all__ = [
    "AnyCommand",
    "History",
    "HistoryRequest",
    "Join",
    "Leave",
    "Perform",
    "Ping",
    "Pong",
    "PresenceInfo",
    "Subscribe",
    "Unsubscribe",
    "Whisper",
    "parse_command",
    "parse_identifier",
]

#: Stream positions one history request may name; more are ignored (a subscription
#: has at most that many streams worth asking about).
MAX_HISTORY_STREAMS = 256


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """``{"since": <unix seconds>, "streams": {"<stream>": {"epoch": "e", "offset": 7}}}``.

    Parsed tolerantly (AnyCable's client sends ``"since": false``; numbers may come as
    strings): a malformed field is dropped, never an error.

    Attributes:
        since: a positive Unix time in seconds, or ``None``.
        streams: the client's known position per stream: ``{stream: (epoch, offset)}``.
    """

    since: int | None
    streams: dict[str, tuple[str, int]]


def _history(raw: Any) -> HistoryRequest | None:
    if not isinstance(raw, dict):
        return None
    since = _int(raw.get("since"))
    streams: dict[str, tuple[str, int]] = {}
    positions = raw.get("streams")
    if isinstance(positions, dict):
        for stream, pos in positions.items():
            if len(streams) >= MAX_HISTORY_STREAMS:
                break
            if not isinstance(pos, dict):
                continue
            epoch, offset = pos.get("epoch"), _int(pos.get("offset"), zero=True)
            if isinstance(epoch, int) and not isinstance(epoch, bool):
                epoch = str(epoch)
            if isinstance(stream, str) and isinstance(epoch, str) and offset is not None:
                streams[stream] = (epoch, offset)
    return HistoryRequest(since if since else None, streams)


def _presence(raw: Any) -> tuple[str, Any] | None:
    """``(id, info)`` of a ``presence`` object; numeric ids become strings."""
    if not isinstance(raw, dict):
        return None
    pid = raw.get("id")
    if isinstance(pid, int | float) and not isinstance(pid, bool):
        pid = str(pid)
    if not isinstance(pid, str) or not pid or len(pid) > 256:
        return None
    return pid, raw.get("info")


def _int(value: Any, *, zero: bool = False) -> int | None:
    """A non-negative integer from an int or a digit string; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, int) and (value > 0 or (zero and value == 0)):
        return value
    if isinstance(value, float) and value > 0 and value == value and value < 1e18:
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``{"command":"subscribe","identifier":...}``, with an optional ``history``
    request (extended protocol)."""

    identifier: str
    history: HistoryRequest | None = None
    #: ``(id, info)`` to join presence with once confirmed (a re-subscribe).
    presence: tuple[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class History:
    """``{"command":"history","identifier":...,"history":{...}}`` (extended protocol)."""

    identifier: str
    history: HistoryRequest


@dataclass(frozen=True, slots=True)
class Whisper:
    """``{"command":"whisper","identifier":...,"data":<any JSON value>}``: an event for
    the other subscribers of the subscription's whisper stream (extended protocol)."""

    identifier: str
    data: Any


@dataclass(frozen=True, slots=True)
class Join:
    """``{"command":"join","identifier":...,"presence":{"id":"42","info":{...}}}``."""

    identifier: str
    id: str
    info: Any


@dataclass(frozen=True, slots=True)
class Leave:
    """``{"command":"leave","identifier":...}`` (any ``presence`` field is ignored)."""

    identifier: str


@dataclass(frozen=True, slots=True)
class PresenceInfo:
    """``{"command":"presence","identifier":...,"data":{"return_records":false}}``."""

    identifier: str
    return_records: bool = True


@dataclass(frozen=True, slots=True)
class Ping:
    """``{"command":"ping"}``: the client asks for ``{"type":"pong"}``."""


@dataclass(frozen=True, slots=True)
class Pong:
    """``{"command":"pong"}``: the client answers a ping (keepalive)."""


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


AnyCommand = (
    Subscribe
    | Unsubscribe
    | Perform
    | History
    | Whisper
    | Join
    | Leave
    | PresenceInfo
    | Ping
    | Pong
)
_PING = Ping()
_PONG = Pong()


def _object(text: bytes | str, what: str, not_json: str, not_object: str) -> dict[str, Any]:
    """``text`` decoded as a JSON object; else :class:`InvalidCommand` of kind
    ``not_json`` or ``not_object``, saying what ``what`` was."""
    try:
        obj = _json.loads(text)
    except _json.JSONDecodeError:
        raise InvalidCommand(not_json, f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidCommand(not_object, f"{what} is a JSON {type(obj).__name__}, not an object")
    return obj


def parse_command(frame: bytes | str) -> AnyCommand:
    """Parse one text frame's payload into a command.

    Raises:
        InvalidCommand: the frame is not a well-formed command.
    """
    obj = _object(frame, "frame", "not_json", "not_object")
    command = obj.get("command")
    identifier = obj.get("identifier")
    if not isinstance(command, str):
        raise InvalidCommand("bad_command", f"missing or non-string command: {_short(command)}")
    if command == Command.PONG:
        return _PONG
    if command == Command.PING:
        return _PING
    if not isinstance(identifier, str) or not identifier:
        raise InvalidCommand(
            "bad_identifier", f"missing or non-string identifier: {_short(identifier)}"
        )
    if command == Command.SUBSCRIBE:
        return Subscribe(identifier, _history(obj.get("history")), _presence(obj.get("presence")))
    if command == Command.JOIN:
        presence = _presence(obj.get("presence"))
        if presence is None:
            raise InvalidCommand("bad_presence", "join needs presence: {id, info}")
        return Join(identifier, *presence)
    if command == Command.LEAVE:
        return Leave(identifier)
    if command == Command.PRESENCE:
        data = obj.get("data")
        records = not (isinstance(data, dict) and data.get("return_records") is False)
        return PresenceInfo(identifier, records)
    if command == Command.WHISPER:
        return Whisper(identifier, obj.get("data"))
    if command == Command.HISTORY:
        history = _history(obj.get("history"))
        if history is None:
            raise InvalidCommand("bad_history", "history command without a history object")
        return History(identifier, history)
    if command == Command.UNSUBSCRIBE:
        return Unsubscribe(identifier)
    if command == Command.MESSAGE:
        raw = obj.get("data")
        if not isinstance(raw, str):
            raise InvalidCommand("bad_data", f"data must be a JSON string, got {_short(raw)}")
        data = _object(raw, "data", "bad_data", "bad_data")
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
    params = _object(identifier, "identifier", "bad_identifier", "bad_identifier")
    channel = params.get("channel")
    if not isinstance(channel, str) or not channel:
        raise InvalidCommand("bad_identifier", "identifier has no channel")
    return channel, params
