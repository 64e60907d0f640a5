"""Mutation fuzzing at volume: the frame parser and the command decoder, a million inputs
each, then a live server fed mutated frame streams. Not a benchmark of speed: a count of
inputs tried and of failures (which must be zero). ``tests/test_fuzz.py`` runs the
property-based version, bounded, in ``make test``.

Inputs are valid seeds (WebSocket frames of every opcode, fragmented messages, Action
Cable and AnyCable commands) put through random mutations: bit flips, cut, inserted and
repeated slices, interesting bytes (``\\x00``, ``\\xff``, quotes, braces, huge lengths),
two seeds spliced. Fed in random chunk sizes.

* ``frame_parser``: ``FrameParser(1024).feed`` may yield frames (each within the limit)
  or raise ``FrameError`` with code 1002, 1007 or 1009; anything else is a failure.
* ``command_decoder``: ``parse_command`` returns a command or raises ``InvalidCommand``.
* ``live``: ``cablecar serve`` of the conformance app; each connection sends a stream of
  mutated frames (masked), then a well-behaved client must get its answer; at the end
  the server process is alive, answers ``/health`` and logged nothing at ERROR.

    .venv/bin/python benchmarks/fuzz.py                       # 1,000,000 + 1,000,000 + 2,000
    .venv/bin/python benchmarks/fuzz.py --inputs 20000 --live 50

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import REPO, emit, free_port, machine_info

from cablecar.errors import InvalidCommand
from cablecar.protocol import parse_command
from cablecar.transports.standalone.framing import FrameError, FrameParser

__all__ = ["fuzz_commands", "fuzz_frames", "fuzz_live", "main"]

APP = "examples/conformance_app.py:cable"
INTERESTING = [b"\x00", b"\xff", b'"', b"{", b"}", b"[", b"]", b"\\", b"\xc3", b"\xed\xa0\x80",
               b"\x7f\xff\xff\xff\xff\xff\xff\xff", b"\xfe\xff", b"9" * 30, b"null", b",", b":"]  # fmt: skip


def frame(
    opcode: int, payload: bytes, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, mask | n))
    elif n < 65536:
        head = bytes((b0, mask | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mask | 127)) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


IDENT = json.dumps({"channel": "ChatChannel", "room": "fuzz"})
COMMANDS = [
    json.dumps(c).encode()
    for c in (
        {"command": "subscribe", "identifier": IDENT},
        {"command": "unsubscribe", "identifier": IDENT},
        {"command": "message", "identifier": IDENT, "data": json.dumps({"action": "speak", "body": "hi"})},
        {"command": "message", "identifier": IDENT, "data": json.dumps({"body": "no action"})},
        {"command": "subscribe", "identifier": IDENT, "history": {"since": 1, "streams": {"chat_fuzz": {"epoch": "e", "offset": 3}}}},
        {"command": "history", "identifier": IDENT, "history": {"since": 0}},
        {"command": "whisper", "identifier": IDENT, "data": {"typing": True}},
        {"command": "join", "identifier": IDENT, "presence": {"id": "1", "info": {"n": 1}}},
        {"command": "leave", "identifier": IDENT},
        {"command": "presence", "identifier": IDENT},
        {"command": "pong"},
        {"command": "ping"},
    )
]  # fmt: skip


def frame_seeds(rng: random.Random) -> list[bytes]:
    text = rng.choice(COMMANDS)
    half = len(text) // 2
    return [
        frame(0x1, text),
        frame(0x2, os.urandom(rng.randint(0, 40))),
        frame(0x9, b"ping"),
        frame(0xA, b""),
        frame(0x8, struct.pack("!H", 1000) + b"bye"),
        frame(0x1, text[:half], fin=False) + frame(0x9, b"") + frame(0x0, text[half:]),
        frame(0x1, "é€😀".encode()[:5], fin=False) + frame(0x0, "é€😀".encode()[5:]),
        frame(0x1, b"x" * 300),
    ]


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        n = len(buf)
        if op == 0 and n:  # flip bits
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # cut a slice
            i = rng.randrange(n)
            del buf[i : i + rng.randint(1, 16)]
        elif op == 2:  # insert random bytes
            i = rng.randint(0, n)
            buf[i:i] = os.urandom(rng.randint(1, 8))
        elif op == 3:  # insert an interesting token
            i = rng.randint(0, n)
            buf[i:i] = rng.choice(INTERESTING)
        elif op == 4 and n:  # repeat a slice
            i = rng.randrange(n)
            piece = buf[i : i + rng.randint(1, 32)]
            buf[i:i] = piece * rng.randint(1, 4)
        elif op == 5:  # splice another seed
            other = rng.choice(pool)
            buf = buf[: rng.randint(0, n)] + other[rng.randint(0, len(other)) :]
        elif op == 6 and n:  # truncate
            del buf[rng.randint(0, n) :]
    return bytes(buf)


def fuzz_frames(n: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    failures: list[str] = []
    frames = errors = 0
    started = time.perf_counter()
    pool = frame_seeds(rng)
    for i in range(n):
        if i % 1000 == 0:
            pool = frame_seeds(rng)
        data = mutate(rng.choice(pool), rng, pool)
        parser = FrameParser(1024)
        pos = 0
        try:
            while pos < len(data):
                step = rng.choice((1, 2, 3, 7, 64, 4096))
                for f in parser.feed(data[pos : pos + step]):
                    frames += 1
                    if len(f.payload) > 1024:
                        failures.append(f"frame over the limit: {len(f.payload)} bytes")
                pos += step
        except FrameError as exc:
            errors += 1
            if exc.code not in (1002, 1007, 1009):
                failures.append(f"FrameError with code {exc.code}")
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc} on {base64.b64encode(data).decode()}")
    elapsed = time.perf_counter() - started
    return {"inputs": n, "frames": frames, "frame_errors": errors, "failures": len(failures),
            "first_failures": failures[:5], "inputs_per_s": round(n / elapsed)}  # fmt: skip


def fuzz_commands(n: int, seed: int = 2) -> dict[str, Any]:
    rng = random.Random(seed)
    failures: list[str] = []
    parsed = invalid = 0
    started = time.perf_counter()
    for _ in range(n):
        data = mutate(rng.choice(COMMANDS), rng, COMMANDS)
        try:
            parse_command(data)
            parsed += 1
        except InvalidCommand:
            invalid += 1
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc} on {data[:200]!r}")
    elapsed = time.perf_counter() - started
    return {"inputs": n, "parsed": parsed, "invalid": invalid, "failures": len(failures),
            "first_failures": failures[:5], "inputs_per_s": round(n / elapsed)}  # fmt: skip


def _handshake(port: int, protocol: str = "actioncable-v1-ext-json") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (f"GET /cable?user=fuzz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
         f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n").encode()
    )  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head[:40].decode(errors="replace"))
    return sock


def _answered(port: int) -> bool:
    """A well-behaved client connects and is welcomed."""
    try:
        sock = _handshake(port, "actioncable-v1-json")
        data = b""
        while b"welcome" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
        sock.close()
        return True
    except OSError:
        return False


def fuzz_live(connections: int, per_connection: int = 50, seed: int = 3) -> dict[str, Any]:
    rng = random.Random(seed)
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="cablecar-fuzz-")) / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cablecar", "serve", APP, "--port", str(port)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "CABLE_HISTORY": "1"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not _answered(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the server did not start: {log}")
            time.sleep(0.1)
        sent = unanswered = 0
        started = time.perf_counter()
        for c in range(connections):
            try:
                sock = _handshake(port)
            except (OSError, ConnectionError):
                unanswered += 1
                continue
            pool = [frame(0x1, cmd) for cmd in COMMANDS] + frame_seeds(rng)
            stream = b"".join(mutate(rng.choice(pool), rng, pool) for _ in range(per_connection))
            sent += per_connection
            try:
                sock.sendall(stream)
                sock.shutdown(socket.SHUT_WR)  # done sending: the server closes in turn
                sock.settimeout(2.0)
                while sock.recv(65536):
                    pass
            except OSError:
                pass  # the server closed it first (a protocol error): expected
            finally:
                sock.close()
            if c % 50 == 0 and not _answered(port):
                unanswered += 1
        alive = proc.poll() is None and _answered(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as reply:
            health = json.loads(reply.read())
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(20)
    errors = [line for line in log.read_text(errors="replace").splitlines() if " ERROR " in line]
    return {"connections": connections, "frames": sent, "server_alive": alive,
            "health_status": health.get("status"), "unanswered_checks": unanswered,
            "error_log_lines": len(errors), "first_errors": errors[:5],
            "failures": int(not alive) + unanswered + len(errors),
            "frames_per_s": round(sent / elapsed), "exit_code": proc.returncode}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000, help="per offline target")
    ap.add_argument("--live", type=int, default=2000, help="connections to the live server")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    result = {
        "scenario": "fuzz",
        "frame_parser": fuzz_frames(a.inputs),
        "command_decoder": fuzz_commands(a.inputs),
        "live": fuzz_live(a.live),
        "machine": machine_info(),
    }
    result["failures"] = sum(
        result[k]["failures"] for k in ("frame_parser", "command_decoder", "live")
    )
    emit(result, a.out)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
