"""Prometheus metrics of a cable, served at ``metrics_path`` (``/metrics``).

Values are read from the cable's plain counters when the endpoint is scraped (a pull
model: nothing on the fan-out path but integer additions). Rendering uses
``prometheus_client`` (``pip install 'cablecar[metrics]'``).

With ``cablecar serve --workers N`` every worker writes a snapshot of its counters to
the directory in ``CABLECAR_METRICS_DIR`` every ``SNAPSHOT_EVERY`` seconds; whichever
worker answers a scrape adds up the snapshots of the live workers (its own taken now),
so the figures cover the whole server, at most ``SNAPSHOT_EVERY`` seconds old for the
other workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._stats import ACTION_BUCKETS, LATENCY_BUCKETS

if TYPE_CHECKING:
    from .cable import Cable

__all__ = ["CONTENT_TYPE", "SNAPSHOT_EVERY", "render", "snapshot", "write_snapshot"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds between a worker's snapshots (``CABLECAR_METRICS_DIR``).
SNAPSHOT_EVERY = 2.0


def snapshot(cable: Cable) -> dict[str, Any]:
    """This process's figures as JSON-able values."""
    stats = cable.statistics()
    figures = cable.figures()
    return {"pid": os.getpid(), "time": time.time(), **stats, **figures}


def write_snapshot(cable: Cable, directory: str) -> None:
    """Write this worker's snapshot for the others to add up (atomically)."""
    path = Path(directory) / f"{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot(cable)))
    tmp.replace(path)


