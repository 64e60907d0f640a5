"""History in Redis Streams, sessions in Redis keys: shared by every node.

Keys (``cablecar:`` plus the channel prefix): ``epoch`` (set once, kept: the epoch
survives restarts), ``s:<stream>`` (a Redis Stream whose entry ids are the offsets,
fields ``t`` server time in ms, ``d`` payload, ``x`` excluded sid), ``top:<stream>``
(the newest offset, kept ten times longer than the data so that an up-to-date client
recovers even after the data expired), ``sess:<sid>`` and ``ret:<sid>`` (retired sids).

Every operation is one round trip (a script or a pipeline). Times come from Redis's
clock (``TIME``), so nodes with skewed clocks agree on ages.
"""

from __future__ import annotations

import secrets
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import AdapterError
from .base import Entry, StoreSettings

__all__ = ["RedisStore"]

_APPEND = """
local off = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], off .. '-1', 't', ms, 'd', ARGV[1], 'x', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return off
"""

_READ = """
local top = tonumber(redis.call('GET', KEYS[2]) or '0')
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
return {top, ms, entries}
"""

_SAVE = """
for i, sid in ipairs(ARGV) do
  if i > 2 and i % 2 == 1 then
    if redis.call('EXISTS', ARGV[1] .. 'ret:' .. sid) == 0 then
      redis.call('SET', ARGV[1] .. 'sess:' .. sid, ARGV[i + 1], 'PX', ARGV[2])
    end
  end
end
return 1
"""

_TAKE = """
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
end
return v
"""


class RedisStore:
    """A :class:`~cablecar.history.HistoryStore` in Redis (see the module docstring)."""

    def __init__(self, url: str, settings: StoreSettings, *, prefix: str | None = None) -> None:
        self.settings = settings
        self.epoch = ""
        self._redis: Redis = Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self._p = f"cablecar:{prefix}:" if prefix else "cablecar:"
        self._append = self._redis.register_script(_APPEND)
        self._read = self._redis.register_script(_READ)
        self._save = self._redis.register_script(_SAVE)
        self._take = self._redis.register_script(_TAKE)

    async def start(self) -> None:
        if self.epoch:
            return
        try:
            key = self._p + "epoch"
            await self._redis.set(key, secrets.token_urlsafe(6), nx=True)
            epoch = await self._redis.get(key)
        except RedisError as exc:
            raise AdapterError(f"history store: {exc}") from exc
        self.epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)

    async def append(self, stream: str, payload: bytes, exclude: str | None) -> int:
        ttl_ms = int(self.settings.history_ttl * 1000)
        try:
            offset = await self._append(
                keys=[self._p + "s:" + stream, self._p + "top:" + stream],
                args=[payload, exclude or "", self.settings.history_limit, ttl_ms, ttl_ms * 10],
            )
        except RedisError as exc:
            raise AdapterError(f"history store: {exc}") from exc
        return int(offset)

    async def _entries(self, stream: str, start: str) -> tuple[int, list[tuple[int, Entry]]]:
        try:
            top, now, raw = await self._read(
                keys=[self._p + "s:" + stream, self._p + "top:" + stream],
                args=[start, self.settings.history_limit + 1],
            )
        except RedisError as exc:
            raise AdapterError(f"history store: {exc}") from exc
        oldest = int(now) - int(self.settings.history_ttl * 1000)
        found: list[tuple[int, Entry]] = []
        for entry_id, fields in raw:
            data = _fields(fields)
            t = int(data[b"t"])
            if t < oldest:
                continue
            offset = int(entry_id.split(b"-")[0])
            exclude = data.get(b"x") or b""
            found.append((t, Entry(offset, data[b"d"], exclude.decode() or None)))
        return int(top), found

    async def after(self, stream: str, epoch: str, offset: int) -> list[Entry] | None:
        if epoch != self.epoch:
            return None
        top, found = await self._entries(stream, f"{offset + 1}-0")
        if offset >= top:
            return [] if offset == top else None
        entries = [e for _t, e in found]
        if not entries or entries[0].offset != offset + 1 or entries[-1].offset != top:
            return None
        return entries

    async def since(self, stream: str, timestamp: int) -> list[Entry]:
        _top, found = await self._entries(stream, "-")
        return [e for t, e in found if t >= timestamp * 1000]

    async def save_sessions(self, sessions: list[tuple[str, bytes]]) -> None:
        if not sessions:
            return
        args: list[Any] = [self._p, int(self.settings.sessions_ttl * 1000)]
        for sid, data in sessions:
            args += [sid, data]
        try:
            await self._save(keys=[], args=args)
        except RedisError as exc:
            raise AdapterError(f"history store: {exc}") from exc

    async def take_session(self, sid: str) -> bytes | None:
        try:
            value = await self._take(
                keys=[self._p + "sess:" + sid, self._p + "ret:" + sid],
                args=[int(self.settings.sessions_ttl * 1000)],
            )
        except RedisError as exc:
            raise AdapterError(f"history store: {exc}") from exc
        return value if isinstance(value, bytes) else None

    async def close(self) -> None:
        await self._redis.aclose()


def _fields(fields: Any) -> dict[bytes, bytes]:
    if isinstance(fields, dict):
        return fields
    it = iter(fields)
    return dict(zip(it, it, strict=False))
