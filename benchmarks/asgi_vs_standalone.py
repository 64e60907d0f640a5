"""Fan-out through the ASGI transport (uvicorn, Granian) versus the standalone server.

One run, the same cable, the same client: N subscribers on one stream; a control
connection asks the server for a burst of B broadcasts (the channel broadcasts them in a
loop on the server, yielding to the event loop after each one); the clients count every
delivery. Reported per server: deliveries per second (first to last delivery of the
burst, all N x B counted) and the server's CPU time per delivery (from /proc).

    .venv/bin/python benchmarks/asgi_vs_standalone.py --clients 1000 --burst 200 --rounds 3

The client is one Python process of raw sockets (uvloop): it does the WebSocket
handshake itself, offers no extensions and counts deliveries with ``bytes.count`` on the
raw stream, so it stays cheaper than the servers it measures. ``uvicorn-deflate`` is
uvicorn again with the client offering permessage-deflate, as every browser does (uvicorn
accepts it by default; the standalone server and Granian do not compress). Prints one
JSON line per server, then a summary table.

The module is also the server app: ``cable`` (standalone) and ``asgi_app()`` (factory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from _common import RawSubscriber, client_frame, event_loop_runner, free_port

from cablecar import Cable, Channel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STREAM = "bench"
IDENT = '{"channel":"BenchChannel"}'
MARK = b'"bench":'
#: What browsers offer; only the "uvicorn-deflate" run sends it.
EXTENSION = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


class BenchChannel(Channel):
    async def subscribed(self) -> None:
        self.stream_from(STREAM)

    async def burst(self, data: dict[str, Any]) -> None:
        pad = "x" * int(data.get("size", 64))
        for i in range(int(data["n"])):
            await self.cable.broadcast(STREAM, {"bench": i, "pad": pad})
            await asyncio.sleep(0)  # as broadcasts arriving from a pub/sub service would


cable = Cable(channels=[BenchChannel], max_connections=100_000, command_burst=10_000)


def asgi_app() -> Any:
    """Factory for uvicorn/Granian ``--factory``."""
    return cable.asgi()


# -- servers ------------------------------------------------------------------------------


def server_command(kind: str, port: int) -> list[str]:
    py = sys.executable
    if kind == "standalone":
        return [py, "-m", "cablecar", "serve", f"{__file__}:cable", "--port", str(port)]
    if kind in ("uvicorn", "uvicorn-deflate"):
        return [
            *(py, "-m", "uvicorn", "--factory", "asgi_vs_standalone:asgi_app"),
            *("--app-dir", str(HERE), "--ws", "websockets-sansio", "--port", str(port)),
            # The raw client answers no pings: keep uvicorn's keepalive from cutting it.
            *("--log-level", "warning", "--ws-ping-interval", "0"),
        ]
    if kind == "granian":
        return [
            *(py, "-m", "granian", "--interface", "asgi", "--factory"),
            *("asgi_vs_standalone:asgi_app", "--port", str(port), "--log-level", "warning"),
        ]
    raise ValueError(kind)


def cpu_seconds(pid: int) -> float:
    """User+system CPU of ``pid`` and its children (Granian runs a worker process)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def start_server(kind: str, port: int) -> subprocess.Popen[bytes]:
    """Start a server of ``kind`` on ``port`` (this folder and ``src`` on its Python path,
    output discarded, in its own session); it may not be listening yet (:func:`wait_port`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "src")])}
    return subprocess.Popen(
        server_command(kind, port),
        cwd=HERE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server on port {port} did not start")


# -- the client ---------------------------------------------------------------------------


class _Client(RawSubscriber):
    """Counts the deliveries (``MARK``) in the whole stream after the upgrade; with
    ``deflate`` it offers permessage-deflate and inflates what arrives."""

    def __init__(self, port: int, deflate: bool = False) -> None:
        super().__init__(port)
        self.deflate = deflate
        self.extra_headers = EXTENSION if deflate else b""
        self.inflater = zlib.decompressobj(-15)
        self.buf = b""
        self.tail = b""
        self.count = 0

    def stream_received(self, data: bytes) -> None:
        if self.deflate:
            data = self._inflate(data)
        chunk = self.tail + data
        if not self.confirmed.done() and b"confirm_subscription" in chunk:
            self.confirmed.set_result(None)
        # Count deliveries in the raw stream; keep a tail for markers cut between reads.
        self.count += chunk.count(MARK) - self.tail.count(MARK)
        self.tail = chunk[-16:]

    def _inflate(self, data: bytes) -> bytes:
        """Frames in, their (decompressed) payloads out: what a browser's deflate costs
        the client is paid here, not by the server."""
        buf = self.buf + data
        out = []
        while len(buf) >= 2:
            b0, n = buf[0], buf[1] & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < pos + n:
                break
            payload = buf[pos : pos + n]
            buf = buf[pos + n :]
            if b0 & 0x40:  # RSV1: compressed
                payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
            out.append(payload)
        self.buf = buf
        return b"".join(out)


async def _open(port: int, deflate: bool) -> _Client:
    client: _Client = await _Client.open(port, IDENT, deflate=deflate)
    return client


async def burst_once(
    clients: list[_Client], pid: int, n: int, size: int, timeout: float = 120.0
) -> tuple[int, int, float, float]:
    """Ask the server (through ``clients[0]``) for a burst of ``n`` broadcasts and count
    them at every client: (deliveries counted, expected, seconds from the first to the
    last delivery, server CPU seconds)."""
    control = clients[0]
    base = sum(c.count for c in clients)
    want = base + n * len(clients)
    cpu0 = cpu_seconds(pid)
    data = json.dumps({"action": "burst", "n": n, "size": size})
    msg = {"command": "message", "identifier": IDENT, "data": data}
    control.transport.write(client_frame(json.dumps(msg)))  # type: ignore[union-attr]
    first = None
    deadline = time.monotonic() + timeout
    while True:
        got = sum(c.count for c in clients)
        if first is None and got > base:
            first = time.perf_counter()
        if got >= want or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    used = cpu_seconds(pid) - cpu0
    await asyncio.sleep(0.05)  # a late delivery would show as one too many
    got = sum(c.count for c in clients)
    return got - base, want - base, elapsed, used


async def measure(kind: str, port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    sem = asyncio.Semaphore(100)

    async def one() -> _Client:
        async with sem:
            return await _open(port, kind.endswith("-deflate"))

    clients = await asyncio.gather(*(one() for _ in range(args.clients)))
    control = clients[0]
    assert control.transport is not None
    rates: list[float] = []
    cpu: list[float] = []

    async def burst(n: int) -> tuple[float, float]:
        got, want, elapsed, used = await burst_once(clients, pid, n, args.size)
        if got < want:
            raise RuntimeError(f"{kind}: {got} of {want} deliveries arrived")
        return want / max(elapsed, 1e-9), used / want

    await burst(20)  # warm-up
    for _ in range(args.rounds):
        rate, per = await burst(args.burst)
        rates.append(rate)
        cpu.append(per)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    return {
        "server": kind,
        "clients": args.clients,
        "burst": args.burst,
        "payload_bytes": args.size,
        "deliveries_per_s": round(statistics.median(rates)),
        "deliveries_per_s_rounds": [round(r) for r in rates],
        "server_cpu_us_per_delivery": round(statistics.median(cpu) * 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=200, help="broadcasts per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=64, help="padding bytes per message")
    parser.add_argument("--servers", default="standalone,uvicorn,granian,uvicorn-deflate")
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = []
    for kind in args.servers.split(","):
        port = free_port()
        proc = start_server(kind, port)
        try:
            wait_port(port)
            with event_loop_runner() as runner:
                result = runner.run(measure(kind, port, proc.pid, args))
            print(json.dumps(result), flush=True)
            results.append(result)
        finally:
            stop_server(proc)
    base = next((r for r in results if r["server"] == "standalone"), None)
    print(f"\n{'server':<12} {'deliveries/s':>14} {'vs standalone':>14} {'CPU us/delivery':>16}")
    for r in results:
        ratio = f"{r['deliveries_per_s'] / base['deliveries_per_s']:.2f}x" if base else "-"
        print(
            f"{r['server']:<12} {r['deliveries_per_s']:>14,} {ratio:>14} "
            f"{r['server_cpu_us_per_delivery']:>16}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
