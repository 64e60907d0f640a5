"""The ASGI transport: serve a cable from uvicorn, Granian, or inside Starlette, FastAPI, Django.

Three ways to plug it in::

    app.add_middleware(CableMiddleware, cable=cable)   # Starlette/FastAPI: /cable, /cable/health
    application = CableMiddleware(django_asgi_app, cable)   # Django's asgi.py (Channels or not)
    app.mount("/cable", cable.asgi())                  # a Starlette mount: ws://host/cable/ (the
                                                       # slash: Mount never routes the bare prefix)

``cable.asgi()`` alone is a complete ASGI application too (``uvicorn app:cable_app``):
the WebSocket endpoint at ``mount_path``, the health check at ``health_path``.

Invariants:

1. The session core is the standalone server's; only the socket differs. A broadcast
   becomes one ``websocket.send`` message per identifier group (``prepare``), and that
   same dict goes to every recipient: no JSON work and no allocation per recipient here.
   The ASGI server then frames it once per socket (it cannot share frames).
2. Output to a socket is written by one writer task, in order, one awaited ``send`` at
   a time; ``send_prepared`` never awaits. Bytes queued or in flight are counted: over
   ``max_pending_output`` the client is cut as a slow consumer (``too_slow``). Input is
   bounded by not calling ``receive()`` while the session asks to pause reading.
3. The cable starts with the ASGI lifespan, or on first use when the host app's
   lifespan does not reach it (a Starlette mount). It stops with the lifespan.
4. After the server decides to close a socket, the app returns within ``close_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar

from .. import _json
from ..cable import CableState
from ..http import Request, Response
from ..protocol import DisconnectReason

if TYPE_CHECKING:
    from ..cable import Cable
    from ..transport import SessionPort

__all__ = ["ASGIApp", "CableMiddleware", "Message", "Receive", "Scope", "Send"]

logger = logging.getLogger("cablecar.transports.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_App = Callable[[Scope, Receive, Send], Awaitable[None]]
_Wire = tuple[dict[str, Any], int]


def _prepare(data: bytes) -> _Wire:
    # Once per broadcast and identifier group: the message every recipient's server sends.
    return {"type": "websocket.send", "text": data.decode()}, len(data)


class _Socket:
    """One accepted WebSocket; the session's :class:`~cablecar.transport.Sink`."""

    prepare: ClassVar[Callable[[bytes], _Wire]] = staticmethod(_prepare)

    __slots__ = (
        "_close_code",
        "_close_timeout",
        "_limit",
        "_loop",
        "_out",
        "_ready",
        "_send",
        "_slow",
        "_timer",
        "_writer",
        "closing",
        "gave_up",
        "main",
        "pending",
        "reading",
        "session",
    )

    def __init__(self, send: Send, limit: int, close_timeout: float) -> None:
        self._send = send
        self._limit = limit
        self._close_timeout = close_timeout
        self._loop = asyncio.get_running_loop()
        self._out: deque[_Wire] = deque()
        self._ready = asyncio.Event()  # output or a close is waiting for the writer
        self.reading = asyncio.Event()  # cleared: the session's queue is full, stop reading
        self.reading.set()
        self._close_code: int | None = None
        self._slow = False
        self._timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self.session: SessionPort | None = None
        self.main = asyncio.current_task()
        self.closing = False
        self.gave_up = False
        #: Bytes queued or being sent.
        self.pending = 0

    def start(self, session: SessionPort) -> None:
        self.session = session
        self._writer = self._loop.create_task(self._write_loop())

    # -- Sink -------------------------------------------------------------------------

    def send_prepared(self, wire: _Wire) -> None:
        # Hot path: append and wake the writer; no await, no copy.
        if self.closing:
            return
        self._out.append(wire)
        self.pending += wire[1]
        if self.pending > self._limit and not self._slow and self.session is not None:
            self._slow = True
            self._loop.call_soon(self.session.too_slow)  # the hub may be iterating
        self._ready.set()

    def send(self, data: bytes) -> None:
        self.send_prepared(_prepare(data))

    def pause_reading(self) -> None:
        self.reading.clear()  # the ASGI server stops reading the socket: TCP pushes back

    def resume_reading(self) -> None:
        self.reading.set()

    def close(self, code: int = 1000) -> None:
        if self.closing:
            return
        self.closing = True
        self.reading.set()  # read on, to the client's close
        self._close_code = code
        self._timer = self._loop.call_later(self._close_timeout, self._give_up)
        self._ready.set()

    # -- the writer -------------------------------------------------------------------

    async def _write_loop(self) -> None:
        out, send, ready = self._out, self._send, self._ready
        try:
            while True:
                await ready.wait()
                ready.clear()
                while out:
                    message, size = out.popleft()
                    await send(message)
                    self.pending -= size
                if self._close_code is not None:
                    await send({"type": "websocket.close", "code": self._close_code})
                    return
        except Exception as exc:  # the client went away mid-send; receive() reports it
            logger.debug("%s: send failed: %r", self.session, exc)
        finally:
            self.closing = True
            out.clear()
            self.pending = 0

    def _give_up(self) -> None:
        # close_timeout passed: the client does not read or the server never reported
        # the disconnect. Stop waiting; the ASGI server owns the socket from here.
        self._timer = None
        self.gave_up = True
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        if self.main is not None and not self.main.done():
            self.main.cancel()

    def finish(self) -> None:
        """The ASGI connection is over: stop the writer and the timer."""
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()


