"""The standalone server: asyncio (uvloop when installed), our own HTTP upgrade and framing."""

from __future__ import annotations

from .server import Server, run, serve

__all__ = ["Server", "run", "serve"]
