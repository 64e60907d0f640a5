"""ASGI entry point: Django for pages, cablecar at /cable, in one process.

Run it with ``uvicorn chatsite.asgi:application`` (or ``granian --interface asgi ...``).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_app = get_asgi_application()  # sets Django up before the cable imports models

from cablecar.transports.asgi import CableMiddleware  # noqa: E402
from chatsite.cable import cable  # noqa: E402

application = CableMiddleware(django_app, cable)  # /cable → cablecar, the rest → Django
