"""Long polling: a session carried by a series of ``POST`` requests (at ``poll_path``,
``/lp`` by default), for clients whose WebSocket is blocked. AnyCable's protocol, made
lossless.

* The first ``POST`` (no ``X-AnyCable-Poll-ID``) opens a session: ``connect`` runs as for
  a WebSocket (cookies, headers and query of that request). The answer carries
  ``X-AnyCable-Poll-ID``; its body is the frames so far, one JSON per line (``welcome``,
  or ``disconnect`` with status 401 when ``connect`` rejects).
* Every later ``POST`` carries the id, and in its body the client's commands, one JSON
  per line (as WebSocket messages). It is answered as soon as there is output (frames
  of one loop iteration go together), or empty after ``poll_interval``.
* **Nothing is lost with a lost response.** Each frame of a session is numbered; an
  answer's ``X-Cablecar-Poll-Seq`` is the number of its last frame. A client that sends
  ``X-Cablecar-Poll-Ack: <n>`` (``cablecar.js`` does) gets every frame after ``n``
  again until it acknowledges it, so a poll aborted or lost in flight costs nothing; it
  skips the frames numbered ``n`` or less that it already had. A client that sends no
  ack (AnyCable's) is answered each frame once, as AnyCable does.
* A new poll while one is waiting answers the waiting one at once, empty.
* No pings: a poll is its own keepalive (pings would end every wait after 3 s). A client
  counts an answered poll, even empty, as a sign of life (``cablecar.js``: no answer for
  20 s is a dead connection).
* A session not polled for ``poll_keepalive_timeout`` (5 s) is closed (its connection
  and subscriptions end, as when a WebSocket drops; with ``history=True`` the client
  resumes by ``sid``); its next poll gets 401. Output a session holds past
  ``max_pending_output`` cuts it as a slow consumer.

Sessions live in the process that opened them: behind a load balancer with several
servers, route a poll id to one server (sticky sessions); with ``history=True`` a poll
that lands elsewhere gets 401, and the client resumes its session there by ``sid``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

from .http import Request, Response

if TYPE_CHECKING:
    from .session import Session

__all__ = ["ACK_HEADER", "ID_HEADER", "SEQ_HEADER", "PollSink", "Polls"]

ID_HEADER = "X-AnyCable-Poll-ID"
SEQ_HEADER = "X-Cablecar-Poll-Seq"
ACK_HEADER = "X-Cablecar-Poll-Ack"
_EXPOSE = ("Access-Control-Expose-Headers", f"{ID_HEADER}, {SEQ_HEADER}")


def _same(frame: bytes) -> bytes:
    return frame


class PollSink:
    """A session's output, held for its polls (a :class:`~cablecar.transport.Sink`)."""

    prepare: ClassVar[Any] = staticmethod(_same)
    kind = "long polling"

    def __init__(self, polls: Polls, pid: str) -> None:
        self.polls = polls
        self.pid = pid
        self.session: Session | None = None
        self.frames: deque[tuple[int, bytes]] = deque()
        self.size = 0  # bytes held
        self.seq = 0  # number of the newest frame
        self.sent = 0  # number of the newest frame put in an answer
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None
        self.released: asyncio.Future[None] | None = None
        self.expiry: asyncio.TimerHandle | None = None

    # -- Sink -------------------------------------------------------------------------

    def send_prepared(self, wire: bytes) -> None:
        if self.closed or wire.startswith(b'{"type":"ping"'):
            return  # a poll is its own keepalive: pings would only cut polls short
        self.seq += 1
        self.frames.append((self.seq, wire))
        self.size += len(wire)
        if self.size > self.polls.limit and self.session is not None:
            self.polls.loop.call_soon(self.session.too_slow)
        self._wake()

    def send(self, data: bytes) -> None:
        self.send_prepared(data)

    def close(self, code: int = 1000) -> None:
        self.closed = True
        if self.waiter is None and self.expiry is not None:
            # the last frames wait for one more poll, a second at most (none when the
            # server stops: nothing would answer it)
            self.expiry.cancel()
            grace = 0.0 if self.polls.cable.state.value == "stopping" else 1.0
            self.expiry = self.polls.loop.call_later(
                min(grace, self.polls.keepalive), self.polls._expire, self
            )
        self._wake()

    def pause_reading(self) -> None:
        pass  # input is bounded by the body size of each poll

    def resume_reading(self) -> None:
        pass

    # -- polls ------------------------------------------------------------------------

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def acknowledge(self, ack: int | None) -> None:
        """Drop the frames the client has: up to ``ack``, or, from a client that sends
        no acks, every frame already answered. Frames after ``ack`` go out again."""
        upto = self.sent if ack is None else min(ack, self.seq)
        frames = self.frames
        while frames and frames[0][0] <= upto:
            self.size -= len(frames.popleft()[1])
        self.sent = upto

    def take(self) -> tuple[bytes, int]:
        """The body of an answer (the frames not answered yet, one per line) and the
        number of its last frame."""
        batch = [wire for seq, wire in self.frames if seq > self.sent]
        if not batch:
            return b"", self.sent
        self.sent = self.seq
        return b"\n".join(batch) + b"\n", self.seq


