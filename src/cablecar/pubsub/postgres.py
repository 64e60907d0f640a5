"""PostgreSQL LISTEN/NOTIFY adapter (``postgresql://``), on psycopg 3's asyncio API.

One dedicated connection LISTENs for every subscribed stream; a second connection
(opened on first use) sends NOTIFY and reads large payloads back. Both run in
autocommit mode.

Two PostgreSQL limits are handled here, where Rails' adapter is stuck with them:

* **Channel names** are identifiers of at most 63 bytes. A longer name (or an empty
  one, one with a NUL, one that is not valid UTF-8, or one that starts with our hash
  marker ``cablecar#``) becomes ``"cablecar#" + sha1(name).hexdigest()``; receivers
  map it back to the stream name they subscribed to.
* **NOTIFY payloads** must be shorter than 8000 bytes and be text. A payload that is
  valid UTF-8, has no NUL byte, does not start with ``\\x01`` and fits
  (:data:`NOTIFY_LIMIT`) is sent as the NOTIFY payload itself. Anything else is
  stored as a row of ``cablecar_messages`` (``id bigserial, stream text, payload
  bytea, created_at timestamptz``, created if absent) and the NOTIFY carries
  ``"\\x01<id>"``; receivers fetch the row and deliver its bytes unchanged.
  The INSERT and the NOTIFY are one statement, so the row is committed before any
  receiver hears of it, and per-stream order is kept (a receiver delivers the
  notifications after a large one only once its row has been fetched).
  **Cleanup:** rows live for ``retention`` seconds (default 60). A publisher that
  stores a row deletes expired rows at most once per ``retention / 2`` seconds, in
  the same connection; with no large publishes no rows are added, so none pile up.
  A receiver that fetches a row after it expired logs a WARNING and drops the
  message (at-most-once, like every other loss).

Invariants (on top of :mod:`cablecar.pubsub.base`):

1. ``self._channels`` maps every wanted PostgreSQL channel to its stream; the listener
   task is the only code that runs LISTEN/UNLISTEN, on its own connection, and
   ``subscribe`` returns once its channel's LISTEN has completed (and so is
   committed: autocommit).
2. While idle, the listener waits for notifications in a sub-task; a (un)subscribe
   wakes it up by cancelling that wait, which is safe because psycopg only consumes
   input after the socket is readable. Notifications arriving while LISTEN runs are
   kept by psycopg and delivered next, in order.
3. After the listener's connection fails, it reconnects with exponential backoff and
   jitter and LISTENs to every wanted channel again before serving anything else.

Logging (logger ``cablecar.pubsub.postgres``): WARNING when the listener loses the
server (or cannot reach it at start), INFO when it is back with the number of streams
resubscribed, DEBUG for each failed attempt in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import select
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict

from ..errors import AdapterError, ConfigurationError, PublishTimeout
from ._listener import ListeningAdapter, StallWatch

__all__ = ["MAX_CHANNEL_BYTES", "NOTIFY_LIMIT", "TABLE", "PostgresPubSub", "channel_for"]

logger = logging.getLogger("cablecar.pubsub.postgres")

#: PostgreSQL identifiers (channel names) longer than this are truncated by the server.
MAX_CHANNEL_BYTES = 63
#: The largest payload sent inline in a NOTIFY (the server requires < 8000 bytes).
NOTIFY_LIMIT = 7999
#: Where payloads too large (or not text) for NOTIFY are stored.
TABLE = "cablecar_messages"

_HASHED = "cablecar#"
_MARKER = "\x01"
_LISTEN_BATCH = 500

_CREATE_TABLE = sql.SQL(
    "CREATE TABLE IF NOT EXISTS {table} ("
    " id bigserial PRIMARY KEY,"
    " stream text NOT NULL,"
    " payload bytea NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now());"
    " CREATE INDEX IF NOT EXISTS {index} ON {table} (created_at)"
).format(table=sql.Identifier(TABLE), index=sql.Identifier(f"{TABLE}_created_at_idx"))
_INSERT_AND_NOTIFY = sql.SQL(
    "WITH m AS (INSERT INTO {table} (stream, payload) VALUES (%s, %b) RETURNING id)"
    " SELECT pg_notify(%s, %s || m.id::text) FROM m"
).format(table=sql.Identifier(TABLE))
_FETCH = sql.SQL("SELECT payload FROM {table} WHERE id = %s").format(table=sql.Identifier(TABLE))
_CLEANUP = sql.SQL(
    "DELETE FROM {table} WHERE created_at < now() - make_interval(secs => %s)"
).format(table=sql.Identifier(TABLE))

_ERRORS = (psycopg.Error, OSError)


def channel_for(name: str) -> str:
    """The LISTEN/NOTIFY channel for a (prefixed) stream name.

    Names that PostgreSQL would truncate or reject are hashed; so are names that look
    like a hash, so two different names never share a channel.

    >>> channel_for("chat_1")
    'chat_1'
    >>> channel_for("x" * 64)
    'cablecar#bb2fa3ee...'
    """
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        size = 0
    if 0 < size <= MAX_CHANNEL_BYTES and "\x00" not in name and not name.startswith(_HASHED):
        return name
    return _HASHED + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()


def _inline_text(payload: bytes) -> str | None:
    """``payload`` as NOTIFY text, or None if it must go through the table."""
    if len(payload) > NOTIFY_LIMIT or payload[:1] == b"\x01" or b"\x00" in payload:
        return None
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _oneline(exc: BaseException) -> str:
    """libpq's multi-line error messages on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(eq=False, repr=False, kw_only=True)
