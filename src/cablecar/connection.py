"""The user's connection class: who is on the other end of a socket.

Example::

    from cablecar import Connection

    class AppConnection(Connection):
        identified_by = ("current_user",)

        async def connect(self):
            # The web app's login cookie, as a Rails connection reads cookies.encrypted.
            user = await users.for_session(self.request.cookies.get("session"))
            if user is None:
                self.reject_unauthorized()  # disconnect "unauthorized", no reconnect
            self.current_user = user  # self.current_user in every channel of this client
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from . import _json
from ._remote import identifier_key
from .errors import Unauthorized
from .http import Request

if TYPE_CHECKING:
    from .cable import Cable
    from .session import Session

__all__ = ["Connection", "Unauthorized"]

logger = logging.getLogger("cablecar.connection")


class Connection:
    """Base class of the application's connection (``ApplicationCable::Connection``).

    Subclass it, declare ``identified_by`` and set those attributes in
    :meth:`connect`. Every identifier is readable from every channel of this
    connection (``self.current_user`` in a channel).

    Attributes:
        request: the :class:`~cablecar.Request` that opened the socket (path, query,
            headers, cookies, client address).
        cable: the :class:`~cablecar.Cable` serving this connection.
        started_at: ``time.time()`` when the socket opened.
    """

    #: Names of the attributes that identify this connection.
    identified_by: ClassVar[Sequence[str]] = ()

    def __init__(self, session: Session, request: Request) -> None:
        self._session = session
        self.request = request
        self.cable: Cable = session.runtime.cable
        self.started_at = time.time()

    # -- callbacks the user overrides -------------------------------------------------

    async def connect(self) -> None:
        """Called once when the socket opens; call :meth:`reject_unauthorized` to refuse."""

    async def restored(self) -> None:
        """Called instead of :meth:`connect` when a client resumes its session
        (``Cable(history=True)``): the ``identified_by`` attributes are already set,
        from their JSON values. Call :meth:`reject_unauthorized` to refuse; re-derive
        here what ``connect`` computed besides the identifiers."""

    async def disconnect(self) -> None:
        """Called once when the socket has closed, after every channel's ``unsubscribed``."""

    # -- API for user code ------------------------------------------------------------

    def reject_unauthorized(self) -> NoReturn:
        """Refuse the connection: the client gets ``disconnect`` reason ``unauthorized``
        with ``reconnect: false``, then the socket closes. No channel code runs.
        """
        raise Unauthorized()

    def close(self, *, reason: str | None = None, reconnect: bool = True) -> None:
        """Send ``disconnect`` with ``reason`` and ``reconnect``, then close the socket.

        Safe to call from plain ``def`` methods running in the thread pool.
        """
        session = self._session
        session.runtime.threadsafe(session.close, reason, reconnect)

    def transmit(self, message: Any) -> None:
        """Send a raw JSON object to the client (outside any subscription).

        Safe to call from plain ``def`` methods running in the thread pool.

        Raises:
            TypeError: ``message`` cannot be encoded to JSON.
        """
        session = self._session
        session.runtime.threadsafe(session.send, _json.dumps(message))

    @property
    def identifiers(self) -> dict[str, Any]:
        """The ``identified_by`` attributes and their values (``None`` when unset)."""
        return {name: getattr(self, name, None) for name in type(self).identified_by}

    @property
    def connection_identifier(self) -> str:
        """The identifier values serialized and joined with ``:`` (Action Cable's key)."""
        return ":".join(identifier_key(v) for v in self.identifiers.values() if v is not None)

    @property
    def subscriptions(self) -> list[str]:
        """Identifiers of the channels this connection is subscribed to."""
        return list(self._session.subscriptions)

    @property
    def protocol(self) -> str | None:
        """The negotiated subprotocol (``"actioncable-v1-json"``) or ``None``."""
        return self._session.subprotocol

    @property
    def logger(self) -> logging.Logger:
        """The connection logger."""
        return logger

    def statistics(self) -> dict[str, Any]:
        """``{identifier, started_at, subscriptions}`` as Rails' ``statistics``, and
        ``queued_input``: bytes of commands waiting for their turn."""
        return {
            "identifier": self.connection_identifier,
            "started_at": self.started_at,
            "subscriptions": self.subscriptions,
            "queued_input": self._session.queued_bytes,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.connection_identifier or '-'}>"
