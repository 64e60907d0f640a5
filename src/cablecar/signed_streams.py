"""The built-in channels that stream a name the client brings: ``$pubsub`` and
``Turbo::StreamsChannel``.

A page subscribes to a stream without any channel code of the application: the
server signed the stream name when it rendered the page, and the client sends it
back::

    cable = Cable(connection=AppConnection, streams_secret=os.environ["STREAMS_SECRET"])
    signed = cable.signed_stream_name("room/1")          # render into the page

    # @anycable/web:       cable.streamFromSigned(signed)
    # raw identifier:      {"channel":"$pubsub","signed_stream_name":"<signed>"}

``Turbo::StreamsChannel`` does the same for Hotwire pages
(``<turbo-cable-stream-source channel="Turbo::StreamsChannel" signed-stream-name=...>``),
with turbo-rails' keys (see :func:`cablecar.signing.turbo_signer`).

Both are registered by ``Cable(...)`` when their secret is set (``$pubsub`` also with
``public_streams=True``); a channel the application registers under the same name
takes their place. A name that does not verify, is not a string or is missing gets
``reject_subscription``; rejections are logged once a minute with their count, so a
flood of forged names cannot flood the log.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING

from .channel import Channel
from .signing import PUBSUB_CHANNEL, TURBO_CHANNEL

if TYPE_CHECKING:
    from .cable import Cable
    from .signing import StreamSigner

__all__ = ["PUBSUB_CHANNEL", "TURBO_CHANNEL", "PubSubChannel", "TurboStreamsChannel"]

logger = logging.getLogger("cablecar.channel")

_LOG_EVERY = 60.0


class _RejectionLog:
    """Logs the first rejection at WARNING, then at most one line per minute with how
    many followed: bounded output whatever a client sends."""

    __slots__ = ("_next", "_since")

    def __init__(self) -> None:
        self._next = 0.0
        self._since = 0

    def note(self, channel: str, why: str) -> None:
        now = time.monotonic()
        if now < self._next:
            self._since += 1
            return
        more = f" ({self._since} more since the last report)" if self._since else ""
        logger.warning("%s subscription rejected: %s%s", channel, why, more)
        self._since = 0
        self._next = now + _LOG_EVERY


_logs: weakref.WeakKeyDictionary[Cable, _RejectionLog] = weakref.WeakKeyDictionary()


def _note(channel: Channel, label: str, why: str) -> None:
    log = _logs.get(channel.cable)
    if log is None:
        log = _logs[channel.cable] = _RejectionLog()
    log.note(label, why)


def _stream_signed(
    channel: Channel, label: str, signer: StreamSigner | None, *, presence: bool, whisper: bool
) -> bool:
    signed = channel.params.get("signed_stream_name")
    if signer is None:
        _note(channel, label, "no secret to verify signed names with")
        return False
    name = signer.verify(signed)
    if not name:
        _note(
            channel,
            label,
            "signed_stream_name missing"
            if signed is None
            else "signed_stream_name does not verify",
        )
        return False
    channel.stream_from(name, presence=presence, whisper=whisper)
    return True


class PubSubChannel(Channel):
    """``$pubsub``: streams a name signed with ``streams_secret`` (``signed_stream_name``),
    or, with ``public_streams=True``, a plain ``stream_name``.

    Signed streams carry presence, and whisper with ``streams_whisper=True``; public
    streams carry both (as in AnyCable).
    """

    async def subscribed(self) -> None:
        config = self.cable.config
        if "signed_stream_name" in self.params:
            if not _stream_signed(
                self,
                PUBSUB_CHANNEL,
                self.cable.stream_signers.pubsub,
                presence=True,
                whisper=config.streams_whisper,
            ):
                self.reject()
            return
        name = self.params.get("stream_name")
        if not config.public_streams:
            _note(self, PUBSUB_CHANNEL, "public streams are off (public_streams=False)")
            self.reject()
        elif not isinstance(name, str) or not name:
            _note(self, PUBSUB_CHANNEL, "stream_name must be a non-empty string")
            self.reject()
        else:
            self.stream_from(name, presence=True, whisper=True)


class TurboStreamsChannel(Channel):
    """``Turbo::StreamsChannel``: streams a name signed with turbo-rails' key (Hotwire's
    ``<turbo-cable-stream-source>``). No presence or whisper, as in AnyCable."""

    async def subscribed(self) -> None:
        if not _stream_signed(
            self, TURBO_CHANNEL, self.cable.stream_signers.turbo, presence=False, whisper=False
        ):
            self.reject()
