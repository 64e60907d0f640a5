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

import contextlib
import itertools
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
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


# Presence: hash pr:<stream> pid -> {"i": info, "s": {sid: deadline ms}}, hash
# prs:<stream> sid -> pid, set pr:streams. Deadlines use Redis's clock.
_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

_P_JOIN = (
    _NOW
    + """
local raw = redis.call('HGET', KEYS[1], ARGV[3])
local rec = {i = ARGV[4], s = {}}
local alive = false
if raw then
  rec = cjson.decode(raw)
  for sid, d in pairs(rec.s) do
    if d > now then alive = true else rec.s[sid] = nil end
  end
end
rec.s[ARGV[2]] = now + tonumber(ARGV[5])
rec.i = ARGV[4]
redis.call('HSET', KEYS[1], ARGV[3], cjson.encode(rec))
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
if alive then return 0 end
return 1
"""
)

_P_LEAVE = (
    _NOW
    + """
local pid = redis.call('HGET', KEYS[2], ARGV[1])
if not pid then return false end
redis.call('HDEL', KEYS[2], ARGV[1])
local raw = redis.call('HGET', KEYS[1], pid)
if not raw then return false end
local rec = cjson.decode(raw)
rec.s[ARGV[1]] = nil
for sid, d in pairs(rec.s) do
  if d > now then
    redis.call('HSET', KEYS[1], pid, cjson.encode(rec))
    return false
  end
end
redis.call('HDEL', KEYS[1], pid)
return pid
"""
)

_P_TOUCH = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local stream, sid = ARGV[i], ARGV[i + 1]
  local pid = redis.call('HGET', ARGV[1] .. 'prs:' .. stream, sid)
  if pid then
    local raw = redis.call('HGET', ARGV[1] .. 'pr:' .. stream, pid)
    if raw then
      local rec = cjson.decode(raw)
      rec.s[sid] = now + ttl
      redis.call('HSET', ARGV[1] .. 'pr:' .. stream, pid, cjson.encode(rec))
    end
  end
end
return 1
"""
)

_P_MEMBERS = (
    _NOW
    + """
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local rec = cjson.decode(all[i + 1])
  for sid, d in pairs(rec.s) do
    if d > now then
      table.insert(out, all[i])
      table.insert(out, rec.i)
      break
    end
  end
end
return out
"""
)

_P_EXPIRE = (
    _NOW
    + """
local gone = {}
for _, stream in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'pr:streams')) do
  local h = ARGV[1] .. 'pr:' .. stream
  local all = redis.call('HGETALL', h)
  for i = 1, #all, 2 do
    local rec = cjson.decode(all[i + 1])
    local alive = false
    for sid, d in pairs(rec.s) do
      if d > now then alive = true
      else
        rec.s[sid] = nil
        redis.call('HDEL', ARGV[1] .. 'prs:' .. stream, sid)
      end
    end
    if alive then
      redis.call('HSET', h, all[i], cjson.encode(rec))
    else
      redis.call('HDEL', h, all[i])
      table.insert(gone, stream)
      table.insert(gone, all[i])
    end
  end
  if redis.call('HLEN', h) == 0 then redis.call('SREM', ARGV[1] .. 'pr:streams', stream) end
