"""Turbo Streams: HTML over the wire from Python to Hotwire pages.

A page subscribes with the stream source element (no JavaScript of its own), and any
Python code broadcasts ``<turbo-stream>`` fragments that Turbo applies to the page::

    from cablecar import Cable, turbo

    cable = Cable(connection=AppConnection, streams_secret=SECRET)   # or turbo keys

    # the page (a Jinja2 global or the Django tag {% turbo_stream_from room "messages" %})
    html = turbo.stream_from(cable, "room", 1)
    # <turbo-cable-stream-source channel="Turbo::StreamsChannel" signed-stream-name="...">

    # a view, a worker (a Broadcaster instead of the cable), a script
    await turbo.broadcast(cable, ("room", 1), turbo.append("messages", "<li>hi</li>"))

Content is escaped as text unless it is marked as HTML: anything with ``__html__``
(Jinja2's and MarkupSafe's ``Markup``, Django's ``SafeString``, :class:`HTML`) goes in
as markup; a plain ``str`` is text, so ``"<script>"`` from a user arrives as text.
Attribute values are always escaped.

    >>> str(append("messages", "<b>hi</b>"))
    '<turbo-stream action="append" target="messages"><template>&lt;b&gt;hi&lt;/b&gt;</template></turbo-stream>'
    >>> str(append("messages", HTML("<b>hi</b>")))
    '<turbo-stream action="append" target="messages"><template><b>hi</b></template></turbo-stream>'
    >>> str(remove("message_1"))
    '<turbo-stream action="remove" target="message_1"></turbo-stream>'
"""

from __future__ import annotations

import base64
import functools
import html
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._remote import identifier_key
from .errors import ConfigurationError
from .signing import TURBO_CHANNEL

if TYPE_CHECKING:
    from .signing import StreamSigner

__all__ = [
    "ACTIONS",
    "HTML",
    "after",
    "append",
    "before",
    "broadcast",
    "broadcast_sync",
    "escape",
    "gid_param",
    "prepend",
    "refresh",
    "remove",
    "replace",
    "stream_from",
    "stream_name",
    "stream_source",
    "template_globals",
    "turbo_stream",
    "update",
]

#: Turbo's built-in stream actions (custom ones are accepted when their name is plain).
ACTIONS = frozenset(
    {"append", "prepend", "replace", "update", "remove", "before", "after", "refresh"}
)
#: Actions whose element carries no ``<template>``.
_NO_TEMPLATE = frozenset({"remove", "refresh"})

_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")


class HTML(str):
    """A string of trusted markup: inserted as is by the builders here, by Jinja2's
    autoescape and by Django templates (``__html__``)."""

    __slots__ = ()

    def __html__(self) -> HTML:
        return self


def escape(value: Any) -> HTML:
    """``value`` as markup: its ``__html__()`` when it has one, else escaped text."""
    if hasattr(value, "__html__"):
        return HTML(value.__html__())
    return HTML(html.escape(str(value), quote=True))


def stream_name(*streamables: Any) -> str:
    """turbo-rails' ``stream_name_from``: the parts joined with ``:``.

    Each part is its ``to_gid_param()`` when it has one (a Rails GlobalID param, to share
    streams with a Rails app), else its key: strings and numbers as themselves, Django
    models as ``app.model:pk``, objects with an ``id`` as ``Type:id``; lists and tuples
    nest.

    >>> stream_name("room", 1, "messages")
    'room:1:messages'
    """
    return identifier_key(streamables)


def gid_param(app: str, model: str, id: Any) -> str:
    """A Rails GlobalID param (``to_gid_param``): URL-safe Base64 of
    ``gid://app/Model/id`` without padding, so a Python service names a record's
    stream as the Rails app does.

    >>> gid_param("app", "Room", 1)
    'Z2lkOi8vYXBwL1Jvb20vMQ'
    """
    raw = f"gid://{app}/{model}/{id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _attributes(attributes: dict[str, Any]) -> str:
    out = []
    for key, value in attributes.items():
        if value is None:
            continue
        name = key.replace("_", "-")
        if not _NAME.match(name):
            raise ValueError(f"not an attribute name: {key!r}")
        out.append(f' {name}="{html.escape(str(value), quote=True)}"')
    return "".join(out)


