"""The cable: imported by asgi.py, or served beside Django by the standalone server
with ``DJANGO_SETTINGS_MODULE=chatsite.settings cablecar serve chatsite.cable:cable``.
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django.setup()  # a no-op under asgi.py; needed when `cablecar serve` imports this first

from chat.channels import ChatChannel  # noqa: E402
from django.conf import settings  # noqa: E402

from cablecar import Cable  # noqa: E402
from cablecar.contrib.django import DjangoConnection  # noqa: E402

cable = Cable(
    connection=DjangoConnection,
    channels=[ChatChannel],
    pubsub=settings.CABLE_PUBSUB,
    allowed_origins=settings.CABLE_ALLOWED_ORIGINS or None,  # None: same origin only
)
