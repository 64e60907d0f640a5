"""The Action Cable protocol, sans I/O: commands in, frames out. Imports no asyncio."""

from __future__ import annotations

from . import commands, constants, frames, negotiation
from .commands import *
from .constants import *
from .negotiation import *

# Each submodule lists its public names once, in its own ``__all__`` (as asyncio's
# package does); this package re-exports them all.
__all__ = ["frames"]
__all__ += commands.__all__
__all__ += constants.__all__
__all__ += negotiation.__all__
