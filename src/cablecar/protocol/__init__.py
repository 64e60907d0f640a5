"""The Action Cable protocol, sans I/O: commands in, frames out. Imports no asyncio."""

from __future__ import annotations

from . import frames
from .commands import (
    AnyCommand,
    History,
    HistoryRequest,
    Join,
    Leave,
    Perform,
    Ping,
    Pong,
    PresenceInfo,
    Subscribe,
    Unsubscribe,
    Whisper,
    parse_command,
    parse_identifier,
)
from .constants import (
    DEFAULT_MOUNT_PATH,
    EXT_SUBPROTOCOL,
    PING_INTERVAL,
    SUBPROTOCOLS,
    Command,
    DisconnectReason,
    MessageType,
)
from .negotiation import choose_subprotocol, parse_subprotocols

__all__ = [
    "DEFAULT_MOUNT_PATH",
    "EXT_SUBPROTOCOL",
    "PING_INTERVAL",
    "SUBPROTOCOLS",
    "AnyCommand",
    "Command",
    "DisconnectReason",
    "History",
    "HistoryRequest",
    "Join",
    "Leave",
    "MessageType",
    "Perform",
    "Ping",
    "Pong",
    "PresenceInfo",
    "Subscribe",
    "Unsubscribe",
    "Whisper",
    "choose_subprotocol",
    "frames",
    "parse_command",
    "parse_identifier",
    "parse_subprotocols",
]
