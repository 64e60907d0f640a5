"""The standalone server: asyncio (uvloop when installed), our own HTTP upgrade and framing."""

from __future__ import annotations

from .run import run
from .server import Server, serve

__all__ = ["Server", "run", "serve"]
