"""Remote disconnect: close connections by their identifiers, on whichever process holds them.

Every server process subscribes to one control stream, :data:`CONTROL_STREAM`. A remote
disconnect publishes one JSON message on it::

    {"type": "disconnect", "identifiers": {"current_user": "bob"}, "reconnect": true}

where each identifier value is serialized with :func:`identifier_key` (the same
serialization ``broadcasting_for`` uses). Every process closes the local connections
whose identifiers all match, with reason ``remote``. One control stream per process
(instead of Rails' one pub/sub channel per connection) keeps the adapter's subscription
count constant however many connections there are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from . import _json

__all__ = ["CONTROL_STREAM", "RemoteConnections", "disconnect_payload", "identifier_key"]

#: The stream every server process listens to for remote commands.
CONTROL_STREAM = "_cablecar:control"


def identifier_key(value: Any) -> str:
    """Serialize an identifier or a broadcastable object to a stable string.

    Strings and numbers stand for themselves; lists and tuples are joined with ``:``;
    objects with ``to_gid_param()`` use it; Django-style models (``_meta.label_lower``
    and ``pk``) give ``"app.model:pk"``; objects with an ``id`` give ``"Type:id"``;
    anything else its ``str()``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return ":".join(identifier_key(v) for v in value)
    gid = getattr(value, "to_gid_param", None)
    if callable(gid):
        return str(gid())
    meta = getattr(value, "_meta", None)
    pk = getattr(value, "pk", None)
    if meta is not None and pk is not None:
        return f"{meta.label_lower}:{pk}"
    ident = getattr(value, "id", None)
    if ident is not None:
        return f"{type(value).__name__}:{ident}"
    return str(value)


def disconnect_payload(identifiers: Mapping[str, Any], reconnect: bool) -> bytes:
    """The control message that disconnects connections matching ``identifiers``."""
    return _json.dumps(
        {
            "type": "disconnect",
            "identifiers": {k: identifier_key(v) for k, v in identifiers.items()},
            "reconnect": bool(reconnect),
        }
    )


class _Where:
    __slots__ = ("_identifiers", "_publish")

    def __init__(
        self, publish: Callable[[str, bytes], Awaitable[None]], identifiers: dict[str, Any]
    ) -> None:
        self._publish = publish
        self._identifiers = identifiers

    async def disconnect(self, *, reconnect: bool = True) -> None:
        """Close every matching connection on every process (reason ``remote``)."""
        await self._publish(CONTROL_STREAM, disconnect_payload(self._identifiers, reconnect))


class RemoteConnections:
    """``remote_connections.where(current_user=bob).disconnect(reconnect=False)``.

    Works from a server's ``Cable`` and from a ``Broadcaster`` in any process.
    """

    __slots__ = ("_publish",)

    def __init__(self, publish: Callable[[str, bytes], Awaitable[None]]) -> None:
        self._publish = publish

    def where(self, **identifiers: Any) -> _Where:
        """Select connections whose identifiers equal all of ``identifiers``.

        Raises:
            ValueError: no identifiers given.
        """
        if not identifiers:
            raise ValueError("remote_connections.where() needs at least one identifier")
        return _Where(self._publish, identifiers)
