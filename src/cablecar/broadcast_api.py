"""The HTTP broadcast API: ``POST /_broadcast``, AnyCable's body and key, so that any
backend (Ruby, Go, a shell script) publishes to cablecar without access to its pub/sub.

The body is one publication or an array of them, applied in order::

    {"stream": "chat_42", "data": "{\\"text\\":\\"hi\\"}", "meta": {"exclude_socket": "<sid>"}}

``data`` is the message as a JSON text (a string that is not JSON is sent as a JSON
string, as AnyCable does for Turbo's HTML). ``meta.exclude_socket`` skips the connection
with that ``sid`` (the sender). Answers: **201** published; **401** missing or wrong
``Authorization: Bearer <key>`` (nothing published); **422** a body that is not JSON or
not publications, or too large (nothing published: the whole body is checked first);
**405** another method; **503** the pub/sub service failed (publications before the
failing one went out; the error says how many). AnyCable answers 501 for the last case
and 201 to bodies it cannot parse; cablecar tells the sender instead of dropping them.

The key is ``broadcast_key``, or ``HMAC-SHA256-hex(secret, "broadcast-cable")`` (AnyCable's
derivation from its ``--secret``); with neither the endpoint answers 404.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from . import _json
from .errors import AdapterError
from .http import Request, Response

if TYPE_CHECKING:
    from .config import CableConfig

__all__ = ["broadcast_key", "handle", "parse"]

#: The derivation AnyCable uses for its HTTP broadcaster's key.
_KEY_LABEL = b"broadcast-cable"


def broadcast_key(config: CableConfig) -> str | None:
    """The bearer key the API accepts, or ``None`` (the API is off)."""
    if config.broadcast_key:
        return config.broadcast_key
    if config.secret:
        return hmac.new(config.secret.encode(), _KEY_LABEL, hashlib.sha256).hexdigest()
    return None


def parse(body: bytes) -> list[tuple[str, bytes, str | None]]:
    """``(stream, JSON payload, excluded sid)`` of each publication in ``body``.

    Raises:
        ValueError: the body is not a publication or a list of them; the message says
            which one and why.
    """
    try:
        value = _json.loads(body)
    except ValueError:
        raise ValueError("the body is not JSON") from None
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("an empty list publishes nothing")
    found = []
    for n, item in enumerate(items):
        where = f"publication {n}" if isinstance(value, list) else "the publication"
        if not isinstance(item, dict):
            raise ValueError(f"{where} is not an object")
        if "command" in item:
            raise ValueError(
                f"{where}: remote commands are not accepted here "
                "(use cable.remote_connections from Python)"
            )
        stream, data, meta = item.get("stream"), item.get("data"), item.get("meta") or {}
        if not isinstance(stream, str) or not stream:
            raise ValueError(f'{where} needs "stream", a non-empty string')
        if not isinstance(data, str):
            raise ValueError(f'{where} needs "data", a string (the message as JSON)')
        if not isinstance(meta, dict):
            raise ValueError(f'{where}: "meta" must be an object')
        exclude = meta.get("exclude_socket")
        if exclude is not None and not isinstance(exclude, str):
            raise ValueError(f'{where}: "meta.exclude_socket" must be a string')
        found.append((stream, _as_json(data), exclude or None))
    return found


def _as_json(data: str) -> bytes:
    # One JSON value, re-encoded compactly (what every recipient's frame embeds); a text
    # that is not JSON travels as a JSON string.
    try:
        return _json.dumps(_json.loads(data))
    except ValueError:
        return _json.dumps(data)


def _authorized(request: Request, key: str) -> bool:
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), key.encode())


async def handle(cable: Any, request: Request) -> Response | None:
    """Answer a request at ``broadcast_path`` (``None``: the API is off, 404)."""
    key = broadcast_key(cable.config)
    if key is None:
        return None
    if request.method != "POST":
        return Response.json({"error": "use POST"}, 405, [("Allow", "POST")])
    if not _authorized(request, key):
        return Response.json(
            {"error": "missing or wrong Authorization: Bearer <broadcast key>"},
            401,
            [("WWW-Authenticate", 'Bearer realm="cablecar broadcast"')],
        )
    try:
        publications = parse(request.body)
    except ValueError as exc:
        return Response.json({"error": str(exc)}, 422)
    done = 0
    try:
        for stream, payload, exclude in publications:
            await cable.broadcast_encoded(stream, payload, exclude_socket=exclude)
            done += 1
    except AdapterError as exc:
        return Response.json(
            {"error": f"pub/sub failed after {done} of {len(publications)}: {exc}"},
            503,
            [("Retry-After", "1")],
        )
    return Response(b"", 201)
