"""Serving a cable from an ASGI server or inside an ASGI app (Starlette, FastAPI, Django).

Example::

    from cablecar.asgi import CableMiddleware

    app.add_middleware(CableMiddleware, cable=cable)     # ws://host/cable, /cable/health

See :mod:`cablecar.transports.asgi` for how it works.
"""

from __future__ import annotations

from .transports.asgi import ASGIApp, CableMiddleware

__all__ = ["ASGIApp", "CableMiddleware"]
