"""Liveness and reconnection timing: the client's ``ConnectionMonitor``.

The official JS client (``connection_monitor.js``) considers a connection stale when nothing
has arrived for 6 seconds (two missed 3-second pings; since Rails 7.2 *any* message counts),
and reopens it with an exponential backoff plus jitter so that thousands of clients dropped
by one server restart do not come back in the same millisecond.

Here the same two ideas are split in two small values:

* :class:`ConnectionMonitor` records when the last frame arrived and says how long the reader
  may still wait before the connection counts as stale. The reader waits exactly that long
  (rather than polling every 6-28 s as the JS client does), so a dead connection is noticed
  ``stale_threshold`` seconds after its last frame.
* :class:`Backoff` computes the delay before reconnect attempt *n*: ``initial * factor**n``,
  capped at ``maximum``, then stretched by a random ``[0, jitter)`` fraction.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

__all__ = ["STALE_THRESHOLD", "Backoff", "ConnectionMonitor"]

#: Seconds without any frame after which the connection is stale (``staleThreshold``).
STALE_THRESHOLD = 6.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnect attempts: exponential, capped, with jitter.

    Attributes:
        initial: seconds before the first attempt after a connection is lost
            (the JS client's ``reopenDelay`` is 0.5 s).
        factor: growth per failed attempt.
        maximum: the cap, before jitter.
        jitter: each delay is multiplied by ``1 + uniform(0, jitter)``.

    Example:
        >>> Backoff(initial=1.0, factor=2.0, maximum=5.0, jitter=0.0).delay(3)
        5.0
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.jitter < 0 or self.factor < 1:
            raise ValueError(f"invalid backoff: {self!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt ``attempt`` (0 for the first).

        Args:
            attempt: how many attempts have failed since the last good connection.

        Returns:
            The delay, jitter included.
        """
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return base * (1.0 + random.uniform(0.0, self.jitter))  # jitter, not crypto


@dataclass(slots=True)
class ConnectionMonitor:
    """Tracks frames and reconnect attempts of one consumer.

    Attributes:
        stale_threshold: seconds without any frame after which the connection is stale.
        backoff: the reconnect delays.
        attempts: reconnect attempts since the last ``welcome`` (reset by
            :meth:`record_connect`, as ``recordConnect`` does in the JS client).
        last_frame_at: monotonic time of the last frame (or of the connection's start).
    """

    stale_threshold: float = STALE_THRESHOLD
    backoff: Backoff = field(default_factory=Backoff)
    attempts: int = 0
    last_frame_at: float = field(default_factory=time.monotonic)

    def record_open(self) -> None:
        """A socket opened: its age counts from now."""
        self.last_frame_at = time.monotonic()

    def record_frame(self) -> None:
        """A frame arrived (any frame counts, as in Rails 7.2+)."""
        self.last_frame_at = time.monotonic()

    def record_connect(self) -> None:
        """``welcome`` arrived: the connection is good, so backoff starts over."""
        self.attempts = 0
        self.record_frame()

    def time_left(self) -> float:
        """Seconds until the connection becomes stale (may be negative)."""
        return self.last_frame_at + self.stale_threshold - time.monotonic()

    def next_delay(self) -> float:
        """The delay before the next reconnect attempt; counts the attempt."""
        delay = self.backoff.delay(self.attempts)
        self.attempts += 1
        return delay
