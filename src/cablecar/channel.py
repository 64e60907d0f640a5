"""The user's channel class: one instance per subscription.

Example::

    from cablecar import Channel

    class RoomChannel(Channel):
        async def subscribed(self):           # {"channel": "RoomChannel", "room": 7}
            room = await rooms.get(self.params.get("room"))
            if room is None or self.current_user not in room.members:
                self.reject()                 # the client gets reject_subscription
                return
            self.room = room
            self.stream_for(room)             # RoomChannel.broadcast_to(room, ...) reaches it

        async def speak(self, data):          # {"action": "speak", "body": "hi"}
            await RoomChannel.broadcast_to(self.room, {"from": self.current_user,
                                                       "body": data["body"]})

Every public method defined on the user's class (not on :class:`Channel`, not
starting with ``_``, not a callback or timer) is an action a client may perform. That
is why the base class keeps its public namespace small, and why broadcasting goes
through ``broadcast_to`` or ``self.cable.broadcast``: ``broadcast`` and ``echo`` stay
free as action names.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict, TypeVar, Unpack

from . import _json
from ._naming import broadcasting_for, channel_name_for
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._subscription import Subscription
    from .cable import Cable
    from .connection import Connection

__all__ = [
    "Channel",
    "ChannelSpec",
    "StreamOptions",
    "after_subscribe",
    "after_unsubscribe",
    "before_subscribe",
    "before_unsubscribe",
    "bind_cable",
    "channel_spec",
    "periodically",
    "rescue_from",
]

logger = logging.getLogger("cablecar.channel")

F = TypeVar("F", bound=Callable[..., Any])

#: A per-subscription transform for ``stream_from(name, callback=...)``: called with the
#: decoded message; whatever it returns (unless ``None``) is transmitted.
StreamCallback = Callable[[Any], Any]


class StreamOptions(TypedDict, total=False):
    """The keywords of :meth:`Channel.stream_from` that :meth:`Channel.stream_for` passes on."""

    whisper: bool
    presence: bool


_HOOK = "__cablecar_hook__"
_TIMER = "__cablecar_every__"
_RESCUE = "__cablecar_rescue__"


def _hook(kind: str) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        setattr(fn, _HOOK, kind)
        return fn

    return mark


#: Decorator: run the method before ``subscribed`` (may call ``reject()``).
before_subscribe = _hook("before_subscribe")
#: Decorator: run the method after ``subscribed`` (not when rejected).
after_subscribe = _hook("after_subscribe")
#: Decorator: run the method before ``unsubscribed``.
before_unsubscribe = _hook("before_unsubscribe")
#: Decorator: run the method after ``unsubscribed``.
after_unsubscribe = _hook("after_unsubscribe")


def periodically(*, every: float) -> Callable[[F], F]:
    """Decorator: call the method every ``every`` seconds while subscribed.

    Timers start after the subscription is confirmed and stop when it ends. Ticks
    run in order with the connection's commands, never concurrently with them.

    Example::

        class ClockChannel(Channel):
            @periodically(every=1.0)
            async def tick(self):
                self.transmit({"now": time.time()})

    Raises:
        ValueError: ``every`` is not a positive number.
    """
    if isinstance(every, bool) or not isinstance(every, int | float) or every <= 0:
        raise ValueError(f"periodically(every=...) needs a positive number of seconds: {every!r}")

    def mark(fn: F) -> F:
        setattr(fn, _TIMER, float(every))
        return fn

    return mark


def rescue_from(*exc_types: type[BaseException]) -> Callable[[F], F]:
    """Decorator: handle these exceptions raised by this channel's callbacks and actions.

    The handler is called with the exception; without a handler the exception is
    logged (with channel and action) and passed to the cable's ``on_error`` hook.
    The connection stays open either way.
    """

    def mark(fn: F) -> F:
        setattr(fn, _RESCUE, exc_types)
        return fn

    return mark


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """What a channel class declares, collected once when the class is defined.

    Attributes:
        actions: public methods clients may perform: name → whether the method takes
            the command's data (a positional parameter after ``self``).
        hooks: ``before_subscribe``... → method names, base classes' first.
        timers: ``periodically`` methods and their periods.
        rescuers: ``rescue_from`` exception types and their handler names.
    """

    actions: dict[str, bool]
    hooks: dict[str, tuple[str, ...]]
    timers: tuple[tuple[str, float], ...]
    rescuers: tuple[tuple[tuple[type[BaseException], ...], str], ...]


_EMPTY_SPEC = ChannelSpec({}, {}, (), ())


def _takes_data(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return True
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    )


def _collect(cls: type[Channel]) -> ChannelSpec:
    base_names = set(dir(Channel))
    actions: dict[str, bool] = {}
    hooks: dict[str, list[str]] = {}
    timers: list[tuple[str, float]] = []
    rescuers: list[tuple[tuple[type[BaseException], ...], str]] = []
    seen: set[str] = set()
    for klass in cls.__mro__:
        if klass is Channel or klass is object:
            continue
        for name, value in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            if not inspect.isfunction(value):
                continue
            if hasattr(value, _HOOK):
                hooks.setdefault(getattr(value, _HOOK), []).append(name)
            elif hasattr(value, _TIMER):
                timers.append((name, getattr(value, _TIMER)))
            elif hasattr(value, _RESCUE):
                rescuers.append((getattr(value, _RESCUE), name))
            elif not name.startswith("_") and name not in base_names:
                actions[name] = _takes_data(value)
    # Hooks of base classes run first, as Rails' callback chains do.
    return ChannelSpec(
        actions, {k: tuple(reversed(v)) for k, v in hooks.items()}, tuple(timers), tuple(rescuers)
    )


def channel_spec(cls: type[Channel]) -> ChannelSpec:
    """The :class:`ChannelSpec` of a channel class."""
    spec: ChannelSpec = cls.__dict__.get("_Channel__spec", _EMPTY_SPEC)
    return spec


def bind_cable(cls: type[Channel], cable: Cable) -> None:
    """Make ``cls.broadcast_to`` publish through ``cable`` (done by registration)."""
    cls._Channel__cable = cable  # type: ignore[attr-defined]


class Channel:
    """Base class of channels (``ApplicationCable::Channel``).

    Attributes:
        connection: the :class:`~cablecar.Connection` this subscription belongs to.
        identifier: the raw identifier string the client subscribed with.
        params: the decoded identifier (``{"channel": "ChatChannel", "room": "1"}``).
        cable: the :class:`~cablecar.Cable` serving it.

    Identifiers of the connection (``identified_by``) read as attributes:
    ``self.current_user``.

    The server's own state for the subscription lives in one private slot, so any
    attribute name (``self._streams`` too) is the application's to use.
    """

    __spec: ClassVar[ChannelSpec] = _EMPTY_SPEC
    __cable: ClassVar[Cable | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__spec = _collect(cls)

    def __init__(self, subscription: Subscription, params: dict[str, Any]) -> None:
        self.__sub = subscription
        session = subscription.session
        self.connection: Connection = session.connection  # type: ignore[assignment]
        self.cable: Cable = session.runtime.cable
        self.identifier = subscription.identifier
        self.params = params

    # -- callbacks the user overrides -------------------------------------------------

    async def subscribed(self) -> None:
        """Called when a client subscribes; stream, transmit or ``reject()`` here."""

    async def restored(self) -> None:
        """Called instead of :meth:`subscribed` when the client resumed its session
        (``Cable(history=True)``): the subscription's streams are already back.
        Re-derive here what ``subscribed`` set on ``self``; what the client missed is
        replayed from history."""

    async def unsubscribed(self) -> None:
        """Called when the subscription ends (unsubscribe command or disconnect)."""

    # -- streams ------------------------------------------------------------------

    def stream_from(
        self,
        stream: str,
        callback: StreamCallback | None = None,
        *,
        whisper: bool = False,
        presence: bool = False,
    ) -> None:
        """Deliver broadcasts on ``stream`` to this subscriber.

        The confirmation (or, after subscribe, the next command) waits until the
        stream is live in the pub/sub adapter. With ``callback``, each broadcast is
        decoded and passed to it, and what it returns (unless ``None``) is
        transmitted; without one, the broadcast's bytes are forwarded untouched
        (the fast path).

        Args:
            whisper: make ``stream`` this subscription's whisper stream: extended-protocol
                clients (``channel.whisper(data)`` in ``@anycable/web``) send events to
                its other subscribers directly, with no action code and no history.
            presence: make ``stream`` this subscription's presence stream.
        """
        if not isinstance(stream, str) or not stream:
            raise ValueError(f"stream names are non-empty strings: {stream!r}")
        sub = self.__sub
        sub.session.runtime.threadsafe(sub.add_stream, stream, callback, whisper, presence)

    def stream_for(
        self, model: Any, callback: StreamCallback | None = None, **options: Unpack[StreamOptions]
    ) -> None:
        """``stream_from(self.broadcasting_for(model), callback, **options)``: the same
        keywords (``whisper``, ``presence``)."""
        self.stream_from(type(self).broadcasting_for(model), callback, **options)

    def stop_stream_from(self, stream: str) -> None:
        """Stop delivering ``stream`` to this subscriber."""
        sub = self.__sub
        sub.session.runtime.threadsafe(sub.remove_stream, stream)

    def stop_stream_for(self, model: Any) -> None:
        """``stop_stream_from(self.broadcasting_for(model))``."""
        self.stop_stream_from(type(self).broadcasting_for(model))

    def stop_all_streams(self) -> None:
        """Stop every stream of this subscriber (done automatically on unsubscribe)."""
        sub = self.__sub
        sub.session.runtime.threadsafe(sub.stop_all)

    # -- output -------------------------------------------------------------------

    def transmit(self, message: Any) -> None:
        """Send ``message`` to this subscriber only: ``{"identifier":...,"message":...}``.

        Safe to call from plain ``def`` methods running in the thread pool.

        Raises:
            TypeError: ``message`` cannot be encoded to JSON.
        """
        sub = self.__sub
        sub.session.runtime.threadsafe(sub.transmit_from_channel, _json.dumps(message))

    async def join_presence(self, id: str | int, info: Any = None) -> None:
        """Join this subscription's presence stream (``stream_from(..., presence=True)``)
        as member ``id`` on behalf of the client (cables with ``history=True``; any
        client). Subscribers get a ``join`` event when ``id`` is new.

        Called in ``subscribed`` the join happens right after the confirmation. Works
        for plain Action Cable clients too (they get the events as ordinary messages).

        Example::

            async def subscribed(self):
                self.stream_from(f"room_{self.params['room']}", presence=True)
                await self.join_presence(self.current_user.id, {"name": self.current_user.name})
        """
        sub = self.__sub
        if sub.presence_stream is not None and sub.presence_stream not in sub.streams:
            # In subscribed(): the stream goes live with the confirmation; join then.
            sub.join_on_confirm = (str(id), info)
            return
        await sub.session.presence_join(sub, str(id), info)

    async def leave_presence(self) -> None:
        """Leave the presence stream (a ``leave`` event when it was the member's last
        connection)."""
        sub = self.__sub
        await sub.session.presence_leave(sub)

    def reject(self) -> None:
        """Refuse this subscription (call in ``subscribed`` or a before-subscribe hook)."""
        sub = self.__sub
        sub.session.runtime.threadsafe(sub.reject)

    @property
    def rejected(self) -> bool:
        """Whether :meth:`reject` was called."""
        return self.__sub.rejected

    @property
    def logger(self) -> logging.Logger:
        """The channel logger."""
        return logger

    # -- naming and broadcasting from outside ----------------------------------------

    @classmethod
    def channel_name(cls) -> str:
        """``ChatChannel`` → ``"chat"``, ``AdminNoticesChannel`` → ``"admin_notices"``."""
        return channel_name_for(cls)

    @classmethod
    def broadcasting_for(cls, model: Any) -> str:
        """The stream name for ``model`` on this channel: ``"chat:<key>"``.

        Strings and numbers are keys themselves; lists and tuples join with ``:``;
        Django models give ``"app.model:pk"``; objects with an ``id``, ``"Type:id"``.
        """
        return broadcasting_for(cls, model)

    @classmethod
    async def broadcast_to(cls, model: Any, message: Any) -> None:
        """Broadcast ``message`` to ``broadcasting_for(model)`` through the cable this
        channel is registered with.

        Raises:
            ConfigurationError: the channel is not registered with a cable.
        """
        cable = cls.__cable
        if cable is None:
            raise ConfigurationError(f"{cls.__name__} is not registered with a Cable")
        await cable.broadcast(cls.broadcasting_for(model), message)

    # -- identifiers delegate to the connection ----------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: identifiers of the connection.
        if not name.startswith("_"):
            connection = self.__dict__.get("connection")
            if connection is not None and name in type(connection).identified_by:
                return getattr(connection, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identifier}>"
