"""What an operator sees: Prometheus metrics that match what clients did, Rails-like
activity logs with filtered parameters, JSON logs, and instrumentation hooks."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from cablecar import Cable, instrumentation

from .conftest import TIMEOUT, ConnectWS, free_port
from .core import ChatChannel, UserConnection
from .servers import ROOT

ROOM = '{"channel":"ChatChannel","room":"1"}'


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` parsed with prometheus_client: {sample name: {labels: value}}."""
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        text = answer.read().decode()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(metrics: dict[str, Any], name: str, **labels: str) -> float:
    return metrics[name][tuple(sorted(labels.items()))]  # type: ignore[no-any-return]


async def test_metrics_count_what_clients_did(cablecar_server: Any, ws_connect: ConnectWS) -> None:
    """Ten clients subscribe, one speaks five times, one leaves, one is refused: the
    scraped figures say exactly that."""
    cable = Cable(UserConnection, [ChatChannel], allowed_origins=["http://ok.test"])
    server = await cablecar_server(cable)
    clients = [await ws_connect(f"{server.url}?user=u{i}") for i in range(10)]
    for ws in clients:
        await ws.subscribe(ROOM)
    for n in range(5):
        await clients[0].perform(ROOM, "speak", body=f"m{n}")
    for ws in clients:
        for _ in range(5):
            await ws.recv_until(lambda m: "message" in m)
    await clients[9].close()
    with pytest.raises(InvalidStatus):
        await ws_connect(server.url, headers={"Origin": "http://evil.test"})
    base = server.url.replace("ws://", "http://").replace("/cable", "")
    async with asyncio.timeout(TIMEOUT):
        while (m := await asyncio.to_thread(scrape, base + "/metrics")) and value(
            m, "cablecar_connections"
        ) != 9:
            await asyncio.sleep(0.05)
    assert value(m, "cablecar_connections_opened_total") == 10
    assert value(m, "cablecar_connections_closed_total", reason="client") == 1
    assert value(m, "cablecar_connections_rejected_total", status="403") == 1
    assert value(m, "cablecar_subscriptions", channel="ChatChannel") == 9
    assert value(m, "cablecar_broadcasts_total") == 5
    assert value(m, "cablecar_deliveries_total") == 50
    assert (
        value(m, "cablecar_action_duration_seconds_count", channel="ChatChannel", action="speak")
        == 5
    )
    assert value(m, "cablecar_streams") == 1
    assert value(m, "cablecar_workers") == 1
    assert value(m, "cablecar_publish_duration_seconds_count") == 5
    assert value(m, "cablecar_delivery_latency_seconds_count") >= 1  # 1 broadcast in 64
    # each sampled latency is publish-to-last-write: well under a second here
    assert value(m, "cablecar_delivery_latency_seconds_sum") < 1.0
    assert value(m, "cablecar_pubsub_connected") == 1


async def test_metrics_count_a_slow_consumer_cut(cablecar_server: Any) -> None:
    """A client that never reads is cut as too slow: the scrape counts the cut and the
    close reason."""
    from .rawws import RawWS

    cable = Cable(UserConnection, [ChatChannel], max_pending_output=64 * 1024)
    server = await cablecar_server(cable)
    port = int(server.url.split(":")[2].split("/")[0])
    ws = await RawWS.open(port, "/cable?user=sloth", rcvbuf=4096)
    ws.subscribe(ROOM)
    await ws.recv_until(lambda m: m.get("type") == "confirm_subscription")
    base = server.url.replace("ws://", "http://").replace("/cable", "")
    async with asyncio.timeout(TIMEOUT * 2):
        while True:
            await cable.broadcast("chat_1", {"body": "x" * 32_000})
            m = await asyncio.to_thread(scrape, base + "/metrics")
            if value(m, "cablecar_slow_consumers_total") == 1:
                break
    assert value(m, "cablecar_connections_closed_total", reason="too_slow") == 1
    ws.close()