class Polls:
    """The long-polling sessions of one cable (one process)."""

    def __init__(self, cable: Any) -> None:
        self.cable = cable
        self.sessions: dict[str, PollSink] = {}
        self.loop = asyncio.get_running_loop()
        cfg = cable.config
        self.limit: int = cfg.max_pending_output
        self.interval: float = cfg.poll_interval
        self.keepalive: float = cfg.poll_keepalive_timeout

    async def handle(self, request: Request) -> Response:
        """Answer one poll."""
        if request.method != "POST":
            return Response.json({"error": "long polling uses POST"}, 405, [("Allow", "POST")])
        pid = request.headers.get(ID_HEADER.lower())
        lines = [line for line in request.body.splitlines() if line.strip()]
        if pid is None:
            return await self._open(request, lines)
        sink = self.sessions.get(pid)
        if sink is None or sink.session is None:
            return Response(
                b'{"type":"disconnect","reason":"session_expired","reconnect":true}\n',
                401,
                "application/x-ndjson",
                [_EXPOSE],
            )
        ack_text = request.headers.get(ACK_HEADER.lower())
        ack = int(ack_text) if ack_text is not None and ack_text.isdigit() else None
        if sink.waiter is not None and not sink.waiter.done():
            sink.released = sink.waiter  # the earlier poll answers now, empty
            sink.waiter.set_result(None)
            await asyncio.sleep(0)
        self._touch(sink)
        sink.acknowledge(ack)
        for line in lines:
            sink.session.receive(line)
        return await self._answer(sink)

    async def _open(self, request: Request, lines: list[bytes]) -> Response:
        cable = self.cable
        refusal = cable.admit(request)
        if refusal is not None:
            return Response.json({"error": refusal.reason}, refusal.status, refusal.headers)
        pid = secrets.token_urlsafe(24)
        sink = PollSink(self, pid)
        offered = ("actioncable-v1-ext-json", "actioncable-v1-json")
        session = cable.open_session(sink, request, cable.choose_subprotocol(offered))
        session.pongs = False  # a poll is its keepalive
        sink.session = session
        self.sessions[pid] = sink
        session.start()
        for line in lines:
            session.receive(line)
        response = await self._answer(sink)
        if response.body.startswith(b'{"type":"disconnect","reason":"unauthorized"'):
            response.status = 401
        return response

    async def _answer(self, sink: PollSink) -> Response:
        if sink.expiry is not None:
            sink.expiry.cancel()
            sink.expiry = None
        if not sink.closed and not self._pending(sink):
            waiter = sink.waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self.interval)
            except TimeoutError:
                pass
            finally:
                if sink.waiter is waiter:
                    sink.waiter = None
            if sink.released is waiter:  # a newer poll took over: answer empty
                sink.released = None
                return Response(b"", 200, "application/x-ndjson", self._headers(sink, sink.sent))
            if self._pending(sink):
                await asyncio.sleep(0)  # the rest of a burst goes in the same answer
        body, last = sink.take()
        if sink.closed and not self._pending(sink):
            self._forget(sink)
        else:
            self._touch(sink)
        return Response(body, 200, "application/x-ndjson", self._headers(sink, last))

    @staticmethod
    def _headers(sink: PollSink, last: int) -> list[tuple[str, str]]:
        return [(ID_HEADER, sink.pid), (SEQ_HEADER, str(last)), _EXPOSE]

    @staticmethod
    def _pending(sink: PollSink) -> bool:
        return bool(sink.frames) and sink.frames[-1][0] > sink.sent

    def _touch(self, sink: PollSink) -> None:
        if sink.expiry is not None:
            sink.expiry.cancel()
        sink.expiry = self.loop.call_later(self.keepalive, self._expire, sink)

    def _expire(self, sink: PollSink) -> None:
        sink.expiry = None
        if sink.waiter is not None and not sink.waiter.done():
            return  # a poll is waiting: it is alive
        self._forget(sink)

    def _forget(self, sink: PollSink) -> None:
        if self.sessions.pop(sink.pid, None) is None:
            return
        if sink.expiry is not None:
            sink.expiry.cancel()
            sink.expiry = None
        sink.closed = True
        sink.frames.clear()
        sink.size = 0
        if sink.session is not None:
            sink.session.transport_closed()

    def close_all(self) -> None:
        """The cable stops: every session ends."""
        for sink in list(self.sessions.values()):
            sink._wake()
