"""Broadcasts made while the pub/sub service is down: kept, in order, and published when it
comes back (``cable.broadcast``, ``Broadcaster``).

Invariants:

1. A broadcast either goes out at once, or waits in the outbox behind every earlier one
   that waits: once anything waits, later broadcasts queue behind it, so order is kept
   (per stream and across streams of one publisher).
2. The outbox is bounded: at most ``size`` broadcasts, each at most ``age`` seconds. A
   broadcast that finds it full raises :class:`~cablecar.errors.OutboxFull` (the caller
   learns; nothing is dropped silently). One that ages out before the service returns is
   dropped, counted and logged at ERROR with the stream.
3. Only "not taken" failures queue (:class:`~cablecar.errors.AdapterError`: connection
   refused or lost). :class:`~cablecar.errors.PublishTimeout` (the outcome is unknown: the
   service may still deliver it) is raised to the caller as before: queueing it could
   deliver it twice.
4. ``size=0`` turns the outbox off: at most once, every failure raised at once.
5. What waited goes out only once ``ready()`` (the cable: its own pub/sub listener is
   connected and subscribed again), so the publishing process's subscribers get it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import AdapterError, OutboxFull, PublishTimeout

__all__ = ["Outbox"]

logger = logging.getLogger("cablecar.outbox")

#: ``publish(stream, payload, exclude, sent)``: one attempt to publish a broadcast.
Publish = Callable[[str, bytes, "str | None", float], Awaitable[None]]

_RETRY_MIN = 0.1
_RETRY_MAX = 2.0


class Outbox:
    """Broadcasts waiting for the pub/sub service (see the module docstring)."""

    def __init__(
        self, publish: Publish, size: int, age: float, ready: Callable[[], bool] | None = None
    ) -> None:
        self._publish = publish
        self._ready = ready
        self.size = size
        self.age = age
        self._queue: deque[tuple[float, str, bytes, str | None, float]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Broadcasts refused because the outbox was full, and dropped for age.
        self.overflowed = 0
        self.expired = 0
        #: Broadcasts that waited and were published later.
        self.delivered_late = 0

    def __len__(self) -> int:
        return len(self._queue)

    async def send(self, stream: str, payload: bytes, exclude: str | None, sent: float) -> None:
        """Publish now, or queue behind what waits (the service is down).

        Raises:
            OutboxFull: the service is down and the outbox holds ``size`` broadcasts.
            PublishTimeout: the service did not answer in time (the outcome is unknown).
            AdapterError: the service is down and the outbox is off (``size=0``).
        """
        if not self._queue:
            try:
                await self._publish(stream, payload, exclude, sent)
                return
            except PublishTimeout:
                raise
            except AdapterError as exc:
                if self.size <= 0:
                    raise
                if not self._queue:
                    logger.warning(
                        "pub/sub unavailable (%s): broadcasts wait in the outbox "
                        "(at most %d, for %ss)",
                        exc,
                        self.size,
                        self.age,
                    )
        if len(self._queue) >= self.size:
            self.overflowed += 1
            if self.overflowed == 1 or self.overflowed % 1000 == 0:
                logger.error(
                    "outbox full (%d broadcasts wait for the pub/sub service): refused %d so far",
                    self.size,
                    self.overflowed,
                )
            raise OutboxFull(
                f"the pub/sub service is down and {self.size} broadcasts already wait "
                f"(outbox_size); {stream!r} was not sent"
            )
        self._queue.append((time.monotonic(), stream, payload, exclude, sent))
        self._wake()

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        if self._drainer is None or self._drainer.done() or self._loop is not loop:
            self._loop = loop
            self._drainer = loop.create_task(self._drain(), name="cablecar-outbox")

    async def _drain(self) -> None:
        delay = _RETRY_MIN
        queue = self._queue
        while queue:
            queued_at, stream, payload, exclude, sent = queue[0]
            if time.monotonic() - queued_at > self.age:
                queue.popleft()
                self.expired += 1
                logger.error(
                    "a broadcast to %r waited over %ss for the pub/sub service: dropped "
                    "(%d so far)",
                    stream,
                    self.age,
                    self.expired,
                )
                continue
            if self._ready is not None and not self._ready():
                # this process listens again first, or its own subscribers would miss it
                await asyncio.sleep(delay)
                delay = min(_RETRY_MAX, delay * 2)
                continue
            try:
                await self._publish(stream, payload, exclude, sent)
            except PublishTimeout:
                # taken but not confirmed: it may be delivered; sending it again could
                # deliver it twice
                queue.popleft()
                logger.error("a waiting broadcast to %r: outcome unknown (publish timeout)", stream)
                continue
            except AdapterError:
                await asyncio.sleep(delay)
                delay = min(_RETRY_MAX, delay * 2)
                continue
            except Exception:  # pragma: no cover - a bug below: do not spin
                logger.exception("publishing a waiting broadcast to %r failed", stream)
                queue.popleft()
                continue
            queue.popleft()
            self.delivered_late += 1
            delay = _RETRY_MIN
            if not queue:
                logger.warning(
                    "pub/sub back: the outbox is empty (%d published late)", self.delivered_late
                )

    async def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the outbox to empty; return what is left
        (logged at ERROR: those broadcasts are lost)."""
        drainer = self._drainer
        if self._queue and drainer is not None and not drainer.done():
            try:
                await asyncio.wait_for(asyncio.shield(drainer), timeout)
            except TimeoutError:
                pass
        left = len(self._queue)
        if left:
            logger.error("%d broadcasts still waited for the pub/sub service: not sent", left)
        return left

    def close(self) -> None:
        """Stop retrying (what still waits is lost: call :meth:`flush` first)."""
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None
        self._queue.clear()

    def figures(self) -> dict[str, Any]:
        """``{"waiting", "overflowed", "expired", "delivered_late"}``."""
        return {
            "waiting": len(self._queue),
            "overflowed": self.overflowed,
            "expired": self.expired,
            "delivered_late": self.delivered_late,
        }
