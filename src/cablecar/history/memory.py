"""History and sessions in the process: for ``memory://`` (one server)."""

from __future__ import annotations

import secrets
import time
from collections import deque

from .base import Entry, StoreSettings

__all__ = ["MemoryStore"]


#: The entries of a stream whose messages all expired (shared: never appended to).
_NO_ENTRIES: deque[tuple[float, Entry]] = deque(maxlen=0)


class _Stream:
    __slots__ = ("entries", "last", "top")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, Entry]] = deque()
        self.top = 0
        self.last = 0.0  # time of the newest append


class MemoryStore:
    """Per-stream ring buffers and a session table; a new epoch per process."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.epoch = secrets.token_urlsafe(6)
        self._streams: dict[str, _Stream] = {}
        self._sessions: dict[str, tuple[float, bytes]] = {}
        self._retired: dict[str, float] = {}
        self._last_sweep = 0.0
        self._last_stream_sweep = 0.0
        self._presence: dict[str, dict[str, tuple[bytes, dict[str, float]]]] = {}

    async def start(self) -> None:
        pass

    def _prune(self, st: _Stream, now: float) -> None:
        limit = now - self.settings.history_ttl
        entries = st.entries
        while entries and (entries[0][0] < limit or len(entries) > self.settings.history_limit):
            entries.popleft()

    async def append(self, stream: str, payload: bytes, exclude: str | None) -> int:
        st = self._streams.get(stream)
        if st is None:
            st = self._streams[stream] = _Stream()
        st.top += 1
        now = time.time()
        st.last = now
        if st.entries is _NO_ENTRIES:
            st.entries = deque()
        st.entries.append((now, Entry(st.top, payload, exclude)))
        self._prune(st, now)
        self._sweep_streams(now)
        return st.top

    def _sweep_streams(self, now: float) -> None:
        """Streams nobody appends to any more are pruned too: their entries after
        ``history_ttl``, the stream itself (its newest offset) after ten times that, as
        in Redis. Without this a server whose streams come and go (per-user, per-record,
        per-room streams) would keep every one of them forever."""
        ttl = self.settings.history_ttl
        if now - self._last_stream_sweep < min(10.0, ttl / 10):
            return
        self._last_stream_sweep = now
        gone = []
        for name, st in self._streams.items():
            self._prune(st, now)
            if not st.entries:
                if now - st.last > ttl * 10:
                    gone.append(name)
                elif st.entries is not _NO_ENTRIES:
                    st.entries = _NO_ENTRIES  # keep the offset, free the buffer
        for name in gone:
            del self._streams[name]
        if gone:
            self._streams = dict(self._streams)  # dicts never shrink: rebuild

    async def after(self, stream: str, epoch: str, offset: int) -> list[Entry] | None:
        if epoch != self.epoch:
            return None
        st = self._streams.get(stream)
        if st is None:
            return [] if offset == 0 else None
        if offset >= st.top:
            return [] if offset == st.top else None  # up to date, or an unknown future
        self._prune(st, time.time())
        entries = [e for _t, e in st.entries if e.offset > offset]
        if not entries or entries[0].offset != offset + 1:
            return None  # some message after offset is gone
        return entries

    async def since(self, stream: str, timestamp: int) -> list[Entry]:
        st = self._streams.get(stream)
        if st is None:
            return []
        self._prune(st, time.time())
        return [e for t, e in st.entries if t >= timestamp]

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        self._sessions = {k: v for k, v in self._sessions.items() if v[0] > now}
        self._retired = {k: v for k, v in self._retired.items() if v > now}

    async def save_sessions(self, sessions: list[tuple[str, bytes]]) -> None:
        now = time.time()
        self._sweep(now)
        until = now + self.settings.sessions_ttl
        for sid, data in sessions:
            if sid not in self._retired:
                self._sessions[sid] = (until, data)

    async def take_session(self, sid: str) -> bytes | None:
        now = time.time()
        self._sweep(now)
        found = self._sessions.pop(sid, None)
        if found is None or found[0] <= now:
            return None
        self._retired[sid] = now + self.settings.sessions_ttl
        return found[1]

    # -- presence: stream -> pid -> (info, {sid: deadline}) --------------------------------

    def _members(self, stream: str) -> dict[str, tuple[bytes, dict[str, float]]]:
        return self._presence.setdefault(stream, {})

    async def presence_join(self, stream: str, sid: str, pid: str, info: bytes) -> bool:
        members = self._members(stream)
        now = time.time()
        found = members.get(pid)
        new = found is None or not any(d > now for d in found[1].values())
        sessions = {} if found is None else {s: d for s, d in found[1].items() if d > now}
        sessions[sid] = now + self.settings.presence_ttl
        members[pid] = (info, sessions)
        return new

    async def presence_leave(self, stream: str, sid: str) -> str | None:
        members = self._presence.get(stream, {})
        for pid, (_info, sessions) in list(members.items()):
            if sessions.pop(sid, None) is not None:
                if not sessions:
                    del members[pid]
                    if not members:
                        self._presence.pop(stream, None)
                    return pid
                return None
        return None

    async def presence_touch(self, records: list[tuple[str, str]]) -> None:
        until = time.time() + self.settings.presence_ttl
        for stream, sid in records:
            for _info, sessions in self._presence.get(stream, {}).values():
                if sid in sessions:
                    sessions[sid] = until

    async def presence_members(self, stream: str) -> list[tuple[str, bytes]]:
        now = time.time()
        return [
            (pid, info)
            for pid, (info, sessions) in self._presence.get(stream, {}).items()
            if any(d > now for d in sessions.values())
        ]

    async def presence_expire(self) -> list[tuple[str, str]]:
        now = time.time()
        gone: list[tuple[str, str]] = []
        for stream, members in list(self._presence.items()):
            for pid, (_info, sessions) in list(members.items()):
                for sid, deadline in list(sessions.items()):
                    if deadline <= now:
                        del sessions[sid]
                if not sessions:
                    del members[pid]
                    gone.append((stream, pid))
            if not members:
                del self._presence[stream]
        return gone

    def size(self) -> int:
        return sum(len(st.entries) for st in self._streams.values())

    async def close(self) -> None:
        pass
