"""The user's channel class: one instance per subscription.

Example::

    from cablecar import Channel

    class ChatChannel(Channel):
        async def subscribed(self):
            if not self.params.get("room"):
                self.reject()
                return
            self.stream_from(f"chat_{self.params['room']}")

        async def speak(self, data):          # {"action": "speak", "body": "hi"}
            await self.cable.broadcast(f"chat_{self.params['room']}",
                                       {"from": self.current_user, "body": data["body"]})

Every public method defined on the user's class (not on :class:`Channel`, not
starting with ``_``, not a callback or timer) is an action a client may perform. That
is why the base class keeps its public namespace small, and why broadcasting goes
through ``self.cable.broadcast``: ``broadcast`` and ``echo`` stay free as action names.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from . import _json
from ._naming import broadcasting_for, channel_name_for
from .errors import ConfigurationError
from .protocol.frames import encode_identifier

if TYPE_CHECKING:
    from .connection import Connection
    from .cable import Cable
    from .session import Session

__all__ = [
    "Channel",
    "after_subscribe",
    "after_unsubscribe",
    "before_subscribe",
    "before_unsubscribe",
    "periodically",
    "rescue_from",
]

logger = logging.getLogger("cablecar.channel")

F = TypeVar("F", bound=Callable[..., Any])

#: A per-subscription transform for ``stream_from(name, callback=...)``: called with the
#: decoded message; whatever it returns (unless ``None``) is transmitted.
StreamCallback = Callable[[Any], Any]

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
class _Action:
    name: str
    takes_data: bool


def _takes_data(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return True
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    )


class Channel:
    """Base class of channels (``ApplicationCable::Channel``).

    Attributes:
        connection: the :class:`~cablecar.Connection` this subscription belongs to.
        identifier: the raw identifier string the client subscribed with.
        params: the decoded identifier (``{"channel": "ChatChannel", "room": "1"}``).
        cable: the :class:`~cablecar.Cable` serving it.

    Identifiers of the connection (``identified_by``) read as attributes:
    ``self.current_user``.
    """

    # Filled by __init_subclass__ for every user class.
    _actions: ClassVar[dict[str, _Action]] = {}
    _hooks: ClassVar[dict[str, tuple[str, ...]]] = {}
    _timers: ClassVar[tuple[tuple[str, float], ...]] = ()
    _rescuers: ClassVar[tuple[tuple[tuple[type[BaseException], ...], str], ...]] = ()
    _cable_ref: ClassVar[Cable | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        base_names = set(dir(Channel))
        actions: dict[str, _Action] = {}
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
                    actions[name] = _Action(name, _takes_data(value))
        cls._actions = actions
        # Hooks of base classes run first, as Rails' callback chains do.
        cls._hooks = {k: tuple(reversed(v)) for k, v in hooks.items()}
        cls._timers = tuple(timers)
        cls._rescuers = tuple(rescuers)

    def __init__(self, session: Session, identifier: str, params: dict[str, Any]) -> None:
        self._session = session
        self.connection: Connection = session.connection  # type: ignore[assignment]
        self.cable: Cable = session.cable
        self.identifier = identifier
        self.params = params
        self._identifier_json = encode_identifier(identifier)
        self._streams: dict[str, StreamCallback | None] = {}
        self._ops: list[tuple[str, StreamCallback | None] | str | None] = []
        self._rejected = False
        self._timer_handles: list[Any] = []

    # -- callbacks the user overrides -------------------------------------------------

    async def subscribed(self) -> None:
        """Called when a client subscribes; stream, transmit or ``reject()`` here."""

    async def unsubscribed(self) -> None:
        """Called when the subscription ends (unsubscribe command or disconnect)."""

    # -- streams ------------------------------------------------------------------

    def stream_from(self, stream: str, callback: StreamCallback | None = None) -> None:
        """Deliver broadcasts on ``stream`` to this subscriber.

        The confirmation (or, after subscribe, the next command) waits until the
        stream is live in the pub/sub adapter. With ``callback``, each broadcast is
        decoded and passed to it, and what it returns (unless ``None``) is
        transmitted; without one, the broadcast's bytes are forwarded untouched
        (the fast path).
        """
        if not isinstance(stream, str) or not stream:
            raise ValueError(f"stream names are non-empty strings: {stream!r}")
        self._ops.append((stream, callback))

    def stream_for(self, model: Any, callback: StreamCallback | None = None) -> None:
        """``stream_from(self.broadcasting_for(model))``."""
        self.stream_from(type(self).broadcasting_for(model), callback)

    def stop_stream_from(self, stream: str) -> None:
        """Stop delivering ``stream`` to this subscriber."""
        self._ops.append(stream)

    def stop_stream_for(self, model: Any) -> None:
        """``stop_stream_from(self.broadcasting_for(model))``."""
        self.stop_stream_from(type(self).broadcasting_for(model))

    def stop_all_streams(self) -> None:
        """Stop every stream of this subscriber (done automatically on unsubscribe)."""
        self._ops.append(None)

    # -- output -------------------------------------------------------------------

    def transmit(self, message: Any) -> None:
        """Send ``message`` to this subscriber only: ``{"identifier":...,"message":...}``.

        Safe to call from plain ``def`` methods running in the thread pool.
        """
        from .protocol.frames import data_frame

        frame = data_frame(self._identifier_json, _json.dumps(message))
        session = self._session
        if threading.get_ident() == session.cable.loop_thread:
            session.send(frame)
        else:
            session.cable.call_soon_threadsafe(session.send, frame)

    def reject(self) -> None:
        """Refuse this subscription (call in ``subscribed`` or a before-subscribe hook)."""
        self._rejected = True

    @property
    def rejected(self) -> bool:
        """Whether :meth:`reject` was called."""
        return self._rejected

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
        if cls._cable_ref is None:
            raise ConfigurationError(f"{cls.__name__} is not registered with a Cable")
        await cls._cable_ref.broadcast(cls.broadcasting_for(model), message)

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

    # -- internals used by the session ------------------------------------------------

    def _hook_methods(self, kind: str) -> list[Callable[..., Awaitable[Any] | Any]]:
        return [getattr(self, name) for name in type(self)._hooks.get(kind, ())]

    def _rescuer_for(self, exc: BaseException) -> Callable[..., Any] | None:
        for types, name in type(self)._rescuers:
            if isinstance(exc, types):
                return getattr(self, name)  # type: ignore[no-any-return]
        return None
