"""What cablecar writes into log lines: client data shortened and redacted.

A client's input may be huge, nested past Python's recursion limit, or carry secrets;
a log line gets a bounded, masked rendering of it, computed only when the line is
emitted (:class:`Redacted`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from . import _json

__all__ = ["MAX_DEPTH", "JSONFormatter", "Redacted", "redact", "short"]

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

    __slots__ = ("data", "ruby", "words")

    def __init__(self, data: Any, words: Iterable[str], *, ruby: bool = False) -> None:
        self.data = data
        self.words = words
        self.ruby = ruby

    def __str__(self) -> str:
        try:
            value = redact(self.data, self.words)
        except RecursionError:
            return "<data nested too deeply to show>"
        if self.ruby:  # Rails' log format: {"body"=>"hi", "action"=>"speak"}
            return _ruby(value)
        return short(value)


def _ruby(value: Any) -> str:
    text = _ruby_inspect(value, 0)
    return text if len(text) <= _LONGEST * 2 else text[: _LONGEST * 2 - 3] + "..."


def _ruby_inspect(value: Any, depth: int) -> str:
    if depth > MAX_DEPTH:
        return "[...]"
    if isinstance(value, dict):
        inner = ", ".join(
            f"{_ruby_inspect(str(k), depth + 1)}=>{_ruby_inspect(v, depth + 1)}"
            for k, v in value.items()
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_ruby_inspect(v, depth + 1) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return repr(value)


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, the
    ``cablecar_kind`` of refused input when present, and ``exc`` for tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        kind = getattr(record, "cablecar_kind", None)
        if kind is not None:
            out["kind"] = kind
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _json.dumps(out).decode()
