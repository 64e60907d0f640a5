"""Property-based fuzzing: the command parser, the frame parser, and a live server.

Bounded for ``make test`` (``CABLECAR_FUZZ_EXAMPLES``, default 200 examples per
property). A longer run is one environment variable away::

    CABLECAR_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_fuzz.py -s

The live properties send generated frames (any opcode, FIN/RSV bits, masked or not,
declared lengths that lie, payloads that are random bytes, random JSON or nearly
valid Action Cable commands) to a real server running on its own thread and event
loop (uvloop, as in production), then check that the server is still up: a second,
well-behaved client gets its answer after every example, and nothing was logged at
ERROR. With ``-s`` the module prints how many inputs it tried.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cablecar import Cable, Channel
from cablecar.errors import InvalidCommand
from cablecar.protocol import Perform, Subscribe, Unsubscribe, parse_command, parse_identifier
from cablecar.transports.standalone import Server, serve
from cablecar.transports.standalone.framing import FrameError, FrameParser

from .core import CurrentUserConnection
from .rawws import build_frame, http_request

EXAMPLES = int(os.environ.get("CABLECAR_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TRIED: Counter[str] = Counter()

# -- strategies -------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
CHANNELS = st.sampled_from(["FuzzChannel", "Nope", "", "Channel", "fuzz"])
identifiers = st.one_of(
    st.builds(
        lambda ch, extra: orjson.dumps({"channel": ch, **extra}).decode(),
        CHANNELS,
        st.dictionaries(st.sampled_from(["room", "id", "x"]), json_values, max_size=2),
    ),
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.text(max_size=30),
)
ACTIONS = st.one_of(
    st.sampled_from(["echo", "shout", "receive", "subscribed", "_private", "__init__", "transmit"]),
    st.text(max_size=10),
    json_values,
)
datas = st.one_of(
    st.builds(
        lambda action, extra: orjson.dumps({"action": action, **extra}).decode(),
        ACTIONS,
        st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    ),
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.text(max_size=30),
    json_values,
)
commands = st.builds(
    lambda command, identifier, data, drop: {
        k: v
        for k, v in {"command": command, "identifier": identifier, "data": data}.items()
        if k not in drop
    },
    st.one_of(st.sampled_from(["subscribe", "unsubscribe", "message"]), json_values),
    st.one_of(identifiers, json_values),
    datas,
    st.sets(st.sampled_from(["command", "identifier", "data"]), max_size=2),
)
command_bytes = st.one_of(
    commands.map(orjson.dumps),
    json_values.map(orjson.dumps),
    st.binary(max_size=200),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


# -- the parser ---------------------------------------------------------------------------


@FUZZ
@given(command_bytes)
def test_parse_command_returns_a_command_or_raises_invalid_command(data: bytes) -> None:
    """Any bytes given to the command decoder give a command or InvalidCommand with a known kind, nothing else."""
    TRIED["parse_command"] += 1
    try:
        command = parse_command(data)
    except InvalidCommand as exc:
        assert exc.kind in {
            "not_json",
            "not_object",
            "bad_command",
            "bad_identifier",
            "bad_data",
            "bad_action",
            "unknown_command",
        }
        return
    assert isinstance(command, Subscribe | Unsubscribe | Perform)
    assert isinstance(command.identifier, str) and command.identifier
    if isinstance(command, Perform):
        assert isinstance(command.action, str) and isinstance(command.data, dict)


@FUZZ
@given(identifiers)
def test_parse_identifier_returns_a_channel_or_raises_invalid_command(identifier: str) -> None:
    """Any identifier string gives a channel name with its params, or InvalidCommand."""
    TRIED["parse_identifier"] += 1
    try:
        name, params = parse_identifier(identifier)
    except InvalidCommand:
        return
    assert isinstance(name, str) and name and params["channel"] == name


@FUZZ
@given(identifiers, st.text(max_size=10), st.dictionaries(st.text(max_size=5), json_values))
def test_well_formed_commands_round_trip(identifier: str, action: str, extra: Any) -> None:
    """Every well-formed subscribe, unsubscribe and perform decodes to exactly what was encoded."""
    TRIED["round_trip"] += 1
    if not identifier:
        return
    for kind, cls in (("subscribe", Subscribe), ("unsubscribe", Unsubscribe)):
        assert parse_command(orjson.dumps({"command": kind, "identifier": identifier})) == cls(
            identifier
        )
    data = {**extra, "action": action}
    got = parse_command(
        orjson.dumps(
            {"command": "message", "identifier": identifier, "data": orjson.dumps(data).decode()}
        )
    )
    assert got == Perform(identifier, action or "receive", data)


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=10))
def test_frame_parser_only_ever_raises_frame_error(data: bytes, cuts: list[int]) -> None:
    """Any bytes, cut anywhere, make the frame parser yield frames within the limit or raise FrameError, nothing else."""
    TRIED["frame_parser_bytes"] += 1
    parser = FrameParser(1024)
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            for frame in parser.feed(data[pos : pos + cut]):
                assert len(frame.payload) <= 1024
            pos += cut
        parser.feed(b"")
    except FrameError as exc:
        assert exc.code in (1002, 1007, 1009)


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from([0x1, 0x2, 0x9, 0xA]), st.binary(max_size=125)),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 64),
)
def test_frame_parser_reassembles_valid_frames_split_anywhere(
    frames: list[tuple[int, bytes]], chunk: int
) -> None:
    """Valid frames split at any byte come out of the parser whole and in order."""
    TRIED["frame_parser_frames"] += 1
    frames = [(op, p if op != 0x1 else p.decode("latin-1").encode()) for op, p in frames]
    wire = b"".join(build_frame(op, p) for op, p in frames)
    parser = FrameParser(1 << 20)
    got = []
    for i in range(0, len(wire), chunk):
        got += [(int(f.opcode), f.payload) for f in parser.feed(wire[i : i + chunk])]
    assert got == frames


# -- a live server ---------------------------------------------------------------------------


class FuzzChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from(f"fuzz_{self.params.get('room', 'none')}")

    async def echo(self, data: dict[str, Any]) -> None:
        self.transmit(data)

    async def shout(self, data: dict[str, Any]) -> None:
        await self.cable.broadcast(f"fuzz_{self.params.get('room', 'none')}", data)

    def _private(self, data: dict[str, Any]) -> None:
        raise AssertionError("private method reached")


class ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class LiveServer:
    """A cablecar server on its own thread and uvloop event loop."""

    def __init__(self) -> None:
        self.cable = Cable(
            connection=CurrentUserConnection,
            channels=[FuzzChannel],
            max_message_size=64 * 1024,
            handshake_timeout=2.0,
            close_timeout=1.0,
        )
        self.server: Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)
        self.health: SyncWS | None = None
        self.checks = 0

    def _run(self) -> None:
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            loop = asyncio.new_event_loop()
        self.loop = loop

        async def main() -> None:
            self.server = await serve(self.cable, "127.0.0.1", 0)
            self.ready.set()
            await self.server.serve_forever()

        loop.run_until_complete(main())
        loop.close()

    def start(self) -> LiveServer:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def stop(self) -> None:
        if self.health is not None:
            self.health.sock.close()
        assert self.loop is not None and self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.close(timeout=1.0), self.loop).result(15)
        self.thread.join(10)

    def check(self) -> None:
        """The server is alive and a well-behaved client gets its answer."""
        assert self.thread.is_alive()
        if self.health is None or self.checks % 300 == 0:  # stay under the command rate
            if self.health is not None:
                self.health.sock.close()
            self.health = SyncWS.open(self.port, "/cable?user=health")
            self.health.send_json(
                {"command": "subscribe", "identifier": '{"channel":"FuzzChannel","room":"h"}'}
            )
            assert self.health.recv_json()["type"] == "confirm_subscription"
        self.checks += 1
        n = self.checks
        self.health.send_json(
            {
                "command": "message",
                "identifier": '{"channel":"FuzzChannel","room":"h"}',
                "data": orjson.dumps({"action": "echo", "n": n}).decode(),
            }
        )
        while True:
            msg = self.health.recv_json()
            if msg.get("message", {}).get("n") == n:
                return


class SyncWS:
    """A blocking client over :mod:`tests.rawws`' frames (hypothesis drives tests from
    plain functions): enough to fuzz with and to read what the server answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    def connect(cls, port: int, timeout: float = 5.0) -> SyncWS:
        sock = socket.create_connection(("127.0.0.1", port), timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    @classmethod
    def open(cls, port: int, path: str) -> SyncWS:
        ws = cls.connect(port)
        ws.sock.sendall(http_request(path))
        while b"\r\n\r\n" not in ws.buf:
            chunk = ws.sock.recv(65536)
            assert chunk, "closed during the handshake"
            ws.buf += chunk
        head, ws.buf = ws.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert ws.recv_json() == {"type": "welcome"}
        return ws

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)

    def recv_json(self) -> Any:
        while True:
            op, payload = self.recv_frame()
            assert op != 0x8, f"closed: {payload!r}"
            if op == 0x1:
                msg = orjson.loads(payload)
                if msg.get("type") != "ping":
                    return msg

    def send_json(self, obj: Any) -> None:
        self.sock.sendall(build_frame(0x1, orjson.dumps(obj)))


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    collector = ErrorCollector()
    log = logging.getLogger("cablecar")
    log.addHandler(collector)
    server = LiveServer().start()
    try:
        yield server
    finally:
        server.stop()
        log.removeHandler(collector)
        print(f"\nfuzz: inputs tried {dict(TRIED)}; server checks {server.checks}")
    assert not collector.records, [r.getMessage() for r in collector.records[:5]]


