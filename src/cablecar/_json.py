"""The one place that picks the JSON library (orjson) and names the JSON type."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["JSON", "JSONDecodeError", "dumps", "loads"]

#: Any value that JSON can represent (a decoded message, params, action data).
JSON = Any

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: JSON) -> bytes:
    """Encode ``value`` to compact UTF-8 JSON bytes.

    Raises:
        TypeError: ``value`` holds something JSON cannot represent.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"cannot encode to JSON: {exc}") from None


def loads(data: bytes | bytearray | memoryview | str) -> JSON:
    """Decode JSON; raises :data:`JSONDecodeError` (a ``ValueError``) on bad input."""
    return orjson.loads(data)
