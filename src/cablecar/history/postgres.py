"""History, sessions and presence in PostgreSQL: for ``postgresql://`` (many servers).

Every node of a cluster on the same database (and ``channel_prefix``, kept in an ``ns``
column) shares the epoch, the offsets, the resumable sessions and the presence records,
so a client resumes on any node and a member joined on one is listed on all. Times come
from the database clock (``clock_timestamp()``), so the nodes' clocks do not matter.

Tables (created on first use, under an advisory lock so nodes starting together do not
race): ``cablecar_meta`` (the epoch), ``cablecar_offsets`` (each stream's last offset),
``cablecar_history`` (the broadcasts, trimmed to ``history_limit`` and ``history_ttl`` on
each append), ``cablecar_sessions`` (resumable sessions; a taken one stays as a
tombstone so it cannot be restored twice), ``cablecar_presence`` (one row per session
and stream, with its member id, info and deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from ..errors import AdapterError
from .base import Entry, StoreSettings

__all__ = ["PostgresStore"]

_SCHEMA = """
SELECT pg_advisory_xact_lock(hashtext('cablecar_history_schema'));
CREATE TABLE IF NOT EXISTS cablecar_meta (ns text PRIMARY KEY, epoch text NOT NULL);
CREATE TABLE IF NOT EXISTS cablecar_offsets (
    ns text, stream text, top bigint NOT NULL, PRIMARY KEY (ns, stream));
CREATE TABLE IF NOT EXISTS cablecar_history (
    ns text, stream text, "offset" bigint, at double precision NOT NULL,
    payload bytea NOT NULL, exclude text, PRIMARY KEY (ns, stream, "offset"));
CREATE TABLE IF NOT EXISTS cablecar_sessions (
    ns text, sid text, until double precision NOT NULL, data bytea, PRIMARY KEY (ns, sid));
CREATE TABLE IF NOT EXISTS cablecar_presence (
    ns text, stream text, sid text, pid text NOT NULL, info bytea NOT NULL,
    until double precision NOT NULL, PRIMARY KEY (ns, stream, sid));
CREATE INDEX IF NOT EXISTS cablecar_presence_member ON cablecar_presence (ns, stream, pid);
"""

_NOW = "extract(epoch from clock_timestamp())"

_APPEND = f"""
WITH t AS (
    INSERT INTO cablecar_offsets (ns, stream, top) VALUES (%(ns)s, %(stream)s, 1)
    ON CONFLICT (ns, stream) DO UPDATE SET top = cablecar_offsets.top + 1 RETURNING top)
INSERT INTO cablecar_history (ns, stream, "offset", at, payload, exclude)
SELECT %(ns)s, %(stream)s, top, {_NOW}, %(payload)s, %(exclude)s FROM t RETURNING "offset"
"""
_TRIM = f"""
DELETE FROM cablecar_history WHERE ns = %(ns)s AND stream = %(stream)s
AND ("offset" <= %(top)s - %(limit)s OR at < {_NOW} - %(ttl)s)
"""
_ENTRIES = f"""
SELECT "offset", payload, exclude FROM cablecar_history
WHERE ns = %(ns)s AND stream = %(stream)s AND "offset" > %(offset)s AND at >= %(at)s
AND at >= {_NOW} - %(ttl)s ORDER BY "offset" LIMIT %(limit)s
"""

#: Connections one store keeps to PostgreSQL at most (calls past it wait their turn).
_POOL_SIZE = 4
_ERRORS = (psycopg.Error, OSError)


async def _lock_stream(conn: psycopg.AsyncConnection[Any], params: dict[str, Any]) -> None:
    """Serialize presence changes of one stream (until the transaction ends)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%(ns)s || '/' || %(stream)s))", params
    )


async def _member_alive(conn: psycopg.AsyncConnection[Any], params: dict[str, Any]) -> bool:
    """Whether member ``pid`` has a live session on the stream."""
    cur = await conn.execute(
        "SELECT 1 FROM cablecar_presence WHERE ns = %(ns)s AND stream = %(stream)s "
        f"AND pid = %(pid)s AND until > {_NOW} LIMIT 1",
        params,
    )
    return await cur.fetchone() is not None