class ASGIApp:
    """A cable as an ASGI 3 application (``cable.asgi()``).

    Handles ``websocket`` scopes at the endpoint (``mount_path``, or the mount point
    itself when mounted), ``http`` scopes (``GET`` at the health path answers
    ``cable.statistics()``; a plain ``GET`` at the endpoint answers 426; anything else
    404) and ``lifespan`` (starts and stops the cable).

    Example::

        cable_app = cable.asgi()
        app = FastAPI(lifespan=cable_app.lifespan)   # optional: stop the cable with the app
        app.mount("/cable", cable_app)               # ws://host/cable/, /cable/health
    """

    def __init__(self, cable: Cable) -> None:
        self.cable = cable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise RuntimeError(f"cablecar cannot handle ASGI scope type {kind!r}")

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Start the cable with a host app and stop it after: ``FastAPI(lifespan=...)``."""
        _show_logs()
        await self.cable.start()
        try:
            yield
        finally:
            await self.cable.stop()

    # -- routing ------------------------------------------------------------------------

    def _is_endpoint(self, scope: Scope, path: str) -> bool:
        mount = self.cable.config.mount_path
        return path in (mount, mount + "/") or (bool(scope.get("root_path")) and path in ("", "/"))

    async def _ensure_started(self) -> None:
        if self.cable.state is CableState.NEW:
            _show_logs()
            await self.cable.start()

    # -- WebSocket ----------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        cable = self.cable
        if not self._is_endpoint(scope, _route_path(scope)):
            await _refuse(scope, send, 404, "not found")
            return
        await self._ensure_started()
        request = _request(scope)
        refusal = cable.admit(request)
        if refusal is not None:
            headers = [(k.lower().encode(), v.encode()) for k, v in refusal.headers]
            await _refuse(scope, send, refusal.status, refusal.reason, headers)
            return
        subprotocol = cable.choose_subprotocol(scope.get("subprotocols") or ())
        accept: Message = {"type": "websocket.accept"}
        if subprotocol is not None:
            accept["subprotocol"] = subprotocol
        await send(accept)
        sock = _Socket(send, cable.config.max_pending_output, cable.config.close_timeout)
        session = cable.open_session(sock, request, subprotocol)
        sock.start(session)
        session.start()
        limit = cable.config.max_message_size
        try:
            while True:
                try:
                    if not sock.reading.is_set():
                        await sock.reading.wait()
                    message = await receive()
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if not sock.gave_up or task is None:
                        raise
                    task.uncancel()
                    break
                kind = message["type"]
                if kind == "websocket.receive":
                    text = message.get("text")
                    if text is not None:
                        data = text.encode()
                        if len(data) > limit:
                            session.warn_once(
                                "frame_1009", "closing with code 1009: message too big"
                            )
                            session.close(DisconnectReason.MESSAGE_TOO_BIG, True, 1009)
                        else:
                            session.receive(data)
                    elif message.get("bytes") is not None:
                        session.receive_binary(message["bytes"])
                elif kind == "websocket.disconnect":
                    break
        finally:
            sock.finish()
            session.transport_closed()

    # -- HTTP ---------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        cable = self.cable
        cfg = cable.config
        path = _route_path(scope)
        method = scope.get("method", "GET")
        headers: list[tuple[bytes, bytes]] = []
        body = await _read_body(receive, cfg.max_http_body)
        if body is None:
            return  # the client left
        if body is _TOO_LARGE:
            await _respond(send, 413, {"error": "request body too large"})
            return
        request = _request(scope, method, path, body)
        if cable.is_sse(path):
            await self._ensure_started()
            await self._event_stream(request, receive, send)
            return
        if method in ("GET", "HEAD", "POST"):
            await self._ensure_started()
        response = await cable.serve_http(request)
        if response is not None:
            await _respond(
                send,
                response.status,
                response.body,
                [(k.lower().encode(), v.encode()) for k, v in response.headers],
                head=method == "HEAD",
                content_type=response.content_type,
            )
            return
        if self._is_endpoint(scope, path):
            status, answer = 426, {"error": "this is a WebSocket endpoint: upgrade required"}
            headers.append((b"upgrade", b"websocket"))
        else:
            status, answer = 404, {"error": "not found"}
        await _respond(send, status, answer, headers, head=method == "HEAD")

    async def _event_stream(self, request: Request, receive: Receive, send: Send) -> None:
        cfg = self.cable.config
        stream = _EventStream(send, cfg.max_pending_output)
        opened = self.cable.open_sse(stream, request)
        if isinstance(opened, Response):
            headers = [(k.lower().encode(), v.encode()) for k, v in opened.headers]
            await _respond(
                send, opened.status, opened.body, headers, content_type=opened.content_type
            )
            return
        stream.session = opened
        writer = asyncio.create_task(stream.run())
        gone = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait([writer, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not writer.done():
                writer.cancel()
            opened.transport_closed()

    # -- lifespan -----------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _show_logs()
                if not await _lifespan_step(send, "startup", self.cable.start, "start"):
                    return
            elif message["type"] == "lifespan.shutdown":
                await _lifespan_step(send, "shutdown", self.cable.stop, "stop cleanly")
                return


async def _lifespan_step(
    send: Send, phase: str, step: Callable[[], Awaitable[None]], verb: str
) -> bool:
    """Run the cable's ``start`` or ``stop`` for a lifespan event and answer it
    ``lifespan.<phase>.complete``, or ``.failed`` with the error (logged)."""
    try:
        await step()
    except Exception as exc:
        logger.exception("the cable failed to %s", verb)
        await send({"type": f"lifespan.{phase}.failed", "message": repr(exc)})
        return False
    await send({"type": f"lifespan.{phase}.complete"})
    return True


class CableMiddleware:
    """Put a cable in front of any ASGI app: requests under ``mount_path`` (the
    WebSocket endpoint at ``/cable``, the health check at ``/cable/health``) go to the
    cable, everything else to ``app``; the cable starts and stops with the lifespan.

    Example::

        app.add_middleware(CableMiddleware, cable=cable)        # Starlette, FastAPI
        application = CableMiddleware(get_asgi_application(), cable)   # Django asgi.py

    Args:
        app: the host application (Starlette, FastAPI, Django, a Channels router...).
        cable: the cable to serve, at its ``mount_path`` (``Cable(mount_path=...)``).
    """

    def __init__(self, app: _App, cable: Cable) -> None:
        self.app = app
        self.cable = cable
        self.cable_app = cable.asgi()
        self.path = cable.config.mount_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            path = _route_path(scope)
            if path == self.path or path.startswith(self.path + "/"):
                await self.cable_app(scope, receive, send)
                return
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the host app's lifespan, starting the cable after its startup and
        stopping it before its shutdown completes; if the host app has no lifespan
        (Django raises), run the cable's own."""
        seen: list[Message] = []
        answered = False

        async def recv() -> Message:
            message = await receive()
            seen.append(message)
            return message

        async def snd(message: Message) -> None:
            nonlocal answered
            answered = True
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                try:
                    _show_logs()
                    await self.cable.start()
                except Exception as exc:
                    logger.exception("the cable failed to start")
                    message = {"type": "lifespan.startup.failed", "message": repr(exc)}
            elif kind == "lifespan.shutdown.complete":
                await self.cable.stop()
            await send(message)

        try:
            await self.app(scope, recv, snd)
        except Exception:
            if answered:
                raise
            logger.debug("the host app has no lifespan; the cable runs its own")
            await self.cable_app._lifespan(_replay(seen, receive), send)