class PostgresPubSub(ListeningAdapter[str, psycopg.AsyncConnection[Any]]):
    """PostgreSQL LISTEN/NOTIFY, with names over 63 bytes and payloads over 8000 bytes.

    Args:
        url: a libpq URL, ``postgresql://user:password@host:port/dbname?sslmode=...``.
        channel_prefix: streams are NOTIFYed as ``f"{channel_prefix}:{stream}"`` (hashed
            if that is too long), so that several applications can share one database.
        connect_timeout: seconds to wait for a connection (libpq's minimum is 2).
        publish_timeout: upper bound, in seconds, on one ``publish``; past it, or when
            the server is unreachable, ``publish`` raises
            :class:`~cablecar.errors.AdapterError`.
        health_check_interval: seconds of silence after which the listener runs
            ``SELECT 1`` to make sure its connection is still alive.
        reconnect_delay: first delay, in seconds, before reconnecting the listener; it
            doubles (with jitter) on each failed attempt ...
        max_reconnect_delay: ... up to this many seconds.
        retention: seconds a large payload's row is kept in ``cablecar_messages``.

    Delivery is at most once: NOTIFYs sent while the listener is disconnected are not
    replayed; it LISTENs again to everything by itself once the server is back.
    """

    service = "PostgreSQL"
    _logger = logger
    _errors = _ERRORS

    health_check_interval: float = 15.0
    retention: float = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"bad PostgreSQL URL {self._where!r}: {exc}") from None
        self._connect_options: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, round(self.connect_timeout)),
            "client_encoding": "utf8",
            "application_name": "cablecar",
        }
        self._listening: set[str] = set()  # LISTENed on the current listener connection
        self._changed: set[str] = set()  # channels to reconcile on the next pass
        self._wake = asyncio.Event()
        # Notifications queued behind a large payload being fetched (keeps order).
        self._backlog: deque[tuple[str, str]] = deque()
        self._dispatcher: asyncio.Task[None] | None = None
        self._aux: psycopg.AsyncConnection[Any] | None = None
        self._aux_lock = asyncio.Lock()
        self._table_ready = False
        self._last_cleanup = float("-inf")
        self._stall = StallWatch(logger, self.service, self._where)
        self._cleanups: set[asyncio.Future[None]] = set()  # abandoned statements

    # -- the adapter contract (start and close: ListeningAdapter) ---------------------

    async def subscribe(self, stream: str) -> None:
        """LISTEN to ``stream``; return once the LISTEN has completed.

        Raises:
            AdapterError: the adapter was closed while waiting.
        """
        channel = channel_for(self._prefix + stream)
        self._want(channel, stream)
        if channel in self._listening and channel not in self._changed:
            return
        waiter = self._until_live(channel)
        self._changed.add(channel)
        self._wake.set()
        await waiter

    async def unsubscribe(self, stream: str) -> None:
        """Stop delivering ``stream`` (immediately); the listener UNLISTENs soon after."""
        channel = channel_for(self._prefix + stream)
        if not self._forget(channel):
            return
        self._changed.add(channel)
        self._wake.set()

    async def publish(self, stream: str, payload: bytes) -> None:
        """NOTIFY ``payload`` on ``stream`` (through ``cablecar_messages`` if large).

        Raises:
            AdapterError: the server did not take the message within
                ``publish_timeout`` (unreachable, refused, or the adapter is closed).
        """
        self._check_open()
        channel = channel_for(self._prefix + stream)
        text = _inline_text(payload)
        conn: psycopg.AsyncConnection[Any] | None = None
        sending = False
        deadline = time.monotonic() + self.publish_timeout
        try:
            async with asyncio.timeout(self.publish_timeout):
                conn = await self._aux_connection()
            sending = True
            work: Coroutine[Any, Any, object] = (
                conn.execute("SELECT pg_notify(%s, %s)", (channel, text))
                if text is not None
                else self._publish_large(conn, channel, payload)
            )
            # Not cancelled in place: psycopg's cancellation waits for a server that may
            # be frozen, far past publish_timeout. Abandoned instead, with its connection.
            task = asyncio.ensure_future(work)
            await asyncio.wait([task], timeout=max(0.0, deadline - time.monotonic()))
            if not task.done():
                self._abandon(conn, task)
                conn = None
                raise TimeoutError
            task.result()
        except (*_ERRORS, TimeoutError) as exc:
            # A lost or interrupted connection is replaced on the next publish; a plain
            # SQL error (permissions, say) leaves it usable.
            lost = isinstance(exc, TimeoutError | OSError | psycopg.OperationalError)
            if conn is not None and (lost or conn.broken):
                await self._drop_aux(conn)
            if sending and isinstance(exc, TimeoutError):
                # the statement went out and PostgreSQL did not answer: it may commit
                self._stall.mark(self._probe)
                raise PublishTimeout(
                    f"PostgreSQL at {self._where} did not confirm the publish within "
                    f"{self.publish_timeout}s: the outcome is unknown (it may still be "
                    "delivered)"
                ) from exc
            raise AdapterError(
                f"publish to PostgreSQL at {self._where} failed: {_oneline(exc)}"
            ) from exc

    async def _close_connections(self) -> None:
        self._stall.close()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.wait([self._dispatcher])
        self._backlog.clear()
        if self._aux is not None:
            await self._drop_aux(self._aux)

    # -- publishing and fetching (the auxiliary connection) ----------------------------

    async def _aux_connection(self) -> psycopg.AsyncConnection[Any]:
        async with self._aux_lock:
            conn = self._aux
            if conn is not None and (conn.closed or conn.broken or _dead_while_idle(conn)):
                await self._drop_aux(conn)
                conn = None
            if conn is None:
                conn = await self._new_connection()
                self._aux = conn
            return conn

    def _abandon(self, conn: psycopg.AsyncConnection[Any], task: asyncio.Future[Any]) -> None:
        """Give up on a statement that got no answer: the next publish opens a new
        connection; this one is cancelled and closed in the background."""
        if self._aux is conn:
            self._aux = None

        async def finish() -> None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()
            await self._drop_aux(conn)

        cleanup = asyncio.ensure_future(finish())
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)

    async def _drop_aux(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._aux is conn:
            self._aux = None
        await self._discard(conn)

    async def _publish_large(
        self, conn: psycopg.AsyncConnection[Any], channel: str, payload: bytes
    ) -> None:
        if not self._table_ready:
            try:
                await conn.execute(_CREATE_TABLE)
            except (pg_errors.UniqueViolation, pg_errors.DuplicateTable, pg_errors.DuplicateObject):
                pass  # another process created it at the same moment
            self._table_ready = True
        await conn.execute(_INSERT_AND_NOTIFY, (channel, payload, channel, _MARKER))
        now = time.monotonic()
        if now - self._last_cleanup >= self.retention / 2:
            self._last_cleanup = now
            await conn.execute(_CLEANUP, (self.retention,))

    async def _fetch(self, row_id: int) -> bytes | None:
        try:
            async with asyncio.timeout(self.publish_timeout):
                conn = await self._aux_connection()
                cursor = await conn.execute(_FETCH, (row_id,), binary=True)
                row = await cursor.fetchone()
        except (*_ERRORS, TimeoutError) as exc:
            logger.warning(
                "could not fetch large message %d from PostgreSQL: %s", row_id, _oneline(exc)
            )
            return None
        if row is None:
            logger.warning(
                "large message %d expired before it was fetched (retention %g s); dropped",
                row_id,
                self.retention,
            )
            return None
        return bytes(row[0])

    # -- the listener ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the listener is connected now and PostgreSQL answers (false from a
        publish that timed out until a probe query is answered)."""
        return self._listener.connected and not self._stall.stalled

    async def _probe(self) -> None:
        conn = await self._aux_connection()
        try:
            await conn.execute("SELECT 1")
        except BaseException:
            await self._drop_aux(conn)
            raise

    async def _new_connection(self) -> psycopg.AsyncConnection[Any]:
        """A new connection to PostgreSQL: the listener's, or the auxiliary one."""
        return await psycopg.AsyncConnection.connect(self.url, **self._connect_options)

    _connect_listener = _new_connection

    async def _serve(
        self, conn: psycopg.AsyncConnection[Any], ready: Callable[[int], None]
    ) -> None:
        try:
            self._listening.clear()
            self._changed.update(self._channels)
            ready(await self._reconcile(conn))
            await self._listen(conn)
        finally:
            self._listening.clear()

    def _describe(self, exc: BaseException) -> str:
        return _oneline(exc)

    async def _discard(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            await conn.close()
        except _ERRORS:
            pass

    async def _reconcile(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """LISTEN/UNLISTEN what changed; wake the waiters whose channel is live.

        Returns the number of channels LISTENed.
        """
        changed, self._changed = self._changed, set()
        listen = [c for c in changed if c in self._channels and c not in self._listening]
        unlisten = [c for c in changed if c not in self._channels and c in self._listening]
        statements = [sql.SQL("LISTEN {}").format(sql.Identifier(c)) for c in listen]
        statements += [sql.SQL("UNLISTEN {}").format(sql.Identifier(c)) for c in unlisten]
        try:
            for start in range(0, len(statements), _LISTEN_BATCH):
                batch = statements[start : start + _LISTEN_BATCH]
                await conn.execute(sql.SQL("; ").join(batch))
        except BaseException:
            self._changed.update(changed)  # not done: the next connection redoes them
            raise
        self._listening.update(listen)
        self._listening.difference_update(unlisten)
        for channel in changed:
            if channel in self._channels and channel in self._listening:
                self._resolve(channel)
        return len(listen)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Serve notifications and (un)subscriptions until the connection fails."""
        loop = asyncio.get_running_loop()
        while True:
            if self._changed:
                await self._reconcile(conn)
            self._wake.clear()
            if self._changed:
                continue
            reader = loop.create_task(self._receive(conn))
            waker = loop.create_task(self._wake.wait())
            done, _ = await asyncio.wait(
                [reader, waker],
                timeout=self.health_check_interval,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in (reader, waker):
                task.cancel()
            await asyncio.wait([reader, waker])
            failure = None if reader.cancelled() else reader.exception()
            if failure is not None:
                raise failure
            if not done:  # silence: make sure the connection is alive
                async with asyncio.timeout(self.health_check_interval):
                    await conn.execute("SELECT 1")

    async def _receive(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async for notify in conn.notifies():
            self._notified(notify.channel, notify.payload)
        raise psycopg.OperationalError("the notification stream ended")

    def _notified(self, channel: str, text: str) -> None:
        stream = self._channels.get(channel)
        if stream is None:
            return
        if self._backlog or text.startswith(_MARKER):
            self._backlog.append((channel, text))
            if self._dispatcher is None:
                self._dispatcher = asyncio.get_running_loop().create_task(self._drain_backlog())
            return
        self._deliver(stream, text.encode("utf-8"))

    async def _drain_backlog(self) -> None:
        try:
            while self._backlog:
                channel, text = self._backlog[0]
                payload: bytes | None = None
                if channel in self._channels:
                    if text.startswith(_MARKER):
                        payload = await self._fetch(int(text[1:]))
                    else:
                        payload = text.encode("utf-8")
                self._backlog.popleft()
                stream = self._channels.get(channel)
                if payload is not None and stream is not None:
                    self._deliver(stream, payload)
        finally:
            self._dispatcher = None


def _dead_while_idle(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection was closed by the server (e.g. it restarted).

    Checked before reusing the publishing connection, so that the first publish after
    a restart reconnects instead of failing; never touches a connection in use. This
    connection never LISTENs, so anything the server sends while it is idle (the
    "terminating connection" error a dying backend sends, then EOF) means it is gone.
    """
    pgconn = conn.pgconn
    if conn.lock.locked() or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    try:
        readable, _, _ = select.select([pgconn.socket], [], [], 0)
    except (psycopg.OperationalError, OSError, ValueError):
        return True
    return bool(readable) or pgconn.status != pq.ConnStatus.OK
