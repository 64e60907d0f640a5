"""``{% load cablecar %}``: Turbo stream sources for Django templates.

::

    # settings.py
    INSTALLED_APPS = [..., "cablecar.contrib.django"]
    CABLECAR_STREAMS_SECRET = os.environ["CABLECAR_STREAMS_SECRET"]
    # the cable: Cable(..., streams_secret=settings.CABLECAR_STREAMS_SECRET)

    {# a template #}
    {% load cablecar %}
    {% turbo_stream_from room "messages" %}

renders ``<turbo-cable-stream-source channel="Turbo::StreamsChannel"
signed-stream-name="...">`` for the stream ``room:<pk>:messages`` (the parts joined as
turbo-rails joins them; a model instance is ``app.model:pk``), signed the way the cable
verifies it. The keys come from the settings ``CABLECAR_TURBO_STREAMS_SECRET``,
``CABLECAR_SECRET_KEY_BASE`` (a Rails app's) and ``CABLECAR_STREAMS_SECRET``, the same
three the cable takes (see :func:`cablecar.signing.turbo_signer`).
"""

from __future__ import annotations

import functools
from typing import Any

from django import template  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]

from cablecar import turbo
from cablecar.errors import ConfigurationError
from cablecar.signing import StreamSigner, turbo_signer

register = template.Library()


@functools.lru_cache(maxsize=4)
def _signer(turbo_secret: str | None, key_base: str | None, streams: str | None) -> StreamSigner:
    signer = turbo_signer(turbo_secret, key_base, streams)
    if signer is None:
        raise ConfigurationError(
            "{% turbo_stream_from %} needs CABLECAR_STREAMS_SECRET (or "
            "CABLECAR_TURBO_STREAMS_SECRET / CABLECAR_SECRET_KEY_BASE) in settings"
        )
    return signer


@register.simple_tag  # type: ignore[untyped-decorator]
def turbo_stream_from(*streamables: Any, **data: Any) -> turbo.HTML:
    """The stream source element for ``streamables``; keyword arguments become
    ``data-*`` attributes (sent as subscription params)."""
    signer = _signer(
        getattr(settings, "CABLECAR_TURBO_STREAMS_SECRET", None),
        getattr(settings, "CABLECAR_SECRET_KEY_BASE", None),
        getattr(settings, "CABLECAR_STREAMS_SECRET", None),
    )
    return turbo.stream_from(signer, *streamables, **data)
