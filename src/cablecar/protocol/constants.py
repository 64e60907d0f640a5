"""Action Cable protocol constants (``ActionCable::INTERNAL``)."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "DEFAULT_MOUNT_PATH",
    "EXT_SUBPROTOCOL",
    "PING_INTERVAL",
    "SUBPROTOCOLS",
    "Command",
    "DisconnectReason",
    "MessageType",
]

#: Where the cable is served by default.
DEFAULT_MOUNT_PATH = "/cable"

#: Seconds between pings (``Server::Connections::BEAT_INTERVAL``).
PING_INTERVAL = 3.0

#: Subprotocols this server speaks, in order of preference.
SUBPROTOCOLS = ("actioncable-v1-json",)

#: AnyCable's extended protocol (session recovery, stream history), spoken by cables
#: with ``history=True`` beside the plain one.
EXT_SUBPROTOCOL = "actioncable-v1-ext-json"


class MessageType(StrEnum):
    """The ``type`` of a server frame."""

    WELCOME = "welcome"
    DISCONNECT = "disconnect"
    PING = "ping"
    CONFIRMATION = "confirm_subscription"
    REJECTION = "reject_subscription"
    CONFIRM_HISTORY = "confirm_history"
    REJECT_HISTORY = "reject_history"
    PRESENCE = "presence"
    PONG = "pong"


class DisconnectReason(StrEnum):
    """The ``reason`` of a ``disconnect`` frame."""

    UNAUTHORIZED = "unauthorized"
    INVALID_REQUEST = "invalid_request"
    SERVER_RESTART = "server_restart"
    REMOTE = "remote"
    TOO_SLOW = "too_slow"
    TOO_MANY_COMMANDS = "too_many_commands"
    MESSAGE_TOO_BIG = "message_too_big"
    NO_PONG = "no_pong"


class Command(StrEnum):
    """The ``command`` of a client frame."""

    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    MESSAGE = "message"
    HISTORY = "history"
    WHISPER = "whisper"
    JOIN = "join"
    LEAVE = "leave"
    PRESENCE = "presence"
    PING = "ping"
    PONG = "pong"