# -- helpers ------------------------------------------------------------------------------


def _route_path(scope: Scope) -> str:
    """The path below the mount point (``root_path``), as Starlette's routing sees it."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


#: What _read_body returns for a body over the limit.
_TOO_LARGE = b"\0too large"


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body (``None``: the client left; ``_TOO_LARGE``: past ``limit``)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body") or b""
        size += len(chunk)
        if size > limit:
            return _TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _EventStream:
    """A streamed HTTP response for :mod:`cablecar.sse` (its ``HTTPStream``): one writer
    task sends in order; bytes not yet sent past ``limit`` cut the reader as too slow."""

    def __init__(self, send: Send, limit: int) -> None:
        self._send = send
        self._limit = limit
        self._queue: deque[tuple[Message, int]] = deque()
        self._wake = asyncio.Event()
        self._pending = 0
        self._ended = False
        self.session: SessionPort | None = None

    def _push(self, message: Message, size: int = 0) -> None:
        self._queue.append((message, size))
        self._pending += size
        self._wake.set()
        if self._pending > self._limit and self.session is not None:
            asyncio.get_running_loop().call_soon(self.session.too_slow)

    def begin(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        self._push({"type": "http.response.start", "status": status, "headers": raw})
        self._push({"type": "http.response.body", "body": body, "more_body": True}, len(body))

    def write(self, data: bytes) -> None:
        if not self._ended:
            self._push({"type": "http.response.body", "body": data, "more_body": True}, len(data))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._push({"type": "http.response.body", "body": b"", "more_body": False})

    async def run(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            message, size = self._queue.popleft()
            await self._send(message)
            self._pending -= size
            if not message.get("more_body", True) and message["type"] == "http.response.body":
                return


def _request(
    scope: Scope, method: str = "GET", path: str | None = None, body: bytes = b""
) -> Request:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in headers:
            value = headers[name] + ("; " if name == "cookie" else ", ") + value
        headers[name] = value
    client = scope.get("client")
    return Request(
        method,
        scope.get("path", "/") if path is None else path,
        (scope.get("query_string") or b"").decode("latin-1"),
        headers,
        (str(client[0]), int(client[1])) if client else None,
        body,
    )


async def _respond(
    send: Send,
    status: int,
    body: Any,
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
    prefix: str = "http.response",
    content_type: str = "application/json",
) -> None:
    data = body if isinstance(body, bytes) else _json.dumps(body)
    await send(
        {
            "type": prefix + ".start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": prefix + ".body", "body": b"" if head else data})


async def _refuse(
    scope: Scope, send: Send, status: int, reason: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Refuse a WebSocket before accepting it: ``websocket.close``, which servers answer
    with 403, or another status through the ``websocket.http.response`` extension."""
    if status != 403 and "websocket.http.response" in (scope.get("extensions") or {}):
        await _respond(send, status, {"error": reason}, headers, prefix="websocket.http.response")
    else:
        await send({"type": "websocket.close", "code": 1008})


def _replay(seen: list[Message], receive: Receive) -> Receive:
    pending = deque(seen)

    async def recv() -> Message:
        return pending.popleft() if pending else await receive()

    return recv


def _show_logs() -> None:
    """Under an ASGI server that configures only its own loggers (uvicorn, Granian),
    cablecar's records would reach Python's last-resort handler: WARNING and up, with no
    level or logger name. When nobody configured logging, show them at INFO, with both."""
    root = logging.getLogger()
    ours = logging.getLogger("cablecar")
    if root.handlers or ours.handlers or ours.level != logging.NOTSET:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
