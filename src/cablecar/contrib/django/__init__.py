"""Django integration: users from Django's session cookie, the ORM in channel code.

::

    # myproject/cable.py
    from cablecar import Cable, Channel
    from cablecar.contrib.django import DjangoConnection

    class ChatChannel(Channel):
        async def subscribed(self):
            self.stream_from(f"chat_{self.params['room']}")

        def speak(self, data):                 # plain def: runs in the thread pool, ORM safe
            Message.objects.create(author=self.current_user, body=data["body"])

        async def history(self, data):         # async def: Django's async ORM
            self.transmit({"count": await Message.objects.acount()})

    cable = Cable(connection=DjangoConnection, channels=[ChatChannel])

``self.current_user`` is the ``django.contrib.auth`` user of the session cookie the
browser sends with the WebSocket handshake; anonymous visitors are refused with
``unauthorized``. Serve it inside Django (``asgi.py``)::

    application = CableMiddleware(get_asgi_application(), cable)   # /cable → cablecar

or beside it: ``DJANGO_SETTINGS_MODULE=myproject.settings cablecar serve myproject.cable:cable``
(call ``django.setup()`` at the top of ``cable.py`` for that).

Database connections: Django opens one per thread and closes it at the end of each
request. Importing this module makes every plain ``def`` channel and connection method
behave like a request: stale connections are closed before it runs and, with the default
``CONN_MAX_AGE = 0``, its connection is closed after it, so the thread pool holds no idle
database connections. Async methods use Django's async ORM as any async view does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib import import_module
from typing import Any, TypeVar

from django.conf import settings  # type: ignore[import-untyped]

from ..._concurrency import set_sync_wrapper
from ...connection import Connection
from ...http import Request

__all__ = ["DjangoConnection", "get_user", "in_request_cycle"]

_T = TypeVar("_T")


def in_request_cycle(fn: Callable[..., _T], *args: Any) -> _T:
    """Call ``fn(*args)`` the way Django runs a view: stale database connections are
    closed before and after (``django.db.close_old_connections``), and the debug query
    log is reset. Installed for every plain ``def`` cable method by importing this module.
    """

    if not settings.configured:
        return fn(*args)
    from django.db import close_old_connections, reset_queries  # type: ignore[import-untyped]

    reset_queries()
    close_old_connections()
    try:
        return fn(*args)
    finally:
        close_old_connections()


set_sync_wrapper(in_request_cycle)


class _SessionOnly:
    """What ``django.contrib.auth.get_user`` reads of a request: its session."""

    __slots__ = ("session",)

    def __init__(self, session: Any) -> None:
        self.session = session


def _user_of(request: Request) -> Any:
    from django.contrib.auth import get_user as auth_get_user  # type: ignore[import-untyped]
    from django.contrib.auth.models import AnonymousUser  # type: ignore[import-untyped]

    key = request.cookies.get(settings.SESSION_COOKIE_NAME)
    if not key:
        return AnonymousUser()
    store = import_module(settings.SESSION_ENGINE).SessionStore(key)
    return auth_get_user(_SessionOnly(store))


async def get_user(request: Request) -> Any:
    """The user of the Django session cookie in ``request``, or ``AnonymousUser``.

    The same checks as Django's ``AuthenticationMiddleware``: the session must exist and
    not be expired, the backend must still be in ``AUTHENTICATION_BACKENDS``, and the
    session's auth hash must match the user's password hash (changing the password logs
    out every WebSocket on its next connect too). Runs in a thread with Django's
    per-request connection handling.
    """
    return await asyncio.to_thread(in_request_cycle, _user_of, request)


class DjangoConnection(Connection):
    """A connection identified by the logged-in Django user (``self.current_user``).

    Anonymous visitors (no session, expired session, logged out) are refused with
    ``unauthorized`` and do not reconnect. Subclass it to add identifiers or checks::

        class AppConnection(DjangoConnection):
            async def connect(self):
                await super().connect()
                if not self.current_user.is_staff:
                    self.reject_unauthorized()
    """

    identified_by = ("current_user",)

    async def connect(self) -> None:
        self.current_user = await get_user(self.request)
        if not self.current_user.is_authenticated:
            self.reject_unauthorized()
