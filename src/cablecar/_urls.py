"""URLs in log lines: without credentials or query."""

from __future__ import annotations

import re

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """``url`` (NATS: a comma-separated list) without user, password or query, for logs.

    >>> redact_url("redis://user:secret@cache:6379/0?ssl=true")
    'redis://cache:6379/0'
    """
    return re.sub(r"(//|,)[^/,@]*@", r"\1", url).partition("?")[0]
