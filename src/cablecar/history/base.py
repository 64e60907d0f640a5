"""The history store contract, and the envelope a positioned broadcast travels in.

Invariants:

1. Offsets of a stream start at 1 and grow by 1 per stored broadcast; the epoch names
   one continuous series of offsets (a new epoch: the old offsets mean nothing).
2. ``after(stream, epoch, offset)`` answers ``None`` (cannot recover) only when some
   message after ``offset`` is gone or the epoch differs; a client at the newest
   offset, or at ``oldest - 1``, recovers completely (AnyCable rejects both).
3. A session entry is taken once: ``take_session`` returns it and retires the sid, so a
   sid restores at most one connection, and a retired sid is never saved again.
4. A store never holds more than ``history_limit`` messages per stream, nor keeps them
   past ``history_ttl``; a history request reads at most that many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..protocol.frames import position

__all__ = ["ENVELOPE", "Entry", "HistoryStore", "StoreSettings", "pack", "stamp", "unpack"]

#: First byte of a pub/sub payload that carries a position or an exclusion: JSON never
#: starts with it (a control character), so plain payloads pass unchanged.
ENVELOPE = 0x1E
_SEP = b"\x1e"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Limits of a store (from the cable's config)."""

    history_limit: int = 100
    history_ttl: float = 300.0
    sessions_ttl: float = 300.0
    presence_ttl: float = 15.0


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored broadcast."""

    offset: int
    payload: bytes
    exclude: str | None = None


class HistoryStore(Protocol):
    """Where stream history and resumable sessions live."""

    #: The current epoch (valid after :meth:`start`).
    epoch: str

    async def start(self) -> None:
        """Connect and learn the epoch. Idempotent."""

    async def append(self, stream: str, payload: bytes, exclude: str | None) -> int:
        """Store a broadcast; return its offset."""

    async def after(self, stream: str, epoch: str, offset: int) -> list[Entry] | None:
        """Entries with offset > ``offset``, oldest first; ``None`` if any is gone."""

    async def since(self, stream: str, timestamp: int) -> list[Entry]:
        """Entries stored at or after ``timestamp`` (Unix seconds), oldest first."""

    async def save_sessions(self, sessions: list[tuple[str, bytes]]) -> None:
        """Store (or refresh) session entries for ``sessions_ttl``; retired sids are skipped."""

    async def take_session(self, sid: str) -> bytes | None:
        """The entry of ``sid`` (then retired), or ``None``."""

    async def presence_join(self, stream: str, sid: str, pid: str, info: bytes) -> bool:
        """Add session ``sid`` as member ``pid`` of ``stream`` (replacing its info);
        True when ``pid`` is new there (a ``join`` event is due)."""

    async def presence_leave(self, stream: str, sid: str) -> str | None:
        """Remove session ``sid`` from ``stream``; the member id when it has no session
        left (a ``leave`` event is due)."""

    async def presence_touch(self, records: list[tuple[str, str]]) -> None:
        """Keep ``(stream, sid)`` records alive for another ``presence_ttl``."""

    async def presence_members(self, stream: str) -> list[tuple[str, bytes]]:
        """``(pid, info)`` of every live member of ``stream``."""

    async def presence_expire(self) -> list[tuple[str, str]]:
        """Drop records not touched for ``presence_ttl``; ``(stream, pid)`` of members
        left with no session (``leave`` events due; each is returned once, to one
        caller, across every node)."""

    def size(self) -> int:
        """Broadcasts this store keeps in the process (0 when they live in a service)."""

    async def close(self) -> None:
        """Release connections."""


def pack(
    offset: int, position: bytes, exclude: str | None, payload: bytes, sent: float = 0.0
) -> bytes:
    """The pub/sub payload of a positioned broadcast (or one that excludes a socket, or
    one sampled for latency: ``sent`` is its ``time.time()`` at publishing)."""
    return b"\x1e%d\x1e%s\x1e%s\x1e%s\x1e%s" % (
        offset,
        position,
        (exclude or "").encode(),
        repr(sent).encode() if sent else b"",
        payload,
    )


def unpack(data: bytes) -> tuple[int, bytes, str | None, float, bytes]:
    """``(offset, position, exclude, sent, payload)`` of an envelope made by :func:`pack`."""
    _, offset, position, exclude, sent, payload = data.split(_SEP, 5)
    return int(offset), position, exclude.decode() or None, float(sent or 0), payload


async def stamp(
    store: HistoryStore | None,
    stream: str,
    payload: bytes,
    exclude: str | None,
    sent: float = 0.0,
) -> bytes:
    """What to publish for a broadcast: stored and positioned when there is a store,
    wrapped when it excludes a socket or is sampled for latency (``sent``), else
    ``payload`` itself. The one publishing path of ``Cable.broadcast`` and ``Broadcaster``."""
    if store is not None:
        await store.start()
        offset = await store.append(stream, payload, exclude)
        return pack(offset, position(stream, store.epoch, offset), exclude, payload, sent)
    if exclude is not None or sent:
        return pack(0, b"", exclude, payload, sent)
    return payload