wire_frames = st.lists(
    st.one_of(
        # valid text frames carrying (mostly) nearly valid commands
        command_bytes.map(lambda p: build_frame(0x1, p)),
        # anything at all in the header bits
        st.builds(
            lambda fin, rsv, op, masked, payload: (
                bytes(
                    ((0x80 if fin else 0) | rsv << 4 | op, (0x80 if masked else 0) | len(payload))
                )
                + (b"\x00\x00\x00\x00" if masked else b"")
                + payload
            ),
            st.booleans(),
            st.integers(0, 7),
            st.integers(0, 15),
            st.booleans(),
            st.binary(max_size=125),
        ),
        # fragments
        st.builds(
            lambda op, fin, payload: build_frame(op, payload, fin=fin),
            st.sampled_from([0x0, 0x1, 0x2]),
            st.booleans(),
            command_bytes,
        ),
        # control frames
        st.builds(
            lambda op, p: build_frame(op, p),
            st.sampled_from([0x8, 0x9, 0xA]),
            st.binary(max_size=130),
        ),
        # raw bytes
        st.binary(min_size=1, max_size=40),
    ),
    min_size=1,
    max_size=8,
)


def exchange(port: int, wire: bytes) -> bool:
    """Open a connection, send ``wire``, a ping and EOF; read everything the server
    answers. True when the ping was answered (the connection had stayed open)."""
    ws = SyncWS.open(port, "/cable?user=fuzz")
    answered = False
    try:
        subscribe = b'{"command":"subscribe","identifier":"{\\"channel\\":\\"FuzzChannel\\"}"}'
        ws.sock.sendall(build_frame(0x1, subscribe) + wire + build_frame(0x9, b"end-of-example"))
        # EOF from us: a frame whose length lied is never completed, and the server
        # must close the connection rather than wait.
        ws.sock.shutdown(socket.SHUT_WR)
        try:
            while True:
                op, payload = ws.recv_frame()
                if op == 0xA and payload == b"end-of-example":
                    answered = True
                elif op == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    # Ours (1002/1007/1009), or the client's own close code echoed.
                    assert 1000 <= code <= 1014 or 3000 <= code <= 4999, code
        except (EOFError, ConnectionError):
            pass  # the server closed: after our EOF, or for a bad frame
    finally:
        ws.sock.close()
    return answered


