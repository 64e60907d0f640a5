"""Integrations with web frameworks: :mod:`cablecar.contrib.django` (users from Django's
session cookie, ORM-safe plain ``def`` methods) and :mod:`cablecar.contrib.starlette`
(Starlette's signed session cookie, tokens from the query string or a subprotocol).

Each module imports its framework; ``import cablecar`` imports none of them.
"""

from __future__ import annotations

__all__: list[str] = []
