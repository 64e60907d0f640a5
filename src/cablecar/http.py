"""The request a connection was opened with, and plain HTTP responses.

``Connection.request`` is a :class:`Request`; the standalone server also hands a
:class:`Request` to an ``http_handler`` for plain HTTP requests, which answers with a
:class:`Response`.
"""

from __future__ import annotations

from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from . import _json

__all__ = ["Request", "Response"]


class Request:
    """What a client sent to open the connection (or a plain HTTP request).

    Attributes:
        method: ``"GET"`` for WebSocket upgrades.
        path: the URL path, without the query string (``"/cable"``).
        query_string: the raw query string (``"user=bob&room=1"``).
        headers: header names in lower case; repeated headers joined with ``", "``.
        client: ``(host, port)`` of the peer, when known.
        body: the request body (plain HTTP requests only).
    """

    __slots__ = (
        "_cookies",
        "_query",
        "body",
        "client",
        "headers",
        "method",
        "path",
        "query_string",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str = "",
        headers: dict[str, str] | None = None,
        client: tuple[str, int] | None = None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers: dict[str, str] = headers if headers is not None else {}
        self.client = client
        self.body = body
        self._query: dict[str, str] | None = None
        self._cookies: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, the first value of each (``?user=bob`` → ``{"user": "bob"}``)."""
        if self._query is None:
            q: dict[str, str] = {}
            for k, v in parse_qsl(self.query_string, keep_blank_values=True):
                q.setdefault(k, v)
            self._query = q
        return self._query

    def query_list(self, name: str) -> list[str]:
        """Every value of a repeated query parameter."""
        return parse_qs(self.query_string, keep_blank_values=True).get(name, [])

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies from the ``Cookie`` header (malformed cookies are skipped)."""
        if self._cookies is None:
            jar: dict[str, str] = {}
            header = self.headers.get("cookie", "")
            for part in header.split(";"):
                cookie: SimpleCookie = SimpleCookie()
                try:
                    cookie.load(part.strip())
                except CookieError:
                    continue
                for key, morsel in cookie.items():
                    jar.setdefault(key, morsel.value)
            self._cookies = jar
        return self._cookies

    @property
    def host(self) -> str:
        """The ``Host`` header."""
        return self.headers.get("host", "")

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header, sent by browsers only."""
        return self.headers.get("origin")

    def json(self) -> Any:
        """The body decoded as JSON (raises ``ValueError`` if it is not)."""
        return _json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"


class Response:
    """A plain HTTP response from an ``http_handler``.

    Example::

        async def handler(request):
            if request.path == "/hello":
                return Response.json({"hello": "world"})
            return None   # 404
    """

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        content_type: str = "text/plain; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.status = status
        self.content_type = content_type
        self.headers = list(headers)

    @classmethod
    def json(
        cls, value: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        """A JSON response."""
        return cls(_json.dumps(value), status, "application/json", headers)

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        """An HTML response."""
        return cls(text, status, "text/html; charset=utf-8")
