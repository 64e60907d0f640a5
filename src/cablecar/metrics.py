"""Prometheus metrics of a cable, served at ``metrics_path`` (``/metrics``).

Values are read from the cable's plain counters when the endpoint is scraped (a pull
model: nothing on the fan-out path but integer additions). Rendering uses
``prometheus_client`` (``pip install 'cablecar-py[metrics]'``).

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


#: Metrics with one value: (kind, name, help, key in the summed figures).
_METRICS = (
    ("gauge", "cablecar_workers", "Processes serving this cable", "workers"),
    ("gauge", "cablecar_connections", "Connections open (welcomed)", "connections"),
    ("gauge", "cablecar_sockets", "Sockets open, connect() included", "sockets"),
    ("counter", "cablecar_connections_opened", "Connections opened since start", "connections_total"),
    ("counter", "cablecar_subscriptions_rejected", "Subscriptions answered reject_subscription", "rejected_subscriptions"),
    ("gauge", "cablecar_streams", "Streams with local subscribers", "streams"),
    ("counter", "cablecar_broadcasts", "Broadcasts published by this cable", "broadcasts_total"),
    ("gauge", "cablecar_outbox_waiting", "Broadcasts waiting for the pub/sub service", "outbox_waiting"),
    ("counter", "cablecar_outbox_overflowed", "Broadcasts refused with OutboxFull", "outbox_overflowed"),
    ("counter", "cablecar_outbox_expired", "Waiting broadcasts dropped after outbox_age", "outbox_expired"),
    ("counter", "cablecar_outbox_delivered_late", "Broadcasts that waited, then were published", "outbox_delivered_late"),
    ("counter", "cablecar_deliveries", "Broadcast messages written to clients", "deliveries_total"),
    ("counter", "cablecar_delivered_bytes", "JSON bytes of broadcast messages written", "bytes_out"),
    ("counter", "cablecar_slow_consumers", "Connections cut for not reading their output", "slow_consumers"),
    ("counter", "cablecar_throttled_commands", "Commands that waited for the rate limit", "throttled_commands"),
    ("counter", "cablecar_resumed_sessions", "Sessions resumed (history=True)", "resumed_sessions"),
    ("gauge", "cablecar_presence_records", "Presence records of connected sessions", "presence_records"),
    ("gauge", "cablecar_pubsub_subscribes_in_flight", "Adapter subscribes waiting for the broker (stuck: the broker is down)", "subscribes_in_flight"),
    ("gauge", "cablecar_pubsub_connected", "Workers whose pub/sub listener is connected", "pubsub_connected"),
    ("counter", "cablecar_pubsub_reconnects", "Times a pub/sub listener came back after losing the broker", "pubsub_reconnects"),
    ("gauge", "cablecar_history_entries", "Broadcasts kept for recovery (history=True; in-process store only)", "history_entries"),
    ("gauge", "cablecar_event_loop_lag_seconds", "Last measured loop lag", "loop_lag"),
    ("gauge", "cablecar_event_loop_lag_max_seconds", "Worst loop lag since start", "loop_lag_max"),
)  # fmt: skip

#: Metrics by one label: (kind, name, help, label, key of a {label value: n} figure).
_LABELLED = (
    ("counter", "cablecar_connections_closed", "Connections closed, by reason", "reason", "closed"),
    ("counter", "cablecar_connections_rejected", "Upgrades refused before a connection opened, by HTTP status", "status", "rejected_connections"),
    ("gauge", "cablecar_subscriptions", "Subscriptions, by channel", "channel", "subscriptions_by_channel"),
    ("counter", "cablecar_history_recoveries", "History requests, by outcome", "outcome", "history_recoveries"),
)  # fmt: skip

#: Histograms without labels: (name, help, key of a (count, seconds, buckets) figure, bounds).
_HISTOGRAMS = (
    ("cablecar_publish_duration_seconds",
     "Broadcasts published by the cable and how long publishing took", "publish",
     ACTION_BUCKETS),
    ("cablecar_delivery_latency_seconds",
     "From cable.broadcast to the last socket write, one broadcast in 64", "delivery_latency",
     LATENCY_BUCKETS),
)  # fmt: skip


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
    values = {
        **total,
        "workers": len(snaps),
        "loop_lag_max": max(s.get("loop_lag_max", 0.0) for s in snaps),
        **{f"outbox_{k}": v for k, v in (total.get("outbox") or {}).items()},
    }
    kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}

    def histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
        return HistogramMetricFamily(name, doc, labels=labels)

    class _Collector:
        def collect(self) -> Iterator[Any]:
            for kind, name, doc, key in _METRICS:
                yield kinds[kind](name, doc, value=values.get(key, 0))
            for kind, name, doc, label, key in _LABELLED:
                metric = kinds[kind](name, doc, labels=[label])
                for value, n in sorted(values[key].items()):
                    metric.add_metric([str(value)], n)
                yield metric
            for name, doc, key, bounds in _HISTOGRAMS:
                count, seconds, buckets = values[key]
                metric = histogram(name, doc, [])
                metric.add_metric([], _cumulative(buckets, count, bounds), seconds)
                yield metric
            actions = histogram(
                "cablecar_action_duration_seconds",
                "Channel actions performed, by channel and action",
                ["channel", "action"],
            )
            for key, (count, seconds, buckets) in sorted(values["actions"].items()):
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
