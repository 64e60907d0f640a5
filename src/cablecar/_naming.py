"""Channel and broadcasting names, shared by ``Channel`` and ``Broadcaster``.

A channel class's name on the wire for model broadcasts follows Rails: the class name
without its ``Channel`` suffix, in snake_case (``ChatChannel`` -> ``chat``,
``HTMLPreviewChannel`` -> ``html_preview``). ``broadcasting_for(model)`` is then
``f"{channel_name}:{identifier_key(model)}"``, so a server and a ``Broadcaster`` in
another process compute the same stream name for the same model.

These are pure functions: no cablecar state, safe to call from any process.
"""

from __future__ import annotations

import re
from typing import Any

from ._remote import identifier_key

__all__ = ["broadcasting_for", "channel_name_for", "underscore"]

# Rails' ActiveSupport ``underscore``: "HTMLParser" -> "html_parser", "ChatRoom" -> "chat_room".
_ACRONYM_BOUNDARY = re.compile(r"([A-Z\d]+)([A-Z][a-z])")
_WORD_BOUNDARY = re.compile(r"([a-z\d])([A-Z])")


def underscore(name: str) -> str:
    """CamelCase to snake_case, the way Rails' ``underscore`` does it.

    >>> underscore("ChatRoom"), underscore("HTMLParser"), underscore("Web2Push")
    ('chat_room', 'html_parser', 'web2_push')
    """
    name = _ACRONYM_BOUNDARY.sub(r"\1_\2", name)
    name = _WORD_BOUNDARY.sub(r"\1_\2", name)
    return name.replace("-", "_").lower()


def channel_name_for(cls: type) -> str:
    """The channel's broadcasting name: class name minus ``Channel``, snake_case.

    >>> class ChatChannel: ...
    >>> channel_name_for(ChatChannel)
    'chat'

    A class named exactly ``Channel`` (or with nothing before the suffix) keeps its
    full name: ``"channel"``.
    """
    name = cls.__name__
    if name.endswith("Channel") and len(name) > len("Channel"):
        name = name[: -len("Channel")]
    return underscore(name)


def broadcasting_for(cls: type, model: Any) -> str:
    """The stream ``cls.broadcast_to(model, ...)`` publishes on: ``"chat:<key>"``.

    ``model`` is serialized with :func:`cablecar._remote.identifier_key` (strings and
    numbers as themselves, Django models as ``"app.model:pk"``, objects with an ``id``
    as ``"Type:id"``, lists joined with ``:``).
    """
    return f"{channel_name_for(cls)}:{identifier_key(model)}"