def turbo_stream(
    action: str,
    target: str | None = None,
    content: Any = None,
    *,
    targets: str | None = None,
    **attributes: Any,
) -> HTML:
    """One ``<turbo-stream>`` element.

    Args:
        action: ``append``, ``prepend``, ``replace``, ``update``, ``remove``,
            ``before``, ``after``, ``refresh``, or a custom action's name.
        target: the DOM id it applies to; or ``targets``, a CSS selector.
        content: the ``<template>``'s content: markup when it has ``__html__``, else
            text (escaped). Not allowed for ``remove`` and ``refresh``.
        attributes: more attributes (``method="morph"``, ``request_id=...`` becomes
            ``request-id``).

    Raises:
        ValueError: an unknown action name, a missing or double target, content for an
            action that takes none.
    """
    if not isinstance(action, str) or not _NAME.match(action):
        raise ValueError(f"not a Turbo Stream action: {action!r}")
    if action != "refresh" and (target is None) == (targets is None):
        raise ValueError(f"{action!r} needs exactly one of target= and targets=")
    if action in _NO_TEMPLATE and content is not None:
        raise ValueError(f"{action!r} takes no content")
    attrs = _attributes({"action": action, "target": target, "targets": targets, **attributes})
    if action in _NO_TEMPLATE:
        return HTML(f"<turbo-stream{attrs}></turbo-stream>")
    body = "" if content is None else escape(content)
    return HTML(f"<turbo-stream{attrs}><template>{body}</template></turbo-stream>")


def _action(name: str) -> Callable[..., HTML]:
    def build(
        target: str | None = None, content: Any = None, *, targets: str | None = None, **attrs: Any
    ) -> HTML:
        return turbo_stream(name, target, content, targets=targets, **attrs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f'``turbo_stream("{name}", target, content, ...)``.'
    return build


append = _action("append")
prepend = _action("prepend")
replace = _action("replace")
update = _action("update")
before = _action("before")
after = _action("after")


def remove(target: str | None = None, *, targets: str | None = None) -> HTML:
    """``<turbo-stream action="remove" target=...>``."""
    return turbo_stream("remove", target, targets=targets)


def refresh(**attributes: Any) -> HTML:
    """``<turbo-stream action="refresh">`` (Turbo 8: the page reloads itself, morphing
    when it asks for it); ``request_id=`` lets the requesting page skip its own."""
    return turbo_stream("refresh", **attributes)


class _Publisher(Protocol):
    async def broadcast(self, stream: str, message: Any) -> None: ...

    def broadcast_sync(self, stream: str, message: Any) -> None: ...


async def broadcast(via: _Publisher, streamables: Any, element: str) -> None:
    """Broadcast one ``<turbo-stream>`` element (built by :func:`turbo_stream`,
    :func:`append`, :func:`remove`, ...) through ``via`` (a :class:`~cablecar.Cable`, or
    a :class:`~cablecar.Broadcaster` in another process) to the Turbo stream of
    ``streamables``: a name, or a tuple of parts joined as turbo-rails joins them
    (turbo-rails' ``broadcast_stream_to``).

    Example::

        await turbo.broadcast(cable, ("room", room.id),
                              turbo.append("messages", render("message.html", message=m)))
    """
    await via.broadcast(stream_name(streamables), str(element))


def broadcast_sync(via: _Publisher, streamables: Any, element: str) -> None:
    """:func:`broadcast` from synchronous code: a Django view, a Celery task, a thread
    (``via.broadcast_sync``)."""
    via.broadcast_sync(stream_name(streamables), str(element))


def stream_source(signed_stream_name: str, channel: str = TURBO_CHANNEL, **data: Any) -> HTML:
    """The ``<turbo-cable-stream-source>`` element for an already signed name; ``data``
    becomes ``data-*`` attributes, which the element sends as subscription params."""
    attrs = _attributes(
        {"channel": channel, "signed_stream_name": signed_stream_name}
        | {f"data_{k}": v for k, v in data.items()}
    )
    return HTML(f"<turbo-cable-stream-source{attrs}></turbo-cable-stream-source>")


def _turbo_signer(source: Any) -> StreamSigner:
    signers = getattr(source, "stream_signers", None)
    signer = signers.turbo if signers is not None else source
    if signer is None or not callable(getattr(signer, "sign", None)):
        raise ConfigurationError(
            "no Turbo signing key: set streams_secret, turbo_streams_secret or "
            "secret_key_base on the Cable"
        )
    return signer  # type: ignore[no-any-return]


def stream_from(source: Any, *streamables: Any, **data: Any) -> HTML:
    """turbo-rails' ``turbo_stream_from``: the stream source element for
    ``stream_name(*streamables)``, signed with ``source``'s Turbo key (a
    :class:`~cablecar.Cable` or a :class:`~cablecar.signing.StreamSigner`).

    Raises:
        ConfigurationError: the cable has no Turbo key.
    """
    return stream_source(_turbo_signer(source).sign(stream_name(*streamables)), **data)


def template_globals(source: Any) -> dict[str, Callable[..., HTML]]:
    """Globals for a Jinja2 environment: ``{{ turbo_stream_from(room, "messages") }}``.

    Example::

        templates = Jinja2Templates("templates")
        templates.env.globals.update(turbo.template_globals(cable))
    """
    return {"turbo_stream_from": functools.partial(stream_from, _turbo_signer(source))}
