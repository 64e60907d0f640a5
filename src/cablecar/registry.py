"""The channels clients may subscribe to, by the name they send.

Nothing is imported or reflected from a client's string (Rails constantizes it): a
channel is reachable only when the application registered it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .channel import Channel, bind_cable
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .cable import Cable

__all__ = ["ChannelRegistry"]


class ChannelRegistry:
    """Channel classes by the name clients send as ``channel``.

    Example::

        registry = ChannelRegistry(cable, [ChatChannel])        # "ChatChannel"
        registry.register(NoticesChannel, "Admin::NoticesChannel")
    """

    __slots__ = ("_cable", "_channels")

    def __init__(
        self,
        cable: Cable,
        channels: Iterable[type[Channel]] | Mapping[str, type[Channel]] = (),
    ) -> None:
        self._cable = cable
        self._channels: dict[str, type[Channel]] = {}
        items = (
            channels.items()
            if isinstance(channels, Mapping)
            else ((c.__name__, c) for c in channels)
        )
        for name, cls in items:
            self.register(cls, name)

    def register(self, channel: type[Channel], name: str | None = None) -> None:
        """Register ``channel`` under ``name`` (default: its class name).

        Raises:
            ConfigurationError: ``channel`` is not a :class:`~cablecar.Channel` subclass.
        """
        if not (isinstance(channel, type) and issubclass(channel, Channel)) or channel is Channel:
            raise ConfigurationError(f"not a Channel subclass: {channel!r}")
        self._channels[name or channel.__name__] = channel
        bind_cable(channel, self._cable)

    def get(self, name: str) -> type[Channel] | None:
        """The channel class registered under ``name``."""
        return self._channels.get(name)

    def as_dict(self) -> dict[str, type[Channel]]:
        """A copy of the registry: ``{name: class}``."""
        return dict(self._channels)

    def __len__(self) -> int:
        return len(self._channels)
