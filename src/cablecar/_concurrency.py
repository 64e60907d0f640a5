"""Running user callbacks: ``async def`` on the loop, plain ``def`` in a bounded thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["call_user"]


async def call_user(pool: ThreadPoolExecutor | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)``: await it when it is a coroutine function, else run it in ``pool``.

    A plain function's result is awaited too if it returns an awaitable (a method
    that is ``def`` but returns a coroutine).
    """
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    if pool is None:
        result = fn(*args)
    else:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        result = await loop.run_in_executor(pool, functools.partial(ctx.run, fn, *args))
    if inspect.isawaitable(result):
        result = await result
    return result
