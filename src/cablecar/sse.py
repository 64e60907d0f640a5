"""Server-sent events: a session whose output is a ``text/event-stream`` response
(AnyCable-compatible, at ``sse_path``, ``/events`` by default).

A request names what to subscribe to; the session runs exactly as a WebSocket's does
(``connect``, identifiers, channel callbacks, limits, history), and the response starts
only once the outcome is known: **401** when ``connect`` rejects, **400** when a
subscription is rejected or the request names none, **200** with the stream otherwise.

``GET`` (``EventSource``, ``curl -N``): the query builds one ``subscribe``; the first of
``identifier`` (the identifier JSON), ``channel``, ``stream`` (``$pubsub``, needs
``public_streams``), ``signed_stream`` and ``turbo_signed_stream_name`` present wins.
``Last-Event-ID`` (``<offset>/<epoch>/<stream>``, what the browser resends on its own)
and ``history_since=<unix seconds>`` ask for history (``history=True``); ``raw=1`` sends
data events only. Data events carry only the ``message`` (a string as is, anything else
as JSON), with ``id: <offset>/<epoch>/<stream>`` when positioned.

``POST``: the body holds one subscribe command per line (JSON, as a WebSocket client
would send; ``history`` allowed); data events carry the whole frame.

Typed frames (``welcome``, ``confirm_subscription``, ``ping``, ``disconnect``...) are
events named by their type, with the frame as data; a final ``disconnect``
(``reconnect: false``) carries ``retry: 31536000000`` so that the browser does not come
back. Pings (every ``ping_interval``) keep proxies from closing an idle stream.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from . import _json
from .errors import InvalidCommand
from .protocol import parse_command, parse_identifier

if TYPE_CHECKING:
    from .http import Request
    from .transport import SessionPort

__all__ = ["HTTPStream", "SSESink", "subscribe_commands"]

_LINES = re.compile(rb"\r\n|\r|\n")
#: ``retry`` on a final disconnect: a year, so EventSource does not reconnect.
_NEVER = b"retry: 31536000000\n"
#: Headers of an event stream (AnyCable's): no caching, no proxy buffering.
HEADERS = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0"),
    ("X-Accel-Buffering", "no"),
)


class HTTPStream(Protocol):
    """What a transport gives an event stream: one streamed HTTP response."""

    def begin(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        """Send the status and headers (and the first bytes of the body)."""

    def write(self, data: bytes) -> None:
        """Send more of the body. Never blocks; output past ``max_pending_output``
        makes the transport call the session's ``too_slow``."""

    def end(self) -> None:
        """Finish the response and close the connection (bounded in time)."""


def subscribe_commands(request: Request) -> list[bytes]:
    """The subscribe commands an SSE request asks for.

    Raises:
        ValueError: it asks for none, or a line of a POST body is not a command.
    """
    if request.method == "POST":
        commands = []
        for line in request.body.splitlines():
            if not line.strip():
                continue
            try:
                command = _json.loads(line)
            except ValueError:
                raise ValueError("each line of the body must be a JSON command") from None
            if not isinstance(command, dict) or not isinstance(command.get("identifier"), str):
                raise ValueError('each command needs an "identifier" string')
            command["command"] = "subscribe"
            commands.append(_checked(_json.dumps(command)))
        if not commands:
            raise ValueError("the body holds no subscribe command")
        return commands
    q = request.query
    identifier: Any = None
    if "identifier" in q:
        identifier = q["identifier"]
    elif "channel" in q:
        identifier = _json.dumps({"channel": q["channel"]}).decode()
    elif "stream" in q:
        identifier = _json.dumps({"channel": "$pubsub", "stream_name": q["stream"]}).decode()
    elif "signed_stream" in q:
        signed = q["signed_stream"]
        identifier = _json.dumps({"channel": "$pubsub", "signed_stream_name": signed}).decode()
    elif "turbo_signed_stream_name" in q:
        signed = q["turbo_signed_stream_name"]
        identifier = _json.dumps(
            {"channel": "Turbo::StreamsChannel", "signed_stream_name": signed}
        ).decode()
    else:
        raise ValueError(
            "name a subscription: identifier, channel, stream, signed_stream "
            "or turbo_signed_stream_name"
        )
    subscribe: dict[str, Any] = {"command": "subscribe", "identifier": identifier}
    history: dict[str, Any] = {}
    last = request.headers.get("last-event-id") or q.get("last_event_id")
    if last:
        offset, _, rest = last.partition("/")
        epoch, _, stream = rest.partition("/")
        if offset.isdigit() and epoch and stream:
            history["streams"] = {stream: {"offset": int(offset), "epoch": epoch}}
    since = q.get("history_since")
    if since and since.isdigit():
        history["since"] = int(since)
    if history:
        subscribe["history"] = history
    return [_checked(_json.dumps(subscribe))]


