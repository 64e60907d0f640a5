"""The socket side of a consumer: open, read, detect staleness, reconnect (``Connection``).

One :class:`Connection` keeps one WebSocket alive for a :class:`~cablecar.client.Consumer`,
as ``connection.js`` and ``connection_monitor.js`` do for the official client:

* It offers ``actioncable-v1-ext-json`` (AnyCable's extended protocol: session recovery
  and stream history), ``actioncable-v1-json`` and ``actioncable-unsupported``, and gives up
  for good unless the server picks one of the first two. On the extended protocol it keeps
  the welcome's ``sid`` and reconnects with ``?sid=`` so the server can resume the
  session; a ``disconnect`` frame forgets it (as ``@anycable/core`` does).
* Nothing is sent before ``welcome``; ``welcome`` tells the consumer to re-subscribe.
* No frame at all for ``stale_threshold`` seconds: the socket is dropped and reopened.
* Lost sockets are reopened after the monitor's backoff (exponential, with jitter).
* ``{"type":"disconnect","reconnect":false}`` (or with ``reconnect`` missing) stops for good;
  ``reconnect: true`` (``server_restart``, ``remote``) reconnects.

Subscription frames (confirm, reject, data) go to the consumer through :class:`Handler`.
The very first connection is different: its failure is raised to the caller of
:meth:`Connection.start` instead of being retried in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Protocol

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin, Subprotocol

from cablecar import _json
from cablecar._json import JSON
from cablecar.errors import CablecarError, ConnectionRejected
from cablecar.protocol.constants import EXT_SUBPROTOCOL, MessageType

from .monitor import ConnectionMonitor

__all__ = ["SUBPROTOCOLS", "Connection", "Handler"]

logger = logging.getLogger("cablecar.client")

#: What the official client offers, in order. Only the first is spoken; the second is the
#: sentinel a future server picks to tell old clients to stop retrying.
SUBPROTOCOLS = ("actioncable-v1-json", "actioncable-unsupported")
#: Offered first: the extended protocol (resume, history) where the server speaks it.
OFFERED = (EXT_SUBPROTOCOL, *SUBPROTOCOLS)


class Handler(Protocol):
    """What a :class:`Connection` tells its consumer."""

    async def _on_welcome(self, restored: list[str] | None) -> None:
        """``welcome`` arrived: (re-)subscribe."""

    def _on_answer(self, identifier: str, *, confirmed: bool) -> None:
        """``confirm_subscription`` or ``reject_subscription``."""

    def _on_message(
        self, identifier: str, message: JSON, position: tuple[str, str, int] | None
    ) -> None:
        """A data frame."""

    def _on_history(self, identifier: str, *, found: bool) -> None:
        """confirm_history / reject_history (extended protocol)."""

    def _on_presence(self, identifier: str, message: dict[str, JSON]) -> None:
        """A presence event or info reply (extended protocol)."""

    def _on_socket_closed(self, will_reconnect: bool) -> None:
        """The socket is gone (after ``welcome`` or not)."""

    async def _on_stop(self, reason: str | None) -> None:
        """The connection stopped for good (not called when :meth:`Connection.close` did it)."""


class _Stop(Exception):
    """The connection ends for good."""

    def __init__(self, reason: str | None, error: CablecarError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def ws_url(url: str) -> str:
    """``http(s)://`` becomes ``ws(s)://``, as in ``createWebSocketURL``."""
    if url.startswith("http://") or url.startswith("https://"):
        return "ws" + url[4:]
    return url