end
return gone
"""
)


#: Connections one store keeps to Redis at most.
_POOL_SIZE = 32


class RedisStore:
    """A :class:`~cablecar.history.HistoryStore` in Redis (see the module docstring)."""

    def __init__(self, url: str, settings: StoreSettings, *, prefix: str | None = None) -> None:
        self.settings = settings
        self.epoch = ""
        # A blocking pool: past its size, store calls wait for a free connection (at most
        # the socket timeout) instead of failing at once with "Too many connections", as
        # redis-py's default pool does under a burst of joins or broadcasts.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=_POOL_SIZE,
            timeout=5.0,
            socket_timeout=5.0,
            socket_connect_timeout=5.0,
        )
        self._redis: Redis = Redis.from_pool(pool)
        self._p = f"cablecar:{prefix}:" if prefix else "cablecar:"
        self._append = self._redis.register_script(_APPEND)
        self._read = self._redis.register_script(_READ)
        self._save = self._redis.register_script(_SAVE)
        self._take = self._redis.register_script(_TAKE)
        self._p_join = self._redis.register_script(_P_JOIN)
        self._p_leave = self._redis.register_script(_P_LEAVE)
        self._p_touch = self._redis.register_script(_P_TOUCH)
        self._p_members = self._redis.register_script(_P_MEMBERS)
        self._p_expire = self._redis.register_script(_P_EXPIRE)

    async def start(self) -> None:
        if self.epoch:
            return
        with _store_errors("history"):
            key = self._p + "epoch"
            await self._redis.set(key, secrets.token_urlsafe(6), nx=True)
            epoch = await self._redis.get(key)
        self.epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)

    async def _run(
        self, script: Any, keys: list[str], args: list[Any], store: str = "history"
    ) -> Any:
        """Run one of the scripts; a Redis error is an AdapterError naming the store."""
        with _store_errors(store):
            return await script(keys=keys, args=args)

    async def append(self, stream: str, payload: bytes, exclude: str | None) -> int:
        ttl_ms = int(self.settings.history_ttl * 1000)
        offset = await self._run(
            self._append,
            [self._p + "s:" + stream, self._p + "top:" + stream],
            [payload, exclude or "", self.settings.history_limit, ttl_ms, ttl_ms * 10],
        )
        return int(offset)

    async def _entries(self, stream: str, start: str) -> tuple[int, list[tuple[int, Entry]]]:
        top, now, raw = await self._run(
            self._read,
            [self._p + "s:" + stream, self._p + "top:" + stream],
            [start, self.settings.history_limit + 1],
        )
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

    async def _batch(
        self, script: Any, ttl: float, pairs: Sequence[tuple[str, Any]], store: str = "history"
    ) -> None:
        """Run ``script`` once for many pairs: ARGV is the key prefix, ``ttl`` in
        milliseconds, then every pair's two values. No pairs, no call."""
        if pairs:
            args: list[Any] = [self._p, int(ttl * 1000), *itertools.chain.from_iterable(pairs)]
            await self._run(script, [], args, store)

    async def save_sessions(self, sessions: list[tuple[str, bytes]]) -> None:
        await self._batch(self._save, self.settings.sessions_ttl, sessions)

    async def take_session(self, sid: str) -> bytes | None:
        value = await self._run(
            self._take,
            [self._p + "sess:" + sid, self._p + "ret:" + sid],
            [int(self.settings.sessions_ttl * 1000)],
        )
        return value if isinstance(value, bytes) else None

    # -- presence ----------------------------------------------------------------------

    async def _presence(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._run(script, keys, args, "presence")

    async def presence_join(self, stream: str, sid: str, pid: str, info: bytes) -> bool:
        p = self._p
        ttl_ms = int(self.settings.presence_ttl * 1000)
        keys = [p + "pr:" + stream, p + "prs:" + stream, p + "pr:streams"]
        return bool(await self._presence(self._p_join, keys, [stream, sid, pid, info, ttl_ms]))

    async def presence_leave(self, stream: str, sid: str) -> str | None:
        keys = [self._p + "pr:" + stream, self._p + "prs:" + stream]
        pid = await self._presence(self._p_leave, keys, [sid])
        return pid.decode() if isinstance(pid, bytes) else None

    async def presence_touch(self, records: list[tuple[str, str]]) -> None:
        await self._batch(self._p_touch, self.settings.presence_ttl, records, "presence")

    async def presence_members(self, stream: str) -> list[tuple[str, bytes]]:
        flat = await self._presence(self._p_members, [self._p + "pr:" + stream], [])
        return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    async def presence_expire(self) -> list[tuple[str, str]]:
        flat = await self._presence(self._p_expire, [], [self._p])
        return [(flat[i].decode(), flat[i + 1].decode()) for i in range(0, len(flat), 2)]

    def size(self) -> int:
        return 0  # kept in Redis: see its memory and the streams' XLEN

    async def close(self) -> None:
        await self._redis.aclose()


@contextlib.contextmanager
def _store_errors(store: str) -> Iterator[None]:
    """A Redis error inside is raised as an AdapterError naming ``store``."""
    try:
        yield
    except RedisError as exc:
        raise AdapterError(f"{store} store: {exc}") from exc


def _fields(fields: Any) -> dict[bytes, bytes]:
    if isinstance(fields, dict):
        return fields
    it = iter(fields)
    return dict(zip(it, it, strict=False))
