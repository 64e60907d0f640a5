"""Plain counters of one cable run, read by ``/metrics`` when it is scraped.

Every increment is an integer or float addition on the event loop thread: no lock, no
label lookup on the fan-out path (deliveries are counted once per broadcast group).
"""

from __future__ import annotations

from collections import Counter

__all__ = ["ACTION_BUCKETS", "LATENCY_BUCKETS", "ActionStats", "Stats"]

#: Upper bounds (seconds) of the action and publish duration histograms.
ACTION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Upper bounds (seconds) of the broadcast-to-write latency histogram.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ActionStats:
    """A histogram: count, total seconds and per-bucket counts (``bounds``)."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...] = ACTION_BUCKETS) -> None:
        self.bounds = bounds
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * len(bounds)

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.buckets[i] += 1
                break


class Stats:
    """What happened since the cable started (see ``docs/operations.md``)."""

    __slots__ = (
        "actions",
        "closed",
        "history_recoveries",
        "loop_lag",
        "loop_lag_max",
        "rejected_connections",
        "rejected_subscriptions",
        "resumed_sessions",
        "slow_consumers",
        "throttled_commands",
    )

    def __init__(self) -> None:
        #: Connections closed, by disconnect reason (``client``: the client left).
        self.closed: Counter[str] = Counter()
        #: Upgrades refused by admission, by HTTP status.
        self.rejected_connections: Counter[int] = Counter()
        self.rejected_subscriptions = 0
        self.slow_consumers = 0
        self.throttled_commands = 0
        self.resumed_sessions = 0
        #: History requests answered, by outcome (``confirmed``/``rejected``).
        self.history_recoveries: Counter[str] = Counter()
        #: (channel, action) -> its stats.
        self.actions: dict[tuple[str, str], ActionStats] = {}
        #: Seconds the event loop was late on its last check, and the worst since start.
        self.loop_lag = 0.0
        self.loop_lag_max = 0.0

    def action(self, channel: str, action: str, seconds: float) -> None:
        key = (channel, action)
        stats = self.actions.get(key)
        if stats is None:
            stats = self.actions[key] = ActionStats()
        stats.observe(seconds)