def _live(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


def _snapshots(cable: Cable) -> list[dict[str, Any]]:
    mine = snapshot(cable)
    found = [mine]
    directory = os.environ.get("CABLECAR_METRICS_DIR")
    if directory:
        for path in Path(directory).glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                pid = int(data.get("pid", 0))
                if pid != mine["pid"] and _live(pid):
                    found.append(data)
    return found


def _sum(values: Iterable[Any]) -> Any:
    values = list(values)
    if values and isinstance(values[0], dict):
        keys = {k for v in values for k in v}
        return {k: _sum(v[k] for v in values if k in v) for k in keys}
    if values and isinstance(values[0], list):
        return [_sum(col) for col in zip(*values, strict=False)]
    return sum(v for v in values if isinstance(v, int | float))


def render(cable: Cable) -> bytes:
    """The Prometheus text exposition of ``cable`` (and its sibling workers).

    Raises:
        ImportError: ``prometheus_client`` is not installed.
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    snaps = _snapshots(cable)
    total = _sum(snaps)
    lag_max = max(s.get("loop_lag_max", 0.0) for s in snaps)

    class _Collector:
        def collect(self) -> Iterator[Any]:
            def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
                return GaugeMetricFamily(name, doc, value=value)

            def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
                return CounterMetricFamily(name, doc, value=value)

            yield gauge("cablecar_workers", "Processes serving this cable", len(snaps))
            yield gauge("cablecar_connections", "Connections open (welcomed)", total["connections"])
            yield gauge("cablecar_sockets", "Sockets open, connect() included", total["sockets"])
            yield counter(
                "cablecar_connections_opened",
                "Connections opened since start",
                total["connections_total"],
            )
            closed = CounterMetricFamily(
                "cablecar_connections_closed", "Connections closed, by reason", labels=["reason"]
            )
            for reason, n in sorted(total["closed"].items()):
                closed.add_metric([reason], n)
            yield closed
            refused = CounterMetricFamily(
                "cablecar_connections_rejected",
                "Upgrades refused before a connection opened, by HTTP status",
                labels=["status"],
            )
            for status, n in sorted(total["rejected_connections"].items()):
                refused.add_metric([str(status)], n)
            yield refused
            subs = GaugeMetricFamily(
                "cablecar_subscriptions", "Subscriptions, by channel", labels=["channel"]
            )
            for channel, n in sorted(total["subscriptions_by_channel"].items()):
                subs.add_metric([channel], n)
            yield subs
            yield counter(
                "cablecar_subscriptions_rejected",
                "Subscriptions answered reject_subscription",
                total["rejected_subscriptions"],
            )
            yield gauge("cablecar_streams", "Streams with local subscribers", total["streams"])
            yield counter(
                "cablecar_broadcasts",
                "Broadcasts published by this cable",
                total["broadcasts_total"],
            )
            outbox = total.get("outbox") or {}
            yield gauge(
                "cablecar_outbox_waiting",
                "Broadcasts waiting for the pub/sub service",
                outbox.get("waiting", 0),
            )
            yield counter(
                "cablecar_outbox_overflowed",
                "Broadcasts refused with OutboxFull",
                outbox.get("overflowed", 0),
            )
            yield counter(
                "cablecar_outbox_expired",
                "Waiting broadcasts dropped after outbox_age",
                outbox.get("expired", 0),
            )
            yield counter(
                "cablecar_outbox_delivered_late",
                "Broadcasts that waited, then were published",
                outbox.get("delivered_late", 0),
            )
            yield counter(
                "cablecar_deliveries",
                "Broadcast messages written to clients",
                total["deliveries_total"],
            )
            yield counter(
                "cablecar_delivered_bytes",
                "JSON bytes of broadcast messages written",
                total["bytes_out"],
            )
            yield counter(
                "cablecar_slow_consumers",
                "Connections cut for not reading their output",
                total["slow_consumers"],
            )
            yield counter(
                "cablecar_throttled_commands",
                "Commands that waited for the rate limit",
                total["throttled_commands"],
            )
            yield counter(
                "cablecar_resumed_sessions",
                "Sessions resumed (history=True)",
                total["resumed_sessions"],
            )
            recoveries = CounterMetricFamily(
                "cablecar_history_recoveries", "History requests, by outcome", labels=["outcome"]
            )
            for outcome, n in sorted(total["history_recoveries"].items()):
                recoveries.add_metric([outcome], n)
            yield recoveries
            yield gauge(
                "cablecar_presence_records",
                "Presence records of connected sessions",
                total["presence_records"],
            )
            yield gauge(
                "cablecar_pubsub_subscribes_in_flight",
                "Adapter subscribes waiting for the broker (stuck: the broker is down)",
                total["subscribes_in_flight"],
            )
            yield gauge(
                "cablecar_pubsub_connected",
                "Workers whose pub/sub listener is connected",
                total["pubsub_connected"],
            )
            yield counter(
                "cablecar_pubsub_reconnects",
                "Times a pub/sub listener came back after losing the broker",
                total["pubsub_reconnects"],
            )
            count, seconds, buckets = total["publish"]
            publish = HistogramMetricFamily(
                "cablecar_publish_duration_seconds",
                "Broadcasts published by the cable and how long publishing took",
                labels=[],
            )
            publish.add_metric([], _cumulative(buckets, count), seconds)
            yield publish
            count, seconds, buckets = total["delivery_latency"]
            latency = HistogramMetricFamily(
                "cablecar_delivery_latency_seconds",
                "From cable.broadcast to the last socket write, one broadcast in 64",
                labels=[],
            )
            latency.add_metric([], _cumulative(buckets, count, LATENCY_BUCKETS), seconds)
            yield latency
            yield gauge(
                "cablecar_history_entries",
                "Broadcasts kept for recovery (history=True; in-process store only)",
                total["history_entries"],
            )
            yield gauge(
                "cablecar_event_loop_lag_seconds", "Last measured loop lag", total["loop_lag"]
            )
            yield gauge(
                "cablecar_event_loop_lag_max_seconds", "Worst loop lag since start", lag_max
            )
            actions = HistogramMetricFamily(
                "cablecar_action_duration_seconds",
                "Channel actions performed, by channel and action",
                labels=["channel", "action"],
            )
            for key, (count, seconds, buckets) in sorted(total["actions"].items()):
                channel, _, action = key.partition("#")
                actions.add_metric([channel, action], _cumulative(buckets, count), seconds)
            yield actions

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)


def _cumulative(
    buckets: list[int], count: int, bounds: tuple[float, ...] = ACTION_BUCKETS
) -> list[tuple[str, float]]:
    """Prometheus histogram buckets (cumulative, ``+Inf`` last) from per-bucket counts."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(bounds, buckets, strict=True):
        running += n
        out.append((str(bound), running))
    out.append(("+Inf", count))
    return out