class Connection:
    """One WebSocket to the cable, reopened until told to stop. See the module docstring."""

    def __init__(
        self,
        url: str,
        handler: Handler,
        *,
        headers: Mapping[str, str],
        origin: str | None,
        reconnect: bool,
        monitor: ConnectionMonitor,
        open_timeout: float,
        max_size: int,
    ) -> None:
        self.url = ws_url(url)
        self._handler = handler
        self._headers = dict(headers)
        self._origin = origin
        self._reconnect = reconnect
        self.monitor = monitor
        self._open_timeout = open_timeout
        self._max_size = max_size
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.welcomed = False
        self.closing = False
        self.connections = 0
        self.disconnect_reason: str | None = None
        #: The session id of the last welcome (extended protocol), for a resume.
        self.sid: str | None = None
        #: Whether the current socket speaks the extended protocol.
        self.ext = False

    async def start(self) -> None:
        """Connect and wait for ``welcome``; then keep the connection up in the background.

        Raises:
            ConnectionRejected: the server refused (see :meth:`Consumer.open`).
            OSError: the server could not be reached.
            TimeoutError: no ``welcome`` within ``open_timeout``.
        """
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(
            self._guarded_run(first), name=f"cablecar-client {self.url}"
        )
        await first

    async def close(self) -> None:
        """Close the socket and stop reconnecting."""
        self.closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2.0)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def send(self, frame: Mapping[str, JSON]) -> None:
        """Send one command.

        Raises:
            ConnectionClosed: there is no welcomed socket right now (nothing was sent).
        """
        ws = self._ws
        if ws is None or not self.welcomed:
            raise ConnectionClosed(None, None)
        await ws.send(_json.dumps(frame).decode())

    # -- the loop ------------------------------------------------------------------------

    async def _guarded_run(self, first: asyncio.Future[None]) -> None:
        try:
            await self._run(first)
        except Exception as exc:
            # A bug here must not leave subscribers waiting forever.
            logger.exception("the connection loop of %s failed", self.url)
            if not first.done():
                first.set_exception(exc)
            await self._handler._on_stop(None)

    async def _run(self, first: asyncio.Future[None]) -> None:
        stop: _Stop | None = None
        while True:
            failure: Exception | None = None
            try:
                await self._session(await self._open_socket(), first)
            except _Stop as exc:
                stop = exc
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                failure = exc
                logger.info("connection to %s failed: %s", self.url, exc)
            finally:
                await self._socket_closed(stop is None and self._reconnect and not self.closing)
            if self.closing:
                return  # close() was called: the consumer finishes the shutdown
            if not first.done():
                # The very first connection failed: start() raises, nothing is retried.
                if stop is not None:
                    self.disconnect_reason = stop.reason
                first.set_exception(
                    stop.error
                    if stop is not None
                    else _first_error(failure)
                    if failure is not None
                    else ConnectionRejected(None, "connection closed before welcome")
                )
                return
            if stop is not None or not self._reconnect:
                break
            delay = self.monitor.next_delay()
            logger.info("reconnecting to %s in %.2f s", self.url, delay)
            await asyncio.sleep(delay)
        self.disconnect_reason = stop.reason if stop is not None else None
        await self._handler._on_stop(self.disconnect_reason)

    async def _socket_closed(self, will_reconnect: bool) -> None:
        ws, self._ws = self._ws, None
        self.welcomed = False
        if ws is not None:
            # Subscriptions first: senders must wait for the next socket, not spin on this one.
            self._handler._on_socket_closed(will_reconnect)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)

    async def _open_socket(self) -> ClientConnection:
        url = self.url
        if self.sid:
            url += ("&" if "?" in url else "?") + "sid=" + self.sid
        ws = await ws_connect(
            url,
            subprotocols=[Subprotocol(p) for p in OFFERED],
            additional_headers=self._headers,
            origin=None if self._origin is None else Origin(self._origin),
            open_timeout=self._open_timeout,
            ping_interval=None,  # Action Cable has its own heartbeat (server pings)
            max_size=self._max_size,
            compression=None,
        )
        if ws.subprotocol not in (EXT_SUBPROTOCOL, SUBPROTOCOLS[0]):
            await ws.close()
            message = f"server did not select {SUBPROTOCOLS[0]} (got {ws.subprotocol!r}); giving up"
            logger.error(message)
            raise _Stop(None, ConnectionRejected(None, message))
        self.ext = ws.subprotocol == EXT_SUBPROTOCOL
        return ws

    async def _session(self, ws: ClientConnection, first: asyncio.Future[None]) -> None:
        """Read frames until the socket closes or goes stale; raise :class:`_Stop` to stop."""
        self._ws = ws
        self.monitor.record_open()
        welcome_deadline = time.monotonic() + self._open_timeout
        while True:
            if self.welcomed:
                wait = self.monitor.time_left()
            else:
                wait = welcome_deadline - time.monotonic()
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    raw = await ws.recv()
            except TimeoutError:
                if not self.welcomed:
                    raise TimeoutError(f"no welcome within {self._open_timeout} s") from None
                logger.warning("connection to %s is stale; reopening", self.url)
                ws.transport.abort()  # a closing handshake would wait on a dead peer
                return
            except ConnectionClosed:
                return
            self.monitor.record_frame()  # any frame counts (Rails 7.2+)
            try:
                frame = _json.loads(raw)
            except _json.JSONDecodeError:
                logger.warning("ignored a frame that is not JSON: %.200r", raw)
                continue
            if not isinstance(frame, dict):
                continue
            kind = frame.get("type")
            identifier = frame.get("identifier")
            if kind == MessageType.WELCOME:
                if not self.welcomed:
                    self.welcomed = True
                    self.connections += 1
                    self.monitor.record_connect()
                    if not first.done():
                        first.set_result(None)
                    sid = frame.get("sid")
                    self.sid = sid if self.ext and isinstance(sid, str) else None
                    ids = frame.get("restored_ids")
                    restored = (
                        [i for i in ids if isinstance(i, str)]
                        if frame.get("restored") is True and isinstance(ids, list)
                        else None
                    )
                    await self._handler._on_welcome(restored)
            elif kind == MessageType.DISCONNECT:
                self.sid = None  # the server ended the session: nothing to resume
                reason = frame.get("reason")
                reason = reason if isinstance(reason, str) else None
                if frame.get("reconnect"):  # missing counts as false, as in the JS client
                    logger.info("server disconnected (%s); reconnecting", reason)
                    return
                logger.info("server disconnected (%s) for good", reason)
                raise _Stop(reason, ConnectionRejected(reason))
            elif not isinstance(identifier, str) or kind == MessageType.PING:
                continue
            elif kind in (MessageType.CONFIRMATION, MessageType.REJECTION):
                self._handler._on_answer(identifier, confirmed=kind == MessageType.CONFIRMATION)
            elif kind in (MessageType.CONFIRM_HISTORY, MessageType.REJECT_HISTORY):
                self._handler._on_history(identifier, found=kind == MessageType.CONFIRM_HISTORY)
            elif kind == MessageType.PRESENCE:
                if isinstance(frame.get("message"), dict):
                    self._handler._on_presence(identifier, frame["message"])
            elif "message" in frame and kind is None:
                stream, epoch, offset = (
                    frame.get("stream_id"),
                    frame.get("epoch"),
                    frame.get("offset"),
                )
                position = (
                    (stream, epoch, offset)
                    if isinstance(stream, str)
                    and isinstance(epoch, str)
                    and isinstance(offset, int)
                    else None
                )
                self._handler._on_message(identifier, frame["message"], position)


def _first_error(exc: Exception) -> Exception:
    """Errors of the very first connection attempt, as :meth:`Connection.start` raises them."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return ConnectionRejected(None, f"server refused the WebSocket upgrade: HTTP {status}")
    if isinstance(exc, InvalidHandshake):
        return ConnectionRejected(None, f"WebSocket handshake failed: {exc}")
    return exc
