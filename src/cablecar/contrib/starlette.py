"""Identify Starlette and FastAPI users on a cable connection.

Browsers cannot set headers on a WebSocket, so a connection proves who it is with what
the browser sends by itself, the session cookie, or with a token it puts in the URL or
in the subprotocol list::

    from cablecar import Connection
    from cablecar.contrib.starlette import read_session, read_token, request_token

    class AppConnection(Connection):
        identified_by = ("current_user",)

        async def connect(self):
            # the cookie of Starlette's SessionMiddleware(secret_key=SECRET)
            user = read_session(self.request, SECRET).get("user")
            if user is None:        # or a token: ?token=..., or the subprotocol "token.<t>"
                user = read_token(request_token(self.request), SECRET, max_age=3600)
            if user is None:
                self.reject_unauthorized()
            self.current_user = user

These read the request only, so they work the same under ``cable.asgi()`` and the
standalone server. Needs ``itsdangerous`` (what ``SessionMiddleware`` uses).
"""

from __future__ import annotations

import json
from base64 import b64decode
from typing import Any

from ..http import Request
from ..protocol import parse_subprotocols

__all__ = ["issue_token", "read_session", "read_token", "request_token"]

#: The salt of tokens made by :func:`issue_token` (not valid as session cookies).
TOKEN_SALT = "cablecar.token"


def read_session(
    request: Request,
    secret_key: str,
    *,
    cookie: str = "session",
    max_age: int | None = 14 * 24 * 60 * 60,
) -> dict[str, Any]:
    """The data Starlette's ``SessionMiddleware`` keeps in its signed cookie.

    Returns ``{}`` when the cookie is missing, tampered with or older than ``max_age``
    (pass the middleware's ``session_cookie`` and ``max_age`` if you changed them).
    """
    import itsdangerous

    value = request.cookies.get(cookie)
    if not value:
        return {}
    signer = itsdangerous.TimestampSigner(str(secret_key))
    try:
        data = json.loads(b64decode(signer.unsign(value.encode("utf-8"), max_age=max_age)))
    except (itsdangerous.BadSignature, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def issue_token(value: Any, secret_key: str) -> str:
    """A signed, timestamped, URL-safe token carrying ``value`` (any JSON value); give
    it to a logged-in client, which sends it back with :func:`request_token`'s ways."""
    import itsdangerous

    return itsdangerous.URLSafeTimedSerializer(secret_key, salt=TOKEN_SALT).dumps(value)


def read_token(token: str | None, secret_key: str, *, max_age: int | None = 3600) -> Any:
    """The value :func:`issue_token` signed, or ``None`` if the token is missing,
    tampered with or older than ``max_age`` seconds."""
    import itsdangerous

    if not token:
        return None
    serializer = itsdangerous.URLSafeTimedSerializer(secret_key, salt=TOKEN_SALT)
    try:
        return serializer.loads(token, max_age=max_age)
    except itsdangerous.BadData:
        return None


def request_token(
    request: Request, *, query_param: str = "token", subprotocol_prefix: str = "token."
) -> str | None:
    """The token a client sent: ``?token=...`` in the URL, a ``token.<value>`` entry in
    ``Sec-WebSocket-Protocol`` (the browser-friendly way that keeps it out of URLs and
    logs: ``consumer.addSubProtocol("token." + t)`` with ``@rails/actioncable`` 7.1+), or
    an ``Authorization: Bearer`` header (non-browser clients). The server never selects
    the token subprotocol; it still answers ``actioncable-v1-json``."""
    for offered in parse_subprotocols(request.headers.get("sec-websocket-protocol")):
        if offered.startswith(subprotocol_prefix):
            return offered[len(subprotocol_prefix) :]
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.query.get(query_param) or None