class PostgresStore:
    """A :class:`~cablecar.history.HistoryStore` in PostgreSQL (see the module docstring)."""

    def __init__(self, url: str, settings: StoreSettings, *, prefix: str | None = None) -> None:
        self.settings = settings
        self.epoch = ""
        self._url = url
        self._ns = prefix or ""
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(_POOL_SIZE)
        self._schema_ready = False
        self._last_sweep = 0.0

    # -- connections -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = await psycopg.AsyncConnection.connect(
                        self._url, autocommit=True, connect_timeout=5,
                        application_name="cablecar-history",
                    )  # fmt: skip
                yield conn
            except _ERRORS as exc:
                if conn is not None:
                    with contextlib.suppress(*_ERRORS):
                        await conn.close()
                raise AdapterError(f"history store (PostgreSQL): {exc}") from exc
            else:
                self._idle.append(conn)

    async def _rows(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self._conn() as conn:
            cur = await conn.execute(query, {"ns": self._ns, **params})
            return await cur.fetchall() if cur.description else []

    async def start(self) -> None:
        if self._schema_ready:
            return
        async with self._conn() as conn:
            async with conn.transaction():
                await conn.execute(_SCHEMA)
            await conn.execute(
                "INSERT INTO cablecar_meta (ns, epoch) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (self._ns, secrets.token_urlsafe(6)),
            )
            cur = await conn.execute("SELECT epoch FROM cablecar_meta WHERE ns = %s", (self._ns,))
            row = await cur.fetchone()
        assert row is not None
        self.epoch = row[0]
        self._schema_ready = True

    # -- history -----------------------------------------------------------------------

    async def append(self, stream: str, payload: bytes, exclude: str | None) -> int:
        settings = self.settings
        async with self._conn() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    _APPEND, {"ns": self._ns, "stream": stream, "payload": payload,
                              "exclude": exclude},
                )  # fmt: skip
                row = await cur.fetchone()
                assert row is not None
                top = int(row[0])
                await conn.execute(
                    _TRIM, {"ns": self._ns, "stream": stream, "top": top,
                            "limit": settings.history_limit, "ttl": settings.history_ttl},
                )  # fmt: skip
        return top

    async def _entries(self, stream: str, offset: int, at: float) -> list[Entry]:
        rows = await self._rows(
            _ENTRIES, {"stream": stream, "offset": offset, "at": at,
                       "ttl": self.settings.history_ttl, "limit": self.settings.history_limit},
        )  # fmt: skip
        return [Entry(int(o), bytes(p), x) for o, p, x in rows]

    async def after(self, stream: str, epoch: str, offset: int) -> list[Entry] | None:
        if epoch != self.epoch:
            return None
        rows = await self._rows(
            "SELECT top FROM cablecar_offsets WHERE ns = %(ns)s AND stream = %(stream)s",
            {"stream": stream},
        )
        top = int(rows[0][0]) if rows else 0
        if offset >= top:
            return [] if offset == top else None  # up to date, or an unknown future
        entries = await self._entries(stream, offset, 0.0)
        if not entries or entries[0].offset != offset + 1:
            return None  # some message after offset is gone
        return entries

    async def since(self, stream: str, timestamp: int) -> list[Entry]:
        return await self._entries(stream, 0, float(timestamp))

    # -- sessions ----------------------------------------------------------------------

    async def save_sessions(self, sessions: list[tuple[str, bytes]]) -> None:
        if not sessions:
            return
        ttl = self.settings.sessions_ttl
        async with self._conn() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(
                    f"INSERT INTO cablecar_sessions (ns, sid, until, data) "
                    f"VALUES (%s, %s, {_NOW} + %s, %s) ON CONFLICT (ns, sid) DO UPDATE "
                    "SET until = EXCLUDED.until, data = EXCLUDED.data "
                    "WHERE cablecar_sessions.data IS NOT NULL",  # a tombstone stays one
                    [(self._ns, sid, ttl, data) for sid, data in sessions],
                )
            if time.monotonic() - self._last_sweep > 60.0:
                self._last_sweep = time.monotonic()
                await conn.execute(
                    f"DELETE FROM cablecar_sessions WHERE ns = %s AND until < {_NOW}", (self._ns,)
                )

    async def take_session(self, sid: str) -> bytes | None:
        """The session saved under ``sid``, once: a tombstone replaces it."""
        async with self._conn() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    f"UPDATE cablecar_sessions SET data = NULL, until = {_NOW} + %s "
                    "FROM (SELECT data AS old FROM cablecar_sessions WHERE ns = %s AND sid = %s "
                    f"AND data IS NOT NULL AND until > {_NOW} FOR UPDATE) AS taken "
                    "WHERE ns = %s AND sid = %s RETURNING taken.old",
                    (self.settings.sessions_ttl, self._ns, sid, self._ns, sid),
                )
                row = await cur.fetchone()
        return bytes(row[0]) if row is not None else None

    # -- presence ----------------------------------------------------------------------

    async def presence_join(self, stream: str, sid: str, pid: str, info: bytes) -> bool:
        params = {"ns": self._ns, "stream": stream, "sid": sid, "pid": pid, "info": info,
                  "ttl": self.settings.presence_ttl}  # fmt: skip
        async with self._conn() as conn:
            async with conn.transaction():
                await _lock_stream(conn, params)
                alive = await _member_alive(conn, params)
                await conn.execute(
                    "INSERT INTO cablecar_presence (ns, stream, sid, pid, info, until) VALUES "
                    f"(%(ns)s, %(stream)s, %(sid)s, %(pid)s, %(info)s, {_NOW} + %(ttl)s) "
                    "ON CONFLICT (ns, stream, sid) DO UPDATE SET pid = EXCLUDED.pid, "
                    "info = EXCLUDED.info, until = EXCLUDED.until",
                    params,
                )
                await conn.execute(  # one info per member, the latest
                    "UPDATE cablecar_presence SET info = %(info)s WHERE ns = %(ns)s "
                    "AND stream = %(stream)s AND pid = %(pid)s",
                    params,
                )
        return not alive

    async def presence_leave(self, stream: str, sid: str) -> str | None:
        params = {"ns": self._ns, "stream": stream, "sid": sid}
        async with self._conn() as conn:
            async with conn.transaction():
                await _lock_stream(conn, params)
                cur = await conn.execute(
                    "DELETE FROM cablecar_presence WHERE ns = %(ns)s AND stream = %(stream)s "
                    "AND sid = %(sid)s RETURNING pid",
                    params,
                )
                row = await cur.fetchone()
                if row is None:
                    return None
                params["pid"] = row[0]
                if await _member_alive(conn, params):
                    return None  # another connection of the member is still here
                await conn.execute(  # its dead sessions go with it: no second leave
                    "DELETE FROM cablecar_presence WHERE ns = %(ns)s AND stream = %(stream)s "
                    "AND pid = %(pid)s",
                    params,
                )
        return str(row[0])

    async def presence_touch(self, records: list[tuple[str, str]]) -> None:
        if not records:
            return
        await self._rows(
            f"UPDATE cablecar_presence SET until = {_NOW} + %(ttl)s WHERE ns = %(ns)s "
            "AND (stream, sid) IN (SELECT * FROM unnest(%(streams)s::text[], %(sids)s::text[]))",
            {"ttl": self.settings.presence_ttl, "streams": [s for s, _ in records],
             "sids": [sid for _, sid in records]},
        )  # fmt: skip

    async def presence_members(self, stream: str) -> list[tuple[str, bytes]]:
        rows = await self._rows(
            "SELECT DISTINCT ON (pid) pid, info FROM cablecar_presence WHERE ns = %(ns)s "
            f"AND stream = %(stream)s AND until > {_NOW} ORDER BY pid",
            {"stream": stream},
        )
        return [(str(pid), bytes(info)) for pid, info in rows]

    async def presence_expire(self) -> list[tuple[str, str]]:
        # Each expired row is deleted by one node only (DELETE ... RETURNING), so one
        # node announces each leave; members with a live session elsewhere stay. Not
        # under the per-stream lock joins take: a join racing the expiry of the same
        # member's old session may be followed by a leave (rare; the next join heals).
        rows = await self._rows(
            f"WITH gone AS (DELETE FROM cablecar_presence WHERE ns = %(ns)s AND until <= {_NOW} "
            "RETURNING stream, pid) SELECT DISTINCT g.stream, g.pid FROM gone g WHERE NOT EXISTS "
            "(SELECT 1 FROM cablecar_presence p WHERE p.ns = %(ns)s AND p.stream = g.stream "
            f"AND p.pid = g.pid AND p.until > {_NOW})",
            {},
        )
        return [(str(stream), str(pid)) for stream, pid in rows]

    def size(self) -> int:
        return 0  # kept in PostgreSQL: see the cablecar_history table

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(*_ERRORS):
                await conn.close()
