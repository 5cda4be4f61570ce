"""Token-bucket rate limits (in memory, per server process) for the activation endpoints.

Each key (a client address, a device id) has a bucket of ``burst`` attempts that refills at one attempt
per ``interval`` seconds. :meth:`RateLimiter.take` spends one attempt or tells how long to wait. The
clock is injectable so tests need no real time. The number of keys is bounded: when the table is full,
the least recently used key is forgotten (a forgotten key starts again with a full bucket).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """``burst`` attempts at once, then one per ``interval`` seconds."""

    burst: int
    interval: float

    def __post_init__(self) -> None:
        if self.burst < 1 or not (self.interval > 0 and math.isfinite(self.interval)):
            raise ValueError(f"bad rate: burst {self.burst}, interval {self.interval}")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``BURST/SECONDS``, e.g. ``30/2`` (30 at once, then one every 2 s)."""
        burst, sep, interval = text.partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(burst), float(interval))
        except ValueError:
            raise ValueError(f"not a rate: {text!r} (expected BURST/SECONDS, e.g. 30/2)") from None

    def __str__(self) -> str:
        return f"{self.burst}/{self.interval:g}"


class RateLimiter:
    """A table of token buckets, one per key; thread-safe (handlers run in a thread pool)."""

    def __init__(
        self, rate: Rate, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.rate = rate
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[object, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _level(self, key: object, now: float) -> float:
        level, last = self._buckets.get(key, (float(self.rate.burst), now))
        return min(float(self.rate.burst), level + (now - last) / self.rate.interval)

    def take(self, key: object) -> float:
        """Spend one attempt: 0.0 when allowed, else the seconds until the next attempt is allowed."""
        with self._lock:
            now = self.clock()
            level = self._level(key, now)
            if level < 1.0:
                self._store(key, level, now)
                return (1.0 - level) * self.rate.interval
            self._store(key, level - 1.0, now)
            return 0.0

    def refund(self, key: object) -> None:
        """Give back an attempt taken by :meth:`take` (it turned out not to count)."""
        with self._lock:
            now = self.clock()
            self._store(key, min(float(self.rate.burst), self._level(key, now) + 1.0), now)

    def _store(self, key: object, level: float, now: float) -> None:
        self._buckets[key] = (level, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` value (whole seconds, at least 1) for a wait of ``seconds``."""
    return str(max(1, math.ceil(seconds)))
