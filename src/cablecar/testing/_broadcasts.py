"""Seeing broadcasts: a recording wrapper around the cable's pub/sub adapter.

While a tester runs, ``cable.pubsub`` is a :class:`RecordingPubSub` that hands every
call to the real adapter and, after each successful ``publish``, records the payload.
So a capture sees exactly what ``cable.broadcast``, ``Channel.broadcast_to`` and
``broadcast_sync`` sent through the adapter, whether or not anyone listens to the
stream (as Rails' test adapter does). Broadcasts made by another process (a
``Broadcaster``) do not pass through this cable and are not recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .. import _json
from .._remote import CONTROL_STREAM
from ..history.base import unpack
from ..pubsub.base import MessageHandler, PubSub

__all__ = ["BroadcastLog", "RecordingPubSub", "normalize"]


class RecordingPubSub:
    """A :class:`~cablecar.pubsub.PubSub` that forwards to ``adapter`` and records
    every published payload in ``log``."""

    def __init__(self, adapter: PubSub, log: BroadcastLog) -> None:
        self.adapter = adapter
        self.log = log

    async def start(self, on_message: MessageHandler) -> None:
        await self.adapter.start(on_message)

    async def subscribe(self, stream: str) -> None:
        await self.adapter.subscribe(stream)

    async def unsubscribe(self, stream: str) -> None:
        await self.adapter.unsubscribe(stream)

    async def publish(self, stream: str, payload: bytes) -> None:
        await self.adapter.publish(stream, payload)
        if payload[:1] == b"\x1e":  # positioned, excluding or sampled: the message inside
            payload = unpack(payload)[-1]
        self.log.record(stream, payload)

    async def close(self) -> None:
        await self.adapter.close()

    def __getattr__(self, name: str) -> Any:
        # Every other attribute reads through: ``connected`` and ``reconnects`` (the
        # PubSub protocol's), adapter-specific ones (``channel_prefix``, ...).
        adapter = self.__dict__.get("adapter")
        if adapter is None:
            raise AttributeError(name)
        return getattr(adapter, name)


def normalize(value: Any) -> Any:
    """``value`` as it looks after a JSON round trip (tuples become lists, keys become
    strings), so that expected data compares equal to decoded broadcasts. Values JSON
    cannot encode (``unittest.mock.ANY``, custom matchers) are kept as they are.
    """
    try:
        return _json.loads(_json.dumps(value))
    except TypeError:
        pass
    if isinstance(value, dict):
        return {_key(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    return value


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    try:
        return str(next(iter(_json.loads(_json.dumps({key: None})))))
    except TypeError:
        return str(key)


def listing(messages: list[Any], indent: str = "  ") -> str:
    """One message per line, for assertion messages."""
    return "\n".join(f"{indent}{m!r}" for m in messages)


class BroadcastLog:
    """Every broadcast published through the cable while a tester runs, decoded, by stream.

    The methods are also available on :class:`~cablecar.testing.ChannelTester`.
    """

    def __init__(self) -> None:
        self._streams: dict[str, list[Any]] = {}
        self._captures: dict[str, list[list[Any]]] = {}

    def record(self, stream: str, payload: bytes) -> None:
        """Record one published payload (called by :class:`RecordingPubSub`)."""
        try:
            message = _json.loads(payload)
        except ValueError:
            message = bytes(payload)
        self._streams.setdefault(stream, []).append(message)
        for captured in self._captures.get(stream, ()):
            captured.append(message)

    # -- reading ----------------------------------------------------------------------

    def broadcasts(self, stream: str) -> list[Any]:
        """The decoded messages broadcast on ``stream`` so far (since the tester started
        or :meth:`clear_broadcasts`), oldest first."""
        return list(self._streams.get(stream, ()))

    def clear_broadcasts(self, stream: str | None = None) -> None:
        """Forget the broadcasts recorded on ``stream`` (on every stream if ``None``)."""
        if stream is None:
            self._streams.clear()
        else:
            self._streams.pop(stream, None)

    @contextlib.contextmanager
    def capture_broadcasts(self, stream: str) -> Iterator[list[Any]]:
        """Collect the messages broadcast on ``stream`` inside the ``with`` block.

        Example::

            with tester.capture_broadcasts("chat_1") as messages:
                await sub.perform("speak", body="hi")
            assert messages == [{"from": "bob", "body": "hi"}]
        """
        captured: list[Any] = []
        self._captures.setdefault(stream, []).append(captured)
        try:
            yield captured
        finally:
            captures = self._captures[stream]
            captures.remove(captured)
            if not captures:
                del self._captures[stream]

    # -- assertions -------------------------------------------------------------------

    def assert_broadcast_on(self, stream: str, data: Any) -> None:
        """Assert that a message equal to ``data`` was broadcast on ``stream``.

        ``data`` is compared after a JSON round trip (tuples match lists); values such
        as ``unittest.mock.ANY`` match anything. On failure the message lists what was
        broadcast on the stream (and, if nothing was, which streams did get broadcasts).

        Raises:
            AssertionError: no broadcast on ``stream`` equals ``data``.
        """
        expected = normalize(data)
        found = self._streams.get(stream, [])
        if any(expected == message for message in found):
            return
        lines = [f"no broadcast on {stream!r} matched {expected!r}"]
        lines.append(self._found(stream))
        raise AssertionError("\n".join(lines))

    def assert_broadcasts(self, stream: str, count: int) -> None:
        """Assert that exactly ``count`` messages were broadcast on ``stream``.

        Raises:
            AssertionError: another number was; the message lists them.
        """
        found = self._streams.get(stream, [])
        if len(found) != count:
            raise AssertionError(
                f"expected {count} broadcast{'' if count == 1 else 's'} on {stream!r}, "
                f"found {len(found)}\n{self._found(stream)}"
            )

    def assert_no_broadcasts(self, stream: str) -> None:
        """Assert that nothing was broadcast on ``stream``.

        Raises:
            AssertionError: something was; the message lists it.
        """
        found = self._streams.get(stream, [])
        if found:
            raise AssertionError(
                f"expected no broadcasts on {stream!r}, found {len(found)}\n{self._found(stream)}"
            )

    def _found(self, stream: str) -> str:
        found = self._streams.get(stream, [])
        if found:
            return f"broadcasts on {stream!r} ({len(found)}):\n{listing(found)}"
        others = {s: len(m) for s, m in self._streams.items() if s != CONTROL_STREAM}
        if not others:
            return "nothing was broadcast on any stream"
        streams = ", ".join(f"{s!r} ({n})" for s, n in sorted(others.items()))
        return f"nothing was broadcast on {stream!r}; broadcasts went to: {streams}"
