"""Give memory back to the operating system after many connections close.

CPython frees a closed connection's objects at once, but the C allocator keeps the
pages: after 10,000 clients leave, the process would stay at its peak size. On glibc,
``malloc_trim(0)`` returns free pages; it costs a few milliseconds, so the cable calls
it at most once per ``interval`` seconds, and only after many connections closed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys
from collections.abc import Callable

__all__ = ["trimmer"]

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