async def test_metrics_from_the_asgi_mount(ws_connect: ConnectWS) -> None:
    """The same endpoint on the ASGI transport (uvicorn)."""
    from .asgi_servers import InProcessServer

    cable = Cable(UserConnection, [ChatChannel])
    server = await InProcessServer.start(cable.asgi(), "uvicorn")
    try:
        ws = await ws_connect(server.url + "?user=a")
        await ws.subscribe(ROOM)
        await cable.broadcast("chat_1", {"body": "x"})
        await ws.recv_until(lambda m: "message" in m)
        base = server.url.replace("ws://", "http://").replace("/cable", "")
        m = await asyncio.to_thread(scrape, base + "/metrics")
        assert value(m, "cablecar_connections") == 1
        assert value(m, "cablecar_deliveries_total") == 1
    finally:
        await server.stop()


@pytest.mark.services
def test_metrics_add_up_across_workers(redis_server: Any, tmp_path: Any) -> None:
    """With --workers 2, whichever worker answers reports both: two workers, and the
    connections held by either."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cablecar", "serve", "examples/conformance_app.py:cable",
         "--port", str(port), "--workers", "2", "--pubsub", redis_server.url,
         "--log-level", "warning"],
        cwd=ROOT,
    )  # fmt: skip
    try:

        async def run() -> None:
            from websockets.asyncio.client import connect

            url = f"http://127.0.0.1:{port}/metrics"
            async with asyncio.timeout(30):
                while True:
                    try:
                        m = await asyncio.to_thread(scrape, url)
                        if value(m, "cablecar_workers") == 2:
                            break
                    except OSError:
                        pass
                    await asyncio.sleep(0.2)
            socks = [
                await connect(f"ws://127.0.0.1:{port}/cable?user=w{i}",
                              subprotocols=["actioncable-v1-json"])  # type: ignore[list-item]
                for i in range(12)
            ]  # fmt: skip
            try:
                async with asyncio.timeout(30):
                    while True:  # snapshots of the other worker are at most 2 s old
                        m = await asyncio.to_thread(scrape, url)
                        if value(m, "cablecar_connections") == 12:
                            break
                        await asyncio.sleep(0.3)
            finally:
                for s in socks:
                    await s.close()

        asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(30)


async def test_activity_log_reads_like_rails(
    cablecar_server: Any, ws_connect: ConnectWS, caplog: pytest.LogCaptureFixture
) -> None:
    """Subscribe, an action with a password, a broadcast and a disconnect leave the
    lines a Rails developer knows, with the password filtered."""
    caplog.set_level(logging.INFO, logger="cablecar")
    cable = Cable(UserConnection, [ChatChannel])
    server = await cablecar_server(cable)
    ws = await ws_connect(server.url + "?user=bob", headers={"X-Request-ID": "req-42"})
    await ws.subscribe(ROOM)
    await ws.perform(ROOM, "speak", body="hi", password="hunter2")
    await ws.recv_until(lambda m: "message" in m)
    await ws.close()
    async with asyncio.timeout(TIMEOUT):
        while "Finished" not in caplog.text:
            await asyncio.sleep(0.02)
    text = caplog.text
    print(text)
    assert "Successfully upgraded to WebSocket" in text
    assert "ChatChannel is streaming from chat_1" in text
    assert "ChatChannel is transmitting the subscription confirmation" in text
    assert 'ChatChannel#speak({"action"=>"speak", "body"=>"hi", "password"=>"[FILTERED]"})' in text
    assert "hunter2" not in text
    assert 'Finished "/cable" [WebSocket]' in text
    assert "<connection bob from 127.0.0.1" in text and "request req-42>" in text


def test_json_log_format_is_one_object_per_line(tmp_path: Any) -> None:
    """cablecar serve --log-format json writes lines that each parse as JSON."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cablecar", "serve", "examples/conformance_app.py:cable",
         "--port", str(port), "--log-format", "json"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        async def touch() -> None:
            from websockets.asyncio.client import connect

            async with asyncio.timeout(30):
                while True:
                    try:
                        ws = await connect(
                            f"ws://127.0.0.1:{port}/cable?user=j",
                            subprotocols=["actioncable-v1-json"],  # type: ignore[list-item]
                        )
                        break
                    except OSError:
                        await asyncio.sleep(0.1)
            await ws.recv()
            await ws.close()
            await asyncio.sleep(0.3)

        asyncio.run(touch())
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    lines = [line for line in err.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any(r["message"].endswith("Successfully upgraded to WebSocket (protocol actioncable-v1-json)")
               for r in records), lines  # fmt: skip
    assert {"time", "level", "logger", "message"} <= set(records[0])


async def test_hooks_see_each_event(cablecar_server: Any, ws_connect: ConnectWS) -> None:
    """A subscriber to each instrumentation event receives its payload."""
    seen: list[tuple[str, dict[str, Any]]] = []
    unsubscribes = [
        instrumentation.subscribe(event, lambda e, p: seen.append((e, p)))
        for event in instrumentation.EVENTS
    ]
    try:
        cable = Cable(UserConnection, [ChatChannel])
        server = await cablecar_server(cable)
        ws = await ws_connect(server.url + "?user=hooked")
        await ws.subscribe(ROOM)
        await ws.subscribe('{"channel":"Nope"}')
        await ws.perform(ROOM, "speak", body="hi", token="t")
        await ws.recv_until(lambda m: "message" in m)
        await ws.close()
        async with asyncio.timeout(TIMEOUT):
            while not any(e == "disconnect" for e, _ in seen):
                await asyncio.sleep(0.02)
    finally:
        for unsubscribe in unsubscribes:
            unsubscribe()
    events = {e: p for e, p in seen}
    assert events["connect"]["connection"].user == "hooked"
    assert events["transmit_subscription_confirmation"] == {
        "channel": "ChatChannel",
        "identifier": ROOM,
    }
    action = events["perform_action"]
    assert (action["channel"], action["action"]) == ("ChatChannel", "speak")
    assert action["data"]["token"] == "[FILTERED]" and action["duration"] >= 0
    assert events["broadcast"]["stream"] == "chat_1"
    assert events["broadcast"]["message"] == {"body": "hi"}
    assert events["disconnect"]["connection"].user == "hooked"
    with pytest.raises(ValueError, match="unknown event"):
        instrumentation.subscribe("nope", lambda e, p: None)


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_under_an_asgi_server_cablecar_logs_show_level_and_logger(
    server: str, tmp_path: Any
) -> None:
    """Under uvicorn or Granian with no logging set up, cablecar's INFO lines appear,
    with their level and logger name."""
    from .asgi_servers import ASGIProcess

    log = tmp_path / "server.log"
    proc = ASGIProcess(free_port(), server, log=log).start()
    try:

        async def touch() -> None:
            from websockets.asyncio.client import connect

            ws = await connect(
                proc.url + "?user=seen",
                subprotocols=["actioncable-v1-json"],  # type: ignore[list-item]
            )
            await ws.recv()
            await ws.close()

        asyncio.run(touch())
    finally:
        proc.stop()  # SIGTERM: the server flushes its log as it stops
    text = log.read_text()
    assert "INFO:     cablecar.session: <connection seen from" in text, text[-2000:]


@pytest.mark.services
async def test_ready_turns_false_while_the_broker_is_down(cablecar_server: Any) -> None:
    """/ready answers 503 while Redis is down (the server stays alive: /health 200), 200
    again once the listener is back; the metrics count the reconnect."""
    from .services import RedisServer

    redis = RedisServer()
    redis.start()
    try:
        cable = Cable(UserConnection, [ChatChannel], redis.url)
        server = await cablecar_server(cable)
        base = server.url.replace("ws://", "http://").replace("/cable", "")

        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(base + path, timeout=TIMEOUT) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        async def wait_ready(expected: int) -> None:
            async with asyncio.timeout(TIMEOUT * 3):
                while await asyncio.to_thread(status, "/ready") != expected:
                    await asyncio.sleep(0.1)

        await wait_ready(200)
        redis.stop()
        await wait_ready(503)
        assert await asyncio.to_thread(status, "/health") == 200
        redis.start()
        await wait_ready(200)
        m = await asyncio.to_thread(scrape, base + "/metrics")
        assert value(m, "cablecar_pubsub_connected") == 1
        assert value(m, "cablecar_pubsub_reconnects_total") == 1
    finally:
        redis.close()
