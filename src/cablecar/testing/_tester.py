"""``ChannelTester``: drive a cable's real channels and connection in-process.

What is real: your ``Cable`` with its registry, config and pub/sub adapter; the
server core (``Session``: command parsing, ordering, rate limits, callbacks, rescue;
``Hub``: streams and fan-out); your ``Connection`` and ``Channel`` classes. What the
tester adds: a socket that records frames (:class:`RecordingSink`), a recording
wrapper around the adapter (to capture broadcasts), a virtual clock for
``periodically`` timers, and waiting until the server has handled each command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from ..cable import Cable
from ..connection import Connection
from ..errors import ConnectionRejected
from ..protocol import SUBPROTOCOLS
from ..pubsub import PubSub
from ..session import State
from ._broadcasts import BroadcastLog, RecordingPubSub
from ._cable import build_request, make_startable
from ._client import TestConnection
from ._clock import VirtualClock
from ._sink import RecordingSink

__all__ = ["ChannelTester"]


class ChannelTester(BroadcastLog):
    """Test a cable's channels and connection without sockets.

    Example::

        async with ChannelTester(cable) as t:
            conn = await t.connect(query={"user": "bob"})
            sub = await conn.subscribe("ChatChannel", room="1")
            sub.assert_has_stream("chat_1")
            await sub.perform("speak", body="hi")
            t.assert_broadcast_on("chat_1", {"from": "bob", "body": "hi"})

    The tester starts the cable if it is not running and stops it on exit; a cable it
    stopped can be used again by the next tester (one per test, each on its own event
    loop). Connections still open on exit are closed as by the client, so
    ``unsubscribed`` and ``disconnect`` run.

    Args:
        cable: the :class:`~cablecar.Cable` under test.
        timeout: seconds any one wait may take (an action that never returns fails the
            test with ``TimeoutError`` instead of hanging it).
        virtual_time: schedule ``periodically`` timers on a virtual clock that only
            :meth:`advance` moves (``False``: real timers on the event loop).
        raise_errors: re-raise an exception from your code (not handled by
            ``rescue_from``) from the call that made it run: ``connect``,
            ``subscribe``, ``perform``, ``advance``... (``False``: only record it in
            :attr:`errors`, as the server logs it and goes on).
        pubsub: use this adapter (URL or instance) instead of the cable's own while the
            tester runs, e.g. ``"memory://"`` to test an app configured for Redis
            without a Redis server (as Rails' test adapter does).
    """

    def __init__(
        self,
        cable: Cable,
        *,
        timeout: float = 5.0,
        virtual_time: bool = True,
        raise_errors: bool = True,
        pubsub: str | PubSub | None = None,
    ) -> None:
        super().__init__()
        self.cable = cable
        self.timeout = timeout
        self.raise_errors = raise_errors
        self.clock: VirtualClock | None = VirtualClock() if virtual_time else None
        #: Exceptions your code raised (and ``rescue_from`` did not handle), in order.
        self.errors: list[BaseException] = []
        self.connections: list[TestConnection] = []
        self._pubsub_override = pubsub
        self._saved: dict[str, Any] | None = None
        self._started_cable = False
        self._unraised: list[BaseException] = []

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> ChannelTester:
        """Start the cable (unless it runs on this loop already) and begin recording."""
        if self._saved is not None:
            raise RuntimeError("this ChannelTester is already started")
        cable = self.cable
        make_startable(cable)
        saved: dict[str, Any] = {"timer_clock": cable.timer_clock}
        if self._pubsub_override is not None:
            if cable.running:
                raise RuntimeError("pubsub= needs a cable that is not running yet")
            saved["pubsub"] = cable.pubsub
            cable.use_pubsub(self._pubsub_override)
        saved["recorded"] = cable.wrap_pubsub(lambda adapter: RecordingPubSub(adapter, self))
        saved["recorder"] = cable.pubsub
        cable.error_hooks.append(self._on_error)
        if self.clock is not None:
            cable.timer_clock = self.clock
        self._saved = saved
        if not cable.running:
            self._started_cable = True
            try:
                await cable.start()
                # Remote disconnects work once the control stream is live.
                await cable.wait_live(self.timeout)
            except BaseException:
                self.raise_errors = False
                await self.close()
                raise
        return self

    async def close(self) -> None:
        """Close the connections still open, stop the cable if this tester started it,
        and put the cable back as it was.

        Raises:
            Exception: an error your ``unsubscribed``/``disconnect`` code raised.
        """
        saved = self._saved
        if saved is None:
            return
        cable = self.cable
        try:
            for conn in self.connections:
                if conn.session.state != State.CLOSED:
                    conn.session.transport_closed()
            await self._wait_idle()
            if self._started_cable:
                await cable.stop(timeout=self.timeout)
        finally:
            self._saved = None
            cable.error_hooks.remove(self._on_error)
            cable.timer_clock = saved["timer_clock"]
            recorded = saved["recorded"]
            if cable.pubsub is saved["recorder"]:  # (a stopped cable may have a new adapter)
                cable.wrap_pubsub(lambda _recorder: recorded)
            if "pubsub" in saved and not cable.running:
                cable.use_pubsub(saved["pubsub"])
            self._started_cable = False
        self._raise_pending()

    async def __aenter__(self) -> ChannelTester:
        return await self.start()

    async def __aexit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is not None:
            self.raise_errors = False  # let the test's own failure through
        await self.close()

    # -- connections --------------------------------------------------------------------

    async def connect(
        self,
        path: str | None = None,
        *,
        query: Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        client: tuple[str, int] = ("127.0.0.1", 40000),
        subprotocol: str | None = SUBPROTOCOLS[0],
    ) -> TestConnection:
        """Open a connection: runs your ``Connection.connect`` and waits for ``welcome``.

        Example::

            conn = await t.connect(query={"user": "bob"}, cookies={"session": "s1"})
            assert conn.current_user == "bob"

        Args:
            path: the request path (default: the cable's ``mount_path``).
            query: query parameters (a mapping or a raw query string).
            headers: request headers (any case). An ``Origin`` header is checked
                against ``allowed_origins`` as the transports do.
            cookies: sent as a ``Cookie`` header (added to one in ``headers``).

        Raises:
            ConnectionRejected: the server refused the connection (``reason`` is the
                ``disconnect`` frame's, e.g. ``"unauthorized"``).
        """
        request = build_request(self.cable, path, query, headers, cookies, client)
        refusal = self.cable.admit(request)
        if refusal is not None:
            what = (
                f"origin {request.origin!r} not allowed"
                if refusal.status == 403
                else "max_connections reached"
                if refusal.reason == "server busy"
                else refusal.reason
            )
            raise ConnectionRejected(None, f"{what} (the transport answers HTTP {refusal.status})")
        sink = RecordingSink()
        session = self.cable.open_session(sink, request, subprotocol)
        sink.session = session
        conn = TestConnection(self, session, sink)
        self.connections.append(conn)
        session.start()
        await self.settle()
        if session.state != State.OPEN:
            frame = conn.disconnect_frame or {}
            reason = frame.get("reason")
            raise ConnectionRejected(
                reason,
                f"connection rejected: disconnect reason {reason!r}, "
                f"reconnect {frame.get('reconnect')!r}",
            )
        return conn

    async def assert_reject_connection(self, path: str | None = None, **kwargs: Any) -> str | None:
        """Assert that :meth:`connect` with these arguments is refused.

        Returns:
            The ``disconnect`` reason (``"unauthorized"`` for ``reject_unauthorized()``).

        Raises:
            AssertionError: the connection was accepted.
        """
        try:
            conn = await self.connect(path, **kwargs)
        except ConnectionRejected as exc:
            return exc.reason
        await conn.disconnect()
        raise AssertionError(
            f"expected the connection to be rejected, but it was accepted "
            f"with identifiers {conn.identifiers!r}"
        )

    def stub_connection(self, **identifiers: Any) -> TestConnection:
        """A welcomed connection with these identifiers, without running ``connect``
        (Rails' ``stub_connection``). ``disconnect`` still runs when it closes.

        Example::

            conn = t.stub_connection(current_user="bob")
            sub = await conn.subscribe("ChatChannel", room="1")

        Raises:
            ValueError: a name that is not in the connection class's ``identified_by``.
        """
        cable = self.cable
        if not cable.running:
            raise RuntimeError("start the tester first (async with ChannelTester(cable) as t)")
        cls: type[Connection] = cable.connection_class
        unknown = [name for name in identifiers if name not in cls.identified_by]
        if unknown:
            raise ValueError(
                f"{cls.__name__}.identified_by is {tuple(cls.identified_by)!r}; "
                f"cannot stub {', '.join(map(repr, unknown))}"
            )
        request = build_request(cable, None, None, None, None, ("127.0.0.1", 40000))
        sink = RecordingSink()
        session = cable.open_session(sink, request, SUBPROTOCOLS[0])
        sink.session = session
        connection = cls(session, request)
        for name, value in identifiers.items():
            setattr(connection, name, value)
        session.open_as(connection)
        conn = TestConnection(self, session, sink)
        self.connections.append(conn)
        return conn

    # -- time ---------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual seconds elapsed since the tester started."""
        if self.clock is None:
            raise RuntimeError("virtual_time=False: timers run on the event loop")
        return self.clock.time()

    async def advance(self, seconds: float) -> None:
        """Move virtual time forward: fire every ``periodically`` timer falling due,
        in time order, letting the server handle each tick (and what it sends) first.

        Example::

            await t.advance(3)          # a timer with every=1.0 ticks 3 times
        """
        clock = self.clock
        if clock is None:
            raise RuntimeError("virtual_time=False: timers run on the event loop")
        if seconds < 0:
            raise ValueError(f"time only moves forward: {seconds!r}")
        await self.settle()
        target = clock.time() + seconds
        while clock.fire_next(target):
            await self.settle()
        clock.run_until(target)

    # -- waiting ------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait until the server has handled everything sent so far (commands, timer
        ticks, stream callbacks, closes), then re-raise an error from your code.

        Raises:
            TimeoutError: still busy after ``timeout`` seconds.
        """
        await self._wait_idle()
        self._raise_pending()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float | None = None) -> None:
        """Wait until ``predicate()`` is true (for work your code starts in the
        background, or broadcasts arriving through a network adapter).

        Raises:
            TimeoutError: still false after ``timeout`` (default: the tester's) seconds.
        """
        limit = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not predicate():
            if loop.time() >= deadline:
                raise TimeoutError(f"condition still false after {limit}s: {predicate!r}")
            await asyncio.sleep(0.005)
        await self.settle()

    async def _wait_idle(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        quiet = 0
        while quiet < 2:  # two idle passes: callbacks scheduled by a finished task ran
            await asyncio.sleep(0)
            busy = [c.session.task for c in self.connections if c.session.task is not None]
            if not busy:
                quiet += 1
                continue
            quiet = 0
            _done, pending = await asyncio.wait(busy, timeout=max(0.0, deadline - loop.time()))
            if pending:
                raise TimeoutError(
                    f"the server is still handling commands after {self.timeout}s "
                    "(an action, callback or connect() that does not return?)"
                )

    # -- errors ---------------------------------------------------------------------------

    def _on_error(self, exc: BaseException, context: dict[str, Any]) -> None:
        owner = context.get("channel") or context.get("connection")
        where = context.get("action") or context.get("callback") or "?"
        exc.add_note(f"(raised by {type(owner).__name__}#{where}; re-raised by cablecar.testing)")
        self.errors.append(exc)
        self._unraised.append(exc)

    def _raise_pending(self) -> None:
        pending, self._unraised = self._unraised, []
        if pending and self.raise_errors:
            first = pending[0]
            if len(pending) > 1:
                first.add_note(f"({len(pending) - 1} more in ChannelTester.errors)")
            raise first
