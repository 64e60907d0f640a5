"""Give memory back to the operating system after many connections close.

CPython frees a closed connection's objects at once, but the C allocator keeps the
pages: after 10,000 clients leave, the process would stay at its peak size. On glibc,
``malloc_trim(0)`` returns free pages; it costs a few milliseconds, so the cable calls
it at most once per ``interval`` seconds, and only after many connections closed.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import sys
from collections.abc import Callable

__all__ = ["HeapTrimmer", "trimmer"]

logger = logging.getLogger("cablecar.cable")


def _load_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl or another libc: nothing to do
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


def trimmer() -> Callable[[], None] | None:
    """A function that collects garbage and trims the heap, or ``None`` where unsupported."""
    if _TRIM is None:
        return None
    trim = _TRIM

    def run() -> None:
        gc.collect()
        trim(0)

    return run


class HeapTrimmer:
    """Trims the heap once after each wave of disconnects.

    After ``after`` closes, and once ``quiet`` seconds passed without a close, call
    ``compact`` (the owner rebuilds its emptied tables: dicts and sets never shrink)
    and then trim. One timer per wave, not one per close: short-lived objects left
    behind by a wave keep the allocator from returning its arenas.
    """

    __slots__ = ("_after", "_closed", "_compact", "_handle", "_last", "_loop", "_quiet", "_trim")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        compact: Callable[[], None],
        *,
        after: int = 512,
        quiet: float = 2.0,
    ) -> None:
        self._loop = loop
        self._compact = compact
        self._after = after
        self._quiet = quiet
        self._trim = trimmer()
        self._closed = 0
        self._last = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def closed(self) -> None:
        """One connection closed."""
        self._closed += 1
        if self._trim is None:
            return
        self._last = self._loop.time()
        if self._closed >= self._after and self._handle is None:
            self._handle = self._loop.call_later(self._quiet, self._due)

    def cancel(self) -> None:
        """Stop: no trim is pending after this."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _due(self) -> None:
        self._handle = None
        wait = self._last + self._quiet - self._loop.time()
        if wait > 0.01:  # closes went on: wait for the wave to end
            self._handle = self._loop.call_later(wait, self._due)
            return
        self._closed = 0
        self._compact()
        if self._trim is not None:
            self._trim()