@FUZZ
@given(wire_frames)
def test_live_server_survives_any_frames(live: LiveServer, frames: list[bytes]) -> None:
    """Any frames sent to a live server leave it serving well-behaved clients."""
    TRIED["live_frames"] += 1
    TRIED["live_frames_still_open"] += exchange(live.port, b"".join(frames))
    live.check()


@FUZZ
@given(st.lists(command_bytes, min_size=1, max_size=10))
def test_live_server_survives_any_commands(live: LiveServer, payloads: list[bytes]) -> None:
    """Any command texts sent to a live server leave it serving well-behaved clients."""
    TRIED["live_commands"] += 1
    TRIED["live_commands_still_open"] += exchange(
        live.port, b"".join(build_frame(0x1, p) for p in payloads)
    )
    live.check()


http_heads = st.one_of(
    st.binary(max_size=300).map(lambda b: b + b"\r\n\r\n"),
    st.builds(
        lambda method, target, headers: (
            f"{method} {target} HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers)
            + "\r\n"
        ).encode("utf-8", "surrogatepass"),
        st.sampled_from(["GET", "POST", "HEAD", "PUT", "", "G T"]),
        st.sampled_from(["/cable", "/health", "/", "cable", "/cable?user=x", "*"])
        | st.text(max_size=20),
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "Upgrade",
                        "Connection",
                        "Sec-WebSocket-Key",
                        "Sec-WebSocket-Version",
                        "Content-Length",
                        "Origin",
                        "Host",
                        "Transfer-Encoding",
                        "X",
                    ]
                )
                | st.text(max_size=10),
                st.sampled_from(
                    ["websocket", "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", "0", "-1"]
                )
                | st.text(max_size=20),
            ),
            max_size=8,
        ),
    ),
)


@FUZZ
@given(http_heads)
def test_live_server_survives_any_http_head(live: LiveServer, head: bytes) -> None:
    """Any HTTP request head sent to a live server gets an answer or a close, and the server goes on."""
    TRIED["live_http"] += 1
    ws = SyncWS.connect(live.port)
    try:
        ws.sock.sendall(head)
        ws.sock.shutdown(socket.SHUT_WR)  # no more coming: the server must not wait for it
        ws.sock.settimeout(2.0)
        try:
            first = ws.sock.recv(65536)
            if head.startswith(b"GET") and first.startswith(b"HTTP/1.1 101"):
                pass  # a valid upgrade by chance
            else:
                assert first == b"" or first.startswith(b"HTTP/1.1 "), first[:100]
        except TimeoutError:
            pass  # waiting for a body or the rest of the head: bounded by handshake_timeout
        except ConnectionError:
            pass
    finally:
        ws.sock.close()
    live.check()
