"""An echo server on cablecar's standalone transport, for the Autobahn|Testsuite.

The same upgrade, framing, UTF-8 checks, ping/pong and close paths as ``cablecar serve``;
only the session is replaced by one that sends every text and binary message back, as
the suite's testees do (python-websockets' own testee is the model).

    python tests/autobahn_testee.py PORT [MAX_MESSAGE_SIZE]
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from typing import Any

from cablecar import Cable, Request
from cablecar.transport import Sink
from cablecar.transports.standalone import serve
from cablecar.transports.standalone.framing import Opcode, build_frame


class EchoPort:
    """A :class:`~cablecar.transport.SessionPort` that echoes every message."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def start(self) -> None:
        pass

    def receive(self, data: bytes) -> None:
        self.sink.send(data)  # a text frame

    def receive_binary(self, data: bytes) -> None:
        self.sink.send_prepared(build_frame(Opcode.BINARY, data))

    def warn_once(self, kind: str, msg: str, *args: Any) -> None:
        pass

    def close(self, reason: str | None, reconnect: bool, code: int = 1000) -> None:
        self.sink.close(code)

    def fail(self, code: int) -> None:
        self.sink.close(code)

    def too_slow(self) -> None:
        self.sink.close(1008)

    def peer_closing(self) -> None:
        pass

    def transport_closed(self) -> None:
        pass


class EchoCable(Cable):
    """A cable whose sockets echo instead of speaking Action Cable."""

    def choose_subprotocol(self, offered: Iterable[str]) -> str | None:
        return None

    def open_session(self, sink: Sink, request: Request, subprotocol: str | None) -> Any:
        return EchoPort(sink)


async def main(port: int, max_size: int) -> None:
    cable = EchoCable(allowed_origins="*", max_message_size=max_size, mount_path="/",
                      max_pending_output=64 * max_size, metrics_path=None)  # fmt: skip
    server = await serve(cable, "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    port = int(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 32 * 1024 * 1024
    asyncio.run(main(port, size))
