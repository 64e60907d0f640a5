"""History in a JetStream stream, sessions and presence in JetStream key-value buckets:
for ``nats://`` (many servers). Needs a NATS server with JetStream (``nats-server -js``).

Every node of a cluster on the same NATS (and ``channel_prefix``) shares the epoch, the
offsets, the resumable sessions and the presence records. Names carry a tag made from
the prefix (``default`` without one), so applications sharing a NATS stay apart:

* stream ``CABLECAR_HISTORY_<tag>`` on subjects ``cablecar.history.<tag>.<token>`` (the
  token is :func:`~cablecar.pubsub.nats.subject_for` of the cablecar stream name), at
  most ``history_limit`` messages per subject, kept ``10 * history_ttl`` so that the
  newest offset of a quiet stream outlives its data (an up-to-date client recovers even
  after the data expired, as on Redis); entries older than ``history_ttl`` are not
  served. Each message is ``b"<offset> <excluded sid>\\n" + payload``.
* bucket ``cablecar_sessions_<tag>`` (TTL ``sessions_ttl``): ``s.<sid>`` resumable
  sessions, ``r.<sid>`` retired sids.
* bucket ``cablecar_presence_<tag>``: one key per cablecar stream with members
  (``{"n": stream, "m": {pid: {"i": info, "s": {sid: deadline ms}}}}``).

**Offsets** are per stream and contiguous: an append reads the subject's last message
and publishes with ``Nats-Expected-Last-Subject-Sequence``, so two nodes appending to
one stream never take the same offset (the loser reads again and retries). A process
remembers the last position it wrote, so a lone publisher needs one round trip.

**The epoch** is derived from the history stream's creation time: it survives restarts,
is the same on every node, and changes by itself if the stream is deleted and created
again (so old offsets can never be matched against a new series).

Presence records change by compare-and-set on the key's revision, so a ``leave`` due
to expiry is reported by exactly one node. Deadlines and ages use each node's clock
(unlike Redis and PostgreSQL, whose server clock is used): keep nodes in NTP sync.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import api
from nats.js.errors import (
    APIError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from .. import _json
from ..errors import AdapterError
from ..pubsub.nats import subject_for
from .base import Entry, StoreSettings

__all__ = ["NatsStore"]

T = TypeVar("T")

#: JetStream's error code for a failed ``Nats-Expected-Last-Subject-Sequence``.
_WRONG_LAST = (10071, 10164)
#: Compare-and-set attempts before giving up (only under heavy contention on one key).
_ATTEMPTS = 50
#: Last written positions a process remembers (one round trip per append while it holds).
_REMEMBERED = 4096
#: Seconds to wait for a history read to be delivered.
_READ_TIMEOUT = 5.0
_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


class NatsStore:
    """A :class:`~cablecar.history.HistoryStore` in NATS JetStream (see the module
    docstring)."""

    def __init__(self, url: str, settings: StoreSettings, *, prefix: str | None = None) -> None:
        self.settings = settings
        self.epoch = ""
        self._servers = [s.strip() for s in url.split(",") if s.strip()]
        tag = hashlib.sha256(prefix.encode()).hexdigest()[:16] if prefix else "default"
        self._stream = f"CABLECAR_HISTORY_{tag}"
        self._root = f"cablecar.history.{tag}."
        self._sessions_bucket = f"cablecar_sessions_{tag}"
        self._presence_bucket = f"cablecar_presence_{tag}"
        self._nc: Client | None = None
        self._sessions: KeyValue | None = None
        self._presence: KeyValue | None = None
        self._starting = asyncio.Lock()
        self._last: dict[str, tuple[int, int]] = {}  # subject -> (sequence, offset)

    # -- connection --------------------------------------------------------------------

    async def start(self) -> None:
        if self.epoch:
            return
        async with self._starting:
            if self.epoch:
                return
            try:
                await self._start()
            except (NatsError, OSError) as exc:
                if self._nc is not None:
                    await self._nc.close()
                    self._nc = None
                raise AdapterError(f"history store: {_describe(exc)}") from exc

    async def _start(self) -> None:
        self._nc = await nats.connect(
            servers=self._servers,
            name="cablecar-history",
            connect_timeout=2,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
        )
        js = self._nc.jetstream()
        config = api.StreamConfig(
            name=self._stream,
            subjects=[self._root + ">"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_msgs_per_subject=self.settings.history_limit,
            max_age=self.settings.history_ttl * 10,
            allow_direct=True,
            num_replicas=1,
        )
        try:
            info = await js.add_stream(config)
        except APIError as exc:
            if exc.err_code != 10058:  # "already in use with a different configuration"
                raise
            info = await js.update_stream(config)
        created = (info.created.isoformat() if info.created else "") + self._stream
        digest = hashlib.sha256(created.encode()).digest()[:6]
        self._sessions = await js.create_key_value(
            bucket=self._sessions_bucket, ttl=self.settings.sessions_ttl, history=1
        )
        self._presence = await js.create_key_value(
            bucket=self._presence_bucket, ttl=max(60.0, self.settings.presence_ttl * 10), history=1
        )
        self.epoch = base64.urlsafe_b64encode(digest).decode()

    def _client(self) -> Client:
        if self._nc is None:  # pragma: no cover - start() runs first
            raise AdapterError("history store: not started")
        return self._nc

    # -- history -----------------------------------------------------------------------

    def _subject(self, stream: str) -> str:
        return self._root + subject_for(stream)

    async def _top(self, subject: str) -> tuple[int, int, float] | None:
        """``(sequence, offset, time)`` of the subject's newest message, or None."""
        try:
            msg = await self._client().jsm().get_last_msg(self._stream, subject, direct=True)
        except NotFoundError:
            return None
        offset, _exclude, _payload = _split(msg.data or b"")
        return msg.seq or 0, offset, msg.time.timestamp() if msg.time else 0.0

    async def append(self, stream: str, payload: bytes, exclude: str | None) -> int:
        subject = self._subject(stream)
        js = self._client().jetstream()
        try:
            for _ in range(_ATTEMPTS):
                seq, offset = self._last.get(subject) or (0, 0)
                data = b"%d %s\n%s" % (offset + 1, (exclude or "").encode(), payload)
                headers = {"Nats-Expected-Last-Subject-Sequence": str(seq)}
                try:
                    ack = await js.publish(subject, data, headers=headers)
                except APIError as exc:
                    if exc.err_code not in _WRONG_LAST:
                        raise
                    top = await self._top(subject)
                    self._remember(subject, (top[0], top[1]) if top else (0, 0))
                    continue
                self._remember(subject, (ack.seq, offset + 1))
                return offset + 1
        except (NatsError, OSError) as exc:
            raise AdapterError(f"history store: {_describe(exc)}") from exc
        raise AdapterError(f"history store: {stream!r} is appended to too often at once")

    def _remember(self, subject: str, position: tuple[int, int]) -> None:
        self._last.pop(subject, None)
        if len(self._last) >= _REMEMBERED:
            del self._last[next(iter(self._last))]
        self._last[subject] = position

    async def _read(self, subject: str) -> list[tuple[float, Entry]]:
        """Every kept message of ``subject`` younger than ``history_ttl``, oldest first,
        with its time: through an ephemeral push consumer, deleted afterwards."""
        nc = self._client()
        jsm = nc.jsm()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        name = None
        found: list[tuple[float, Entry]] = []
        oldest = time.time() - self.settings.history_ttl
        try:
            info = await jsm.add_consumer(
                self._stream,
                api.ConsumerConfig(
                    deliver_subject=inbox,
                    filter_subject=subject,
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_policy=api.AckPolicy.NONE,
                    inactive_threshold=30.0,
                    mem_storage=True,
                    num_replicas=1,
                ),
            )
            name = info.name
            pending = info.num_pending or 0
            async with asyncio.timeout(_READ_TIMEOUT):
                while pending:
                    msg = await sub.next_msg(timeout=_READ_TIMEOUT)
                    meta = msg.metadata
                    pending = meta.num_pending
                    at = meta.timestamp.timestamp()
                    if at >= oldest:
                        offset, exclude, payload = _split(msg.data)
                        found.append((at, Entry(offset, payload, exclude)))
        finally:
            await sub.unsubscribe()
            if name is not None:
                try:
                    await jsm.delete_consumer(self._stream, name)
                except (NatsError, OSError):  # pragma: no cover - it expires by itself
                    pass
        return found

    async def after(self, stream: str, epoch: str, offset: int) -> list[Entry] | None:
        if epoch != self.epoch:
            return None
        subject = self._subject(stream)
        try:
            top = await self._top(subject)
            newest = top[1] if top else 0
            if offset >= newest:
                return [] if offset == newest else None
            if newest - offset > self.settings.history_limit:
                return None
            entries = [e for _t, e in await self._read(subject) if e.offset > offset]
        except (NatsError, OSError) as exc:
            raise AdapterError(f"history store: {_describe(exc)}") from exc
        if not entries or entries[0].offset != offset + 1 or entries[-1].offset < newest:
            return None
        return entries

    async def since(self, stream: str, timestamp: int) -> list[Entry]:
        try:
            found = await self._read(self._subject(stream))
        except (NatsError, OSError) as exc:
            raise AdapterError(f"history store: {_describe(exc)}") from exc
        return [e for t, e in found if t >= timestamp]

    # -- sessions ----------------------------------------------------------------------

    def _bucket(self, kv: KeyValue | None) -> KeyValue:
        if kv is None:  # pragma: no cover - start() runs first
            raise AdapterError("history store: not started")
        return kv

    async def save_sessions(self, sessions: list[tuple[str, bytes]]) -> None:
        kv = self._bucket(self._sessions)

        async def save(sid: str, data: bytes) -> None:
            # Written first, then the retired mark checked: a take that ran in between
            # either got this entry or is seen here (and the entry is deleted again).
            await kv.put("s." + sid, data)
            if await _get(kv, "r." + sid) is not None:
                await kv.delete("s." + sid)

        await self._gather([save(sid, data) for sid, data in sessions if _KEY.match(sid)])

    async def take_session(self, sid: str) -> bytes | None:
        if not _KEY.match(sid):
            return None
        kv = self._bucket(self._sessions)
        try:
            value = await _get(kv, "s." + sid)
            if value is None:
                return None
            try:
                await kv.create("r." + sid, b"1")  # only one taker gets here
            except KeyWrongLastSequenceError:
                return None
            await kv.delete("s." + sid)
        except (NatsError, OSError) as exc:
            raise AdapterError(f"history store: {_describe(exc)}") from exc
        return value

    async def _gather(self, calls: Sequence[Awaitable[Any]], what: str = "history") -> list[Any]:
        try:
            return await asyncio.gather(*calls)
        except (NatsError, OSError) as exc:
            raise AdapterError(f"{what} store: {_describe(exc)}") from exc

    # -- presence ----------------------------------------------------------------------

    async def _change(
        self, stream: str, change: Callable[[dict[str, Any], float], tuple[T, bool]]
    ) -> T:
        """Apply ``change(members, now_ms)`` to ``stream``'s record by compare-and-set;
        it returns ``(result, changed)``."""
        kv = self._bucket(self._presence)
        key = "p." + hashlib.sha256(stream.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        for _ in range(_ATTEMPTS):
            revision = 0
            members: dict[str, Any] = {}
            try:
                entry = await kv.get(key)
                revision = entry.revision or 0
                members = _json.loads(entry.value or b"{}").get("m", {})
            except KeyDeletedError as exc:
                revision = exc.entry.revision if exc.entry and exc.entry.revision else 0
            except KeyNotFoundError:
                pass
            result, changed = change(members, time.time() * 1000)
            if not changed:
                return result
            try:
                if members:
                    record = _json.dumps({"n": stream, "m": members})
                    await kv.update(key, record, last=revision)
                elif revision:
                    await kv.delete(key, last=revision)
                return result
            except KeyWrongLastSequenceError:
                continue
            except APIError as exc:
                if exc.err_code in _WRONG_LAST:
                    continue
                raise
        raise AdapterError(f"presence store: {stream!r} changes too often at once")

    async def _presence_call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (NatsError, OSError) as exc:
            raise AdapterError(f"presence store: {_describe(exc)}") from exc

    async def presence_join(self, stream: str, sid: str, pid: str, info: bytes) -> bool:
        ttl = self.settings.presence_ttl * 1000

        def join(members: dict[str, Any], now: float) -> tuple[bool, bool]:
            record = members.setdefault(pid, {"i": "", "s": {}})
            alive = any(deadline > now for deadline in record["s"].values())
            record["s"] = {s: d for s, d in record["s"].items() if d > now}
            record["s"][sid] = now + ttl
            record["i"] = info.decode()
            return not alive, True

        return await self._presence_call(self._change(stream, join))

    async def presence_leave(self, stream: str, sid: str) -> str | None:
        def leave(members: dict[str, Any], now: float) -> tuple[str | None, bool]:
            for pid, record in members.items():
                if sid in record["s"]:
                    del record["s"][sid]
                    if any(deadline > now for deadline in record["s"].values()):
                        return None, True
                    del members[pid]
                    return pid, True
            return None, False

        return await self._presence_call(self._change(stream, leave))

    async def presence_touch(self, records: list[tuple[str, str]]) -> None:
        ttl = self.settings.presence_ttl * 1000
        by_stream: dict[str, set[str]] = {}
        for stream, sid in records:
            by_stream.setdefault(stream, set()).add(sid)

        def touch(sids: set[str]) -> Callable[[dict[str, Any], float], tuple[None, bool]]:
            def change(members: dict[str, Any], now: float) -> tuple[None, bool]:
                changed = False
                for record in members.values():
                    for sid in sids.intersection(record["s"]):
                        record["s"][sid] = now + ttl
                        changed = True
                return None, changed

            return change

        calls = [self._change(stream, touch(sids)) for stream, sids in by_stream.items()]
        await self._gather(calls, "presence")

    async def presence_members(self, stream: str) -> list[tuple[str, bytes]]:
        def members_of(members: dict[str, Any], now: float) -> tuple[list[tuple[str, bytes]], bool]:
            live = [
                (pid, record["i"].encode())
                for pid, record in members.items()
                if any(deadline > now for deadline in record["s"].values())
            ]
            return live, False

        return await self._presence_call(self._change(stream, members_of))

    async def presence_expire(self) -> list[tuple[str, str]]:
        kv = self._bucket(self._presence)
        try:
            keys = await kv.keys()
        except NoKeysError:
            return []
        except (NatsError, OSError) as exc:
            raise AdapterError(f"presence store: {_describe(exc)}") from exc

        async def expire(key: str) -> list[tuple[str, str]]:
            value = await _get(kv, key)
            if value is None:
                return []
            stream = _json.loads(value)["n"]

            def sweep(members: dict[str, Any], now: float) -> tuple[list[str], bool]:
                gone, changed = [], False
                for pid in list(members):
                    record = members[pid]
                    live = {s: d for s, d in record["s"].items() if d > now}
                    if len(live) != len(record["s"]):
                        changed = True
                        record["s"] = live
                    if not live:
                        del members[pid]
                        gone.append(pid)
                return gone, changed

            return [(stream, pid) for pid in await self._change(stream, sweep)]

        found = await self._gather([expire(key) for key in keys], "presence")
        return [pair for pairs in found for pair in pairs]

    # -- the rest ----------------------------------------------------------------------

    def size(self) -> int:
        return 0  # kept in JetStream: see `nats stream info`

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc = self._nc, None
            self.epoch = ""
            await nc.close()


async def _get(kv: KeyValue, key: str) -> bytes | None:
    try:
        return (await kv.get(key)).value
    except (KeyNotFoundError, KeyDeletedError):
        return None


def _split(data: bytes) -> tuple[int, str | None, bytes]:
    head, _, payload = data.partition(b"\n")
    offset, _, exclude = head.partition(b" ")
    return int(offset or 0), exclude.decode() or None, payload


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServiceUnavailableError) or "no responders" in str(exc).lower():
        return "JetStream is not enabled on this NATS server (run nats-server with -js)"
    return str(exc) or type(exc).__name__
