"""Running user callbacks: ``async def`` on the loop, plain ``def`` in a bounded thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["call_user", "set_sync_wrapper"]

#: Runs every plain ``def`` user call in its worker thread: ``wrapper(fn, *args)`` must
#: call ``fn(*args)`` and return its result. ``None``: ``fn`` is called directly.
_sync_wrapper: Callable[..., Any] | None = None


def set_sync_wrapper(wrapper: Callable[..., Any] | None) -> None:
    """Wrap every plain ``def`` channel and connection method call of this process, in
    the thread that runs it (``cablecar.contrib.django`` closes stale database
    connections around each call, as Django's request cycle does)."""
    global _sync_wrapper
    _sync_wrapper = wrapper


#: Whether a method's function is ``async def``, by function (``inspect`` is slow, and
#: channel and connection methods are looked up on every action and connect).
_ASYNC: dict[Any, bool] = {}


def _is_async(fn: Callable[..., Any]) -> bool:
    func = getattr(fn, "__func__", None)  # a bound method: its class's function
    if func is None:
        return inspect.iscoroutinefunction(fn)
    known = _ASYNC.get(func)
    if known is None:
        known = _ASYNC[func] = inspect.iscoroutinefunction(fn)
    return known


async def call_user(pool: ThreadPoolExecutor | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)``: await it when it is a coroutine function, else run it in ``pool``.

    A plain function's result is awaited too if it returns an awaitable (a method
    that is ``def`` but returns a coroutine).
    """
    if _is_async(fn):
        return await fn(*args)
    wrapper = _sync_wrapper
    if wrapper is not None:
        fn, args = wrapper, (fn, *args)
    if pool is None:
        result = fn(*args)
    else:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        result = await loop.run_in_executor(pool, functools.partial(ctx.run, fn, *args))
    if inspect.isawaitable(result):
        result = await result
    return result
