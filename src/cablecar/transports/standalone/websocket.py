"""One client socket of the standalone server: an ``asyncio.Protocol`` from the HTTP
upgrade to the close handshake; also the session's :class:`~cablecar.transport.Sink`.

Invariants:

1. Before the upgrade completes a socket holds at most ``max_header_size`` (plus
   ``max_http_body`` for plain requests) bytes and lives at most
   ``handshake_timeout`` seconds.
2. After it, a socket's first frame in a loop iteration goes straight to the
   transport: a broadcast is one ``transport.write`` of a frame built once for every
   recipient, never delayed. Frames that follow it to the same socket in the same
   iteration are *coalesced*: kept in order and written together, in one write, at the
   start of the next iteration (``_Ticks``), so a burst of broadcasts (many in one
   tick, or many streams per connection) costs one system call per socket and tick
   instead of one per frame. Every write of the socket takes this path, so the order of
   its frames is the order they were sent. The transport's high-water mark is
   ``max_pending_output``: passing it (``pause_writing``) cuts the client as a slow
   consumer, so a stalled client cannot grow the server's memory.
3. Every socket is closed within ``close_timeout`` of the server deciding to close
   it, whether or not the client cooperates; nothing is written after a close frame.
4. Input is bounded too: the frame parser never buffers more than one message of
   ``max_message_size``; the session pauses reading while its command queue holds
   more than that; every ping is answered, in order, with the pongs of one read in one
   write (so a ping flood costs one write per read), and pings that precede a close
   frame are answered before the close.
5. Sockets still in their handshake are capped at ``max_connections`` as well: past
   that, new ones are closed at once, unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, cast

from ... import _json
from ..._version import __version__
from ...http import Request, Response
from ...protocol import DisconnectReason, parse_subprotocols
from ...transport import SessionPort
from .framing import (
    CloseCode,
    FrameError,
    FrameParser,
    Opcode,
    build_close,
    build_frame,
    parse_close,
    text_frame,
)
from .http import (
    HandshakeError,
    RequestHead,
    build_response,
    build_stream_head,
    build_switching_protocols,
    parse_head,
    validate_upgrade,
)

if TYPE_CHECKING:
    from .server import Server

__all__: list[str] = []  # used by .server only

logger = logging.getLogger("cablecar.transports.standalone")


class _Ticks:
    """Loop iterations in which sockets were written to, and the sockets holding
    frames for the end of the current one (invariant 2)."""

    __slots__ = ("armed", "loop", "now", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: The current tick; a socket that wrote in it holds ``_tick == now``.
        self.now = 1
        self.armed = False
        self.pending: list[_Socket] = []

    def arm(self) -> None:
        """A socket wrote: end this tick at the start of the next loop iteration."""
        self.armed = True
        self.loop.call_soon(self._end)

    def _end(self) -> None:
        self.now += 1
        self.armed = False
        pending, self.pending = self.pending, []
        for sock in pending:
            sock._flush()  # a burst's flush counts as a write of the new tick


class _Socket(asyncio.Protocol):
    """One client socket; also the session's :class:`~cablecar.transport.Sink`."""

    __slots__ = (
        "_buf",
        "_closer",
        "_out",
        "_parser",
        "_paused_reading",
        "_tick",
        "_ticks",
        "_timer",
        "closing",
        "server",
        "session",
        "transport",
    )

    prepare: ClassVar[Callable[[bytes], bytes]] = staticmethod(text_frame)

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: SessionPort | None = None
        self._buf = b""
        self._parser: FrameParser | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closer: asyncio.TimerHandle | None = None
        self._paused_reading = False
        self.closing = False
        self._ticks = server.ticks
        self._tick = 0
        self._out: list[bytes] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but quack like one.
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        cfg = server.cable.config
        if len(server._sockets) - server.cable.socket_count >= cfg.max_connections:
            # A flood of sockets that never upgrade: refuse without reading anything.
            self.closing = True
            server._refused_handshakes += 1
            if server._refused_handshakes == 1 or server._refused_handshakes % 1000 == 0:
                logger.warning(
                    "refused %d sockets so far: %d still in their handshake (max_connections)",
                    server._refused_handshakes,
                    len(server._sockets) - server.cable.socket_count,
                )
            self.transport.abort()
            return
        self.transport.set_write_buffer_limits(high=cfg.max_pending_output)
        if cfg.socket_send_buffer is not None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cfg.socket_send_buffer)
        server._sockets[self] = None
        self._timer = server.loop.call_later(cfg.handshake_timeout, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if self.closing:
            # Input is read only to reach the client's close frame or EOF.
            if parser is not None and not parser.failed and self.transport is not None:
                try:
                    frames = parser.feed(data)
                except FrameError:
                    return
                if any(f.opcode == Opcode.CLOSE for f in frames):
                    self.transport.close()  # closing handshake complete
            return
        if parser is None:
            self._handshake_data(data)
            return
        try:
            frames = parser.feed(data)
        except FrameError as exc:
            self._protocol_error(exc.code, exc.reason)
            return
        session = self.session
        assert session is not None
        pongs: list[bytes] = []
        for frame in frames:
            op = frame.opcode
            if op == Opcode.TEXT or op == Opcode.BINARY:
                if pongs:  # answered before anything the message may make us send
                    self._write(b"".join(pongs))
                    pongs.clear()
                if op == Opcode.TEXT:
                    session.receive(frame.payload)
                else:
                    session.receive_binary(frame.payload)
            elif op == Opcode.PING:
                pongs.append(build_frame(Opcode.PONG, frame.payload))  # every ping, below
            elif op == Opcode.CLOSE:
                if pongs:  # pings before a close are answered first (RFC 6455 5.5.2)
                    self._write(b"".join(pongs))
                self._peer_closed(frame.payload)
                return
            # PONG: nothing to do
        if pongs:
            # Every ping answered, in order, in one write: a ping flood costs one write
            # per read, and no more output than the input it answers.
            self._write(b"".join(pongs))
        if parser.failed:  # a violation after the frames above
            try:
                parser.feed(b"")
            except FrameError as exc:
                self._protocol_error(exc.code, exc.reason)

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._timer, self._closer):
            if handle is not None:
                handle.cancel()
        self._timer = self._closer = None
        self.closing = True
        self._out = None
        self.server._sockets.pop(self, None)
        if self.session is not None:
            self.session.transport_closed()

    def pause_writing(self) -> None:
        # Called from inside transport.write(): defer, the hub may be iterating.
        if self.session is not None and not self.closing:
            self.server.loop.call_soon(self.session.too_slow)

    def resume_writing(self) -> None:
        pass

    # -- Sink -------------------------------------------------------------------------

    def send_prepared(self, wire: bytes) -> None:
        """Write a frame now if it is the socket's first write of this tick, else with
        the tick's other frames at its end (invariant 2). Every write of a WebSocket goes
        through here (``_emit``), so frames keep their order."""
        # Hot path: no JSON, no framing, no await. Nothing may follow our close frame
        # (pings still reach sessions that are closing).
        if self.closing:
            return
        ticks = self._ticks
        if self._tick != ticks.now:  # the first frame of this tick: out at once
            self._tick = ticks.now
            if not ticks.armed:
                ticks.arm()
            self.transport.write(wire)  # type: ignore[union-attr]
        elif self._out is None:
            self._out = [wire]
            ticks.pending.append(self)
        else:
            self._out.append(wire)

    _emit = send_prepared

    def _flush(self) -> None:
        """Write the frames coalesced in the last tick, in one write."""
        out = self._out
        if out is None or self.transport is None:
            return
        self._out = None
        if len(out) == 1:  # one late frame: the socket is not in a burst
            self.transport.write(out[0])
            return
        # A burst: this write counts as the socket's first of the new tick, so what
        # follows in this tick joins the next write too (one write per tick while it
        # lasts). After a lone frame the next one goes out at once, as usual.
        ticks = self._ticks
        self._tick = ticks.now
        if not ticks.armed:
            ticks.arm()
        self.transport.write(b"".join(out))

    def pause_reading(self) -> None:
        """Stop reading from the socket (the session's queue is full)."""
        if not self.closing and self.transport is not None and not self._paused_reading:
            self._paused_reading = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again."""
        if not self.closing and self.transport is not None and self._paused_reading:
            self._paused_reading = False
            self.transport.resume_reading()

    def send(self, data: bytes) -> None:
        self._emit(text_frame(data))

    def close(self, code: int = CloseCode.NORMAL) -> None:
        if self.closing or self.transport is None:
            return
        self.closing = True
        self._flush()
        self.transport.write(build_close(code))
        self._linger()

    def _linger(self, timeout: float | None = None) -> None:
        """Finish a socket whose last bytes are written: send FIN once they are
        flushed, then read and drop whatever the client still sends until its EOF,
        ``close_timeout`` at most. Closing with unread input would make the kernel
        answer with a reset, and the client could lose our last frames with it."""
        transport = self.transport
        if transport is None:
            return
        self._flush()
        try:
            if self._paused_reading:
                transport.resume_reading()
            if transport.can_write_eof():
                transport.write_eof()
            else:  # pragma: no cover - TCP transports can
                transport.close()
        except (OSError, RuntimeError):
            transport.close()
        if self._closer is not None:
            self._closer.cancel()
        self._closer = self.server.loop.call_later(
            self.server.cable.config.close_timeout if timeout is None else timeout, self._abort
        )

    def eof_received(self) -> bool | None:
        # The client is done sending: close our side too (after flushing).
        return None

    # -- handshake --------------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        if self.closing:
            return
        buf = self._buf + data
        cfg = self.server.cable.config
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > cfg.max_header_size:
                self._http_error(431, "request head too large")
            else:
                self._buf = buf
            return
        if end > cfg.max_header_size:
            self._http_error(431, "request head too large")
            return
        try:
            head = parse_head(buf[:end])
        except HandshakeError as exc:
            self._http_error(exc.status, exc.reason, exc.headers)
            return
        rest = buf[end + 4 :]
        peer = self.transport.get_extra_info("peername") if self.transport else None
        client = (
            (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
        )
        request = Request(head.method, head.path, head.query_string, head.headers, client)
        if head.path == cfg.mount_path or head.path == cfg.mount_path + "/":
            self._buf = b""
            self._upgrade(head, request, rest)
            return
        # A plain HTTP request: wait for its body, then answer and close.
        length_text = head.headers.get("content-length", "0")
        if "transfer-encoding" in head.headers:
            self._http_error(411, "chunked bodies are not accepted; send Content-Length")
            return
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self._http_error(400, "bad Content-Length")
            return
        if length > cfg.max_http_body:
            self._http_error(413, "request body too large")
            return
        if len(rest) < length:
            self._buf = buf
            return
        request.body = rest[:length]
        self._buf = b""
        self._cancel_timer()
        self.closing = True  # nothing more is read from this socket
        if self.server.cable.is_sse(head.path):
            self._open_sse(request)
            return
        self.server._spawn(self._answer_http(request))

    def _upgrade(self, head: RequestHead, request: Request, rest: bytes) -> None:
        cable = self.server.cable
        try:
            key = validate_upgrade(head)
        except HandshakeError as exc:
            self._http_error(exc.status, exc.reason, exc.headers)
            return
        refusal = cable.admit(request)
        if refusal is not None:
            self._http_error(refusal.status, refusal.reason, refusal.headers)
            return
        self._cancel_timer()
        subprotocol = cable.choose_subprotocol(
            parse_subprotocols(request.headers.get("sec-websocket-protocol"))
        )
        assert self.transport is not None
        self.transport.write(build_switching_protocols(key, subprotocol))
        self._parser = FrameParser(cable.config.max_message_size)
        self.session = cable.open_session(self, request, subprotocol)
        self.session.start()
        if rest:
            self.data_received(rest)

    async def _answer_http(self, request: Request) -> None:
        cable = self.server.cable
        head_only = request.method == "HEAD"
        try:
            response = await cable.serve_http(request)
            if response is None and self.server.http_handler is not None:
                response = await self.server.http_handler(request)
            if response is None:
                response = _not_found(cable, request.path)
        except Exception:
            logger.exception("http_handler raised for %s %s", request.method, request.path)
            response = Response("internal server error\n", 500)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                build_response(
                    response.status,
                    response.body,
                    response.content_type,
                    response.headers,
                    head_only,
                )
            )
            self.transport.close()

    # -- server-sent events (an HTTPStream for cablecar.sse) -------------------------------

    def _open_sse(self, request: Request) -> None:
        # Writable from here on, until the stream ends: the session may answer inside
        # open_sse already (its connect and welcome run there when they need not wait,
        # as tasks start eagerly on Python 3.12+).
        self.closing = False
        opened = self.server.cable.open_sse(self, request)
        if isinstance(opened, Response):
            self.begin(opened.status, [("Content-Type", opened.content_type), *opened.headers],
                       opened.body)  # fmt: skip
            self.end()
            return
        self.session = opened

    def begin(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        """Send the head of a streamed response (``Connection: close``; the body ends
        with the connection), or a complete small one for a status other than 200."""
        if self.closing or self.transport is None:
            return
        if status != 200:
            content_type = dict(headers).get("Content-Type", "application/json")
            rest = [(k, v) for k, v in headers if k != "Content-Type"]
            self.transport.write(build_response(status, body, content_type, rest))
            return
        self.transport.write(build_stream_head(status, headers) + body)

    def write(self, data: bytes) -> None:
        """More of a streamed body (a slow reader is cut by ``pause_writing``)."""
        if self.transport is not None:
            self._emit(data)

    def end(self) -> None:
        """Finish the streamed response: flush, then close."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self._linger(min(self.server.cable.config.close_timeout, 2.0))

    # -- closing ----------------------------------------------------------------------

    def _http_error(
        self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._cancel_timer()
        self.closing = True
        if self.transport is not None:
            if status not in (403, 408, 503):  # those log their own line
                peer = self.transport.get_extra_info("peername")
                logger.warning(
                    "refused an HTTP request from %s: %d %s",
                    _peer(peer),
                    status,
                    reason,
                    extra={"cablecar_kind": f"http_{status}"},
                )
            body = _json.dumps({"error": reason})
            self.transport.write(build_response(status, body, "application/json", headers))
            self._linger(min(self.server.cable.config.close_timeout, 2.0))

    def _protocol_error(self, code: int, reason: str) -> None:
        session = self.session
        assert session is not None
        session.warn_once(f"frame_{code}", "closing with code %d: %s", code, reason)
        if code == CloseCode.MESSAGE_TOO_BIG:
            # An Action Cable matter: the client learns why (disconnect), then 1009.
            session.close(DisconnectReason.MESSAGE_TOO_BIG, True, code)
        else:
            # A broken WebSocket (1002, 1007): RFC 6455 fails the connection with the
            # close frame alone.
            session.fail(code)

    def _peer_closed(self, payload: bytes) -> None:
        code, _reason = parse_close(payload)
        if self.transport is None:
            return
        if not self.closing:
            self.closing = True
            self._flush()
            self.transport.write(build_close(CloseCode.NORMAL if code == 1005 else code))
            # Both close frames are out: close after flushing (bounded by close_timeout).
            self.transport.close()
            self._closer = self.server.loop.call_later(
                self.server.cable.config.close_timeout, self._abort
            )
        if self.session is not None:
            self.session.peer_closing()  # the client is leaving; nothing more to send

    def _handshake_timeout(self) -> None:
        self._timer = None
        if self._parser is None and not self.closing:
            logger.info(
                "closing a socket that sent no complete request in %ss",
                self.server.cable.config.handshake_timeout,
            )
            self._http_error(408, "request timeout")

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _abort(self) -> None:
        self._closer = None
        if self.transport is not None:
            self.transport.abort()

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self._emit(data)


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "?"


def _not_found(cable: Any, path: str) -> Response:
    """404, saying where the cable answers (a bare "not found" at ``/`` puzzles whoever
    opens the server's address in a browser)."""
    cfg = cable.config
    health = f"; health at {cfg.health_path}" if cfg.health_path else ""
    return Response(
        f"cablecar {__version__}: nothing at {path}. WebSocket clients (Action Cable "
        f"protocol) connect at {cfg.mount_path}{health}.\n",
        404,
    )
