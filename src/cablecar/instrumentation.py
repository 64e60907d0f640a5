"""Instrumentation hooks: subscribe to what the server does (``ActiveSupport::Notifications``
for Action Cable).

Example::

    from cablecar import instrumentation

    def slow_actions(event, payload):
        if payload["duration"] > 0.1:
            print(f"{payload['channel']}#{payload['action']} took {payload['duration']:.3f}s")

    unsubscribe = instrumentation.subscribe("perform_action", slow_actions)

Events and their payloads:

``perform_action``
    ``channel`` (class name), ``action``, ``data`` (redacted for logs), ``duration`` (s)
``transmit``
    ``channel``, ``data`` (what channel code transmitted), ``via`` (``None``)
``transmit_subscription_confirmation`` / ``transmit_subscription_rejection``
    ``channel``, ``identifier``
``broadcast``
    ``stream``, ``message``, ``cable``
``connect`` / ``disconnect``
    ``connection`` (the user's ``Connection``), ``reason`` (disconnect)

Handlers run synchronously on the event loop thread, right where the event happens;
an exception in a handler is logged and does not reach the server. With no handler for
an event, emitting it costs one dictionary lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["EVENTS", "Handler", "active", "emit", "subscribe"]

logger = logging.getLogger("cablecar.instrumentation")

#: ``handler(event, payload)``.
Handler = Callable[[str, dict[str, Any]], Any]

EVENTS = (
    "perform_action",
    "transmit",
    "transmit_subscription_confirmation",
    "transmit_subscription_rejection",
    "broadcast",
    "connect",
    "disconnect",
)

_handlers: dict[str, tuple[Handler, ...]] = {event: () for event in EVENTS}


def subscribe(event: str, handler: Handler) -> Callable[[], None]:
    """Call ``handler(event, payload)`` on every ``event``; returns the function that
    unsubscribes it.

    Raises:
        ValueError: ``event`` is not one of :data:`EVENTS`.
    """
    if event not in _handlers:
        raise ValueError(f"unknown event {event!r}; the events are: {', '.join(EVENTS)}")
    _handlers[event] = (*_handlers[event], handler)

    def unsubscribe() -> None:
        _handlers[event] = tuple(h for h in _handlers[event] if h is not handler)

    return unsubscribe


def active(event: str) -> bool:
    """Whether anything listens to ``event`` (build a payload only then)."""
    return bool(_handlers[event])


def emit(event: str, payload: dict[str, Any]) -> None:
    """Call every handler of ``event`` with ``payload``."""
    for handler in _handlers[event]:
        try:
            handler(event, payload)
        except Exception:
            logger.exception("instrumentation handler %r for %s raised", handler, event)
