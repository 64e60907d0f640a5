"""What cablecar writes into log lines: client data shortened and redacted.

A client's input may be huge, nested past Python's recursion limit, or carry secrets;
a log line gets a bounded, masked rendering of it, computed only when the line is
emitted (:class:`Redacted`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["MAX_DEPTH", "Redacted", "redact", "short"]

#: Nesting depth past which :func:`redact` elides a value (a client's JSON may nest
#: deeper than Python's recursion limit).
MAX_DEPTH = 32

#: Longest ``repr`` or string put into a log line.
_LONGEST = 200


def short(value: object) -> str:
    """``repr(value)``, cut to 200 characters."""
    text = repr(value)
    return text if len(text) <= _LONGEST else text[: _LONGEST - 3] + "..."


def redact(data: Any, words: Iterable[str]) -> Any:
    """``data`` with values of keys containing any of ``words`` (case-insensitive)
    masked as ``"[FILTERED]"``, long strings shortened and nesting past 32 levels
    elided.

    >>> redact({"user": "bob", "Password": "x", "deep": [{"token_id": 1}]}, ("password", "token"))
    {'user': 'bob', 'Password': '[FILTERED]', 'deep': [{'token_id': '[FILTERED]'}]}
    """
    words = tuple(words)

    def walk(value: Any, depth: int) -> Any:
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            return "[...]"
        if isinstance(value, dict):
            return {
                k: "[FILTERED]" if any(w in str(k).lower() for w in words) else walk(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [walk(v, depth + 1) for v in value]
        if isinstance(value, str) and len(value) > _LONGEST:
            return value[: _LONGEST - 3] + "..."
        return value

    return walk(data, 0)


class Redacted:
    """``short(redact(data, words))`` for a log argument, computed only if the line is
    emitted."""

    __slots__ = ("data", "words")

    def __init__(self, data: Any, words: Iterable[str]) -> None:
        self.data = data
        self.words = words

    def __str__(self) -> str:
        try:
            return short(redact(self.data, self.words))
        except RecursionError:
            return "<data nested too deeply to show>"
