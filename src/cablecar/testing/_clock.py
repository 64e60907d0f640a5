"""A virtual clock for ``periodically`` timers: time moves only when a test says so.

The tester puts a :class:`VirtualClock` in ``cable.timer_clock``; the server core then
schedules every channel timer on it instead of on the event loop (same ``time()`` and
``call_later()`` calls). ``ChannelTester.advance(seconds)`` fires the timers that fall
due, in time order, letting the server handle each tick before the next.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["VirtualClock", "VirtualTimer"]


class VirtualTimer:
    """A scheduled call on a :class:`VirtualClock` (what ``call_later`` returns).

    It answers ``when()``, ``cancel()`` and ``cancelled()`` like ``asyncio.TimerHandle``.
    """

    __slots__ = ("_args", "_callback", "_cancelled", "_when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._when = when
        self._callback = callback
        self._args = args
        self._cancelled = False

    def when(self) -> float:
        """The virtual time at which the call is due."""
        return self._when

    def cancel(self) -> None:
        """Do not make the call."""
        self._cancelled = True

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        return f"<VirtualTimer at {self._when:g}s{state}>"


class VirtualClock:
    """Seconds that pass only when :meth:`run_until` is called.

    Example::

        clock = VirtualClock()
        clock.call_later(1.5, print, "tick")
        clock.run_until(2.0)        # prints "tick"; clock.time() == 2.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, VirtualTimer]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        """The current virtual time, in seconds."""
        return self._now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> VirtualTimer:
        """Call ``callback(*args)`` once ``delay`` virtual seconds have passed."""
        return self.call_at(self._now + max(0.0, delay), callback, *args)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> VirtualTimer:
        """Call ``callback(*args)`` at virtual time ``when``."""
        timer = VirtualTimer(when, callback, args)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    @property
    def pending(self) -> list[VirtualTimer]:
        """Calls not made yet and not cancelled, earliest first."""
        return [t for _, _, t in sorted(self._heap) if not t.cancelled()]

    def fire_next(self, until: float) -> bool:
        """Make the earliest call due at or before ``until``, moving the clock to its
        time. Returns False (and moves nothing) when no call is due by then.
        """
        heap = self._heap
        while heap:
            when, _, timer = heap[0]
            if timer.cancelled():
                heapq.heappop(heap)
                continue
            if when > until:
                return False
            heapq.heappop(heap)
            self._now = max(self._now, when)
            timer._callback(*timer._args)
            return True
        return False

    def run_until(self, until: float) -> None:
        """Make every call due by ``until`` (including those scheduled meanwhile), then
        set the clock to ``until``."""
        while self.fire_next(until):
            pass
        self._now = max(self._now, until)