def _checked(command: bytes) -> bytes:
    # A command the session would ignore (no reply) must be refused here: the response
    # waits for a confirmation or a rejection.
    try:
        parsed = parse_command(command)
        parse_identifier(getattr(parsed, "identifier", ""))
    except InvalidCommand as exc:
        raise ValueError(str(exc)) from None
    return command


def _data_lines(data: bytes) -> bytes:
    return b"".join(b"data: " + line + b"\n" for line in _LINES.split(data))


def _event(frame: bytes, whole: bool) -> tuple[bytes, bool]:
    """``(event bytes, typed)`` of one JSON frame."""
    value = _json.loads(frame)
    kind = value.get("type") if isinstance(value, dict) else None
    if isinstance(kind, str):
        out = b"event: " + kind.encode() + b"\n" + _data_lines(frame)
        if kind == "disconnect" and value.get("reconnect") is False:
            out += _NEVER
        return out + b"\n", True
    if whole:
        data = frame
    else:
        message = value.get("message")
        data = message.encode() if isinstance(message, str) else _json.dumps(message)
    out = _data_lines(data)
    offset, epoch, stream = value.get("offset"), value.get("epoch"), value.get("stream_id")
    if isinstance(offset, int) and isinstance(epoch, str) and isinstance(stream, str):
        event_id = b"%d/%s/%s" % (offset, epoch.encode(), stream.encode())
        if not _LINES.search(event_id) and b"\0" not in event_id:
            out += b"id: " + event_id + b"\n"
    return out + b"\n", False


def _message_event(frame: bytes) -> tuple[bytes, bool]:
    return _event(frame, False)


def _frame_event(frame: bytes) -> tuple[bytes, bool]:
    return _event(frame, True)


class SSESink:
    """A session's output as server-sent events (a :class:`~cablecar.transport.Sink`);
    ``GET`` requests: data events carry the message only."""

    prepare: ClassVar[Any] = staticmethod(_message_event)
    kind = "SSE"

    def __init__(self, stream: HTTPStream, commands: list[bytes], *, raw: bool = False) -> None:
        self.stream = stream
        self.session: SessionPort | None = None
        self.raw = raw
        self._commands = commands
        self._waiting = len(commands)  # subscriptions not yet confirmed
        self._held: list[bytes] = []  # output before the response starts
        self._welcomed = False
        self.begun = False
        self.ended = False

    @classmethod
    def for_request(cls, stream: HTTPStream, request: Request) -> SSESink:
        """The sink for ``request`` (raises ``ValueError`` like :func:`subscribe_commands`)."""
        commands = subscribe_commands(request)
        kind = _FrameSink if request.method == "POST" else cls
        raw = request.query.get("raw", "").lower() in ("1", "true", "t", "y", "yes")
        return kind(stream, commands, raw=raw)

    def _start(self, status: int, body: bytes = b"") -> None:
        self.begun = True
        if status == 200:
            self.stream.begin(200, list(HEADERS), b"".join(self._held) + body)
        else:
            self.stream.begin(status, [("Content-Type", "application/json")], body)
        self._held = []

    def _out(self, data: bytes, typed: bool) -> None:
        if self.ended or (typed and self.raw):
            return
        if self.begun:
            self.stream.write(data)
        else:
            self._held.append(data)

    def send_prepared(self, wire: tuple[bytes, bool]) -> None:
        self._out(*wire)

    def send(self, data: bytes) -> None:
        if self.ended:
            return
        if not self.begun:
            if data.startswith(b'{"type":"welcome"'):
                self._welcomed = True
                self._out(*type(self).prepare(data))
                assert self.session is not None
                for command in self._commands:
                    self.session.receive(command)
                return
            if data.startswith(b'{"type":"disconnect"'):
                status = 400 if self._welcomed else 401
                reason = _json.loads(data).get("reason")
                self._start(status, _json.dumps({"error": reason or "disconnected"}))
                return
            if data.endswith(b'"type":"reject_subscription"}'):
                self._start(400, _json.dumps({"error": "subscription rejected"}))
                assert self.session is not None
                self.session.close(None, False)
                return
            if data.endswith(b'"type":"confirm_subscription"}'):
                self._waiting -= 1
                self._out(*type(self).prepare(data))
                if self._waiting <= 0:
                    self._start(200)
                return
        self._out(*type(self).prepare(data))

    def close(self, code: int = 1000) -> None:
        if self.ended:
            return
        if not self.begun:
            self._start(503, _json.dumps({"error": "closed before the stream started"}))
        self.ended = True
        self.stream.end()

    def pause_reading(self) -> None:
        pass  # nothing is read after the request

    def resume_reading(self) -> None:
        pass


class _FrameSink(SSESink):
    """``POST`` requests: data events carry the whole frame."""

    prepare: ClassVar[Any] = staticmethod(_frame_event)
